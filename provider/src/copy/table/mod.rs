//! The table copy engine: a parallel scan of the source streamed through filter ->
//! transform -> compare with an index of the target, which queues the writes it decides
//! on disk; the run then replays them -> journal -> batched writes, one batch per scan
//! segment in memory, and verifies them (a scan of the target, or reads by key when few
//! of its items were written). The target index holds 32 bytes an item. Mirror mode
//! (`mirror`) compares group by group first and also deletes. Rollback replays the
//! journal.

mod counts;
#[cfg(test)]
mod engine_tests;
mod index;
mod mirror;
mod records;
mod rollback;

use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use aws_sdk_dynamodb::types::AttributeValue;

pub use counts::{CopyCounts, TypeCounts};
pub use mirror::{GroupCounts, Mirror};
pub use rollback::rollback;

use super::dynamodb::{self, batch_get, batch_write, Pages, RateLimiter, Table, READ_BATCH};
use super::item::{digest, item_from_json, item_size, item_to_json, Item};
use super::journal::Journal;
use super::progress::{Meter, Progress};
use super::rewrite::Rewriter;
use super::spill::{stored_as_json, SpillMap, SpillQueue};
use super::sync;
use index::{digest_bits, key_hash, key_of, pair_hash, Index};
use records::{key_id, keys_written, last_verified, note_verified, ItemRecord};

/// What to do with an item whose key the target already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemConflict {
    /// Leave the target's item as it is.
    Skip,
    /// Replace it; the old item is kept in the journal and put back by a rollback.
    Overwrite,
    /// Fail the plan, naming the keys that exist.
    Fail,
}

/// Sets one attribute to a string on every item of the given types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAttribute {
    /// Entity types (values of the type attribute) whose items get the attribute.
    pub types: Vec<String>,
    pub attribute: String,
    pub value: String,
}

pub struct CopySpec {
    pub source: Table,
    pub target: Table,
    pub keys: Vec<String>,
    pub type_attribute: String,
    /// None: every type.
    pub include: Option<HashSet<String>>,
    pub exclude: HashSet<String>,
    pub rewriter: Rewriter,
    pub set_attributes: Vec<SetAttribute>,
    pub on_conflict: ItemConflict,
    /// The source's TTL attribute when expired items are to be skipped.
    pub expire_by: Option<String>,
    pub write_order: Vec<String>,
    pub max_write_rate: Option<f64>,
    pub segments: i32,
    /// Mirror the source group by group (None: copy, never delete).
    pub mirror: Option<Mirror>,
}

impl CopySpec {
    fn transform(&self, mut item: Item, type_name: &str, counts: &mut CopyCounts) -> Item {
        if !self.rewriter.is_empty() {
            self.rewriter
                .item(&mut item, &self.keys, &mut counts.rewritten);
        }
        for set in &self.set_attributes {
            if set.types.iter().any(|t| t == type_name) {
                item.insert(set.attribute.clone(), AttributeValue::S(set.value.clone()));
            }
        }
        item
    }

    fn selected(&self, type_name: &str) -> bool {
        self.include.as_ref().is_none_or(|i| i.contains(type_name))
            && !self.exclude.contains(type_name)
    }

    fn expired(&self, item: &Item, now: f64) -> bool {
        let Some(attribute) = &self.expire_by else {
            return false;
        };
        match item.get(attribute) {
            Some(AttributeValue::N(n)) => n.parse::<f64>().is_ok_and(|at| at > 0.0 && at < now),
            _ => false,
        }
    }

    /// Which write pass an item belongs to: its type's place in `writeOrder`, or last.
    fn pass_of(&self, type_name: &str) -> usize {
        self.write_order
            .iter()
            .position(|t| t == type_name)
            .unwrap_or(self.write_order.len())
    }
}

/// What happens to one selected source item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Write {
        overwrite: bool,
    },
    Skip,
    /// `onConflict: fail` and the key was there before this resource.
    Conflict,
}

