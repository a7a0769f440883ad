//! The created tables' indexes, constraints and triggers, made after their data as
//! `pg_restore -j` makes them: each object of `pg_dump --section=post-data` in its own
//! transaction, which journals it as made, several at once. A killed run leaves whole
//! objects, and the next one makes only the others.
//!
//! Objects of one table made at once wait for each other's locks where they are made
//! as pg_dump writes them: a primary key locks its table against everything, so the
//! table's other indexes wait for it; a foreign key locks the table it references
//! against other foreign keys. So a plain primary or unique key is made as its unique
//! index (which other index builds do not wait for) and then attached to it, and a
//! foreign key is added unvalidated and then validated (which does not lock the
//! referenced table against other validations).
//!
//! A created table copied in ranges gets its primary key's index before its data
//! (`make_key_index`), journalled as the same step: the ranges read by it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context as _, Result};
use backon::Retryable;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, GenericClient};

use super::super::ledger::{self, Made};
use super::super::Spec;
use super::pg_dump;
use crate::copy::progress::Progress;
use crate::copy::retry;

/// When a step can be made, in this order; each phase waits for the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Indexes (unique keys' included) and checks, several at once.
    Indexes,
    /// Primary and unique keys attached to their indexes, or made whole, one at a time.
    Keys,
    /// Foreign keys added, which need the unique key they reference, one at a time.
    ForeignKeys,
    /// Foreign keys validated, several at once.
    Validations,
    /// What may need any of the above (triggers, rules, policies, index attachments,
    /// comments), one at a time in pg_dump's order.
    Rest,
}

impl Phase {
    const ALL: [Phase; 5] = [
        Phase::Indexes,
        Phase::Keys,
        Phase::ForeignKeys,
        Phase::Validations,
        Phase::Rest,
    ];

    fn at_once(self) -> bool {
        matches!(self, Phase::Indexes | Phase::Validations)
    }
}

/// What one transaction makes.
#[derive(Debug, PartialEq, Eq)]
struct Step {
    /// pg_dump's header for the object (`Name: …; Type: …; Schema: …`, unique in a
    /// database), with the part where the object is made in two steps: the journal's
    /// name for it.
    name: String,
    phase: Phase,
    /// The session settings pg_dump had made where it wrote the object, then the
    /// statement: a step runs the same on any connection.
    sql: String,
    /// A primary key's unique index, which a table copied in ranges gets before its
    /// data (see `make_key_index`).
    primary_key_index: bool,
}

/// One object of pg_dump's post-data script.
struct Object {
    name: String,
    kind: String,
    settings: String,
    /// Its statement, without pg_dump's comments.
    statement: String,
}

/// Cuts pg_dump's script into its objects and those into steps. Each object starts
/// at its header comment (`-- Name: …; Type: …; Schema: …; Owner: …`); pg_dump writes
/// a setting (`SET default_tablespace = …`) before the header of the first object
/// that needs it, and the setting holds for all after it.
fn steps(script: &str) -> Vec<Step> {
    let mut settings: BTreeMap<String, String> = BTreeMap::new();
    let mut objects: Vec<Object> = Vec::new();
    for line in script.lines() {
        if let Some(name) = setting(line) {
            settings.insert(name, line.to_string());
        } else if let Some(header) = line.strip_prefix("-- Name: ") {
            let Some((_, kind)) = header.split_once("; Type: ") else {
                continue;
            };
            objects.push(Object {
                name: header
                    .split("; Owner:")
                    .next()
                    .unwrap_or(header)
                    .to_string(),
                kind: kind.split(';').next().unwrap_or_default().to_string(),
                settings: settings.values().map(|s| format!("{s}\n")).collect(),
                statement: String::new(),
            });
        } else if let Some(object) = objects.last_mut() {
            if !line.is_empty() && !line.starts_with("--") {
                if !object.statement.is_empty() {
                    object.statement.push('\n');
                }
                object.statement.push_str(line);
            }
        }
    }
    objects.iter().flat_map(Object::steps).collect()
}

