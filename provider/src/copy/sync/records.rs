//! The sync's journal records: intents written before each batch's writes, and
//! confirmations after them. Replaying them gives each target key's state.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::copy::journal::Journal;
use crate::copy::s3::{Headers, ObjectInfo};
use crate::copy::spill::{stored_as_json, SpillMap};

/// An old object as it was before this resource first touched its key, or as someone
/// else left it after this resource's last write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Previous {
    pub etag: String,
    pub size: u64,
    pub backup: String,
    pub headers: Headers,
}

impl Previous {
    /// What was there, with no backup: a versioned target keeps the old version itself,
    /// and a deletion's intent needs only the ETag to tell whether it happened.
    pub(crate) fn unbacked(existing: &ObjectInfo) -> Previous {
        Previous {
            etag: existing.etag.clone(),
            size: existing.size,
            backup: String::new(),
            headers: Headers::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub(crate) enum ObjectRecord {
    /// About to write `key` from a source object with `source_etag`.
    #[serde(rename_all = "camelCase")]
    Write {
        key: String,
        source_etag: String,
        previous: Option<Previous>,
        /// The target keeps versions: rollback removes the versions written, and
        /// `previous` has no backup.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        versioned: bool,
    },
    /// `key` now holds what this resource wrote, with this ETag (and version).
    Written {
        key: String,
        etag: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
    },
    /// About to delete `key` (deleteExtraneous).
    Delete { key: String, previous: Previous },
    /// `key` was deleted on a versioned target, hidden by this delete marker.
    Deleted { key: String, version: String },
    /// Written by the rollback of another migration sharing the target: what this
    /// resource backed up at `key` was that migration's write, and `previous` is what
    /// that one had backed up (its backup copied here), so this resource's rollback
    /// restores the original.
    Handover {
        key: String,
        previous: Option<Previous>,
    },
}

/// What the journal says about one target key.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct ObjectState {
    /// Content before this resource first touched the key (None: it did not exist).
    pub previous: Option<Previous>,
    pub source_etag: String,
    /// Set once a write is known to have landed.
    pub written_etag: Option<String>,
    pub deleted: bool,
    /// The journal segment of the latest write or delete: rollback goes backwards.
    pub segment: u64,
    /// On a versioned target: rollback removes `versions`, the versions and delete
    /// markers this resource created, oldest first.
    pub versioned: bool,
    pub versions: Vec<String>,
}

stored_as_json!(ObjectState);

impl ObjectState {
    /// Whether `current` (what the target holds now) is no longer what this resource
    /// confirmed writing: someone else wrote the key since.
    pub(crate) fn changed_since(&self, current: &ObjectInfo) -> bool {
        self.written_etag
            .as_deref()
            .is_some_and(|written| written != current.etag)
    }

    /// Whether a later record's backup holds someone else's content, not what this
    /// resource last wrote.
    fn theirs(&self, backup: &Previous) -> bool {
        self.written_etag
            .as_deref()
            .is_some_and(|written| written != backup.etag)
    }
}

/// Target key -> state, on disk: a journal can name a million keys.
pub(crate) type ObjectStates = SpillMap<String, ObjectState>;

impl ObjectRecord {
    fn key(&self) -> &str {
        match self {
            ObjectRecord::Write { key, .. }
            | ObjectRecord::Written { key, .. }
            | ObjectRecord::Delete { key, .. }
            | ObjectRecord::Deleted { key, .. }
            | ObjectRecord::Handover { key, .. } => key,
        }
    }
}

/// Folds one record into its key's state (None: the key's first record).
fn apply_record(current: Option<ObjectState>, segment: u64, record: ObjectRecord) -> ObjectState {
    let first = current.is_none();
    let mut entry = current.unwrap_or_default();
    match record {
        ObjectRecord::Write {
            source_etag,
            previous,
            versioned,
            ..
        } => {
            // The first record of a key knows the content from before this resource; a
            // later one carries a backup only when someone else had changed the key
            // since, and then rollback restores their content instead.
            if first || previous.as_ref().is_some_and(|p| entry.theirs(p)) {
                entry.previous = previous;
            }
            entry.versioned |= versioned;
            entry.source_etag = source_etag;
            entry.written_etag = None;
            entry.deleted = false;
            entry.segment = segment;
        }
        ObjectRecord::Written { etag, version, .. } => {
            entry.written_etag = Some(etag);
            entry.versions.extend(version);
        }
        ObjectRecord::Deleted { version, .. } => {
            entry.versioned = true;
            entry.versions.push(version);
        }
        ObjectRecord::Handover { previous, .. } => entry.previous = previous,
        ObjectRecord::Delete { previous, .. } => {
            if first || (!previous.backup.is_empty() && entry.theirs(&previous)) {
                entry.previous = Some(previous);
            }
            entry.written_etag = None;
            entry.deleted = true;
            entry.segment = segment;
        }
    }
    entry
}

fn fold_segment(state: &ObjectStates, segment: u64, records: Vec<ObjectRecord>) -> Result<()> {
    let by_key = records.into_iter().map(|r| (r.key().to_string(), r));
    state.update_all(by_key, |current, record| {
        apply_record(current, segment, record)
    })
}

pub(crate) async fn load_objects(journal: &Journal) -> Result<ObjectStates> {
    let state = ObjectStates::new()?;
    journal
        .replay(|segment, records| fold_segment(&state, segment, records))
        .await?;
    Ok(state)
}

/// Name of the backup of a target key in the journal: stable, one per key.
pub(crate) fn backup_name(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold_one(state: &ObjectStates, segment: u64, record: ObjectRecord) {
        fold_segment(state, segment, vec![record]).unwrap()
    }

    fn at(state: &ObjectStates, key: &str) -> ObjectState {
        state.get(&key.to_string()).unwrap().unwrap()
    }

    fn previous(etag: &str) -> Previous {
        Previous {
            etag: etag.into(),
            size: 1,
            backup: backup_name("k"),
            headers: Headers::default(),
        }
    }

    #[test]
    fn the_record_format_is_stable() {
        // Journals outlive the provider version that wrote them.
        let lines = [
            r#"{"op":"write","key":"k","sourceEtag":"\"s\"","previous":null}"#,
            r#"{"op":"written","key":"k","etag":"\"w\""}"#,
            r#"{"op":"write","key":"k","sourceEtag":"\"s\"","previous":null,"versioned":true}"#,
            r#"{"op":"written","key":"k","etag":"\"w\"","version":"v2"}"#,
            r#"{"op":"deleted","key":"k","version":"v3"}"#,
            r#"{"op":"handover","key":"k","previous":null}"#,
        ];
        for line in lines {
            let record: ObjectRecord = serde_json::from_str(line).unwrap();
            assert_eq!(serde_json::to_string(&record).unwrap(), line);
        }
        let delete: ObjectRecord = serde_json::from_str(
            r#"{"op":"delete","key":"k","previous":{"etag":"e","size":1,"backup":"b","headers":{"contentType":"image/png"}}}"#,
        )
        .unwrap();
        let ObjectRecord::Delete { previous, .. } = delete else {
            panic!("a delete record")
        };
        assert_eq!(previous.headers.content_type.as_deref(), Some("image/png"));
    }

    #[test]
    fn replay_keeps_the_content_from_before_the_first_write() {
        let state = ObjectStates::new().unwrap();
        fold_one(
            &state,
            0,
            ObjectRecord::Write {
                key: "k".into(),
                source_etag: "s1".into(),
                previous: Some(previous("original")),
                versioned: false,
            },
        );
        fold_one(
            &state,
            0,
            ObjectRecord::Written {
                key: "k".into(),
                etag: "w1".into(),
                version: None,
            },
        );
        fold_one(
            &state,
            0,
            ObjectRecord::Write {
                key: "k".into(),
                source_etag: "s2".into(),
                previous: Some(previous("w1")),
                versioned: false,
            },
        );
        let entry = at(&state, "k");
        assert_eq!(entry.previous.as_ref().unwrap().etag, "original");
        assert_eq!(entry.source_etag, "s2");
        assert_eq!(
            entry.written_etag, None,
            "the second write is not confirmed"
        );
        fold_one(
            &state,
            0,
            ObjectRecord::Written {
                key: "k".into(),
                etag: "w2".into(),
                version: None,
            },
        );
        assert_eq!(at(&state, "k").written_etag.as_deref(), Some("w2"));
    }

    #[test]
    fn a_key_someone_changed_after_the_copy_restores_to_their_content() {
        let state = ObjectStates::new().unwrap();
        let records = [
            r#"{"op":"write","key":"k","sourceEtag":"s1","previous":null}"#,
            r#"{"op":"written","key":"k","etag":"w1"}"#,
            // Prod edited the object (now "theirs"); a later sync backed it up and wrote.
            r#"{"op":"write","key":"k","sourceEtag":"s2","previous":{"etag":"theirs","size":1,"backup":"b","headers":{}}}"#,
            r#"{"op":"written","key":"k","etag":"w2"}"#,
        ];
        for line in records {
            fold_one(&state, 0, serde_json::from_str(line).unwrap());
        }
        let entry = at(&state, "k");
        assert_eq!(entry.previous.map(|p| p.etag).as_deref(), Some("theirs"));
        assert_eq!(entry.written_etag.as_deref(), Some("w2"));
        let edited = ObjectInfo {
            key: "k".into(),
            size: 1,
            etag: "theirs".into(),
            modified: 0,
            archived: None,
            checksum_algorithm: None,
        };
        let written = ObjectState {
            written_etag: Some("w2".into()),
            ..ObjectState::default()
        };
        assert!(written.changed_since(&edited));
        assert!(!written.changed_since(&ObjectInfo {
            etag: "w2".into(),
            ..edited
        }));
    }

    #[test]
    fn a_created_then_deleted_key_has_nothing_to_restore() {
        let state = ObjectStates::new().unwrap();
        fold_one(
            &state,
            0,
            ObjectRecord::Write {
                key: "k".into(),
                source_etag: "s".into(),
                previous: None,
                versioned: false,
            },
        );
        fold_one(
            &state,
            0,
            ObjectRecord::Delete {
                key: "k".into(),
                previous: previous("ours"),
            },
        );
        assert!(at(&state, "k").deleted);
        assert!(at(&state, "k").previous.is_none());
    }

    #[test]
    fn a_versioned_key_collects_the_versions_this_resource_created() {
        let state = ObjectStates::new().unwrap();
        let records = [
            r#"{"op":"write","key":"k","sourceEtag":"s","previous":null,"versioned":true}"#,
            r#"{"op":"written","key":"k","etag":"w","version":"v1"}"#,
            r#"{"op":"write","key":"k","sourceEtag":"s2","previous":null,"versioned":true}"#,
            r#"{"op":"written","key":"k","etag":"w2","version":"v2"}"#,
            r#"{"op":"deleted","key":"k","version":"marker"}"#,
        ];
        for line in records {
            fold_one(&state, 0, serde_json::from_str(line).unwrap());
        }
        assert!(at(&state, "k").versioned);
        assert_eq!(at(&state, "k").versions, ["v1", "v2", "marker"]);
    }
}
