//! Mirror mode: the target is kept equal to the source group by group, a group being
//! the items under one partition key (for the real table, one image). A group's
//! fingerprint ignores rewritten bucket names and the attributes `setAttributes` sets,
//! so a group prod has not diverged from stays as it is (its own embedding status
//! kept); a changed group is replaced (its target items the source lacks deleted), a
//! new one added, one gone from the source deleted when deletes are allowed. Only
//! items of the selected types take part. Every side is held as hashes on disk.

use anyhow::{bail, Result};
use aws_sdk_dynamodb::types::AttributeValue;

use super::index::{digest_bits, key_hash, key_of, pair_hash, Index};
use super::records::ItemRecord;
use super::{now_epoch, type_of, CopyCounts, CopySpec};
use crate::copy::dynamodb::{self, batch_write, Pages, READ_BATCH};
use crate::copy::item::Item;
use crate::copy::journal::Journal;
use crate::copy::progress::Meter;
use crate::copy::spill::SpillMap;

/// Mirror mode's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mirror {
    /// Whether groups gone from the source may be deleted from the target.
    pub allow_deletes: bool,
}

/// Groups by what mirroring does to them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCounts {
    pub added: u64,
    pub replaced: u64,
    pub deleted: u64,
    pub unchanged: u64,
}

/// What mirroring does to a group that changes, as stored in the group map.
pub(super) const ADD: u128 = 1;
pub(super) const REPLACE: u128 = 2;
const DELETE: u128 = 3;

/// Both sides compared group by group, and what each changing group gets.
pub(super) struct Groups {
    /// Key hash -> group hash of the same items, for finding the ones to delete.
    target_items: SpillMap<u128, u128>,
    /// Key hashes of the source's selected items.
    source_keys: SpillMap<u128, u128>,
    /// Group hash -> ADD, REPLACE or DELETE; unchanged groups are absent.
    pub actions: SpillMap<u128, u128>,
    pub counts: GroupCounts,
    /// Target items the mirror deletes.
    pub deletes: u64,
    /// A few of the groups gone from the source, for messages.
    pub gone: Vec<String>,
}

/// Groups named in a message.
const GROUPS_SHOWN: usize = 5;

/// The hash of an item's group: its partition key's value.
pub(super) fn group_of(item: &Item, partition_key: &str) -> u128 {
    let key: Item = item
        .get(partition_key)
        .map(|value| (partition_key.to_string(), value.clone()))
        .into_iter()
        .collect();
    digest_bits(&key)
}

