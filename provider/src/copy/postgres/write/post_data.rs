//! The created tables' indexes, constraints and triggers, made after their data as
//! `pg_restore -j` makes them: each object of `pg_dump --section=post-data` in its own
//! transaction, which journals it as made, several at once (indexes and the constraints
//! that build one, then the foreign keys that need those, then the rest in pg_dump's
//! order). A killed run leaves whole objects, and the next one makes only the others.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context as _, Result};
use backon::Retryable;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::super::ledger::{self, Made};
use super::super::Spec;
use super::pg_dump;
use crate::copy::progress::Progress;
use crate::copy::retry;

/// When an object can be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Indexes, and the constraints that are made with one (primary keys, unique and
    /// exclusion constraints) or stand alone (checks).
    Indexes,
    /// Foreign keys, which need the unique index of the table they reference.
    ForeignKeys,
    /// What may need any of the above (triggers, rules, policies, index attachments,
    /// comments), one at a time.
    Rest,
}

/// One object of the post-data section.
#[derive(Debug, PartialEq, Eq)]
struct Step {
    /// pg_dump's header for it (`Name: …; Type: …; Schema: …`), which names it in the
    /// journal.
    name: String,
    phase: Phase,
    /// The session settings pg_dump had made where it wrote the object, then the
    /// object's statements: a step runs the same on any connection.
    sql: String,
}

/// Cuts pg_dump's script into its objects. Each starts at its header comment
/// (`-- Name: …; Type: …; Schema: …; Owner: …`); pg_dump writes a setting (`SET
/// default_tablespace = …`) before the header of the first object that needs it, and
/// the setting holds for all after it.
fn steps(script: &str) -> Vec<Step> {
    let mut settings: BTreeMap<String, String> = BTreeMap::new();
    let mut steps: Vec<Step> = Vec::new();
    for line in script.lines() {
        if let Some(name) = setting(line) {
            settings.insert(name, line.to_string());
        } else if let Some(header) = line.strip_prefix("-- Name: ") {
            let Some((_, kind)) = header.split_once("; Type: ") else {
                continue;
            };
            let kind = kind.split(';').next().unwrap_or_default();
            let phase = match kind {
                "INDEX" | "CONSTRAINT" | "CHECK CONSTRAINT" => Phase::Indexes,
                "FK CONSTRAINT" => Phase::ForeignKeys,
                _ => Phase::Rest,
            };
            let name = header.split("; Owner:").next().unwrap_or(header);
            let mut sql: String = settings.values().map(|s| format!("{s}\n")).collect();
            sql.push_str(line);
            steps.push(Step {
                name: name.to_string(),
                phase,
                sql,
            });
        } else if let Some(step) = steps.last_mut() {
            step.sql.push('\n');
            step.sql.push_str(line);
        }
    }
    steps
}

/// The setting a line of pg_dump's script makes for the rest of the session, if it is
/// one (`SET name = …;`, `SELECT pg_catalog.set_config('name', …);`).
fn setting(line: &str) -> Option<String> {
    if let Some(rest) = line.strip_prefix("SET ") {
        return Some(rest.split([' ', '=']).next()?.to_string());
    }
    let rest = line.strip_prefix("SELECT pg_catalog.set_config('")?;
    Some(rest.split('\'').next()?.to_string())
}

/// Makes the post-data of `tables` (created by this copy) that the journal does not
/// have as made yet, on `spec.parallel` connections, then marks the tables done.
pub(super) async fn make(
    spec: &Spec,
    target: &mut Client,
    tables: &[String],
    progress: &dyn Progress,
) -> Result<()> {
    if tables.is_empty() {
        return Ok(());
    }
    let script = pg_dump(spec, "post-data", tables).await?;
    // The range indexes served the copy, which is over.
    ledger::drop_range_indexes(&*target, tables).await?;
    let made: BTreeSet<String> = ledger::made(&*target, &spec.journal, Made::PostData)
        .await?
        .into_iter()
        .collect();
    let to_make: Vec<Step> = steps(&script)
        .into_iter()
        .filter(|step| !made.contains(&step.name))
        .collect();
    let started = Instant::now();
    let connections = spec.parallel.clamp(1, to_make.len().max(1));
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(spec.target.connect().await?);
    }
    let mut done = 0;
    for phase in [Phase::Indexes, Phase::ForeignKeys, Phase::Rest] {
        let queue: Mutex<VecDeque<&Step>> =
            Mutex::new(to_make.iter().filter(|step| step.phase == phase).collect());
        let at_once = if phase == Phase::Rest { 1 } else { connections };
        let workers = clients
            .iter()
            .take(at_once)
            .map(|client| work(client, &queue, &spec.journal, progress));
        done += futures::future::try_join_all(workers)
            .await?
            .into_iter()
            .sum::<usize>();
    }
    let transaction = target.transaction().await?;
    for key in tables {
        ledger::mark(&transaction, &spec.journal, key, "post_data_done").await?;
    }
    transaction.commit().await?;
    progress.info(&format!(
        "made {done} indexes, constraints and triggers of the created tables in {:.1} s ({} made before)",
        started.elapsed().as_secs_f64(),
        made.len()
    ));
    Ok(())
}

