//! What to do with each key the walk yields, as s5cmd's sync strategy decides it: the
//! filters, `onConflict`, `deleteExtraneous`, and what the journal says this resource
//! already wrote. Counts every decision. No I/O.

use anyhow::{bail, Result};

/// Source objects in an archive storage class, which stop a sync that may not leave
/// them out (`Archived::Fail`): they cannot be read until restored.
#[derive(Debug)]
pub struct ArchivedSources {
    pub count: u64,
    /// A few of them, with their archives.
    pub examples: String,
}

impl ArchivedSources {
    /// The failure, with `another_way` offered beside restoring them.
    pub fn message(&self, another_way: Option<&str>) -> String {
        let another_way = another_way
            .map(|way| format!(", or {way}"))
            .unwrap_or_default();
        format!(
            "{} source objects are archived and cannot be read until restored, for example {}: restore them first (aws s3api restore-object){another_way}; nothing was written",
            self.count, self.examples
        )
    }
}

impl std::fmt::Display for ArchivedSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message(None))
    }
}

impl std::error::Error for ArchivedSources {}

use super::records::ObjectStates;
use super::walk::Entry;
use super::{Archived, OnConflict, SyncCounts};
use crate::copy::filter::KeyFilter;
use crate::copy::s3::ObjectInfo;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    Create(ObjectInfo),
    Overwrite {
        source: ObjectInfo,
        existing: ObjectInfo,
    },
    Delete(ObjectInfo),
    /// The target already holds exactly what an interrupted earlier run was writing:
    /// only the journal needs to learn it.
    Adopt {
        key: String,
        etag: String,
    },
}

pub(crate) struct Decider<'a> {
    pub filter: &'a KeyFilter,
    pub on_conflict: OnConflict,
    pub delete_extraneous: bool,
    pub target_prefix: &'a str,
    /// The journal as the run began.
    pub state: &'a ObjectStates,
    pub archived: Archived,
    pub counts: SyncCounts,
    /// Archived objects that stop the sync: (relative key, archive), a few of each side.
    pub archived_sources: Vec<(String, String)>,
    pub archived_targets: Vec<(String, String)>,
    /// Target objects to overwrite or delete that are archived: no backup can read them.
    pub archived_target_count: u64,
    /// Source objects whose target key S3 cannot hold (empty, or too long): a few
    /// relative keys, and their number.
    pub unwritable: Vec<String>,
    pub unwritable_count: u64,
}

/// S3's limit on a key's length, in UTF-8 bytes.
const MAX_KEY_BYTES: usize = 1024;

/// How many archived keys an error names.
const EXAMPLES: usize = 3;

