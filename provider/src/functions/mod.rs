//! Functions (`invoke`): like resources, typed inputs and outputs whose doc comments are
//! the schema, registered beside the resources.

pub mod get_stack_outputs;

use anyhow::Result;
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{Map, Value};

use crate::resources::{decode, schema_of, Context, Failure};

/// One function, in typed form.
#[async_trait]
pub trait Invoke: Send + Sync + 'static {
    type Inputs: DeserializeOwned + JsonSchema + Send + Sync;
    type Outputs: Serialize + JsonSchema + Send + Sync;
    /// `stackmigrate:index:<name>`.
    const TOKEN: &'static str;
    const DESCRIPTION: &'static str;

    async fn invoke(&self, ctx: &Context, inputs: Self::Inputs) -> Result<Self::Outputs>;
}

/// What an invoke answers: outputs, or the inputs that are wrong.
pub enum Answer {
    Outputs(Map<String, Value>),
    Failures(Vec<Failure>),
}

/// The untyped face of a function that the server drives.
#[async_trait]
pub trait Function: Send + Sync {
    fn token(&self) -> &'static str;
    fn description(&self) -> &'static str;
    fn input_schema(&self) -> Value;
    fn output_schema(&self) -> Value;
    async fn invoke(&self, ctx: &Context, inputs: &Map<String, Value>) -> Result<Answer>;
}

#[async_trait]
impl<F: Invoke> Function for F {
    fn token(&self) -> &'static str {
        F::TOKEN
    }
    fn description(&self) -> &'static str {
        F::DESCRIPTION
    }
    fn input_schema(&self) -> Value {
        schema_of::<F::Inputs>()
    }
    fn output_schema(&self) -> Value {
        schema_of::<F::Outputs>()
    }
    async fn invoke(&self, ctx: &Context, inputs: &Map<String, Value>) -> Result<Answer> {
        let typed = match decode::<F::Inputs>(inputs) {
            Ok(typed) => typed,
            Err(failure) => return Ok(Answer::Failures(vec![failure])),
        };
        let outputs = Invoke::invoke(self, ctx, typed).await?;
        match serde_json::to_value(outputs)? {
            Value::Object(outputs) => Ok(Answer::Outputs(outputs)),
            other => anyhow::bail!("{} returned {other}, not an object", F::TOKEN),
        }
    }
}
