//! PostgresCopy: a PostgreSQL database's tables into another (a local database into
//! RDS, seed 004): counted per table at preview, missing tables created, rows copied by
//! COPY and verified by count and content hash, journalled in the target database so
//! that `pulumi destroy` restores it exactly from any machine.

use anyhow::{bail, Result};
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Context, Failure, Migration, Planned, Side};
use crate::copy::postgres::connect::{Endpoint, Parts, Tls};
use crate::copy::postgres::{self, Counts, OnConflict, Spec};

pub struct PostgresCopy;

fn default_output() -> String {
    "database_url".to_string()
}

fn default_parallel() -> usize {
    4
}

fn default_range_rows() -> u64 {
    250_000
}

fn default_pg_dump() -> String {
    "pg_dump".to_string()
}

/// One side's database. Set `url`, or `host`, `user` and the rest; unset, the URL is
/// read from the side's stack output named by `output`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresConnection {
    /// `postgresql://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=require`; the other fields override its parts.
    #[schemars(extend("x-secret" = true))]
    pub url: Option<String>,
    /// The server's host name or address (an RDS endpoint).
    pub host: Option<String>,
    /// The server's port. Default 5432.
    pub port: Option<u16>,
    /// The database. Default: the user's name.
    pub database: Option<String>,
    /// The role to log in as.
    pub user: Option<String>,
    /// The role's password.
    #[schemars(extend("x-secret" = true))]
    pub password: Option<String>,
    /// `disable`, `prefer` (default), `require` (encrypted, certificate not checked, as RDS needs without its CA) or `verify-full`.
    pub sslmode: Option<String>,
    /// A PEM file of CA certificates trusted with `verify-full` (RDS's bundle), besides the system's.
    pub sslrootcert: Option<String>,
    /// Stack output holding this side's connection URL, when neither `url` nor `host` is set. Default: the resource's `output`.
    pub output: Option<String>,
}

/// What happens to rows already in a target table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RowConflict {
    /// Target tables must be empty or missing; preview fails naming any that is not.
    #[default]
    Fail,
    /// The target table's rows are backed up into the journal, then removed, then the source's copied.
    Truncate,
    /// Rows are matched by primary key: new ones inserted, differing ones backed up and replaced.
    Upsert,
}

/// Inputs of PostgresCopy.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inputs {
    /// The database to copy from (never written). Default: the URL in the source stack's `output`.
    #[schemars(extend("x-replace-on-change" = true))]
    pub source: Option<PostgresConnection>,
    /// The database to copy into. Default: the URL in the target stack's `output`.
    #[schemars(extend("x-replace-on-change" = true))]
    pub target: Option<PostgresConnection>,
    /// Stack output holding a side's connection URL (RDS's, often a secret). Default `database_url`.
    #[serde(default = "default_output")]
    pub output: String,
    /// Globs on `schema.table` to copy. Default: every table.
    #[serde(default)]
    pub include_tables: Vec<String>,
    /// Globs on `schema.table` not to copy.
    #[serde(default)]
    pub exclude_tables: Vec<String>,
    /// `fail` (default: target tables must be empty), `truncate` (target rows backed up, then removed) or `upsert` (matched by primary key).
    #[serde(default)]
    pub on_conflict: RowConflict,
    /// Tables, or key ranges of large tables, copied at once (each over its own two connections). Default 4.
    #[serde(default = "default_parallel")]
    pub parallel: usize,
    /// Tables with more rows and a primary key whose first column is an integer are copied in key ranges of about this many rows, in parallel, each committed and journalled alone: a killed up resumes at the ranges not yet in the target. Default 250000.
    #[serde(default = "default_range_rows")]
    pub range_rows: u64,
    /// The `pg_dump` that creates tables missing in the target from the source's definitions. Default `pg_dump` on the PATH; it must be at least the source server's version.
    #[serde(default = "default_pg_dump")]
    pub pg_dump: String,
}

