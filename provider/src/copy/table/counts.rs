//! What a table copy did, or in a plan would do: totals and counts per entity type.

use std::collections::{BTreeMap, BTreeSet};

use super::GroupCounts;
use crate::copy::progress::{copied_clause, in_words};

/// Counts for one entity type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeCounts {
    /// Items written (new ones and overwrites).
    pub copied: u64,
    /// Items the target already had and that were left alone.
    pub skipped: u64,
    /// Of `copied`, items that replaced an existing one.
    pub overwritten: u64,
    /// Items left out by the type filters.
    pub filtered: u64,
    /// Items not copied because their TTL has passed.
    pub expired: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyCounts {
    pub scanned: u64,
    pub copied: u64,
    pub skipped: u64,
    pub overwritten: u64,
    pub filtered: u64,
    pub expired: u64,
    pub bytes_copied: u64,
    /// Mirror mode: target items deleted (in a plan: to be), and the groups compared.
    pub deleted: u64,
    pub groups: GroupCounts,
    pub by_type: BTreeMap<String, TypeCounts>,
    /// Every type seen in the source.
    pub types_present: BTreeSet<String>,
    /// Target keys that exist and `fail` forbids touching (a sample) and their number.
    pub conflicts: Vec<String>,
    pub conflict_count: u64,
    /// Items that would be written larger than DynamoDB accepts (a sample of their
    /// keys) and their number.
    pub too_large: Vec<String>,
    pub too_large_count: u64,
    /// Keys this resource wrote whose item someone else changed since: treated as
    /// theirs (`onConflict` applies; an overwrite journals their item first).
    pub changed_since: u64,
    /// String values the rewrite changed (in a plan: would change), per name replaced.
    pub rewritten: BTreeMap<String, u64>,
    /// A sum over the items selected for copying of a hash of each one's key and
    /// transformed content: equal for equal sets, whatever the scan order.
    pub fingerprint: u128,
}

/// Conflicting keys named in a plan's error.
const CONFLICTS_SHOWN: usize = 10;

impl CopyCounts {
    pub(crate) fn merge(&mut self, other: CopyCounts) {
        self.scanned += other.scanned;
        self.copied += other.copied;
        self.skipped += other.skipped;
        self.overwritten += other.overwritten;
        self.filtered += other.filtered;
        self.expired += other.expired;
        self.bytes_copied += other.bytes_copied;
        self.deleted += other.deleted;
        self.changed_since += other.changed_since;
        for (name, counts) in other.by_type {
            let entry = self.by_type.entry(name).or_default();
            entry.copied += counts.copied;
            entry.skipped += counts.skipped;
            entry.overwritten += counts.overwritten;
            entry.filtered += counts.filtered;
            entry.expired += counts.expired;
        }
        self.types_present.extend(other.types_present);
        for (name, values) in other.rewritten {
            *self.rewritten.entry(name).or_default() += values;
        }
        self.conflict_count += other.conflict_count;
        self.conflicts.extend(other.conflicts);
        self.conflicts.truncate(CONFLICTS_SHOWN);
        self.too_large_count += other.too_large_count;
        self.too_large.extend(other.too_large);
        self.too_large.truncate(CONFLICTS_SHOWN);
        self.fingerprint = self.fingerprint.wrapping_add(other.fingerprint);
    }

    /// The counts of a plan in which every selected item is already in the target.
    pub(crate) fn all_present(mut self) -> Self {
        self.skipped += self.copied;
        self.copied = 0;
        self.bytes_copied = 0;
        for counts in self.by_type.values_mut() {
            counts.skipped += counts.copied;
            counts.copied = 0;
        }
        self
    }

    pub(crate) fn by(&mut self, type_name: &str) -> &mut TypeCounts {
        if !self.by_type.contains_key(type_name) {
            self.by_type
                .insert(type_name.to_string(), TypeCounts::default());
        }
        self.by_type.get_mut(type_name).expect("inserted")
    }

    pub(crate) fn conflict(&mut self, key: String) {
        self.conflict_count += 1;
        if self.conflicts.len() < CONFLICTS_SHOWN {
            self.conflicts.push(key);
        }
    }

    pub(crate) fn too_large(&mut self, key: String) {
        self.too_large_count += 1;
        if self.too_large.len() < CONFLICTS_SHOWN {
            self.too_large.push(key);
        }
    }

    pub fn summary(&self, done: bool) -> String {
        let copy = if done { "copied" } else { "to copy" };
        let changed = crate::copy::sync::changed_since_clause(self.changed_since);
        let delete = if done { "deleted" } else { "to delete" };
        let groups = self.groups;
        let mirrored: Vec<String> = [
            (groups.added, "added"),
            (groups.replaced, "replaced"),
            (groups.deleted, "deleted"),
            (groups.unchanged, "unchanged"),
        ]
        .iter()
        .filter(|(count, _)| *count > 0)
        .map(|(count, what)| format!("{count} {what}"))
        .collect();
        let copied = (self.copied, self.bytes_copied, self.overwritten);
        in_words(
            copied_clause(copied, "item", copy),
            &[
                (self.deleted, format!("{} items {delete}", self.deleted)),
                (
                    self.skipped,
                    format!("{} skipped as existing", self.skipped),
                ),
                (self.filtered, format!("{} filtered by type", self.filtered)),
                (self.expired, format!("{} expired", self.expired)),
                (
                    mirrored.len() as u64,
                    format!("groups: {}", mirrored.join(", ")),
                ),
            ],
            format!("{} scanned{changed}", self.scanned),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_leaves_out_what_is_zero() {
        let mirrored = CopyCounts {
            scanned: 9,
            copied: 3,
            bytes_copied: 300,
            deleted: 1,
            groups: GroupCounts {
                added: 1,
                unchanged: 2,
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            mirrored.summary(false),
            "3 items (300 B) to copy; 1 items to delete; groups: 1 added, 2 unchanged; 9 scanned"
        );
        let nothing = CopyCounts {
            scanned: 4,
            skipped: 4,
            ..Default::default()
        };
        assert_eq!(
            nothing.summary(true),
            "nothing copied; 4 skipped as existing; 4 scanned"
        );
    }

    #[test]
    fn counts_merge_by_type() {
        let mut a = CopyCounts::default();
        a.by("RECEIPT").copied = 2;
        let mut b = CopyCounts::default();
        b.by("RECEIPT").copied = 3;
        b.by("JOB").filtered = 1;
        b.filtered = 1;
        a.merge(b);
        assert_eq!(a.by_type["RECEIPT"].copied, 5);
        assert_eq!(a.by_type["JOB"].filtered, 1);
        assert_eq!(a.filtered, 1);
    }

    #[test]
    fn an_unchanged_source_plans_every_item_as_present() {
        let mut planned = CopyCounts {
            copied: 7,
            skipped: 1,
            bytes_copied: 700,
            ..Default::default()
        };
        planned.by("RECEIPT").copied = 7;
        let present = planned.all_present();
        assert_eq!(
            (present.copied, present.skipped, present.bytes_copied),
            (0, 8, 0)
        );
        assert_eq!(present.by_type["RECEIPT"].skipped, 7);
        assert_eq!(present.by_type["RECEIPT"].copied, 0);
    }
}