impl Object {
    fn step(&self, part: &str, phase: Phase, statement: &str) -> Step {
        Step {
            name: format!("{}{part}", self.name),
            phase,
            sql: format!("{}{statement}", self.settings),
            primary_key_index: false,
        }
    }

    fn steps(&self) -> Vec<Step> {
        let whole = |phase| vec![self.step("", phase, &self.statement)];
        match self.kind.as_str() {
            "CONSTRAINT" => match unique_key(&self.statement) {
                Some(key) => vec![
                    Step {
                        primary_key_index: key.kind == "PRIMARY KEY",
                        ..self.step(
                            " (its index)",
                            Phase::Indexes,
                            &format!(
                                "CREATE UNIQUE INDEX {} ON {} USING btree ({});",
                                key.constraint, key.table, key.columns
                            ),
                        )
                    },
                    self.step(
                        "",
                        Phase::Keys,
                        &format!(
                            "ALTER TABLE ONLY {} ADD CONSTRAINT {} {} USING INDEX {};",
                            key.table, key.constraint, key.kind, key.constraint
                        ),
                    ),
                ],
                None => whole(Phase::Indexes),
            },
            "INDEX" | "CHECK CONSTRAINT" => whole(Phase::Indexes),
            "FK CONSTRAINT" => match unvalidated(&self.statement) {
                Some((table, constraint, added)) => vec![
                    self.step(" (not valid)", Phase::ForeignKeys, &added),
                    self.step(
                        "",
                        Phase::Validations,
                        &format!("ALTER TABLE ONLY {table} VALIDATE CONSTRAINT {constraint};"),
                    ),
                ],
                None => whole(Phase::ForeignKeys),
            },
            _ => whole(Phase::Rest),
        }
    }
}

/// A primary or unique key as pg_dump writes one that a plain unique index makes.
struct UniqueKey<'a> {
    table: &'a str,
    constraint: &'a str,
    /// `PRIMARY KEY` or `UNIQUE`.
    kind: &'a str,
    columns: &'a str,
}

/// `ALTER TABLE ONLY t ADD CONSTRAINT c PRIMARY KEY (columns);` (or `UNIQUE`) and
/// nothing more: a key with options (`INCLUDE`, `WITH`, a tablespace, `DEFERRABLE`,
/// `NULLS NOT DISTINCT`) is made as pg_dump writes it.
fn unique_key(statement: &str) -> Option<UniqueKey<'_>> {
    let (table, constraint, definition) = added_constraint(statement)?;
    ["PRIMARY KEY", "UNIQUE"].into_iter().find_map(|kind| {
        let columns = definition
            .strip_prefix(kind)?
            .strip_prefix(" (")?
            .strip_suffix(");")?;
        (!columns.contains(['(', ')', '\n'])).then_some(UniqueKey {
            table,
            constraint,
            kind,
            columns,
        })
    })
}

/// A foreign key that pg_dump adds validated, as the same statement adding it
/// unvalidated, with its table and name for the validation.
fn unvalidated(statement: &str) -> Option<(&str, &str, String)> {
    let (table, constraint, definition) = added_constraint(statement)?;
    if !definition.starts_with("FOREIGN KEY (") || definition.ends_with(" NOT VALID;") {
        return None;
    }
    let added = format!("{} NOT VALID;", statement.strip_suffix(';')?);
    Some((table, constraint, added))
}

