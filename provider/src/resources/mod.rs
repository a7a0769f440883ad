//! The resources. Each file defines one: typed inputs and outputs (their doc comments
//! are the schema's descriptions, their `x-` marks the metadata Diff and the schema
//! read) and what check, plan, apply and rollback mean for it. Adding a resource is
//! adding a file and a line in the registry (see CONTRIBUTING.md).

pub mod bucket_sync;
pub mod cdn_invalidation;
mod common;
mod context;
pub(crate) mod diff;
pub mod dynamo_copy;
pub(crate) mod metadata;
pub mod model_copy;
pub mod postgres_copy;
pub mod queue_gate;
pub(crate) mod secrets;
pub mod snapshot_promote;
pub mod workflow_run;

use std::sync::Arc;

use anyhow::{bail, Result};
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{Map, Value};

use crate::copy::journal::Accounted;
use crate::copy::progress::Silent;
pub(crate) use common::{ChangeDetection, CommonInputs, CommonOutputs, Drift};
#[cfg(test)]
pub(crate) use context::note_name;
pub use context::{journal_path, Clients, Context};
pub(crate) use context::{BucketInputs, RunNote, Side, TargetClaim, RUNS_FOLDER};
use metadata::Metadata;

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

    /// A step that waits (`wait`) needs time to (`timeoutSeconds`).
    fn no_time_to_wait(wait: bool, timeout_seconds: u64) -> Option<Failure> {
        (wait && timeout_seconds == 0)
            .then(|| Failure::new("timeoutSeconds", "must be above 0 when wait is true"))
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
    /// False for a runbook step that changes no data a rollback could restore (a check,
    /// a workflow start, a CDN invalidation), and for a resource that keeps its journal
    /// itself (PostgresCopy, in the target database): no journal at `journalUri` is
    /// opened or checked, and a failed apply keeps the state only if it was `resolved`.
    const JOURNALLED: bool = true;

    /// Checks that need no network: run at every preview before anything else.
    fn validate(inputs: &Self::Inputs) -> Vec<Failure>;
    /// What `apply` would do now, writing nothing. `pending` says whether it would write.
    async fn plan(&self, ctx: &Context, inputs: &Self::Inputs) -> Result<Planned<Self::Outputs>>;
    /// Does the copy, verifies it, and reports what it did. Once it knows what it writes
    /// to, it notes outputs naming it (nothing counted yet) with `ctx.resolved`: when it
    /// then fails after writing and the target no longer answers a plan, that is the
    /// state the engine keeps, so that `pulumi destroy` still finds the target.
    async fn apply(&self, ctx: &Context, inputs: &Self::Inputs) -> Result<Self::Outputs>;
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
    fn journalled(&self) -> bool;
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

/// State is the inputs with the outputs on top, as Pulumi resources usually keep it,
/// and the outputs every resource reports.
fn state_of<O: Serialize>(
    inputs: &Map<String, Value>,
    outputs: &O,
    common: &CommonOutputs,
) -> Result<Map<String, Value>> {
    let mut state = inputs.clone();
    if let Value::Object(out) = serde_json::to_value(outputs)? {
        state.extend(out);
    }
    common.write_into(&mut state);
    Ok(state)
}

/// The outputs every resource reports, at the end of a plan (no segment count) or of a
/// run that wrote (the journal's segments, which a rollback checks).
async fn common_outputs<M: Migration>(
    ctx: &Context,
    count_segments: bool,
) -> Result<CommonOutputs> {
    if !M::JOURNALLED {
        return Ok(CommonOutputs::of_run("", None));
    }
    let journal = ctx.journal().await?;
    let segments = match count_segments {
        true => Some(journal.segment_count().await?),
        false => None,
    };
    Ok(CommonOutputs::of_run(journal.uri(), segments))
}

/// The resource's own inputs, typed; the common ones were split off.
fn own_inputs<T: DeserializeOwned>(inputs: &Map<String, Value>) -> Result<T> {
    decode_or_err(&CommonInputs::split(inputs).1)
}

/// The error of an apply that failed, with the state for the engine to keep when the
/// run had written (its journal has records): named by a plan made now or, when the
/// target no longer answers one, by what the run had resolved (`Context::resolved`).
async fn failed_apply<M: Migration>(
    resource: &M,
    ctx: &Context,
    inputs: &Map<String, Value>,
    cause: anyhow::Error,
) -> anyhow::Error {
    let resolved = ctx.resolved.lock().expect("not poisoned").take();
    let state = match resource.recover(ctx, inputs).await {
        // A resource that keeps its own journal (in the target) noted, with `resolved`,
        // that it may have written: the state it noted goes to the engine.
        Ok(None) if !M::JOURNALLED => resolved
            .and_then(|outputs| state_of(inputs, &outputs, &CommonOutputs::of_run("", None)).ok()),
        Ok(state) => state,
        Err(unplanned) => {
            let common = common_outputs::<M>(ctx, true).await;
            match (resolved, common) {
                (Some(outputs), Ok(common)) if common.journal_segments > Some(0) => {
                    ctx.progress.warn(&format!(
                        "the target could not be planned against after the failure ({unplanned:#}); \
                         the state keeps the names this run resolved and its journal"
                    ));
                    state_of(inputs, &outputs, &common).ok()
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
    let expected = CommonOutputs::of(state)
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

/// Typed inputs from a JSON literal, for the resources' tests.
#[cfg(test)]
pub(crate) fn inputs_from<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("inputs that decode")
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
    fn journalled(&self) -> bool {
        M::JOURNALLED
    }
    fn input_schema(&self) -> Value {
        common::merged_with::<CommonInputs>(schema_of::<M::Inputs>())
    }
    fn output_schema(&self) -> Value {
        common::merged_with::<CommonOutputs>(schema_of::<M::Outputs>())
    }
    fn check(&self, inputs: &Map<String, Value>) -> Vec<Failure> {
        let (common, own) = CommonInputs::split(inputs);
        let mut failures: Vec<Failure> = common.err().into_iter().collect();
        match decode::<M::Inputs>(&own) {
            Ok(typed) => failures.extend(M::validate(&typed)),
            Err(failure) => failures.push(failure),
        }
        failures
    }
    async fn plan(
        &self,
        ctx: &Context,
        inputs: &Map<String, Value>,
    ) -> Result<(Map<String, Value>, bool)> {
        let typed: M::Inputs = own_inputs(inputs)?;
        let planned = Migration::plan(self, ctx, &typed).await?;
        let common = common_outputs::<M>(ctx, false).await?;
        Ok((
            state_of(inputs, &planned.outputs, &common)?,
            planned.pending,
        ))
    }
    async fn apply(
        &self,
        ctx: &Context,
        inputs: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        let typed: M::Inputs = own_inputs(inputs)?;
        // A slot of this run's own for what it resolves.
        let ctx = &Context {
            resolved: Default::default(),
            ..ctx.clone()
        };
        let cause = match Migration::apply(self, ctx, &typed).await {
            Ok(outputs) => {
                return state_of(inputs, &outputs, &common_outputs::<M>(ctx, true).await?)
            }
            Err(cause) => cause,
        };
        Err(failed_apply(self, ctx, inputs, cause).await)
    }
    async fn recover(
        &self,
        ctx: &Context,
        inputs: &Map<String, Value>,
    ) -> Result<Option<Map<String, Value>>> {
        if !M::JOURNALLED {
            return Ok(None);
        }
        let journal = ctx.journal().await?;
        let segments = journal.segment_count().await?;
        if segments == 0 {
            return Ok(None);
        }
        let quiet = Context {
            progress: Arc::new(Silent),
            ..ctx.clone()
        };
        let typed: M::Inputs = own_inputs(inputs)?;
        let planned = Migration::plan(self, &quiet, &typed).await?;
        let common = CommonOutputs::of_run(journal.uri(), Some(segments));
        Ok(Some(state_of(inputs, &planned.outputs, &common)?))
    }
    async fn rollback(&self, ctx: &Context, state: &Map<String, Value>) -> Result<()> {
        let typed: M::Outputs = decode_or_err(state)?;
        if !M::JOURNALLED {
            return Migration::rollback(self, ctx, &typed).await;
        }
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