/// Outputs of PostgresCopy.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Outputs {
    /// The source database, `user@host:port/database`.
    pub source_database: String,
    /// The target database, `user@host:port/database`.
    pub target_database: String,
    /// Tables selected.
    pub tables: u64,
    /// Tables created in the target (missing there).
    pub tables_created: u64,
    /// Tables whose rows already equalled the source's.
    pub tables_in_sync: u64,
    /// Rows written (inserted or replaced) by the last run; at preview, rows that would be.
    #[schemars(extend("x-pending" = true))]
    pub rows_copied: u64,
    /// Bytes of those rows as COPY streamed them (at preview: as the source stores them).
    pub bytes_copied: u64,
    /// Target rows replaced (upsert) or removed (truncate), each backed up in the journal first.
    pub rows_replaced: u64,
    /// Target rows left as they are: changed there since this copy wrote them, or (without upsert) rows it did not write.
    pub rows_left_alone: u64,
    /// Target sequences moved forward to the source's value.
    pub sequences_set: u64,
    /// True once every table written was proven equal to its source by row count and content hash, both computed by the servers.
    pub verified: bool,
    /// Where the rollback journal lives: schema `stackmigrate` of the target database.
    pub journal: String,
    /// The target connection as given, read again by destroy (kept in the state as an input).
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub target: Option<PostgresConnection>,
    #[serde(default = "default_output", skip_serializing)]
    #[schemars(skip)]
    pub output: String,
}

impl PostgresConnection {
    fn parts(&self, url: Option<String>) -> Parts {
        Parts {
            url: url.or_else(|| self.url.clone()),
            host: self.host.clone(),
            port: self.port,
            database: self.database.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            sslmode: self.sslmode.clone(),
            sslrootcert: self.sslrootcert.clone(),
        }
    }
}

impl PostgresCopy {
    /// One side's endpoint: its connection as given, the URL from its stack's output
    /// when it names no server.
    async fn endpoint(
        ctx: &Context,
        side: Side,
        given: &Option<PostgresConnection>,
        output: &str,
    ) -> Result<Endpoint> {
        let name = match side {
            Side::Source => "source",
            Side::Target => "target",
        };
        let given = given.clone().unwrap_or_default();
        let url = match given.url.is_some() || given.host.is_some() {
            true => None,
            false => {
                let output = given.output.as_deref().unwrap_or(output);
                Some(
                    ctx.resolve(side, &format!("{name}.url"), &None, Some(output))
                        .await?,
                )
            }
        };
        let from_secret = [&url, &given.url, &given.host]
            .into_iter()
            .flatten()
            .any(|value| ctx.secrets.mask(value) != *value);
        let endpoint = Endpoint::new(name, &given.parts(url))?;
        if from_secret {
            // The server and database a secret names stay secret wherever they show.
            ctx.secrets
                .add(&serde_json::Value::String(endpoint.label.clone()));
        }
        Ok(endpoint)
    }

    async fn spec(ctx: &Context, inputs: &Inputs) -> Result<Spec> {
        Ok(Spec {
            source: Self::endpoint(ctx, Side::Source, &inputs.source, &inputs.output).await?,
            target: Self::endpoint(ctx, Side::Target, &inputs.target, &inputs.output).await?,
            include: inputs.include_tables.clone(),
            exclude: inputs.exclude_tables.clone(),
            on_conflict: match inputs.on_conflict {
                RowConflict::Fail => OnConflict::Fail,
                RowConflict::Truncate => OnConflict::Truncate,
                RowConflict::Upsert => OnConflict::Upsert,
            },
            parallel: inputs.parallel,
            range_rows: inputs.range_rows,
            journal: ctx.urn.clone(),
            pg_dump: inputs.pg_dump.clone(),
        })
    }