/// Decides for one item from the target's digest under its key (None: absent), the
/// item's own digest, and the digest of what this resource last wrote there (None:
/// never).
fn decide(
    current: Option<u128>,
    digest: u128,
    written: Option<u128>,
    on_conflict: ItemConflict,
) -> Decision {
    match current {
        None => Decision::Write { overwrite: false },
        Some(current) if current == digest => Decision::Skip,
        // A key still holding what this resource wrote is kept in step with the source;
        // `onConflict` is about items that are someone else's: there before, or changed
        // since.
        Some(current) if written == Some(current) => Decision::Write { overwrite: true },
        Some(_) => match on_conflict {
            ItemConflict::Skip => Decision::Skip,
            ItemConflict::Overwrite => Decision::Write { overwrite: true },
            ItemConflict::Fail => Decision::Conflict,
        },
    }
}

fn type_of<'a>(item: &'a Item, attribute: &str) -> &'a str {
    match item.get(attribute) {
        Some(AttributeValue::S(s)) => s,
        _ => "(no type)",
    }
}

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Reads items back and indexes them by key id.
async fn read_items(
    table: &Table,
    keys: &[String],
    wanted: Vec<Item>,
) -> Result<HashMap<String, Item>> {
    let mut by_id = HashMap::new();
    for chunk in wanted.chunks(READ_BATCH) {
        for item in batch_get(table, chunk.to_vec()).await? {
            by_id.insert(key_id(&item_to_json(&key_of(&item, keys))), item);
        }
    }
    Ok(by_id)
}

/// A write the plan decided, queued for the run.
#[derive(serde::Serialize, serde::Deserialize)]
struct PlannedWrite {
    /// Its write-order pass.
    pass: usize,
    item: serde_json::Map<String, serde_json::Value>,
    hash: u128,
    digest: u128,
    /// It replaces an item that is someone else's (never written by this resource, or
    /// changed since): read in full just before it is replaced, for the journal.
    backup_first: bool,
}
stored_as_json!(PlannedWrite);

/// The writes a run's plan decided, a queue per scan segment, replayed in parallel.
type PlannedWrites = Vec<SpillQueue<PlannedWrite>>;

struct Candidate {
    type_name: String,
    item: Item,
    key: Item,
    hash: u128,
    digest: u128,
    /// The hash of its mirror group (its partition key).
    group: u128,
}

impl Candidate {
    /// The key as a string, for the journal and messages.
    fn id(&self) -> String {
        key_id(&item_to_json(&self.key))
    }
}

/// Counts what a copy would do, writing nothing. When the source's selected items are
/// exactly those of the last verified copy (same fingerprint), the target is trusted to
/// still hold them and is not read: one scan of the source answers a no-change preview.
/// `compare_target` (a refresh, or after one found drift), like a change of `triggers`,
/// forces the full comparison, which sees items lost from or changed in the target.
pub async fn plan(
    spec: &CopySpec,
    journal: &Journal,
    progress: &dyn Progress,
    compare_target: bool,
) -> Result<CopyCounts> {
    let trusted = if compare_target {
        None
    } else {
        last_verified(journal).await?
    };
    if let Some(verified) = trusted {
        let (none, empty) = (SpillMap::<u128, u128>::new()?, Index::empty()?);
        let scanned = scan_meter(progress, &spec.source);
        let source = Walk {
            spec,
            ours: &none,
            target: &empty,
            actions: None,
            scanned: &scanned,
            queues: None,
        }
        .walk()
        .await?;
        if source.fingerprint == verified {
            let present = source.all_present();
            say_planned(spec, &present, progress);
            return Ok(present);
        }
    }
    let counts = compare(spec, journal, progress, None).await?.planned;
    check_writable(&counts)?;
    let then = match spec.on_conflict {
        ItemConflict::Skip => sync::LEFT_AS_THEY_ARE,
        ItemConflict::Overwrite => sync::BACKED_UP_THEN_OVERWRITTEN,
        ItemConflict::Fail => "the copy stops at them",
    };
    sync::warn_changed_since(progress, "items", counts.changed_since, then);
    say_planned(spec, &counts, progress);
    Ok(counts)
}

