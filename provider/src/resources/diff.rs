//! The diff policy: which changes update a resource in place, which replace it (roll the
//! old copy back, then copy anew), and when unchanged inputs still leave work to do.
//! Pure: the server asks for a plan and maps these answers onto the protocol.

use serde_json::{Map, Value};

use super::metadata::Metadata;
use super::{ChangeDetection, CommonInputs, CommonOutputs};

/// One property that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub property: String,
    pub replace: bool,
    /// The user's inputs changed (false: the world did).
    pub input: bool,
}

/// Top-level inputs whose values differ between two input maps (null and absent are
/// the same), each with whether the change forces a replacement.
pub(crate) fn input_changes(
    resource: &Metadata,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
) -> Vec<Change> {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        // How changes are found is not what is copied: switching it re-runs nothing.
        .filter(|k| *k != CommonInputs::CHANGE_DETECTION)
        .filter(|k| old.get(*k).filter(|v| !v.is_null()) != new.get(*k).filter(|v| !v.is_null()))
        .map(|k| Change {
            property: k.clone(),
            replace: resource.replaces(k),
            input: true,
        })
        .collect()
}

/// `changeDetection: inputs`: unchanged inputs mean no change, and no data is read to
/// find out.
pub(crate) fn compares_inputs_only(inputs: &Map<String, Value>) -> bool {
    CommonInputs::of(inputs).change_detection == ChangeDetection::Inputs
}

/// `changeDetection: inputs` with the inputs unchanged: no data is read, but a drift the
/// last `pulumi refresh` found (the source has what the target lacks) is work to do.
pub(crate) fn refreshed_drift(resource: &Metadata, last_state: &Map<String, Value>) -> Vec<Change> {
    if !CommonOutputs::drift_pending(last_state) {
        return Vec::new();
    }
    vec![Change {
        property: resource.pending_output.clone(),
        replace: false,
        input: false,
    }]
}

/// With the inputs unchanged: a name the last run resolved from a stack output that now
/// resolves differently replaces the resource; otherwise a plan that would write shows
/// as an update of the pending output.
pub(crate) fn plan_changes(
    resource: &Metadata,
    last_state: &Map<String, Value>,
    planned: &Map<String, Value>,
    pending: bool,
) -> Vec<Change> {
    let moved: Vec<Change> = resource
        .replace_on_change
        .iter()
        .filter(|key| last_state.contains_key(*key) && last_state.get(*key) != planned.get(*key))
        .map(|key| Change {
            property: key.clone(),
            replace: true,
            input: false,
        })
        .collect();
    if !moved.is_empty() || !pending {
        return moved;
    }
    vec![Change {
        property: resource.pending_output.clone(),
        replace: false,
        input: false,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::map;
    use serde_json::json;

    #[test]
    fn only_change_detection_inputs_skips_the_data() {
        assert!(compares_inputs_only(&map(
            json!({"changeDetection": "inputs"})
        )));
        assert!(!compares_inputs_only(&map(
            json!({"changeDetection": "full"})
        )));
        assert!(!compares_inputs_only(&map(json!({"output": "raw"}))));
    }

    fn bucket_sync() -> Metadata {
        crate::registry::Registered::new(Box::new(crate::resources::bucket_sync::BucketSync))
            .metadata
    }

    #[test]
    fn names_and_prefixes_replace_filters_update() {
        let sync = bucket_sync();
        assert_eq!(
            sync.replace_on_change,
            [
                "sourceBucket",
                "sourcePrefix",
                "targetBucket",
                "targetPrefix"
            ]
        );
        let old = map(json!({"sourceBucket": "a", "targetBucket": "b", "exclude": ["*.json"]}));
        let new = map(
            json!({"sourceBucket": "a", "targetBucket": "c", "exclude": [], "onConflict": null}),
        );
        let changes = input_changes(&sync, &old, &new);
        let summary: Vec<(&str, bool)> = changes
            .iter()
            .map(|c| (c.property.as_str(), c.replace))
            .collect();
        assert_eq!(summary, [("exclude", false), ("targetBucket", true)]);
        assert!(changes.iter().all(|c| c.input));
        let switched = map(
            json!({"sourceBucket": "a", "targetBucket": "b", "exclude": ["*.json"], "changeDetection": "inputs"}),
        );
        assert!(input_changes(&sync, &old, &switched).is_empty());
    }

    #[test]
    fn a_moved_stack_output_replaces_and_pending_work_updates() {
        let sync = bucket_sync();
        let last = map(
            json!({"output": "raw", "sourceBucket": "dev", "targetBucket": "prod", "objectsCopied": 3}),
        );
        let moved = map(
            json!({"output": "raw", "sourceBucket": "dev", "targetBucket": "prod-2", "objectsCopied": 3}),
        );
        assert_eq!(
            plan_changes(&sync, &last, &moved, true),
            [Change {
                property: "targetBucket".into(),
                replace: true,
                input: false
            }]
        );
        assert_eq!(
            plan_changes(&sync, &last, &last, true),
            [Change {
                property: "objectsCopied".into(),
                replace: false,
                input: false
            }]
        );
        assert!(plan_changes(&sync, &last, &last, false).is_empty());
    }

    #[test]
    fn a_refresh_that_found_drift_makes_work_without_reading_data() {
        let sync = bucket_sync();
        let clean = map(
            json!({"objectsCopied": 3, "drift": {"checkedAt": 1, "pending": false, "writes": 0}}),
        );
        assert!(refreshed_drift(&sync, &clean).is_empty());
        assert!(refreshed_drift(&sync, &map(json!({"objectsCopied": 3}))).is_empty());
        let drifted = map(
            json!({"objectsCopied": 3, "drift": {"checkedAt": 1, "pending": true, "writes": 2}}),
        );
        assert_eq!(
            refreshed_drift(&sync, &drifted),
            [Change {
                property: "objectsCopied".into(),
                replace: false,
                input: false
            }]
        );
    }
}