/// The table, constraint name and definition of `ALTER TABLE ONLY t` and, on the
/// next line, `ADD CONSTRAINT c definition`.
fn added_constraint(statement: &str) -> Option<(&str, &str, &str)> {
    let (first, rest) = statement.split_once('\n')?;
    let table = first.strip_prefix("ALTER TABLE ONLY ")?;
    let added = rest.trim_start().strip_prefix("ADD CONSTRAINT ")?;
    // A quoted name may hold spaces and doubled quotes.
    let end = match added.strip_prefix('"') {
        Some(quoted) => {
            let mut at = 0;
            loop {
                let close = at + quoted[at..].find('"')?;
                if quoted[close + 1..].starts_with('"') {
                    at = close + 2;
                } else {
                    break close + 2;
                }
            }
        }
        None => added.find(' ')?,
    };
    let (constraint, definition) = added.split_at(end);
    Some((table, constraint, definition.strip_prefix(' ')?))
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

/// Forgets the steps made for `tables` (by pg_dump's names for their objects), which
/// are being created again: someone dropped the ones this copy had created, and the new
/// tables have none of it yet.
pub(super) async fn forget(
    spec: &Spec,
    client: &impl GenericClient,
    tables: &[String],
) -> Result<()> {
    if tables.is_empty()
        || ledger::made(client, &spec.journal, Made::PostData)
            .await?
            .is_empty()
    {
        return Ok(());
    }
    let script = pg_dump(spec, "post-data", tables).await?;
    let names: Vec<String> = steps(&script).into_iter().map(|step| step.name).collect();
    ledger::forget_made(client, &spec.journal, Made::PostData, &names).await
}

/// Makes the primary key's unique index of `table` (created by this copy, to be filled
/// in ranges) before its data, journalled as the post-data step it is: the ranges'
/// reads go by it (its first column is theirs), and the post-data has one index fewer
/// to build, which costs more than the index's upkeep during the copy. A row written
/// into the table by someone else under a key the copy writes fails its range then,
/// not the post-data. False when pg_dump writes the key with options: it comes with the
/// rest of the post-data.
pub(super) async fn make_key_index(
    spec: &Spec,
    target: &Client,
    table: &str,
    progress: &dyn Progress,
) -> Result<bool> {
    let script = pg_dump(spec, "post-data", &[table.to_string()]).await?;
    let Some(step) = steps(&script)
        .into_iter()
        .find(|step| step.primary_key_index)
    else {
        return Ok(false);
    };
    let made = ledger::made(target, &spec.journal, Made::PostData).await?;
    if made.contains(&step.name) {
        return Ok(true);
    }
    work(
        target,
        &Mutex::new(VecDeque::from([&step])),
        &spec.journal,
        progress,
    )
    .await?;
    progress.info(&format!(
        "{table}: its primary key's index made before its data, which goes in ranges"
    ));
    Ok(true)
}

/// Makes the post-data of `tables` (created by this copy) that the journal does not
/// have as made yet, on `spec.parallel` connections, then marks the tables done.
/// `made_by_earlier_runs`: the journal's steps when this run began (a key's index it
/// made before the data is not an earlier run's).
pub(super) async fn make(
    spec: &Spec,
    target: &mut Client,
    tables: &[String],
    made_by_earlier_runs: &[String],
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
    let (made_before, to_make): (Vec<Step>, Vec<Step>) = steps(&script)
        .into_iter()
        .partition(|step| made.contains(&step.name));
    let made_by_an_earlier_run = made_before
        .iter()
        .filter(|step| made_by_earlier_runs.contains(&step.name))
        .count();
    let started = Instant::now();
    let connections = spec.parallel.clamp(1, to_make.len().max(1));
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(spec.target.connect().await?);
    }
    let mut done = 0;
    for phase in Phase::ALL {
        let queue: Mutex<VecDeque<&Step>> =
            Mutex::new(to_make.iter().filter(|step| step.phase == phase).collect());
        let at_once = if phase.at_once() { connections } else { 1 };
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
        "made the created tables' indexes, constraints and triggers in {:.1} s: {done} steps, {} made by an earlier run",
        started.elapsed().as_secs_f64(),
        made_by_an_earlier_run
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
        // A deadlock (steps holding locks of other objects in another order) makes the
        // server abort one step, which is made again.
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
    const SCRIPT: &str = r#"--
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
    ADD CONSTRAINT documents_pkey PRIMARY KEY (id, "Doc kind");


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
-- Name: pages "odd, key"; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.pages
    ADD CONSTRAINT "odd, key" UNIQUE (body) INCLUDE (page_no);


--
-- Name: pages pages_document_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.pages
    ADD CONSTRAINT pages_document_id_fkey FOREIGN KEY (document_id) REFERENCES public.documents(id) ON DELETE CASCADE;


--
-- Name: tasks tasks_document_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tasks
    ADD CONSTRAINT tasks_document_id_fkey FOREIGN KEY (document_id) REFERENCES public.documents(id) NOT VALID;


--
-- PostgreSQL database dump complete
--
"#;

    #[test]
    fn each_object_is_made_in_the_steps_and_phases_that_keep_its_locks_apart() {
        let steps = steps(SCRIPT);
        let names: Vec<(&str, Phase)> = steps.iter().map(|s| (s.name.as_str(), s.phase)).collect();
        let fk = "pages pages_document_id_fkey; Type: FK CONSTRAINT; Schema: public";
        let pkey = "documents documents_pkey; Type: CONSTRAINT; Schema: public";
        assert_eq!(
            names,
            [
                (format!("{pkey} (its index)").as_str(), Phase::Indexes),
                (pkey, Phase::Keys),
                ("pages_body; Type: INDEX; Schema: public", Phase::Indexes),
                ("pages audit; Type: TRIGGER; Schema: public", Phase::Rest),
                (
                    "pages \"odd, key\"; Type: CONSTRAINT; Schema: public",
                    Phase::Indexes
                ),
                (format!("{fk} (not valid)").as_str(), Phase::ForeignKeys),
                (fk, Phase::Validations),
                (
                    "tasks tasks_document_id_fkey; Type: FK CONSTRAINT; Schema: public",
                    Phase::ForeignKeys
                ),
            ]
        );
        // A plain primary key's index alone may be made before its table's data.
        let before_data: Vec<&str> = steps
            .iter()
            .filter(|s| s.primary_key_index)
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(before_data, [format!("{pkey} (its index)")]);
        let sql: Vec<&str> = steps
            .iter()
            .map(|s| s.sql.lines().last().unwrap())
            .collect();
        assert_eq!(
            sql,
            [
                "CREATE UNIQUE INDEX documents_pkey ON public.documents USING btree (id, \"Doc kind\");",
                "ALTER TABLE ONLY public.documents ADD CONSTRAINT documents_pkey PRIMARY KEY USING INDEX documents_pkey;",
                "CREATE INDEX pages_body ON public.pages USING btree (body);",
                "CREATE TRIGGER audit AFTER INSERT ON public.pages FOR EACH ROW EXECUTE FUNCTION public.audit();",
                "    ADD CONSTRAINT \"odd, key\" UNIQUE (body) INCLUDE (page_no);",
                "    ADD CONSTRAINT pages_document_id_fkey FOREIGN KEY (document_id) REFERENCES public.documents(id) ON DELETE CASCADE NOT VALID;",
                "ALTER TABLE ONLY public.pages VALIDATE CONSTRAINT pages_document_id_fkey;",
                "    ADD CONSTRAINT tasks_document_id_fkey FOREIGN KEY (document_id) REFERENCES public.documents(id) NOT VALID;",
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
        // Written before the index's header, the tablespace holds from there on.
        let with_tablespace = "SET client_encoding = 'UTF8';\n\
                               SET default_tablespace = '';\n\
                               SELECT pg_catalog.set_config('search_path', '', false);\n\
                               SET statement_timeout = 0;\n";
        for later in &steps[2..] {
            assert!(later.sql.starts_with(with_tablespace), "{}", later.sql);
        }
        assert_eq!(
            steps[4].sql.strip_prefix(with_tablespace).unwrap(),
            "ALTER TABLE ONLY public.pages\n    ADD CONSTRAINT \"odd, key\" UNIQUE (body) INCLUDE (page_no);"
        );
    }

    #[test]
    fn a_quoted_constraint_name_ends_at_its_closing_quote() {
        let statement =
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT \"a \"\"b\"\" c\" PRIMARY KEY (id);";
        let key = unique_key(statement).unwrap();
        assert_eq!(
            (key.table, key.constraint, key.kind, key.columns),
            ("public.t", "\"a \"\"b\"\" c\"", "PRIMARY KEY", "id")
        );
        assert!(unique_key(
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT k PRIMARY KEY (id) DEFERRABLE;"
        )
        .is_none());
        assert!(unique_key(
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT k UNIQUE NULLS NOT DISTINCT (id);"
        )
        .is_none());
        assert!(
            unique_key("ALTER TABLE ONLY public.t\n    ADD CONSTRAINT k CHECK (id > 0);").is_none()
        );
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