/// What a copy would do, in words: the summary a run starts with, a line per type that
/// has items to copy, and the types left out.
fn say_planned(spec: &CopySpec, planned: &CopyCounts, progress: &dyn Progress) {
    progress.info(&planned_line(spec, planned));
    for (type_name, counts) in planned.by_type.iter().filter(|(_, c)| c.copied > 0) {
        let overwrite = match counts.overwritten {
            0 => String::new(),
            n => format!(", of which {n} overwrite an existing item"),
        };
        progress.info(&format!(
            "  {type_name}: {} to copy{overwrite}",
            counts.copied
        ));
    }
    let left_out: Vec<String> = planned
        .by_type
        .iter()
        .filter(|(_, counts)| counts.filtered > 0)
        .map(|(type_name, counts)| format!("{type_name} ({})", counts.filtered))
        .collect();
    if !left_out.is_empty() {
        progress.info(&format!("  left out by type: {}", left_out.join(", ")));
    }
}

fn planned_line(spec: &CopySpec, planned: &CopyCounts) -> String {
    format!(
        "{} -> {}: {}",
        spec.source.name,
        spec.target.name,
        planned.summary(false)
    )
}

/// DynamoDB's limit on an item's size, attribute names included.
const MAX_ITEM_BYTES: u64 = 400 * 1024;

/// Fails, before anything is written, when items would be written that DynamoDB
/// refuses: the copy would otherwise stop halfway.
fn check_writable(planned: &CopyCounts) -> Result<()> {
    if planned.too_large_count == 0 {
        return Ok(());
    }
    bail!(
        "{} items would be larger than DynamoDB's 400 KB item limit once transformed (bucket names rewritten, attributes set), for example {}: DynamoDB would refuse them halfway through the copy; nothing was written",
        planned.too_large_count,
        planned.too_large.join(", ")
    )
}

/// Counts items as a scan of `table` reads them.
fn scan_meter<'a>(progress: &'a dyn Progress, table: &Table) -> Meter<'a> {
    Meter::counting(progress, &format!("scanned table {}:", table.name))
}

/// What the full comparison found.
struct Compared {
    target: Index,
    /// Mirror mode's groups.
    groups: Option<mirror::Groups>,
    planned: CopyCounts,
}

/// The full comparison: the keys the journal says this resource wrote, an index of the
/// target (in mirror mode with both sides' groups), and the plan from a walk of the
/// source against them, which queues the writes it decides in `queues` when given.
async fn compare(
    spec: &CopySpec,
    journal: &Journal,
    progress: &dyn Progress,
    queues: Option<&PlannedWrites>,
) -> Result<Compared> {
    let ours = keys_written(journal, &spec.keys).await?;
    let scanned_target = scan_meter(progress, &spec.target);
    let (target, groups) = match spec.mirror {
        Some(mirror) => {
            let scanned_source = scan_meter(progress, &spec.source);
            let (target, groups) =
                mirror::compare(spec, mirror, &scanned_target, &scanned_source).await?;
            (target, Some(groups))
        }
        None => {
            let target = Index::of(&spec.target, &spec.keys, spec.segments, &scanned_target);
            (target.await?, None)
        }
    };
    let scanned = scan_meter(progress, &spec.source);
    let actions = groups.as_ref().map(|g| &g.actions);
    let mut planned = Walk {
        spec,
        ours: &ours,
        target: &target,
        actions,
        scanned: &scanned,
        queues,
    }
    .walk()
    .await?;
    if let Some(groups) = &groups {
        planned.groups = groups.counts;
        planned.deleted = groups.deletes;
    }
    Ok(Compared {
        target,
        groups,
        planned,
    })
}