fn group_name(item: &Item, partition_key: &str) -> String {
    match item.get(partition_key) {
        Some(AttributeValue::S(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => "(no key)".to_string(),
    }
}

impl CopySpec {
    /// An item as a group's fingerprint sees it: bucket names rewritten (a target item
    /// too, should it still name a source bucket) and the attributes `setAttributes`
    /// sets for its type left out.
    fn normalized(&self, mut item: Item, type_name: &str) -> Item {
        self.rewriter
            .item(&mut item, &self.keys, &mut Default::default());
        for set in &self.set_attributes {
            if set.types.iter().any(|t| t == type_name) {
                item.remove(&set.attribute);
            }
        }
        item
    }
}

/// Adds an item's share to its group's fingerprint.
fn fold(current: Option<u128>, share: u128) -> u128 {
    current.unwrap_or(0).wrapping_add(share)
}

/// Scans both sides and decides every group; returns them with the index of the
/// target (key hash -> digest), by which each write is decided. Fails,
/// before anything is written, when groups are gone from the source and deletes are not
/// allowed.
pub(super) async fn compare(
    spec: &CopySpec,
    mirror: Mirror,
    scanned_target: &Meter<'_>,
    scanned_source: &Meter<'_>,
) -> Result<(Index, Groups)> {
    let partition_key = &spec.keys[0];
    let (target, target_items) = (Index::empty()?, SpillMap::new()?);
    let target_groups = SpillMap::<u128, u128>::new()?;
    let parts = (0..spec.segments).map(|segment| {
        let (target, target_items, target_groups) = (&target, &target_items, &target_groups);
        async move {
            let mut pages = Pages::new(&spec.target, segment, spec.segments);
            while let Some(page) = pages.next().await? {
                scanned_target.add(page.len() as u64, 0);
                let (mut indexed, mut entries) = (Vec::new(), Vec::new());
                for item in page {
                    let key = key_hash(&item, &spec.keys);
                    // Every item is indexed, so a write over one of another type still
                    // backs it up first; only the selected types make up the groups.
                    indexed.push((key, digest_bits(&item)));
                    let type_name = type_of(&item, &spec.type_attribute).to_string();
                    if !spec.selected(&type_name) {
                        continue;
                    }
                    let group = group_of(&item, partition_key);
                    let share = pair_hash(key, digest_bits(&spec.normalized(item, &type_name)));
                    entries.push((key, group, share));
                }
                target.0.insert_all(indexed.iter().map(|(k, d)| (k, d)))?;
                target_items.insert_all(entries.iter().map(|(k, g, _)| (k, g)))?;
                target_groups.update_all(entries.iter().map(|(_, g, s)| (*g, *s)), fold)?;
            }
            anyhow::Ok(())
        }
    });
    futures::future::try_join_all(parts).await?;

    let (source_keys, source_groups) = (SpillMap::new()?, SpillMap::<u128, u128>::new()?);
    let now = now_epoch();
    let parts = (0..spec.segments).map(|segment| {
        let (source_keys, source_groups) = (&source_keys, &source_groups);
        async move {
            let mut pages = Pages::new(&spec.source, segment, spec.segments);
            let mut ignored = CopyCounts::default();
            while let Some(page) = pages.next().await? {
                scanned_source.add(page.len() as u64, 0);
                let mut entries = Vec::new();
                for item in page {
                    let type_name = type_of(&item, &spec.type_attribute).to_string();
                    if !spec.selected(&type_name) || spec.expired(&item, now) {
                        continue;
                    }
                    let item = spec.transform(item, &type_name, &mut ignored);
                    let (key, group) =
                        (key_hash(&item, &spec.keys), group_of(&item, partition_key));
                    let share = pair_hash(key, digest_bits(&spec.normalized(item, &type_name)));
                    entries.push((key, group, share));
                }
                source_keys.insert_all(entries.iter().map(|(k, g, _)| (k, g)))?;
                source_groups.update_all(entries.iter().map(|(_, g, s)| (*g, *s)), fold)?;
            }
            anyhow::Ok(())
        }
    });
    futures::future::try_join_all(parts).await?;

    // Decide each group: a page of each map at a time.
    let actions = SpillMap::<u128, u128>::new()?;
    let mut counts = GroupCounts::default();
    let mut after = None;
    loop {
        let page = source_groups.page(after.as_ref(), 1000, false)?;
        let Some((last, _)) = page.last() else { break };
        after = Some(*last);
        let theirs = target_groups.get_all(page.iter().map(|(g, _)| g))?;
        let mut decided = Vec::new();
        for ((group, ours), theirs) in page.iter().zip(theirs) {
            match theirs {
                None => {
                    counts.added += 1;
                    decided.push((*group, ADD));
                }
                Some(theirs) if theirs == *ours => counts.unchanged += 1,
                Some(_) => {
                    counts.replaced += 1;
                    decided.push((*group, REPLACE));
                }
            }
        }
        actions.insert_all(decided.iter().map(|(g, a)| (g, a)))?;
    }
    let mut after = None;
    loop {
        let page = target_groups.page(after.as_ref(), 1000, false)?;
        let Some((last, _)) = page.last() else { break };
        after = Some(*last);
        let ours = source_groups.get_all(page.iter().map(|(g, _)| g))?;
        let gone: Vec<(u128, u128)> = page
            .iter()
            .zip(ours)
            .filter(|(_, ours)| ours.is_none())
            .map(|((group, _), _)| (*group, DELETE))
            .collect();
        counts.deleted += gone.len() as u64;
        actions.insert_all(gone.iter().map(|(g, a)| (g, a)))?;
    }
    let mut groups = Groups {
        target_items,
        source_keys,
        actions,
        counts,
        deletes: 0,
        gone: Vec::new(),
    };
    groups.deletes = groups.count_deletes()?;
    if counts.deleted > 0 {
        groups.gone = groups.gone_names(spec).await?;
    }
    if counts.deleted > 0 && !mirror.allow_deletes {
        bail!(
            "{} groups of the target are gone from the source, for example {}: mirroring deletes them, and allowDeletes is false; \
             set allowDeletes: true to delete them (destroy puts them back), or select fewer types; nothing was written",
            counts.deleted,
            groups.gone.join(", ")
        );
    }
    Ok((target, groups))
}

impl Groups {
    /// Whether the target item with key hash `key`, in a group given `action`, is deleted.
    fn deletes_item(&self, key: u128, action: Option<u128>) -> Result<bool> {
        Ok(match action {
            Some(DELETE) => true,
            Some(REPLACE) => !self.source_keys.contains(&key)?,
            _ => false,
        })
    }

    fn count_deletes(&self) -> Result<u64> {
        let mut deletes = 0;
        let mut after = None;
        loop {
            let page = self.target_items.page(after.as_ref(), 1000, false)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(*last);
            let actions = self.actions.get_all(page.iter().map(|(_, g)| g))?;
            for ((key, _), action) in page.iter().zip(actions) {
                deletes += u64::from(self.deletes_item(*key, action)?);
            }
        }
        Ok(deletes)
    }

    /// The partition key values of a few groups gone from the source, from the target's
    /// first pages.
    async fn gone_names(&self, spec: &CopySpec) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut pages = Pages::new(&spec.target, 0, 1);
        while let Some(page) = pages.next().await? {
            for item in page {
                let group = group_of(&item, &spec.keys[0]);
                let name = group_name(&item, &spec.keys[0]);
                if self.actions.get(&group)? == Some(DELETE) && !names.contains(&name) {
                    names.push(name);
                }
            }
            if names.len() >= GROUPS_SHOWN {
                break;
            }
        }
        names.truncate(GROUPS_SHOWN);
        Ok(names)
    }
}

/// What the mirror's deletions removed.
pub(super) struct Deleted {
    /// The key hashes deleted, for the verification.
    pub keys: SpillMap<u128, u128>,
    /// Groups gone from the source whose items were deleted: a group that another writer
    /// removed from the target meanwhile is not counted.
    pub groups: SpillMap<u128, u128>,
}

/// Deletes the target items the mirror removes, journalling each whole item first.
pub(super) async fn delete(
    spec: &CopySpec,
    groups: &Groups,
    journal: &Journal,
    meter: &Meter<'_>,
) -> Result<Deleted> {
    let deleted = Deleted {
        keys: SpillMap::new()?,
        groups: SpillMap::new()?,
    };
    let partition_key = &spec.keys[0];
    let parts = (0..spec.segments).map(|segment| {
        let deleted = &deleted;
        async move {
            let mut pages = Pages::new(&spec.target, segment, spec.segments);
            while let Some(page) = pages.next().await? {
                let mut doomed = Vec::new();
                for item in page {
                    if !spec.selected(type_of(&item, &spec.type_attribute)) {
                        continue;
                    }
                    let key = key_hash(&item, &spec.keys);
                    let group = group_of(&item, partition_key);
                    let action = groups.actions.get(&group)?;
                    if groups.deletes_item(key, action)? {
                        doomed.push((key, item, (action == Some(DELETE)).then_some(group)));
                    }
                }
                // Journalled a chunk at a time, as the copy's writes are.
                for chunk in doomed.chunks(READ_BATCH) {
                    let records: Vec<ItemRecord> = chunk
                        .iter()
                        .map(|(_, item, _)| ItemRecord::deleted(item, &spec.keys))
                        .collect();
                    journal.append(&records).await?;
                    let requests = chunk
                        .iter()
                        .map(|(_, item, _)| dynamodb::delete(key_of(item, &spec.keys)))
                        .collect::<Result<Vec<_>>>()?;
                    batch_write(&spec.target, requests, None).await?;
                    deleted
                        .keys
                        .insert_all(chunk.iter().map(|(key, _, _)| (key, key)))?;
                    let gone = chunk.iter().filter_map(|(_, _, group)| group.as_ref());
                    deleted
                        .groups
                        .insert_all(gone.map(|group| (group, group)))?;
                    meter.add(chunk.len() as u64, 0);
                }
            }
            anyhow::Ok(())
        }
    });
    futures::future::try_join_all(parts).await?;
    Ok(deleted)
}