    fn outputs(spec: &Spec, counts: &Counts, verified: bool) -> Outputs {
        Outputs {
            source_database: spec.source.label.clone(),
            target_database: spec.target.label.clone(),
            tables: counts.tables,
            tables_created: counts.tables_created,
            tables_in_sync: counts.tables_in_sync,
            rows_copied: counts.rows_copied,
            bytes_copied: counts.bytes_copied,
            rows_replaced: counts.rows_replaced,
            rows_left_alone: counts.rows_left_alone,
            sequences_set: counts.sequences_set,
            verified,
            journal: format!("postgresql://{} (schema stackmigrate)", spec.target.label),
            ..Outputs::default()
        }
    }
}

fn connection_failures(side: &str, connection: &Option<PostgresConnection>) -> Vec<Failure> {
    let Some(connection) = connection else {
        return Vec::new();
    };
    let mut failures = Vec::new();
    if let Some(mode) = &connection.sslmode {
        if let Err(e) = Tls::parse(mode) {
            failures.push(Failure::new(&format!("{side}.sslmode"), e.to_string()));
        }
    }
    if connection.url.is_some() || connection.host.is_some() {
        if let Err(e) = Endpoint::new(side, &connection.parts(None)) {
            failures.push(Failure::new(side, e.to_string()));
        }
    } else if connection.user.is_some()
        || connection.password.is_some()
        || connection.database.is_some()
    {
        failures.push(Failure::new(
            &format!("{side}.host"),
            "set host (or url) with user, database and password; or none of them, to read the URL from the stack output",
        ));
    }
    failures
}

