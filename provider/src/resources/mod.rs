//! The resources. Each file defines one: typed inputs and outputs (their doc comments
//! are the schema's descriptions) and what check, plan, apply and rollback mean for it.
//! Adding a resource is adding a file and a line in `all()`.

pub mod bucket_sync;
pub mod dynamo_copy;
pub mod model_copy;
pub mod snapshot_promote;

use std::sync::Arc;

use anyhow::Result;
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{Map, Value};

use crate::config::ProviderConfig;
use crate::copy::journal::Journal;
use crate::copy::progress::Progress;
use crate::copy::s3::Bucket;
use crate::copy::sync;
use crate::stacks::{StackOutputs, Stacks};

/// Everything a resource operation may use besides its inputs.
pub struct Context {
    pub config: Arc<ProviderConfig>,
    pub urn: String,
    pub progress: Arc<dyn Progress>,
    pub stacks: Arc<Stacks>,
}

/// Which side of the migration a name belongs to.
#[derive(Debug, Clone, Copy)]
pub enum Side {
    Source,
    Target,
}

impl Context {
    /// This resource's journal. An `s3://` journal is written with `target`, the target
    /// side's S3 client.
    pub async fn journal(&self, target: &aws_sdk_s3::Client) -> Result<Journal> {
        Journal::open(
            &self.config.journal_location()?,
            target,
            &journal_path(&self.urn),
        )
        .await
    }

    fn stack_setting(&self, side: Side) -> (&'static str, Option<&str>) {
        match side {
            Side::Source => (
                "stackmigrate:sourceStack",
                self.config.source_stack.as_deref(),
            ),
            Side::Target => (
                "stackmigrate:targetStack",
                self.config.target_stack.as_deref(),
            ),
        }
    }

    /// The outputs of the side's stack, or None when no stack is configured for it.
    pub async fn stack_outputs(&self, side: Side) -> Result<Option<Arc<StackOutputs>>> {
        match self.stack_setting(side).1 {
            Some(stack) => Ok(Some(self.stacks.outputs(stack).await?)),
            None => Ok(None),
        }
    }

    /// A table or bucket name: the input when set, else the stack output `output`.
    pub async fn resolve(
        &self,
        side: Side,
        input: &str,
        explicit: &Option<String>,
        output: Option<&str>,
    ) -> Result<String> {
        if let Some(name) = explicit {
            return Ok(name.clone());
        }
        let Some(output) = output else {
            anyhow::bail!(
                "{input} is not set and no `output` names the stack output to read it from"
            );
        };
        let (setting, _) = self.stack_setting(side);
        match self.stack_outputs(side).await? {
            Some(outputs) => outputs.string(output),
            None => anyhow::bail!(
                "{input} is not set and {setting} is not configured: set {input}, or set {setting} so that output {output:?} can be read from it"
            ),
        }
    }
}

/// `project/stack/Type/name`, from `urn:pulumi:stack::project::pkg:mod:Type::name`:
/// where a resource's journal lives, and its ID. Stable across runs, so a run that was
/// killed is finished by the next one from the same journal.
pub fn journal_path(urn: &str) -> String {
    let parts: Vec<&str> = urn.splitn(4, "::").collect();
    let stack = parts[0].rsplit(':').next().unwrap_or("stack");
    let project = parts.get(1).copied().unwrap_or("project");
    let type_name = parts
        .get(2)
        .and_then(|t| t.rsplit('$').next())
        .and_then(|t| t.rsplit(':').next())
        .unwrap_or("Resource");
    let name = parts.get(3).copied().unwrap_or("resource");
    format!("{project}/{stack}/{type_name}/{name}")
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

/// One resource type, in typed form.
#[async_trait]
pub trait Migration: Send + Sync + 'static {
    type Inputs: DeserializeOwned + JsonSchema + Send + Sync;
    type Outputs: Serialize + DeserializeOwned + JsonSchema + Send + Sync;
    /// `stackmigrate:index:<Name>`.
    const TOKEN: &'static str;
    const DESCRIPTION: &'static str;
    /// Inputs that name what is written to: changing one rolls the old copy back and
    /// makes a new one.
    const REPLACE_ON_CHANGE: &'static [&'static str];
    /// The output that changes when the target lags the source (shown in the diff).
    const PENDING_OUTPUT: &'static str;

    /// Checks that need no network: run at every preview before anything else.
    fn validate(inputs: &Self::Inputs) -> Vec<Failure>;
    /// What `apply` would do now, writing nothing. `pending` says whether it would write.
    async fn plan(&self, ctx: &Context, inputs: &Self::Inputs) -> Result<Planned<Self::Outputs>>;
    /// Does the copy, verifies it, and reports what it did.
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
    fn input_schema(&self) -> Value;
    fn output_schema(&self) -> Value;
    fn replace_on_change(&self) -> &'static [&'static str];
    fn pending_output(&self) -> &'static str;
    fn check(&self, inputs: &Map<String, Value>) -> Vec<Failure>;
    async fn plan(
        &self,
        ctx: &Context,
        inputs: &Map<String, Value>,
    ) -> Result<(Map<String, Value>, bool)>;
    async fn apply(&self, ctx: &Context, inputs: &Map<String, Value>)
        -> Result<Map<String, Value>>;
    async fn rollback(&self, ctx: &Context, state: &Map<String, Value>) -> Result<()>;
}