impl Decider<'_> {
    pub fn new<'a>(
        filter: &'a KeyFilter,
        on_conflict: OnConflict,
        delete_extraneous: bool,
        target_prefix: &'a str,
        state: &'a ObjectStates,
        archived: Archived,
    ) -> Decider<'a> {
        Decider {
            filter,
            on_conflict,
            delete_extraneous,
            target_prefix,
            state,
            archived,
            counts: SyncCounts::default(),
            archived_sources: Vec::new(),
            archived_targets: Vec::new(),
            archived_target_count: 0,
            unwritable: Vec::new(),
            unwritable_count: 0,
        }
    }

    pub fn decide(&mut self, relative: &str, entry: Entry) -> Result<Option<Action>> {
        match entry {
            Entry::SourceOnly(source) => {
                if !self.admits(relative, &source) {
                    return Ok(None);
                }
                self.counts.copied += 1;
                self.counts.bytes_copied += source.size;
                Ok(Some(Action::Create(source)))
            }
            Entry::TargetOnly(existing) => {
                if !self.delete_extraneous || !self.filter.matches(relative) {
                    return Ok(None);
                }
                if self.is_archived_target(relative, &existing) {
                    return Ok(None);
                }
                self.counts.deleted += 1;
                Ok(Some(Action::Delete(existing)))
            }
            Entry::Both { source, target } => {
                if !self.admits(relative, &source) {
                    return Ok(None);
                }
                self.both(relative, source, target)
            }
        }
    }

    /// Counts a source object scanned; whether it is to be written: it passes the
    /// filters, can be read now and its target key can be written.
    fn admits(&mut self, relative: &str, source: &ObjectInfo) -> bool {
        self.counts.scanned += 1;
        if !self.filter.matches(relative) {
            self.counts.excluded += 1;
            return false;
        }
        !(self.is_archived_source(relative, source) || self.is_unwritable(relative))
    }

    /// Counts an archived source object, which is left out (`archived: skip`) or stops
    /// the sync at its plan.
    fn is_archived_source(&mut self, relative: &str, source: &ObjectInfo) -> bool {
        let Some(archive) = &source.archived else {
            return false;
        };
        self.counts.archived += 1;
        if self.archived_sources.len() < EXAMPLES {
            self.archived_sources
                .push((relative.to_string(), archive.clone()));
        }
        true
    }

    /// Counts a source object whose target key S3 refuses: empty (a folder marker at
    /// the source prefix, mapped onto an empty target prefix) or over 1,024 bytes.
    fn is_unwritable(&mut self, relative: &str) -> bool {
        let length = self.target_prefix.len() + relative.len();
        if length > 0 && length <= MAX_KEY_BYTES {
            return false;
        }
        self.unwritable_count += 1;
        if self.unwritable.len() < EXAMPLES {
            let shown: String = relative.chars().take(60).collect();
            let cut = if shown.len() < relative.len() {
                "..."
            } else {
                ""
            };
            self.unwritable
                .push(format!("{shown:?}{cut} ({length} bytes)"));
        }
        true
    }

    /// An archived target object cannot be backed up before it is replaced: it stops the
    /// sync at its plan.
    fn is_archived_target(&mut self, relative: &str, existing: &ObjectInfo) -> bool {
        let Some(archive) = &existing.archived else {
            return false;
        };
        self.archived_target_count += 1;
        if self.archived_targets.len() < EXAMPLES {
            self.archived_targets
                .push((relative.to_string(), archive.clone()));
        }
        true
    }

    /// Fails, once every key is decided, when archived objects or keys S3 refuses stand
    /// in the way: before anything is written, never halfway.
    pub fn check_archived(&self) -> Result<()> {
        let named = |examples: &[(String, String)]| {
            examples
                .iter()
                .map(|(key, archive)| format!("{key:?} ({archive})"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if self.archived_target_count > 0 {
            bail!(
                "{} target objects this sync would overwrite or delete are archived, for example {}: they cannot be backed up for rollback until restored; restore them (aws s3api restore-object) or exclude their keys; nothing was written",
                self.archived_target_count,
                named(&self.archived_targets)
            );
        }
        if self.unwritable_count > 0 {
            bail!(
                "{} source objects would get a target key S3 cannot hold (empty, or longer than 1,024 bytes), for example {}: S3 would refuse them halfway through the sync; map them to another prefix or leave them out; nothing was written",
                self.unwritable_count,
                self.unwritable.join(", ")
            );
        }
        if self.archived == Archived::Fail && self.counts.archived > 0 {
            return Err(ArchivedSources {
                count: self.counts.archived,
                examples: named(&self.archived_sources),
            }
            .into());
        }
        Ok(())
    }

    /// Source and target both hold `relative`.
    fn both(
        &mut self,
        relative: &str,
        source: ObjectInfo,
        existing: ObjectInfo,
    ) -> Result<Option<Action>> {
        let key = format!("{}{relative}", self.target_prefix);
        // A key this resource wrote that someone changed since is theirs again.
        let ours = self.state.get(&key)?;
        let ours = match ours {
            Some(state) if state.changed_since(&existing) => {
                self.counts.changed_since += 1;
                None
            }
            ours => ours,
        };
        let same_content = source.size == existing.size
            && (source.etag == existing.etag
                || ours.as_ref().is_some_and(|s| {
                    s.written_etag.as_deref() == Some(existing.etag.as_str())
                        && s.source_etag == source.etag
                }));
        // A key this resource wrote is kept in step with the source whatever onConflict
        // says: onConflict is about objects that were there before.
        let mode = if ours.is_some() {
            OnConflict::SkipIdentical
        } else {
            self.on_conflict
        };
        let overwrite = match mode {
            OnConflict::SkipIdentical => !same_content,
            OnConflict::Skip => false,
            OnConflict::Overwrite => true,
        };
        if overwrite && self.is_archived_target(relative, &existing) {
            return Ok(None);
        }
        if overwrite {
            self.counts.copied += 1;
            self.counts.overwritten += 1;
            self.counts.bytes_copied += source.size;
            return Ok(Some(Action::Overwrite { source, existing }));
        }
        self.counts.skipped += 1;
        Ok(match ours {
            Some(s)
                if same_content && s.written_etag.as_deref() != Some(existing.etag.as_str()) =>
            {
                Some(Action::Adopt {
                    key,
                    etag: existing.etag,
                })
            }
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::records::ObjectState;
    use super::*;

    fn object(key: &str, etag: &str, size: u64) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size,
            etag: etag.into(),
            modified: 0,
            archived: None,
            checksum_algorithm: None,
        }
    }

    fn archived(key: &str, archive: &str) -> ObjectInfo {
        ObjectInfo {
            archived: Some(archive.into()),
            ..object(key, "\"e\"", 4)
        }
    }

    /// Key `k` on both sides, 3 bytes each, with these ETags.
    fn both_with(source_etag: &str, target_etag: &str) -> Entry {
        Entry::Both {
            source: object("s/k", source_etag, 3),
            target: object("t/k", target_etag, 3),
        }
    }

    /// A journal state in which this resource wrote `t/k` as `written`.
    fn state_of(written: ObjectState) -> ObjectStates {
        let state = ObjectStates::new().unwrap();
        state.insert_all([(&"t/k".to_string(), &written)]).unwrap();
        state
    }

    fn decider<'a>(
        filter: &'a KeyFilter,
        on_conflict: OnConflict,
        state: &'a ObjectStates,
    ) -> Decider<'a> {
        Decider::new(filter, on_conflict, true, "t/", state, Archived::Fail)
    }

    #[test]
    fn new_keys_are_created_and_excluded_keys_only_counted() {
        let filter = KeyFilter::new(&[], &["*.json".to_string()]).unwrap();
        let state = ObjectStates::new().unwrap();
        let mut d = decider(&filter, OnConflict::SkipIdentical, &state);
        let png = object("s/a.png", "\"e\"", 5);
        assert_eq!(
            d.decide("a.png", Entry::SourceOnly(png.clone())).unwrap(),
            Some(Action::Create(png))
        );
        assert_eq!(
            d.decide("a.json", Entry::SourceOnly(object("s/a.json", "\"e\"", 1)))
                .unwrap(),
            None
        );
        // An excluded target key is not extraneous: the filters protect it.
        assert_eq!(
            d.decide("b.json", Entry::TargetOnly(object("t/b.json", "\"e\"", 1)))
                .unwrap(),
            None
        );
        let extra = object("t/c.png", "\"e\"", 1);
        assert_eq!(
            d.decide("c.png", Entry::TargetOnly(extra.clone())).unwrap(),
            Some(Action::Delete(extra))
        );
        assert_eq!(
            (d.counts.scanned, d.counts.copied, d.counts.excluded),
            (2, 1, 1)
        );
        assert_eq!((d.counts.deleted, d.counts.bytes_copied), (1, 5));
    }

    #[test]
    fn on_conflict_decides_for_keys_that_were_there_before() {
        let filter = KeyFilter::default();
        let state = ObjectStates::new().unwrap();
        let source = object("s/k", "\"new\"", 3);
        let same = object("t/k", "\"new\"", 3);
        let other = object("t/k", "\"old\"", 3);
        let both = |target: &ObjectInfo| Entry::Both {
            source: source.clone(),
            target: target.clone(),
        };
        let overwrite = |existing: &ObjectInfo| {
            Some(Action::Overwrite {
                source: source.clone(),
                existing: existing.clone(),
            })
        };
        let cases = [
            (OnConflict::SkipIdentical, &same, None),
            (OnConflict::SkipIdentical, &other, overwrite(&other)),
            (OnConflict::Skip, &other, None),
            (OnConflict::Overwrite, &same, overwrite(&same)),
        ];
        for (policy, target, expected) in cases {
            let mut d = decider(&filter, policy, &state);
            assert_eq!(d.decide("k", both(target)).unwrap(), expected, "{policy:?}");
        }
    }

    #[test]
    fn keys_this_resource_wrote_follow_the_source_and_unconfirmed_writes_are_adopted() {
        let filter = KeyFilter::default();
        let state = state_of(ObjectState {
            source_etag: "\"src\"".into(),
            ..Default::default()
        });
        // `skip` does not protect a key this resource wrote: it follows the source.
        let mut d = decider(&filter, OnConflict::Skip, &state);
        assert!(matches!(
            d.decide("k", both_with("\"src2\"", "\"x\"")).unwrap(),
            Some(Action::Overwrite { .. })
        ));
        // A write that landed before a kill, never confirmed: adopted, not copied again.
        assert_eq!(
            d.decide("k", both_with("\"src\"", "\"src\"")).unwrap(),
            Some(Action::Adopt {
                key: "t/k".into(),
                etag: "\"src\"".into()
            })
        );
    }

    #[test]
    fn a_key_someone_changed_after_this_resource_wrote_it_is_theirs() {
        let filter = KeyFilter::default();
        let state = state_of(ObjectState {
            source_etag: "\"src\"".into(),
            written_etag: Some("\"w\"".into()),
            ..Default::default()
        });
        let edited = || both_with("\"src2\"", "\"prod-edit\"");
        let mut d = decider(&filter, OnConflict::Skip, &state);
        assert_eq!(
            d.decide("k", edited()).unwrap(),
            None,
            "skip leaves their edit"
        );
        assert_eq!((d.counts.skipped, d.counts.changed_since), (1, 1));
        let mut d = decider(&filter, OnConflict::SkipIdentical, &state);
        assert!(matches!(
            d.decide("k", edited()).unwrap(),
            Some(Action::Overwrite { .. })
        ));
        assert_eq!(d.counts.changed_since, 1);
        // Still what this resource wrote: it follows the source, whatever onConflict says.
        let mut d = decider(&filter, OnConflict::Skip, &state);
        assert!(matches!(
            d.decide("k", both_with("\"src2\"", "\"w\"")).unwrap(),
            Some(Action::Overwrite { .. })
        ));
        assert_eq!(d.counts.changed_since, 0);
    }

    #[test]
    fn archived_sources_fail_the_plan_or_are_left_out() {
        let filter = KeyFilter::default();
        let state = ObjectStates::new().unwrap();
        for policy in [Archived::Fail, Archived::Skip] {
            let mut d = decider(&filter, OnConflict::SkipIdentical, &state);
            d.archived = policy;
            assert_eq!(
                d.decide("a", Entry::SourceOnly(archived("s/a", "GLACIER")))
                    .unwrap(),
                None
            );
            let both = Entry::Both {
                source: archived("s/b", "DEEP_ARCHIVE"),
                target: object("t/b", "\"old\"", 1),
            };
            assert_eq!(
                d.decide("b", both).unwrap(),
                None,
                "the target keeps its object"
            );
            assert!(d
                .decide("c", Entry::SourceOnly(object("s/c", "\"e\"", 1)))
                .unwrap()
                .is_some());
            assert_eq!((d.counts.archived, d.counts.copied), (2, 1));
            let checked = d.check_archived();
            match policy {
                Archived::Skip => assert!(checked.is_ok()),
                Archived::Fail => {
                    let message = checked.unwrap_err().to_string();
                    assert!(
                        message.starts_with("2 source objects are archived"),
                        "{message}"
                    );
                    assert!(
                        message.contains("\"a\" (GLACIER), \"b\" (DEEP_ARCHIVE)"),
                        "{message}"
                    );
                    assert!(message.ends_with("nothing was written"), "{message}");
                }
            }
        }
    }

    #[test]
    fn archived_targets_to_replace_fail_the_plan_whatever_the_policy() {
        let filter = KeyFilter::default();
        let state = ObjectStates::new().unwrap();
        let mut d = decider(&filter, OnConflict::SkipIdentical, &state);
        d.archived = Archived::Skip;
        let both = Entry::Both {
            source: object("s/k", "\"new\"", 4),
            target: archived("t/k", "GLACIER"),
        };
        assert_eq!(d.decide("k", both).unwrap(), None);
        assert_eq!(
            d.decide("x", Entry::TargetOnly(archived("t/x", "GLACIER")))
                .unwrap(),
            None
        );
        // Identical content needs no backup, so an archived identical target is fine.
        let same = Entry::Both {
            source: object("s/y", "\"e\"", 4),
            target: archived("t/y", "GLACIER"),
        };
        assert_eq!(d.decide("y", same).unwrap(), None);
        assert_eq!(d.archived_target_count, 2);
        let message = d.check_archived().unwrap_err().to_string();
        assert!(
            message.contains("2 target objects this sync would overwrite or delete are archived"),
            "{message}"
        );
    }
}