#[async_trait]
impl Migration for PostgresCopy {
    type Inputs = Inputs;
    type Outputs = Outputs;
    const TOKEN: &'static str = "stackmigrate:index:PostgresCopy";
    const DESCRIPTION: &'static str = concat!(
        "Copies a PostgreSQL database's tables into another (a local database into RDS): preview counts \
        each table's rows exactly and names missing tables and differing columns; up creates missing tables \
        from the source's definitions, copies rows by binary COPY (tables in parallel, after the tables they \
        reference; large tables in key ranges), moves sequences forward, and verifies each table or range by \
        row count and a content hash both servers compute. The journal lives in the target database (schema \
        stackmigrate), written in each table's or range's own transaction: a killed up resumes where it was; \
        destroy, from any machine, removes copied rows, restores replaced and truncated ones, drops created \
        tables, types and schemas, and leaves rows changed since alone, reporting them.",
        include_str!("examples/PostgresCopy.md")
    );
    // The journal is in the target database, not at journalUri.
    const JOURNALLED: bool = false;

    fn validate(inputs: &Inputs) -> Vec<Failure> {
        let mut failures = connection_failures("source", &inputs.source);
        failures.extend(connection_failures("target", &inputs.target));
        for (input, globs) in [
            ("includeTables", &inputs.include_tables),
            ("excludeTables", &inputs.exclude_tables),
        ] {
            for (index, glob) in globs.iter().enumerate() {
                if let Err(e) = globset::Glob::new(glob) {
                    failures.push(Failure::new(
                        &format!("{input}[{index}]"),
                        format!("{glob:?} is not a glob on schema.table: {e}"),
                    ));
                }
            }
        }
        if inputs.parallel == 0 {
            failures.push(Failure::new("parallel", "must be at least 1"));
        }
        if inputs.range_rows == 0 {
            failures.push(Failure::new(
                "rangeRows",
                "must be at least 1 (rows per key range of a large table)",
            ));
        }
        failures
    }

    async fn plan(&self, ctx: &Context, inputs: &Inputs) -> Result<Planned<Outputs>> {
        let spec = Self::spec(ctx, inputs).await?;
        let survey = postgres::survey(&spec, ctx.progress.as_ref()).await?;
        for line in survey.lines("to copy") {
            ctx.progress.info(&line);
        }
        Ok(Planned {
            pending: survey.pending(),
            outputs: Self::outputs(&spec, &survey.counts(), false),
        })
    }

    async fn apply(&self, ctx: &Context, inputs: &Inputs) -> Result<Outputs> {
        let spec = Self::spec(ctx, inputs).await?;
        let survey = postgres::survey(&spec, ctx.progress.as_ref()).await?;
        // From here on the target may be written: a failure keeps the resource in the
        // state, so that destroy finds the journal.
        ctx.resolved(&Self::outputs(&spec, &Counts::default(), false));
        let counts = postgres::run(&spec, &survey, ctx.progress.as_ref()).await?;
        for line in survey.lines("copied") {
            ctx.progress.debug(&line);
        }
        ctx.progress.info(&format!(
            "done and verified: {} rows copied into {} tables ({} created, {} already in sync){}",
            counts.rows_copied,
            counts.tables - counts.tables_in_sync,
            counts.tables_created,
            counts.tables_in_sync,
            match counts.rows_left_alone {
                0 => String::new(),
                n => format!("; {n} target rows left alone"),
            }
        ));
        Ok(Self::outputs(&spec, &counts, true))
    }

    async fn rollback(&self, ctx: &Context, state: &Outputs) -> Result<()> {
        let target = Self::endpoint(ctx, Side::Target, &state.target, &state.output).await?;
        match postgres::rollback(&target, &ctx.urn, ctx.progress.as_ref()).await? {
            Some(undone) => {
                ctx.progress.info(&format!(
                    "rolled back: {} rows removed, {} restored, {} created tables dropped, {} sequences put back",
                    undone.rows_deleted, undone.rows_restored, undone.tables_dropped, undone.sequences_restored
                ));
                if undone.left_alone_count > 0 {
                    ctx.progress.warn(&format!(
                        "{} rows were left as they are (changed in the target since the copy, or referenced by rows that stay): {}",
                        undone.left_alone_count,
                        undone.left_alone.join(", ")
                    ));
                }
                Ok(())
            }
            None if state.rows_copied + state.tables_created + state.rows_replaced + state.sequences_set > 0 => bail!(
                "nothing was changed: this resource's state says its last run wrote into {}, and the target holds no journal \
                 for it (schema stackmigrate, journal {}): it was removed, or this is not the database that was written. \
                 Point the target at that database, or run `pulumi state delete '{}'` to drop the resource without rolling back",
                target.label,
                ctx.urn,
                ctx.urn
            ),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failures(value: serde_json::Value) -> Vec<String> {
        PostgresCopy::validate(&crate::resources::inputs_from(value))
            .into_iter()
            .map(|f| format!("{}: {}", f.property, f.reason))
            .collect()
    }

    #[test]
    fn connections_and_globs_are_checked_before_anything_connects() {
        assert!(failures(serde_json::json!({})).is_empty());
        let url = "postgresql://app:pw@db.example:5432/docprocessing";
        assert!(failures(
            serde_json::json!({"source": {"url": url}, "target": {"output": "rds_url"}})
        )
        .is_empty());
        let bad = failures(serde_json::json!({
            "source": {"url": url, "sslmode": "verify-ca"},
            "target": {"user": "app"},
            "includeTables": ["public.[x"],
            "parallel": 0,
            "rangeRows": 0,
        }));
        assert_eq!(bad.len(), 6, "{bad:?}");
        assert!(
            bad[0].starts_with("source.sslmode: sslmode verify-ca is not supported"),
            "{bad:?}"
        );
        assert!(
            bad.iter().any(|f| f.starts_with("target.host: set host")),
            "{bad:?}"
        );
        assert!(
            bad.iter()
                .any(|f| f.starts_with("includeTables[0]: \"public.[x\" is not a glob")),
            "{bad:?}"
        );
        assert!(
            bad.iter().any(|f| f == "parallel: must be at least 1"),
            "{bad:?}"
        );
    }
}
