//! Stack outputs, read through the Pulumi CLI (pulumi-automation) with the backend and
//! environment the engine gave this plugin, so table and bucket names come from the
//! stacks instead of being typed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Result};
use pulumi_automation::local::LocalWorkspace;
use pulumi_automation::stack::ResourceType;
use pulumi_automation::workspace::{StackListOptions, Workspace};
use serde_json::{Map, Value};

/// One stack's outputs, with the names of those that are secret.
#[derive(Debug, Default)]
pub struct StackOutputs {
    pub stack: String,
    pub values: Map<String, Value>,
    pub secret: BTreeSet<String>,
}

impl StackOutputs {
    /// A string output, or an error listing the outputs the stack has.
    pub fn string(&self, key: &str) -> Result<String> {
        match self.values.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => bail!(
                "output {key:?} of stack {} is not a string but {other}",
                self.stack
            ),
            None => bail!(
                "stack {} has no output {key:?}; its outputs are: {}",
                self.stack,
                if self.values.is_empty() {
                    "(none)".to_string()
                } else {
                    self.values.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            ),
        }
    }
}

/// Every output present in both stacks whose name ends in `bucket_name` or `bucket`
/// and whose values differ: source value to target value. The default string rewrite
/// of a table copy, so prod rows point at prod buckets.
pub fn bucket_renames(source: &StackOutputs, target: &StackOutputs) -> BTreeMap<String, String> {
    source
        .values
        .iter()
        .filter(|(key, _)| key.ends_with("bucket_name") || key.ends_with("bucket"))
        .filter_map(|(key, value)| {
            let from = value.as_str()?;
            let to = target.values.get(key)?.as_str()?;
            (from != to && !from.is_empty()).then(|| (from.to_string(), to.to_string()))
        })
        .collect()
}

/// Reads stacks once per provider process.
pub struct Stacks {
    cwd: String,
    cache: Mutex<HashMap<String, Arc<StackOutputs>>>,
}

impl Stacks {
    pub fn new(cwd: String) -> Self {
        Stacks {
            cwd,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub async fn outputs(&self, stack: &str) -> Result<Arc<StackOutputs>> {
        if let Some(found) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(stack)
        {
            return Ok(found.clone());
        }
        let cwd = self.cwd.clone();
        let name = stack.to_string();
        let outputs = Arc::new(tokio::task::spawn_blocking(move || read(&cwd, &name)).await??);
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(stack.to_string(), outputs.clone());
        Ok(outputs)
    }
}

fn is_secret(value: &Value) -> bool {
    value.get(crate::wire::SIG_KEY).and_then(Value::as_str) == Some(crate::wire::SECRET_SIG)
}

fn read(cwd: &str, stack: &str) -> Result<StackOutputs> {
    let workspace = LocalWorkspace::new(cwd.to_string());
    // The export says which outputs are secret; `stack output` decrypts them.
    let deployment = workspace.export_stack(stack).map_err(|_| {
        let known = workspace
            .list_stacks(Some(StackListOptions { all: Some(true) }))
            .map(|stacks| {
                stacks
                    .into_iter()
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        anyhow!(
            "stack {stack:?} cannot be read from this backend; stacks there: {}",
            if known.is_empty() {
                "(none)".to_string()
            } else {
                known
            }
        )
    })?;
    let secret = deployment
        .deployment
        .resources
        .iter()
        .find(|r| r.resource_type == ResourceType::Stack)
        .and_then(|r| r.outputs.as_ref())
        .and_then(Value::as_object)
        .map(|outputs| {
            outputs
                .iter()
                .filter(|(_, v)| is_secret(v))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    let values = workspace
        .stack_outputs(stack)
        .map_err(|e| anyhow!("reading the outputs of stack {stack}: {e:?}"))?
        .into_iter()
        .collect();
    Ok(StackOutputs {
        stack: stack.to_string(),
        values,
        secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn outputs(values: Value) -> StackOutputs {
        StackOutputs {
            stack: "org/portfolio/dev".into(),
            values: values.as_object().unwrap().clone(),
            secret: BTreeSet::new(),
        }
    }

    #[test]
    fn renames_are_bucket_outputs_that_differ() {
        let dev = outputs(json!({
            "raw_bucket_name": "raw-dev", "layoutlm_training_bucket": "ll-dev",
            "cdn_bucket_name": "same", "dynamodb_table_name": "table-dev", "only_dev_bucket": "x"
        }));
        let prod = outputs(json!({
            "raw_bucket_name": "raw-prod", "layoutlm_training_bucket": "ll-prod",
            "cdn_bucket_name": "same", "dynamodb_table_name": "table-prod"
        }));
        let renames = bucket_renames(&dev, &prod);
        assert_eq!(
            renames,
            BTreeMap::from([
                ("ll-dev".to_string(), "ll-prod".to_string()),
                ("raw-dev".to_string(), "raw-prod".to_string())
            ])
        );
    }

    #[test]
    fn a_missing_output_lists_the_ones_there() {
        let dev = outputs(json!({"raw_bucket_name": "raw-dev", "dynamodb_table_name": "t"}));
        let err = dev.string("cdn_bucket_name").unwrap_err().to_string();
        assert!(
            err.contains("dynamodb_table_name, raw_bucket_name"),
            "{err}"
        );
    }
}
