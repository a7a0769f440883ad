//! The resources. Each file defines one: typed inputs and outputs (their doc comments
//! are the schema's descriptions, their `x-` marks the metadata Diff and the schema
//! read) and what check, plan, apply and rollback mean for it. Adding a resource is
//! adding a file and a line in the registry (see CONTRIBUTING.md).

pub mod bucket_sync;
mod context;
pub(crate) mod diff;
pub mod dynamo_copy;
pub(crate) mod metadata;
pub mod model_copy;
pub mod snapshot_promote;

use std::sync::Arc;

use anyhow::{bail, Result};
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::copy::journal::Accounted;
use crate::copy::progress::Silent;
pub use context::{journal_path, Clients, Context};
pub(crate) use context::{BucketInputs, Side, TargetClaim};
use metadata::Metadata;

/// When a preview or up with unchanged inputs looks for new source data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ChangeDetection {
    /// Every preview and up compares the source with the target (listings, or a scan of the table) and copies what is new.
    #[default]
    Full,
    /// Only changed inputs (`triggers` among them) re-run the copy: a preview or up with unchanged inputs reads no data, however large the source.
    Inputs,
}

/// Requests the last run retried, and of them those the service throttled: every
/// resource reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retried {
    /// Requests retried during the last run (in preview: while planning): throttled, reset or failed for a moment.
    #[serde(default)]
    pub retries: u64,
    /// Of the answers behind those retries, how many were throttling (503 SlowDown, ThrottlingException, ProvisionedThroughputExceeded, unprocessed items).
    #[serde(default)]
    pub throttles: u64,
}

impl Retried {
    /// The counts of the operation under way.
    pub(crate) fn so_far() -> Retried {
        let (retries, throttles) = crate::copy::connection::Attempts::so_far();
        Retried { retries, throttles }
    }
}

/// What the last `pulumi refresh` found when it compared the source with the target
/// again. Absent until a refresh runs; a run clears it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Drift {
    /// When refresh compared them, in seconds since the Unix epoch.
    pub checked_at: u64,
    /// True when the source has data the target lacks or holds otherwise: the next `pulumi up` copies it, whatever `changeDetection` says.
    pub pending: bool,
    /// What that `pulumi up` would write, as its plan counts it (items, objects or files).
    pub writes: u64,
}

impl Drift {
    /// Whether the last refresh recorded in `state` found work for the next up.
    pub(crate) fn pending_in(state: &Map<String, Value>) -> bool {
        state
            .get("drift")
            .and_then(|drift| drift.get("pending"))
            .and_then(Value::as_bool)
            == Some(true)
    }

    pub(crate) fn found(resource: &Metadata, planned: &Map<String, Value>, pending: bool) -> Drift {
        Drift {
            checked_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
            pending,
            writes: planned
                .get(&resource.pending_output)
                .and_then(Value::as_u64)
                .unwrap_or_default(),
        }
    }
}

/// What every resource's state records about its journal besides `journalUri`, filled
/// in by the adapter after each run: a rollback checks the journal it finds against it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JournalRecorded {
    /// Segments the rollback journal held when the last run ended, each recorded before the writes it describes. `pulumi destroy` refuses a journal at `journalUri` that holds fewer: it would undo only part of what was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_segments: Option<u64>,
}

impl JournalRecorded {
    /// Read from a resource's state.
    pub(crate) fn of(state: &Map<String, Value>) -> JournalRecorded {
        JournalRecorded {
            journal_segments: state.get("journalSegments").and_then(Value::as_u64),
        }
    }

    fn record(journal_segments: u64, state: &mut Map<String, Value>) {
        state.insert("journalSegments".into(), journal_segments.into());
    }
}

/// The journal a resource's state names (every resource reports `journalUri`).
pub(crate) fn state_journal_uri(state: &Map<String, Value>) -> Option<String> {
    state
        .get("journalUri")
        .and_then(Value::as_str)
        .filter(|uri| !uri.is_empty())
        .map(str::to_string)
}

