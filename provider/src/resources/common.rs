//! The inputs every resource takes and the outputs every resource reports. The adapter
//! (`resources`' `Resource` impl for every `Migration`) owns them: it splits the inputs off before a resource's own decode,
//! fills the outputs in after its plan and apply, and merges both into its schemas.
//! Diff and the server read them through these types.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::metadata::Metadata;
use super::{decode, schema_of, Failure};

/// When a preview or up with unchanged inputs looks for new source data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ChangeDetection {
    /// Every preview and up compares the source with the target (listings, or a scan of the table) and copies what is new.
    #[default]
    Full,
    /// Only changed inputs (`triggers` among them) re-run the copy: a preview or up with unchanged inputs reads no data, however large the source.
    Inputs,
}

/// Inputs every resource takes.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommonInputs {
    /// `full` (default): every preview and up compares source and target and copies what is new; `inputs`: only changed inputs (such as `triggers`) re-run the copy, so a preview or up with unchanged inputs reads no data.
    #[serde(default)]
    pub change_detection: ChangeDetection,
    /// Any values; a change re-runs the copy.
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "typed for the schema and Check; Diff finds a change among all inputs"
    )]
    pub triggers: Vec<Value>,
}

impl CommonInputs {
    /// The input naming how changes are found: switching it is no change of what is copied.
    pub(crate) const CHANGE_DETECTION: &'static str = "changeDetection";

    /// Splits untyped inputs into these and the resource's own.
    pub(crate) fn split(
        inputs: &Map<String, Value>,
    ) -> (Result<CommonInputs, Failure>, Map<String, Value>) {
        let names = property_names::<CommonInputs>();
        let (common, own): (Map<String, Value>, Map<String, Value>) = inputs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .partition(|(k, _)| names.contains(k));
        (decode(&common), own)
    }

    /// Read from untyped inputs; values that do not decode (Check reports them) count as
    /// the defaults.
    pub(crate) fn of(inputs: &Map<String, Value>) -> CommonInputs {
        Self::split(inputs).0.unwrap_or_default()
    }
}

/// Requests the last run retried, and of them those the service throttled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retried {
    /// Requests retried during the last run (in preview: while planning): throttled, reset or failed for a moment.
    #[serde(default, deserialize_with = "lenient")]
    pub retries: u64,
    /// Of the answers behind those retries, how many were throttling (503 SlowDown, ThrottlingException, ProvisionedThroughputExceeded, unprocessed items).
    #[serde(default, deserialize_with = "lenient")]
    pub throttles: u64,
}

impl Retried {
    /// The counts of the operation under way.
    fn so_far() -> Retried {
        let (retries, throttles) = crate::copy::retry::Attempts::so_far();
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

/// Outputs every resource reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommonOutputs {
    /// Where this resource's rollback journal lives.
    #[serde(deserialize_with = "lenient")]
    pub journal_uri: String,
    /// Segments the rollback journal held when the last run ended, each recorded before the writes it describes. `pulumi destroy` refuses a journal at `journalUri` that holds fewer: it would undo only part of what was written.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub journal_segments: Option<u64>,
    #[serde(flatten)]
    pub retried: Retried,
    /// What the last `pulumi refresh` found comparing the source with the target; cleared by a run.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub drift: Option<Drift>,
}

impl CommonOutputs {
    /// What a run reports: its journal and the retries counted so far.
    pub(crate) fn of_run(journal_uri: &str, journal_segments: Option<u64>) -> CommonOutputs {
        CommonOutputs {
            journal_uri: journal_uri.to_string(),
            journal_segments,
            retried: Retried::so_far(),
            drift: None,
        }
    }

    /// Read from a resource's state; each one missing there, or not decoding, has its
    /// default, so that a malformed `drift` cannot hide the journal's URI.
    pub(crate) fn of(state: &Map<String, Value>) -> CommonOutputs {
        let mut state = state.clone();
        if let Ok(Value::Object(defaults)) = serde_json::to_value(CommonOutputs::default()) {
            for (name, value) in defaults {
                state.entry(name).or_insert(value);
            }
        }
        serde_json::from_value(Value::Object(state)).unwrap_or_default()
    }