/// Copies, journalling before each write, then verifies every written item. The plan
/// runs first and queues the writes it decides: nothing is written unless it passes, it
/// gives progress its totals, and the writes replay its queues rather than a second scan
/// of the source. The target is compared as one scan saw it before the copy: an item
/// someone else creates under a copied key meanwhile is overwritten unjournalled, as
/// with BucketSync's listing.
pub async fn run(
    spec: &CopySpec,
    journal: &Journal,
    progress: &dyn Progress,
    check_plan: impl FnOnce(&CopyCounts) -> Result<()>,
) -> Result<CopyCounts> {
    let queues: PlannedWrites = (0..spec.segments)
        .map(|_| SpillQueue::new())
        .collect::<Result<_>>()?;
    let Compared {
        target,
        groups,
        planned,
    } = compare(spec, journal, progress, Some(&queues)).await?;
    check_writable(&planned)?;
    check_plan(&planned)?;
    note_verified(journal, None).await?;
    progress.info(&planned_line(spec, &planned));
    let meter = Meter::new(progress, "copied", planned.copied, planned.bytes_copied);
    let limiter = spec.max_write_rate.map(RateLimiter::new);
    if let Some(rate) = spec.max_write_rate {
        progress.info(&format!("writing at most {rate} items per second"));
    }
    let writer = Writer {
        spec,
        journal,
        meter: &meter,
        limiter: limiter.as_ref(),
        written: SpillMap::new()?,
    };
    for pass in 0..=spec.write_order.len() {
        let replays = queues.iter().map(|queue| writer.replay(queue, pass));
        futures::future::try_join_all(replays)
            .await
            .with_context(|| format!("stopped having {}", meter.line()))?;
    }
    progress.status(&meter.line());
    // Every planned write is done: the run did what its plan counted.
    let mut done = planned;
    let deleted = match &groups {
        Some(groups) => {
            let meter = Meter::new(progress, "deleted", done.deleted, 0);
            let deleted = mirror::delete(spec, groups, journal, &meter).await?;
            progress.status(&meter.line());
            done.groups = groups.counts;
            done.groups.deleted = deleted.groups.len()?;
            done.deleted = deleted.keys.len()?;
            deleted.keys
        }
        None => SpillMap::new()?,
    };
    let items_after = target.0.len()? + done.copied - done.overwritten;
    let verify = Verify {
        spec,
        written: &writer.written,
        deleted: &deleted,
        scanned: &scan_meter(progress, &spec.target),
    };
    match deleted.len()? == 0 && writer.written.len()? * READ_BACK_BELOW <= items_after {
        true => verify.by_key(&queues).await?,
        false => verify.by_scan().await?,
    }
    note_verified(journal, Some(done.fingerprint)).await?;
    Ok(done)
}

/// Written items are read back by key when they are at most this fraction of the
/// target's (1/10), else by one scan of the target: a consistent scan reads several
/// small items per read unit where a get pays a unit per item, and on DynamoDB Local a
/// get costs about 1.7 times a scanned item's CPU.
const READ_BACK_BELOW: u64 = 10;

/// Writes the queued writes of a plan: journal first, then the batch.
struct Writer<'a> {
    spec: &'a CopySpec,
    journal: &'a Journal,
    meter: &'a Meter<'a>,
    limiter: Option<&'a RateLimiter>,
    /// Key hash -> digest of every item written, for the verification.
    written: SpillMap<u128, u128>,
}