/// An input that failed validation, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub property: String,
    pub reason: String,
}

impl Failure {
    pub fn new(property: &str, reason: impl Into<String>) -> Self {
        Failure {
            property: property.to_string(),
            reason: reason.into(),
        }
    }
}

/// One resource type, in typed form. Which inputs force a replacement and which output
/// shows pending work are marked on the fields (see `metadata`).
#[async_trait]
pub trait Migration: Send + Sync + 'static {
    type Inputs: DeserializeOwned + JsonSchema + Send + Sync;
    type Outputs: Serialize + DeserializeOwned + JsonSchema + Send + Sync;
    /// `stackmigrate:index:<Name>`.
    const TOKEN: &'static str;
    const DESCRIPTION: &'static str;

    /// Checks that need no network: run at every preview before anything else.
    fn validate(inputs: &Self::Inputs) -> Vec<Failure>;
    /// What `apply` would do now, writing nothing. `pending` says whether it would write.
    async fn plan(&self, ctx: &Context, inputs: &Self::Inputs) -> Result<Planned<Self::Outputs>>;
    /// Does the copy, verifies it, and reports what it did. Once it knows what it writes
    /// to, it sets `so_far` to outputs naming it (nothing counted yet): when it then fails
    /// after writing and the target no longer answers a plan, that is the state the
    /// engine keeps, so that `pulumi destroy` still finds the target.
    async fn apply(
        &self,
        ctx: &Context,
        inputs: &Self::Inputs,
        so_far: &mut Option<Self::Outputs>,
    ) -> Result<Self::Outputs>;
    /// Undoes what `apply` did, from the journal. `state` is what the last run reported.
    async fn rollback(&self, ctx: &Context, state: &Self::Outputs) -> Result<()>;
}

pub struct Planned<O> {
    pub outputs: O,
    pub pending: bool,
}

/// The untyped face of a resource that the server drives.
#[async_trait]
pub trait Resource: Send + Sync {
    fn token(&self) -> &'static str;
    fn description(&self) -> &'static str;
    fn input_schema(&self) -> Value;
    fn output_schema(&self) -> Value;
    fn check(&self, inputs: &Map<String, Value>) -> Vec<Failure>;
    async fn plan(
        &self,
        ctx: &Context,
        inputs: &Map<String, Value>,
    ) -> Result<(Map<String, Value>, bool)>;
    async fn apply(&self, ctx: &Context, inputs: &Map<String, Value>)
        -> Result<Map<String, Value>>;
    async fn rollback(&self, ctx: &Context, state: &Map<String, Value>) -> Result<()>;
    /// The state of a resource whose run wrote (its journal has records) but whose state
    /// the engine does not hold: the inputs with the outputs a plan gives now, which name
    /// the target a rollback undoes. None when nothing was written.
    async fn recover(
        &self,
        ctx: &Context,
        inputs: &Map<String, Value>,
    ) -> Result<Option<Map<String, Value>>>;
}

/// An apply that failed after it had written: the engine is given `state` with the
/// error, keeps the resource, and `pulumi destroy` rolls back what was written.
#[derive(Debug)]
pub struct FailedAfterWriting {
    pub state: Map<String, Value>,
    pub cause: anyhow::Error,
}

impl std::fmt::Display for FailedAfterWriting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:#}; what was written is kept in the state: `pulumi up` finishes the copy, `pulumi destroy` rolls it back",
            self.cause
        )
    }
}

impl std::error::Error for FailedAfterWriting {}

/// Decodes untyped inputs, naming the property that does not fit.
pub(crate) fn decode<T: DeserializeOwned>(inputs: &Map<String, Value>) -> Result<T, Failure> {
    serde_path_to_error::deserialize(Value::Object(inputs.clone())).map_err(|e| {
        let property = e.path().to_string();
        let reason = e.into_inner().to_string();
        // A missing field is reported at the object that lacks it: name the field.
        let missing = reason
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let property = match (property.as_str(), missing) {
            (".", Some(field)) => field.to_string(),
            (".", None) => String::new(),
            (path, _) => path.to_string(),
        };
        Failure::new(&property, reason)
    })
}

