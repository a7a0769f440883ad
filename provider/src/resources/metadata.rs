//! A resource's metadata, read from the marks on its input and output fields, the same
//! marks the schema is generated from:
//!
//! - `#[schemars(extend("x-replace-on-change" = true))]` on an input: changing it (or the
//!   name it resolved to) rolls the old copy back and makes a new one;
//! - `#[schemars(extend("x-pending" = true))]` on one output: the output a diff shows
//!   when the target lags the source;
//! - `#[schemars(extend("x-secret" = true))]` on a field: a secret in the schema;
//! - `#[schemars(extend("x-env" = ["AWS_REGION"]))]` on a field: the environment
//!   variables its default comes from (the schema's `defaultInfo`).

use serde_json::Value;

pub(crate) const REPLACES_ON_CHANGE: &str = "x-replace-on-change";
pub(crate) const PENDING: &str = "x-pending";
pub(crate) const SECRET: &str = "x-secret";
pub(crate) const ENVIRONMENT: &str = "x-env";

#[derive(Debug, Clone)]
pub(crate) struct Metadata {
    /// Inputs (also kept in the state) whose change forces a replacement.
    pub replace_on_change: Vec<String>,
    /// The output a diff names when the plan would write.
    pub pending_output: String,
}

/// The top-level properties of a schema that carry `mark`.
fn marked(schema: &Value, mark: &str) -> Vec<String> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(_, property)| property.get(mark) == Some(&Value::Bool(true)))
        .map(|(name, _)| name.clone())
        .collect()
}

impl Metadata {
    /// Reads the marks of `token`'s input and output schemas. Exactly one output must be
    /// marked pending: a resource without one could never show pending work.
    pub fn read(token: &str, inputs: &Value, outputs: &Value) -> Metadata {
        let pending = marked(outputs, PENDING);
        let [pending_output] = <[String; 1]>::try_from(pending).unwrap_or_else(|marked| {
            panic!("{token} must mark exactly one output {PENDING}, not {marked:?}")
        });
        Metadata {
            replace_on_change: marked(inputs, REPLACES_ON_CHANGE),
            pending_output,
        }
    }

    pub fn replaces(&self, property: &str) -> bool {
        self.replace_on_change.iter().any(|p| p == property)
    }
}