impl Writer<'_> {
    /// Writes the items of `pass` in `queue`, a batch at a time.
    async fn replay(&self, queue: &SpillQueue<PlannedWrite>, pass: usize) -> Result<()> {
        let mut batch = Vec::new();
        for planned in queue.read()? {
            let planned = planned?;
            if planned.pass != pass {
                continue;
            }
            batch.push(planned);
            if batch.len() == READ_BATCH {
                self.write(std::mem::take(&mut batch)).await?;
            }
        }
        if !batch.is_empty() {
            self.write(batch).await?;
        }
        Ok(())
    }

    async fn write(&self, batch: Vec<PlannedWrite>) -> Result<()> {
        let Writer { spec, journal, .. } = self;
        let items = batch
            .iter()
            .map(|planned| item_from_json(&planned.item))
            .collect::<Result<Vec<Item>>>()?;
        let keys: Vec<Item> = items.iter().map(|item| key_of(item, &spec.keys)).collect();
        let first_overwrites = batch
            .iter()
            .zip(&keys)
            .filter(|(planned, _)| planned.backup_first)
            .map(|(_, key)| key.clone())
            .collect();
        let previous = read_items(&spec.target, &spec.keys, first_overwrites).await?;
        let records: Vec<ItemRecord> = items
            .iter()
            .zip(&keys)
            .map(|(item, key)| {
                let key = item_to_json(key);
                let before = previous.get(&key_id(&key)).map(item_to_json);
                ItemRecord::write(key, before, digest(item))
            })
            .collect();
        journal.append(&records).await?;
        let hashes: Vec<(u128, u128)> = batch.iter().map(|p| (p.hash, p.digest)).collect();
        let bytes = items.iter().map(item_size).sum();
        let requests = items
            .into_iter()
            .map(dynamodb::put)
            .collect::<Result<Vec<_>>>()?;
        batch_write(&spec.target, requests, self.limiter).await?;
        self.written
            .insert_all(hashes.iter().map(|(k, v)| (k, v)))?;
        self.meter.add(hashes.len() as u64, bytes);
        Ok(())
    }
}

/// Checks every written item's digest against the target, and that no deleted key
/// (`deleted`, key hashes) is there.
struct Verify<'a> {
    spec: &'a CopySpec,
    written: &'a SpillMap<u128, u128>,
    deleted: &'a SpillMap<u128, u128>,
    scanned: &'a Meter<'a>,
}

impl Verify<'_> {
    /// Reads the target back with one scan.
    async fn by_scan(&self) -> Result<()> {
        let Verify {
            spec,
            written,
            deleted,
            scanned,
        } = *self;
        if written.len()? == 0 && deleted.len()? == 0 {
            return Ok(());
        }
        let segments = (0..spec.segments).map(|segment| async move {
            let (mut matching, mut still_there) = (0u64, 0u64);
            let mut pages = Pages::new(&spec.target, segment, spec.segments);
            while let Some(page) = pages.next().await? {
                let hashes: Vec<u128> = page.iter().map(|i| key_hash(i, &spec.keys)).collect();
                matching += matching_digests(written, &hashes, &page)?;
                still_there += deleted.get_all(&hashes)?.iter().flatten().count() as u64;
                scanned.add(page.len() as u64, 0);
            }
            anyhow::Ok((matching, still_there))
        });
        let (matching, still_there) = futures::future::try_join_all(segments)
            .await?
            .into_iter()
            .fold((0, 0), |(m, s), (matching, still)| {
                (m + matching, s + still)
            });
        if still_there > 0 {
            bail!(
                "verification failed: {still_there} items deleted from table {:?} are there again (written by someone else meanwhile?); \
                 a new run compares again, a rollback puts back what was deleted",
                spec.target.name
            );
        }
        self.check(matching)
    }

    /// Reads the written items back by key (strongly consistent), the planned writes'
    /// queues naming them.
    async fn by_key(&self, queues: &PlannedWrites) -> Result<()> {
        let spec = self.spec;
        let reads = queues.iter().map(|queue| async move {
            let mut matching = 0u64;
            let mut planned = queue.read()?.peekable();
            while planned.peek().is_some() {
                let keys = planned
                    .by_ref()
                    .take(READ_BATCH)
                    .map(|write| Ok(key_of(&item_from_json(&write?.item)?, &spec.keys)))
                    .collect::<Result<Vec<Item>>>()?;
                let found = batch_get(&spec.target, keys).await?;
                let hashes: Vec<u128> = found.iter().map(|i| key_hash(i, &spec.keys)).collect();
                matching += matching_digests(self.written, &hashes, &found)?;
                self.scanned.add(found.len() as u64, 0);
            }
            anyhow::Ok(matching)
        });
        let matching = futures::future::try_join_all(reads)
            .await?
            .into_iter()
            .sum();
        self.check(matching)
    }

    fn check(&self, matching: u64) -> Result<()> {
        let expected = self.written.len()?;
        if matching < expected {
            bail!(
                "verification failed: {} of the {} items written to table {:?} do not read back as written; \
                 a new run rewrites them, a rollback undoes the copy",
                expected - matching,
                expected,
                self.spec.target.name
            );
        }
        Ok(())
    }
}