fn decode_or_err<T: DeserializeOwned>(inputs: &Map<String, Value>) -> Result<T> {
    decode(inputs).map_err(|f| anyhow::anyhow!("{}: {}", f.property, f.reason))
}

/// State is the inputs with the outputs on top, as Pulumi resources usually keep it.
fn with_outputs<O: Serialize>(
    inputs: &Map<String, Value>,
    outputs: &O,
) -> Result<Map<String, Value>> {
    let mut state = inputs.clone();
    if let Value::Object(out) = serde_json::to_value(outputs)? {
        state.extend(out);
    }
    Ok(state)
}

/// The error of an apply that failed, with the state for the engine to keep when the
/// run had written (its journal has records): named by a plan made now or, when the
/// target no longer answers one, by what the run had resolved (`so_far`).
async fn failed_apply<M: Migration>(
    resource: &M,
    ctx: &Context,
    inputs: &Map<String, Value>,
    so_far: Option<M::Outputs>,
    cause: anyhow::Error,
) -> anyhow::Error {
    let state = match resource.recover(ctx, inputs).await {
        Ok(state) => state,
        Err(unplanned) => {
            let segments = async { ctx.journal().await?.segment_count().await }.await;
            match (so_far, segments) {
                (Some(outputs), Ok(segments)) if segments > 0 => {
                    ctx.progress.warn(&format!(
                        "the target could not be planned against after the failure ({unplanned:#}); \
                         the state keeps the names this run resolved and its journal"
                    ));
                    with_outputs(inputs, &outputs).ok().map(|mut state| {
                        JournalRecorded::record(segments, &mut state);
                        state
                    })
                }
                _ => None,
            }
        }
    };
    match state {
        Some(state) => FailedAfterWriting { state, cause }.into(),
        // Nothing was written, or the journal cannot be read either: the plain error.
        None => cause,
    }
}

/// Fails, before anything is written, unless the journal `ctx` opens holds what `state`
/// says the resource's runs recorded: undoing or adding to another journal would leave
/// the first run's writes (and the backups of what they replaced) out of any rollback.
/// `command` is the pulumi command that asked.
pub(crate) async fn check_journal(
    resource: &dyn Resource,
    ctx: &Context,
    state: &Map<String, Value>,
    command: &str,
) -> Result<()> {
    let journal = ctx.journal().await?;
    let expected = JournalRecorded::of(state)
        .journal_segments
        .unwrap_or_else(|| legacy_segments(resource, state));
    let Accounted::Short { found } = journal.accounts_for(expected).await? else {
        return Ok(());
    };
    let drop_it = if command == "destroy" {
        format!(
            "; to drop the resource from the state without rolling back, run `pulumi state delete '{}'`",
            ctx.urn
        )
    } else {
        String::new()
    };
    bail!(
        "nothing was changed: this resource's state says its runs recorded {expected} journal segments at {uri}, \
         and {found} of them are there, so this is not the journal that was written \
         (it is on another machine or user account, or was moved or removed). \
         Run `pulumi {command}` where {uri} can be read (a file:// journal is on the machine and user account that ran `pulumi up`), \
         or put the journal back there{drop_it}",
        uri = journal.uri(),
    )
}

/// The segments a state written before `journalSegments` existed accounts for: a run
/// that wrote (its pending output above zero) recorded at least one.
fn legacy_segments(resource: &dyn Resource, state: &Map<String, Value>) -> u64 {
    let metadata = Metadata::read(
        resource.token(),
        &resource.input_schema(),
        &resource.output_schema(),
    );
    let wrote = state
        .get(&metadata.pending_output)
        .and_then(Value::as_u64)
        .is_some_and(|count| count > 0);
    u64::from(wrote)
}

