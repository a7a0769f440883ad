//! What to do with each key the walk yields, as s5cmd's sync strategy decides it: the
//! filters, `onConflict`, `deleteExtraneous`, and what the journal says this resource
//! already wrote. Counts every decision. No I/O.

use super::records::JournalState;
use super::walk::Entry;
use super::{OnConflict, SyncCounts};
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
    pub state: &'a JournalState,
    pub counts: SyncCounts,
}

impl Decider<'_> {
    pub fn decide(&mut self, relative: &str, entry: Entry) -> Option<Action> {
        match entry {
            Entry::SourceOnly(source) => {
                self.counts.scanned += 1;
                if !self.filter.matches(relative) {
                    self.counts.excluded += 1;
                    return None;
                }
                self.counts.copied += 1;
                self.counts.bytes_copied += source.size;
                Some(Action::Create(source))
            }
            Entry::TargetOnly(existing) => {
                if !self.delete_extraneous || !self.filter.matches(relative) {
                    return None;
                }
                self.counts.deleted += 1;
                Some(Action::Delete(existing))
            }
            Entry::Both { source, target } => {
                self.counts.scanned += 1;
                if !self.filter.matches(relative) {
                    self.counts.excluded += 1;
                    return None;
                }
                self.both(relative, source, target)
            }
        }
    }

    /// Source and target both hold `relative`.
    fn both(&mut self, relative: &str, source: ObjectInfo, existing: ObjectInfo) -> Option<Action> {
        let key = format!("{}{relative}", self.target_prefix);
        let ours = self.state.get(&key);
        let same_content = source.size == existing.size
            && (source.etag == existing.etag
                || ours.is_some_and(|s| {
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
        if overwrite {
            self.counts.copied += 1;
            self.counts.overwritten += 1;
            self.counts.bytes_copied += source.size;
            return Some(Action::Overwrite { source, existing });
        }
        self.counts.skipped += 1;
        match ours {
            Some(s)
                if same_content && s.written_etag.as_deref() != Some(existing.etag.as_str()) =>
            {
                Some(Action::Adopt {
                    key,
                    etag: existing.etag,
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::records::KeyState;
    use super::*;

    fn object(key: &str, etag: &str, size: u64) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size,
            etag: etag.into(),
            modified: 0,
        }
    }

    fn decider<'a>(
        filter: &'a KeyFilter,
        on_conflict: OnConflict,
        state: &'a JournalState,
    ) -> Decider<'a> {
        Decider {
            filter,
            on_conflict,
            delete_extraneous: true,
            target_prefix: "t/",
            state,
            counts: SyncCounts::default(),
        }
    }

    #[test]
    fn new_keys_are_created_and_excluded_keys_only_counted() {
        let filter = KeyFilter::new(&[], &["*.json".to_string()]).unwrap();
        let state = JournalState::new();
        let mut d = decider(&filter, OnConflict::SkipIdentical, &state);
        let png = object("s/a.png", "\"e\"", 5);
        assert_eq!(
            d.decide("a.png", Entry::SourceOnly(png.clone())),
            Some(Action::Create(png))
        );
        assert_eq!(
            d.decide("a.json", Entry::SourceOnly(object("s/a.json", "\"e\"", 1))),
            None
        );
        // An excluded target key is not extraneous: the filters protect it.
        assert_eq!(
            d.decide("b.json", Entry::TargetOnly(object("t/b.json", "\"e\"", 1))),
            None
        );
        let extra = object("t/c.png", "\"e\"", 1);
        assert_eq!(
            d.decide("c.png", Entry::TargetOnly(extra.clone())),
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
        let state = JournalState::new();
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
            assert_eq!(d.decide("k", both(target)), expected, "{policy:?}");
        }
    }

    #[test]
    fn keys_this_resource_wrote_follow_the_source_and_unconfirmed_writes_are_adopted() {
        let filter = KeyFilter::default();
        let mut state = JournalState::new();
        state.insert(
            "t/k".into(),
            KeyState {
                source_etag: "\"src\"".into(),
                ..Default::default()
            },
        );
        // `skip` does not protect a key this resource wrote: it follows the source.
        let mut d = decider(&filter, OnConflict::Skip, &state);
        let changed = Entry::Both {
            source: object("s/k", "\"src2\"", 3),
            target: object("t/k", "\"x\"", 3),
        };
        assert!(matches!(
            d.decide("k", changed),
            Some(Action::Overwrite { .. })
        ));
        // A write that landed before a kill, never confirmed: adopted, not copied again.
        let landed = Entry::Both {
            source: object("s/k", "\"src\"", 3),
            target: object("t/k", "\"src\"", 3),
        };
        assert_eq!(
            d.decide("k", landed),
            Some(Action::Adopt {
                key: "t/k".into(),
                etag: "\"src\"".into()
            })
        );
    }
}
