//! Names and values that come from secrets (secret stack outputs, secret inputs): the
//! state marks the outputs that hold one as secret, and progress lines show them
//! masked, so a table or bucket name a stack keeps secret stays secret.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

/// Shorter values are not tracked: masking every `a` or `1` would hide the messages,
/// and a name that short tells little.
const SHORTEST: usize = 4;

/// What is shown instead of a secret.
pub const MASK: &str = "[secret]";

#[derive(Debug, Clone, Default)]
pub struct Secrets(Arc<Mutex<BTreeSet<String>>>);

fn strings<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::String(s) => found.push(s),
        Value::Array(items) => items.iter().for_each(|v| strings(v, found)),
        Value::Object(fields) => fields.values().for_each(|v| strings(v, found)),
        _ => {}
    }
}

impl Secrets {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tracks every string inside `value`.
    pub fn add(&self, value: &Value) {
        let mut found = Vec::new();
        strings(value, &mut found);
        self.lock().extend(
            found
                .into_iter()
                .filter(|s| s.len() >= SHORTEST)
                .map(str::to_string),
        );
    }

    /// Tracks every value `other` tracks.
    pub fn add_all(&self, other: &Secrets) {
        let theirs = other.lock().clone();
        self.lock().extend(theirs);
    }

    /// `text` with every tracked value masked, longest first (a name inside a longer
    /// one goes with it).
    pub fn mask(&self, text: &str) -> String {
        let secrets = self.lock();
        let mut by_length: Vec<&String> = secrets.iter().collect();
        by_length.sort_by_key(|s| std::cmp::Reverse(s.len()));
        by_length
            .into_iter()
            .fold(text.to_string(), |text, secret| {
                text.replace(secret.as_str(), MASK)
            })
    }

    /// The top-level keys of `state` whose value holds a tracked value anywhere.
    pub fn keys_in(&self, state: &Map<String, Value>) -> BTreeSet<String> {
        let secrets = self.lock();
        state
            .iter()
            .filter(|(_, value)| {
                let mut found = Vec::new();
                strings(value, &mut found);
                found
                    .iter()
                    .any(|s| secrets.iter().any(|secret| s.contains(secret.as_str())))
            })
            .map(|(key, _)| key.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_names_are_found_inside_outputs_and_masked_in_messages() {
        let secrets = Secrets::default();
        secrets.add(&json!({"table": "prod-receipts-7f3a", "short": "ab"}));
        let state = json!({
            "targetTable": "prod-receipts-7f3a",
            "modelUri": "s3://prod-receipts-7f3a/runs/",
            "itemsCopied": 3,
            "sourceTable": "dev-receipts",
            "note": "ab",
        });
        let keys = secrets.keys_in(state.as_object().unwrap());
        assert_eq!(
            keys.into_iter().collect::<Vec<_>>(),
            ["modelUri", "targetTable"]
        );
        assert_eq!(
            secrets.mask("dev-receipts -> prod-receipts-7f3a: 3 items"),
            "dev-receipts -> [secret]: 3 items"
        );
    }
}
