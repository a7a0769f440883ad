//! getStackOutputs: a stack's outputs, secret ones kept secret.

use std::collections::BTreeMap;

use anyhow::Result;
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Invoke;
use crate::resources::Context;
use crate::wire;

pub struct GetStackOutputs;

/// Inputs of getStackOutputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Inputs {
    /// Fully qualified stack name, `org/project/stack`.
    pub stack: String,
}

/// Outputs of getStackOutputs.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Outputs {
    /// Output name to value.
    pub outputs: BTreeMap<String, Value>,
}

#[async_trait]
impl Invoke for GetStackOutputs {
    type Inputs = Inputs;
    type Outputs = Outputs;
    const TOKEN: &'static str = "stackmigrate:index:getStackOutputs";
    const DESCRIPTION: &'static str = concat!(
        "The outputs of a stack in this backend, as `pulumi stack output` shows them; secret outputs stay secret.",
        include_str!("examples/getStackOutputs.md")
    );

    async fn invoke(&self, ctx: &Context, inputs: Inputs) -> Result<Outputs> {
        let stack = ctx.stacks.outputs(&inputs.stack).await?;
        let outputs = stack
            .values
            .iter()
            .map(|(key, value)| {
                let value = if stack.secret.contains(key) {
                    wire::secret_json(value.clone())
                } else {
                    value.clone()
                };
                (key.clone(), value)
            })
            .collect();
        Ok(Outputs { outputs })
    }
}