    /// The journal the state names, if any.
    pub(crate) fn journal_at(state: &Map<String, Value>) -> Option<String> {
        Some(Self::of(state).journal_uri).filter(|uri| !uri.is_empty())
    }

    /// Whether the last refresh recorded in `state` found work for the next up.
    pub(crate) fn drift_pending(state: &Map<String, Value>) -> bool {
        Self::of(state).drift.is_some_and(|drift| drift.pending)
    }

    /// Writes these over the same properties of `state`.
    pub(crate) fn write_into(&self, state: &mut Map<String, Value>) {
        for name in property_names::<CommonOutputs>() {
            state.remove(&name);
        }
        if let Ok(Value::Object(mine)) = serde_json::to_value(self) {
            state.extend(mine);
        }
    }
}

/// A state's value as its type, or the type's default when it does not decode.
fn lenient<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned + Default,
{
    let value = Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).unwrap_or_default())
}

/// The top-level properties of a type's schema (flattened fields included).
fn property_names<T: JsonSchema>() -> Vec<String> {
    schema_of::<T>()
        .get("properties")
        .and_then(Value::as_object)
        .map(|properties| properties.keys().cloned().collect())
        .unwrap_or_default()
}

/// `schema` with the properties, required names and definitions of `T` merged in.
pub(crate) fn merged_with<T: JsonSchema>(mut schema: Value) -> Value {
    let common = schema_of::<T>();
    for key in ["properties", "definitions"] {
        if let Some(Value::Object(more)) = common.get(key) {
            if let Some(Value::Object(into)) = schema.get_mut(key) {
                into.extend(more.clone());
            } else if let Some(object) = schema.as_object_mut() {
                object.insert(key.into(), Value::Object(more.clone()));
            }
        }
    }
    if let Some(Value::Array(more)) = common.get("required") {
        if let Some(object) = schema.as_object_mut() {
            let required = object
                .entry("required")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(into) = required {
                into.extend(more.iter().cloned());
            }
        }
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::map;
    use serde_json::json;

    #[test]
    fn common_inputs_split_off_and_decode() {
        let (common, own) = CommonInputs::split(&map(json!({
            "changeDetection": "inputs", "triggers": [1], "sourceBucket": "a"
        })));
        let common = common.unwrap();
        assert_eq!(common.change_detection, ChangeDetection::Inputs);
        assert_eq!(own, map(json!({"sourceBucket": "a"})));
        let (wrong, _) = CommonInputs::split(&map(json!({"changeDetection": "sometimes"})));
        assert_eq!(wrong.unwrap_err().property, CommonInputs::CHANGE_DETECTION);
    }

    #[test]
    fn common_outputs_read_and_write_a_state() {
        let mut state = map(json!({
            "objectsCopied": 3, "journalUri": "s3://j/p", "retries": 2, "drift": {"checkedAt": 1, "pending": true, "writes": 4}
        }));
        let read = CommonOutputs::of(&state);
        assert_eq!(read.journal_uri, "s3://j/p");
        assert_eq!(read.retried.retries, 2);
        assert!(read.drift.as_ref().is_some_and(|d| d.pending));
        assert_eq!(CommonOutputs::journal_at(&map(json!({}))), None);
        let malformed = map(json!({"journalUri": "s3://j/p", "drift": {"pending": "yes"}}));
        assert_eq!(
            CommonOutputs::journal_at(&malformed).as_deref(),
            Some("s3://j/p")
        );

        let cleared = CommonOutputs {
            drift: None,
            journal_segments: Some(5),
            ..read
        };
        cleared.write_into(&mut state);
        assert_eq!(state["objectsCopied"], 3);
        assert_eq!(state["journalSegments"], 5);
        assert!(!state.contains_key("drift"));
    }

    #[test]
    fn merged_schemas_keep_both_sides() {
        let schema = merged_with::<CommonOutputs>(schema_of::<Retried>());
        let properties = schema["properties"].as_object().unwrap();
        for name in [
            "retries",
            "throttles",
            "journalUri",
            "journalSegments",
            "drift",
        ] {
            assert!(properties.contains_key(name), "{name}");
        }
        assert!(schema["definitions"]["Drift"].is_object());
    }
}