/// How many of `items` (whose key hashes are `hashes`) hold what was written under
/// their key.
fn matching_digests(
    written: &SpillMap<u128, u128>,
    hashes: &[u128],
    items: &[Item],
) -> Result<u64> {
    let wanted = written.get_all(hashes)?;
    Ok(items
        .iter()
        .zip(wanted)
        .filter(|(item, wanted)| *wanted == Some(digest_bits(item)))
        .count() as u64)
}

/// One walk of the source: what its items are compared with, and where the writes it
/// decides go.
#[derive(Clone, Copy)]
struct Walk<'a> {
    spec: &'a CopySpec,
    /// Digests of the items this resource wrote, by key hash (from the journal).
    ours: &'a SpillMap<u128, u128>,
    target: &'a Index,
    /// Mirror mode: what each changing group gets (an item of a group absent from it is
    /// left as it is).
    actions: Option<&'a SpillMap<u128, u128>>,
    scanned: &'a Meter<'a>,
    /// A run's: the writes decided, a queue per segment (None: a preview's walk).
    queues: Option<&'a PlannedWrites>,
}

impl Walk<'_> {
    /// Scans the source in parallel segments, counting what a run would do.
    async fn walk(self) -> Result<CopyCounts> {
        let segments: Vec<_> = (0..self.spec.segments)
            .map(|segment| self.scan_segment(segment))
            .collect();
        let mut totals = CopyCounts::default();
        for counts in futures::future::try_join_all(segments).await? {
            totals.merge(counts);
        }
        Ok(totals)
    }

    async fn scan_segment(self, segment: i32) -> Result<CopyCounts> {
        let spec = self.spec;
        let mut counts = CopyCounts::default();
        let now = now_epoch();
        let queue = self.queues.map(|queues| &queues[segment as usize]);
        let mut pages = Pages::new(&spec.source, segment, spec.segments);
        while let Some(page) = pages.next().await? {
            self.scanned.add(page.len() as u64, 0);
            let mut candidates = Vec::new();
            for item in page {
                let type_name = type_of(&item, &spec.type_attribute).to_string();
                counts.scanned += 1;
                counts.types_present.insert(type_name.clone());
                if !spec.selected(&type_name) {
                    counts.filtered += 1;
                    counts.by(&type_name).filtered += 1;
                    continue;
                }
                if spec.expired(&item, now) {
                    counts.expired += 1;
                    counts.by(&type_name).expired += 1;
                    continue;
                }
                let item = spec.transform(item, &type_name, &mut counts);
                let key = key_of(&item, &spec.keys);
                let (hash, digest) = (digest_bits(&key), digest_bits(&item));
                counts.fingerprint = counts.fingerprint.wrapping_add(pair_hash(hash, digest));
                candidates.push(Candidate {
                    type_name,
                    hash,
                    digest,
                    group: mirror::group_of(&item, &spec.keys[0]),
                    item,
                    key,
                });
            }
            for chunk in candidates.chunks(READ_BATCH) {
                self.decide(chunk, &mut counts, queue)?;
            }
        }
        Ok(counts)
    }

    fn decide(
        self,
        chunk: &[Candidate],
        counts: &mut CopyCounts,
        queue: Option<&SpillQueue<PlannedWrite>>,
    ) -> Result<()> {
        let Walk {
            spec,
            ours,
            target,
            actions,
            ..
        } = self;
        let hashes: Vec<&u128> = chunk.iter().map(|c| &c.hash).collect();
        let currents = target.0.get_all(hashes.iter().copied())?;
        let written_before = ours.get_all(hashes.iter().copied())?;
        // Mirror mode: an unchanged group is left as it is; a new or changed one is made
        // the source's, whatever `onConflict` says.
        let group_actions = match actions {
            Some(actions) => Some(actions.get_all(chunk.iter().map(|c| &c.group))?),
            None => None,
        };
        for (index, ((candidate, current), written)) in
            chunk.iter().zip(currents).zip(written_before).enumerate()
        {
            let changed_since = written.is_some() && current.is_some() && current != written;
            if changed_since && current != Some(candidate.digest) {
                counts.changed_since += 1;
            }
            let decision = match &group_actions {
                Some(actions) if actions[index].is_none() => Decision::Skip,
                Some(_) => decide(current, candidate.digest, written, ItemConflict::Overwrite),
                None => decide(current, candidate.digest, written, spec.on_conflict),
            };
            match decision {
                Decision::Write { .. } if item_size(&candidate.item) > MAX_ITEM_BYTES => {
                    counts.too_large(candidate.id());
                }
                Decision::Write { overwrite } => {
                    counts.copied += 1;
                    counts.bytes_copied += item_size(&candidate.item);
                    counts.by(&candidate.type_name).copied += 1;
                    if overwrite {
                        counts.overwritten += 1;
                        counts.by(&candidate.type_name).overwritten += 1;
                    }
                    if let Some(queue) = queue {
                        queue.push(&PlannedWrite {
                            pass: spec.pass_of(&candidate.type_name),
                            item: item_to_json(&candidate.item),
                            hash: candidate.hash,
                            digest: candidate.digest,
                            // The journal keeps the first `previous` of a key, so only
                            // items that are someone else's are read in full.
                            backup_first: overwrite && (written.is_none() || changed_since),
                        })?;
                    }
                }
                Decision::Conflict => {
                    counts.conflict(candidate.id());
                    counts.skipped += 1;
                    counts.by(&candidate.type_name).skipped += 1;
                }
                Decision::Skip => {
                    counts.skipped += 1;
                    counts.by(&candidate.type_name).skipped += 1;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_follow_on_conflict_for_keys_that_are_someone_elses() {
        use Decision::*;
        let absent = decide(None, 1, None, ItemConflict::Fail);
        assert_eq!(absent, Write { overwrite: false });
        assert_eq!(
            decide(None, 1, Some(3), ItemConflict::Skip),
            Write { overwrite: false },
            "an item of ours deleted since is copied again"
        );
        for policy in [
            ItemConflict::Skip,
            ItemConflict::Overwrite,
            ItemConflict::Fail,
        ] {
            assert_eq!(decide(Some(1), 1, None, policy), Skip, "equal: {policy:?}");
            assert_eq!(
                decide(Some(2), 1, Some(2), policy),
                Write { overwrite: true },
                "still ours: {policy:?}"
            );
        }
        // There before, or ours once and changed by someone since: `onConflict` decides.
        for written in [None, Some(3)] {
            assert_eq!(decide(Some(2), 1, written, ItemConflict::Skip), Skip);
            assert_eq!(
                decide(Some(2), 1, written, ItemConflict::Overwrite),
                Write { overwrite: true }
            );
            assert_eq!(decide(Some(2), 1, written, ItemConflict::Fail), Conflict);
        }
    }
}