/// Makes the queue's steps one after another on `client` until the queue is empty;
/// returns how many it made.
async fn work(
    client: &Client,
    queue: &Mutex<VecDeque<&Step>>,
    journal: &str,
    progress: &dyn Progress,
) -> Result<usize> {
    let mut made = 0;
    loop {
        let Some(step) = queue.lock().expect("queue lock").pop_front() else {
            return Ok(made);
        };
        progress.status(&format!("making {}", step.name));
        let started = Instant::now();
        // Two foreign keys between the same tables, made at once, can deadlock: the
        // server aborts one, which is made again.
        (|| make_one(client, step, journal))
            .retry(retry::backoff(retry::MAX_ATTEMPTS as usize))
            .when(is_deadlock)
            .notify(|_, _| retry::Attempts::record(false))
            .await
            .with_context(|| format!("making {} (pg_dump --section=post-data)", step.name))?;
        progress.debug(&format!(
            "made {} in {:.2} s",
            step.name,
            started.elapsed().as_secs_f64()
        ));
        made += 1;
    }
}

/// One step in one transaction with its journal entry. COMMIT goes alone, once the
/// statements have answered: a connection lost before that leaves nothing made.
async fn make_one(client: &Client, step: &Step, journal: &str) -> Result<()> {
    client.batch_execute("BEGIN").await?;
    let made = async {
        client.batch_execute(&step.sql).await?;
        ledger::note_made(client, journal, Made::PostData, &step.name).await?;
        client.batch_execute("COMMIT").await?;
        Ok(())
    }
    .await;
    if made.is_err() {
        // The connection may be gone with the error; the server rolls back then.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    made
}

fn is_deadlock(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.code())
        == Some(&SqlState::T_R_DEADLOCK_DETECTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of `pg_dump --schema-only --section=post-data` (15), headers and
    /// settings as pg_dump writes them.
    const SCRIPT: &str = "--
-- PostgreSQL database dump
--

-- Dumped from database version 15.14

SET statement_timeout = 0;
SET client_encoding = 'UTF8';
SELECT pg_catalog.set_config('search_path', '', false);

--
-- Name: documents documents_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.documents
    ADD CONSTRAINT documents_pkey PRIMARY KEY (id);


SET default_tablespace = '';

--
-- Name: pages_body; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX pages_body ON public.pages USING btree (body);


--
-- Name: pages audit; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER audit AFTER INSERT ON public.pages FOR EACH ROW EXECUTE FUNCTION public.audit();


--
-- Name: pages pages_document_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.pages
    ADD CONSTRAINT pages_document_id_fkey FOREIGN KEY (document_id) REFERENCES public.documents(id);


--
-- PostgreSQL database dump complete
--
";

    #[test]
    fn each_object_is_a_step_of_its_phase_carrying_the_settings_made_before_it() {
        let steps = steps(SCRIPT);
        let names: Vec<(&str, Phase)> = steps.iter().map(|s| (s.name.as_str(), s.phase)).collect();
        assert_eq!(
            names,
            [
                (
                    "documents documents_pkey; Type: CONSTRAINT; Schema: public",
                    Phase::Indexes
                ),
                ("pages_body; Type: INDEX; Schema: public", Phase::Indexes),
                ("pages audit; Type: TRIGGER; Schema: public", Phase::Rest),
                (
                    "pages pages_document_id_fkey; Type: FK CONSTRAINT; Schema: public",
                    Phase::ForeignKeys
                ),
            ]
        );
        // By name: no setting pg_dump writes depends on another.
        let settings = "SET client_encoding = 'UTF8';\n\
                        SELECT pg_catalog.set_config('search_path', '', false);\n\
                        SET statement_timeout = 0;\n";
        assert!(steps[0].sql.starts_with(settings), "{}", steps[0].sql);
        assert!(
            !steps[0].sql.contains("default_tablespace"),
            "{}",
            steps[0].sql
        );
        assert!(steps[0]
            .sql
            .contains("ADD CONSTRAINT documents_pkey PRIMARY KEY (id);"));
        assert!(!steps[0].sql.contains("pages_body"), "{}", steps[0].sql);
        // Written before the index's header, the tablespace holds from there on.
        for later in &steps[1..] {
            assert!(
                later.sql.contains("SET default_tablespace = '';\n"),
                "{}",
                later.sql
            );
        }
        assert!(steps[3].sql.contains("REFERENCES public.documents(id);"));
    }

    #[test]
    fn a_setting_is_named_by_what_it_sets() {
        assert_eq!(
            setting("SET lock_timeout = 0;").as_deref(),
            Some("lock_timeout")
        );
        assert_eq!(
            setting("SELECT pg_catalog.set_config('search_path', '', false);").as_deref(),
            Some("search_path")
        );
        assert_eq!(setting("    SET DEFAULT 1;"), None);
        assert_eq!(setting("CREATE INDEX i ON t (c);"), None);
    }
}