fn decode<T: DeserializeOwned>(inputs: &Map<String, Value>) -> Result<T, Failure> {
    serde_path_to_error::deserialize(Value::Object(inputs.clone())).map_err(|e| {
        let property = e.path().to_string();
        Failure::new(
            if property == "." { "" } else { &property },
            e.into_inner().to_string(),
        )
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

fn schema_of<T: JsonSchema>() -> Value {
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
        schema_of::<M::Outputs>()
    }
    fn replace_on_change(&self) -> &'static [&'static str] {
        M::REPLACE_ON_CHANGE
    }
    fn pending_output(&self) -> &'static str {
        M::PENDING_OUTPUT
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
        let outputs = Migration::apply(self, ctx, &typed).await?;
        with_outputs(inputs, &outputs)
    }
    async fn rollback(&self, ctx: &Context, state: &Map<String, Value>) -> Result<()> {
        let typed: M::Outputs = decode_or_err(state)?;
        Migration::rollback(self, ctx, &typed).await
    }
}

/// Tells the user which things a rollback left because someone changed them after the
/// copy (the first few by name).
pub fn warn_left_alone(ctx: &Context, what: &str, left_alone: &[String]) {
    const SHOWN: usize = 20;
    if left_alone.is_empty() {
        return;
    }
    let more = left_alone.len().saturating_sub(SHOWN);
    ctx.progress.warn(&format!(
        "{} {what} changed since the copy were left as they are: {}{}",
        left_alone.len(),
        left_alone
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    ));
}

/// Rollback of the resources that write to a bucket: undoes the journal's writes in
/// the target bucket (last written first) and says what it did and what it left.
pub async fn rollback_bucket(ctx: &Context, bucket: &str) -> Result<()> {
    let target = Bucket {
        client: ctx.config.target.s3_client().await,
        name: bucket.to_string(),
    };
    let journal = ctx.journal(&target.client).await?;
    let report = sync::rollback(&target, &journal, ctx.progress.as_ref()).await?;
    ctx.progress.info(&format!(
        "rolled back s3://{}: {} objects deleted, {} restored",
        target.name, report.deleted, report.restored
    ));
    warn_left_alone(
        ctx,
        &format!("objects in s3://{}", target.name),
        &report.left_alone,
    );
    Ok(())
}

/// Every resource this provider serves.
pub fn all() -> Vec<Box<dyn Resource>> {
    vec![
        Box::new(bucket_sync::BucketSync),
        Box::new(dynamo_copy::DynamoCopy),
        Box::new(snapshot_promote::SnapshotPromote),
        Box::new(model_copy::ModelCopy),
    ]
}

/// Top-level inputs whose values differ between two input maps, each with whether the
/// change forces a replacement.
pub fn changed_inputs(
    resource: &dyn Resource,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
) -> Vec<(String, bool)> {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| old.get(*k).filter(|v| !v.is_null()) != new.get(*k).filter(|v| !v.is_null()))
        .map(|k| {
            (
                k.clone(),
                resource.replace_on_change().contains(&k.as_str()),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_path_comes_from_the_urn() {
        assert_eq!(
            journal_path("urn:pulumi:prod::portfolio::stackmigrate:index:BucketSync::rawImages"),
            "portfolio/prod/BucketSync/rawImages"
        );
    }

    #[test]
    fn changes_say_which_force_replacement() {
        let sync = bucket_sync::BucketSync;
        let old =
            serde_json::json!({"sourceBucket": "a", "targetBucket": "b", "exclude": ["*.json"]});
        let new = serde_json::json!({"sourceBucket": "a", "targetBucket": "c", "exclude": []});
        let changes = changed_inputs(&sync, old.as_object().unwrap(), new.as_object().unwrap());
        assert_eq!(
            changes,
            vec![
                ("exclude".to_string(), false),
                ("targetBucket".to_string(), true)
            ]
        );
    }
}