/// The JSON Schema (draft 7) of a Rust type, with its doc comments and `x-` marks.
pub(crate) fn schema_of<T: JsonSchema>() -> Value {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    generator.into_root_schema_for::<T>().to_value()
}

#[async_trait]
impl<M: Migration> Resource for M {
    fn token(&self) -> &'static str {
        M::TOKEN
    }
    fn description(&self) -> &'static str {
        M::DESCRIPTION
    }
    fn input_schema(&self) -> Value {
        schema_of::<M::Inputs>()
    }
    fn output_schema(&self) -> Value {
        let mut schema = schema_of::<M::Outputs>();
        let common = schema_of::<JournalRecorded>();
        if let (Some(Value::Object(properties)), Some(Value::Object(more))) =
            (schema.get_mut("properties"), common.get("properties"))
        {
            properties.extend(more.clone());
        }
        schema
    }
    fn check(&self, inputs: &Map<String, Value>) -> Vec<Failure> {
        match decode::<M::Inputs>(inputs) {
            Ok(typed) => M::validate(&typed),
            Err(failure) => vec![failure],
        }
    }
    async fn plan(
        &self,
        ctx: &Context,
        inputs: &Map<String, Value>,
    ) -> Result<(Map<String, Value>, bool)> {
        let typed: M::Inputs = decode_or_err(inputs)?;
        let planned = Migration::plan(self, ctx, &typed).await?;
        Ok((with_outputs(inputs, &planned.outputs)?, planned.pending))
    }
    async fn apply(
        &self,
        ctx: &Context,
        inputs: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        let typed: M::Inputs = decode_or_err(inputs)?;
        let mut so_far = None;
        let cause = match Migration::apply(self, ctx, &typed, &mut so_far).await {
            Ok(outputs) => {
                let mut state = with_outputs(inputs, &outputs)?;
                let segments = ctx.journal().await?.segment_count().await?;
                JournalRecorded::record(segments, &mut state);
                return Ok(state);
            }
            Err(cause) => cause,
        };
        Err(failed_apply(self, ctx, inputs, so_far, cause).await)
    }
    async fn recover(
        &self,
        ctx: &Context,
        inputs: &Map<String, Value>,
    ) -> Result<Option<Map<String, Value>>> {
        let segments = ctx.journal().await?.segment_count().await?;
        if segments == 0 {
            return Ok(None);
        }
        let quiet = Context {
            progress: Arc::new(Silent),
            ..ctx.clone()
        };
        let typed: M::Inputs = decode_or_err(inputs)?;
        let planned = Migration::plan(self, &quiet, &typed).await?;
        let mut state = with_outputs(inputs, &planned.outputs)?;
        JournalRecorded::record(segments, &mut state);
        Ok(Some(state))
    }
    async fn rollback(&self, ctx: &Context, state: &Map<String, Value>) -> Result<()> {
        let typed: M::Outputs = decode_or_err(state)?;
        check_journal(self, ctx, state, "destroy").await?;
        // Read before the rollback clears the journal that lists them.
        let claims = ctx.held_claims().await?;
        Migration::rollback(self, ctx, &typed).await?;
        ctx.release_claims(claims).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Needs {
        stack: String,
        limit: Option<u32>,
    }

    #[test]
    fn decode_failures_name_the_property() {
        let missing = decode::<Needs>(&Map::new()).unwrap_err();
        assert_eq!(missing.property, "stack");
        let wrong = serde_json::json!({"stack": "a", "limit": "many"});
        let wrong = decode::<Needs>(wrong.as_object().unwrap()).unwrap_err();
        assert_eq!(wrong.property, "limit");
        let right = serde_json::json!({"stack": "a", "limit": 2});
        let right = decode::<Needs>(right.as_object().unwrap()).unwrap();
        assert_eq!((right.stack.as_str(), right.limit), ("a", Some(2)));
    }
}
