//! The table copy engine: a parallel scan of the source streamed through filter ->
//! transform -> compare with an index of the target -> journal -> batched writes, one
//! page per scan segment in memory, then a verification scan of the target. The target
//! index holds 32 bytes an item. Rollback replays the journal.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, KeyType, KeysAndAttributes, PutRequest, TimeToLiveStatus,
    WriteRequest,
};
use aws_sdk_dynamodb::Client;
use futures::stream::{self, StreamExt, TryStreamExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::aws_error;
use super::item::{digest, item_from_json, item_size, item_to_json, Item, Rewriter};
use super::journal::Journal;
use super::progress::{human_bytes, Meter, Progress};

/// What to do with an item whose key the target already has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ItemConflict {
    /// Leave the target's item as it is.
    #[default]
    Skip,
    /// Replace it; the old item is kept in the journal and restored by destroy.
    Overwrite,
    /// Stop at preview, naming the keys that exist.
    Fail,
}

/// Sets one attribute to a string on every item of the given types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetAttribute {
    /// Entity types (values of the type attribute) whose items get the attribute.
    pub types: Vec<String>,
    /// Attribute name, for example `embedding_status` or `GSI1PK`.
    pub attribute: String,
    /// String value to store, for example `NONE` or `EMBEDDING_STATUS#NONE`.
    pub value: String,
}

#[derive(Clone, Debug)]
pub struct Table {
    pub client: Client,
    pub name: String,
}

/// What the copy needs to know about the source table.
pub struct TableShape {
    /// Key attribute names, hash key first.
    pub keys: Vec<String>,
    pub ttl_attribute: Option<String>,
}

/// Describes a table, or fails naming it, the endpoint, and the tables that do exist.
pub async fn describe(table: &Table, role: &str, endpoint: &str) -> Result<TableShape> {
    let out = match table
        .client
        .describe_table()
        .table_name(&table.name)
        .send()
        .await
    {
        Ok(out) => out,
        Err(err)
            if err.as_service_error().and_then(|e| e.code())
                == Some("ResourceNotFoundException") =>
        {
            let names = table
                .client
                .list_tables()
                .limit(100)
                .send()
                .await
                .map(|o| o.table_names().join(", "))
                .unwrap_or_default();
            bail!(
                "{role} table {:?} does not exist at {endpoint}; tables there: {}",
                table.name,
                if names.is_empty() {
                    "(none)".into()
                } else {
                    names
                }
            );
        }
        Err(err) => {
            return Err(aws_error(err))
                .with_context(|| format!("describing {role} table {:?}", table.name))
        }
    };
    let schema = out.table().map(|t| t.key_schema()).unwrap_or_default();
    let mut keys: Vec<(bool, String)> = schema
        .iter()
        .map(|k| {
            (
                *k.key_type() != KeyType::Hash,
                k.attribute_name().to_string(),
            )
        })
        .collect();
    keys.sort();
    let ttl = table
        .client
        .describe_time_to_live()
        .table_name(&table.name)
        .send()
        .await
        .map_err(aws_error)
        .with_context(|| format!("reading the TTL setting of {role} table {:?}", table.name))?;
    let ttl_attribute = ttl
        .time_to_live_description()
        .filter(|d| {
            matches!(
                d.time_to_live_status(),
                Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
            )
        })
        .and_then(|d| d.attribute_name())
        .map(str::to_owned);
    Ok(TableShape {
        keys: keys.into_iter().map(|(_, name)| name).collect(),
        ttl_attribute,
    })
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
}

/// Counts for one entity type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypeCounts {
    /// Items written (new ones and overwrites).
    pub copied: u64,
    /// Items the target already had and that were left alone.
    pub skipped: u64,
    /// Of `copied`, items that replaced an existing one (a MODIFY event for the target's stream).
    pub overwritten: u64,
    /// Items left out by `includeTypes` / `excludeTypes`.
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
    pub by_type: BTreeMap<String, TypeCounts>,
    /// Every type seen in the source.
    pub types_present: BTreeSet<String>,
    /// Target keys that exist and `fail` forbids touching (a sample) and their number.
    pub conflicts: Vec<String>,
    pub conflict_count: u64,
    /// A sum over the items selected for copying of a hash of each one's key and
    /// transformed content: equal for equal sets, whatever the scan order.
    pub fingerprint: u128,
}

impl CopyCounts {
    fn merge(&mut self, other: CopyCounts) {
        self.scanned += other.scanned;
        self.copied += other.copied;
        self.skipped += other.skipped;
        self.overwritten += other.overwritten;
        self.filtered += other.filtered;
        self.expired += other.expired;
        self.bytes_copied += other.bytes_copied;
        for (name, counts) in other.by_type {
            let entry = self.by_type.entry(name).or_default();
            entry.copied += counts.copied;
            entry.skipped += counts.skipped;
            entry.overwritten += counts.overwritten;
            entry.filtered += counts.filtered;
            entry.expired += counts.expired;
        }
        self.types_present.extend(other.types_present);
        self.conflict_count += other.conflict_count;
        self.conflicts.extend(other.conflicts);
        self.conflicts.truncate(10);
        self.fingerprint = self.fingerprint.wrapping_add(other.fingerprint);
    }

    /// The counts of a plan in which every selected item is already in the target.
    fn all_present(mut self) -> Self {
        self.skipped += self.copied;
        self.copied = 0;
        self.bytes_copied = 0;
        for counts in self.by_type.values_mut() {
            counts.skipped += counts.copied;
            counts.copied = 0;
        }
        self
    }

    fn by(&mut self, type_name: &str) -> &mut TypeCounts {
        if !self.by_type.contains_key(type_name) {
            self.by_type
                .insert(type_name.to_string(), TypeCounts::default());
        }
        self.by_type.get_mut(type_name).expect("inserted")
    }

    pub fn summary(&self, done: bool) -> String {
        let copy = if done { "copied" } else { "to copy" };
        format!(
            "{} items ({}) {copy}, of which {} overwrite an existing item; {} skipped as existing; {} filtered by type; {} expired; {} scanned",
            self.copied,
            human_bytes(self.bytes_copied),
            self.overwritten,
            self.skipped,
            self.filtered,
            self.expired,
            self.scanned
        )
    }
}

/// One journal record: about to put `digest`'s item at `key`; `previous` is the item
/// that was there (None: none). Written before the put.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    key: Map<String, Value>,
    previous: Option<Map<String, Value>>,
    digest: String,
}

struct KeyState {
    key: Map<String, Value>,
    /// The item before this resource first wrote the key.
    previous: Option<Map<String, Value>>,
    digest: String,
}

type JournalState = HashMap<String, KeyState>;

/// The keys this resource has written (hashed, 16 bytes each): all a copy needs of the
/// journal. Rollback loads the full state instead.
async fn keys_written(journal: &Journal, keys: &[String]) -> Result<HashSet<u128>> {
    let mut records = Vec::new();
    journal
        .replay(|_, record: Record| records.push(record.key))
        .await?;
    records
        .iter()
        .map(|key| Ok(key_hash(&item_from_json(key)?, keys)))
        .collect()
}

async fn load_state(journal: &Journal) -> Result<JournalState> {
    let mut state = JournalState::new();
    journal
        .replay(|_, record: Record| {
            let id = key_id(&record.key);
            let entry = state.entry(id).or_insert_with(|| KeyState {
                key: record.key,
                previous: record.previous,
                digest: String::new(),
            });
            entry.digest = record.digest;
        })
        .await?;
    Ok(state)
}

/// A key as one string, the same for the same key whatever the attribute order.
fn key_id(key: &Map<String, Value>) -> String {
    let sorted: BTreeMap<&String, &Value> = key.iter().collect();
    serde_json::to_string(&sorted).expect("JSON serializes")
}

fn key_of(item: &Item, keys: &[String]) -> Item {
    keys.iter()
        .filter_map(|k| item.get(k).map(|v| (k.clone(), v.clone())))
        .collect()
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

/// A pause before retrying: exponential, capped, with full jitter.
fn backoff(attempt: u32) -> Duration {
    let cap = Duration::from_millis(50 * 2u64.pow(attempt.min(7))).min(Duration::from_secs(5));
    cap.mul_f64(fastrand::f64())
}

/// Spaces writes out to at most `rate` items per second across all tasks.
struct RateLimiter {
    per_item: Duration,
    next: tokio::sync::Mutex<Instant>,
}

impl RateLimiter {
    fn new(rate: f64) -> Self {
        RateLimiter {
            per_item: Duration::from_secs_f64(1.0 / rate),
            next: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    async fn acquire(&self, items: usize) {
        let start = {
            let mut next = self.next.lock().await;
            let start = (*next).max(Instant::now());
            *next = start + self.per_item * items as u32;
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

/// Items per journal segment and per BatchGetItem.
const CHUNK: usize = 100;
/// BatchWriteItem's limit.
const WRITE_BATCH: usize = 25;
/// Write batches in flight per scan segment.
const WRITES_IN_FLIGHT: usize = 4;

enum Mode<'a> {
    Plan,
    Run {
        journal: &'a Journal,
        meter: &'a Meter<'a>,
        limiter: Option<&'a RateLimiter>,
        /// Key hash -> digest of every item written, for the verification scan.
        written: &'a Mutex<HashMap<u128, u128>>,
    },
}

/// Reads `keys` from `table` with strongly consistent reads, retrying unprocessed keys.
async fn batch_get(table: &Table, keys: Vec<Item>) -> Result<Vec<Item>> {
    let mut found = Vec::new();
    let mut pending = keys;
    let mut attempt = 0;
    while !pending.is_empty() {
        let request = KeysAndAttributes::builder()
            .set_keys(Some(pending))
            .consistent_read(true)
            .build()
            .map_err(|e| anyhow!("{e}"))?;
        let out = table
            .client
            .batch_get_item()
            .request_items(&table.name, request)
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("reading items of table {:?}", table.name))?;
        found.extend(
            out.responses()
                .and_then(|r| r.get(&table.name))
                .into_iter()
                .flatten()
                .cloned(),
        );
        pending = out
            .unprocessed_keys()
            .and_then(|u| u.get(&table.name))
            .map(|k| k.keys().to_vec())
            .unwrap_or_default();
        if !pending.is_empty() {
            attempt += 1;
            tokio::time::sleep(backoff(attempt)).await;
        }
    }
    Ok(found)
}

/// Reads items back and indexes them by key id.
async fn read_items(
    table: &Table,
    keys: &[String],
    wanted: Vec<Item>,
) -> Result<HashMap<String, Item>> {
    let mut by_id = HashMap::new();
    for chunk in wanted.chunks(CHUNK) {
        for item in batch_get(table, chunk.to_vec()).await? {
            by_id.insert(key_id(&item_to_json(&key_of(&item, keys))), item);
        }
    }
    Ok(by_id)
}

/// Writes requests in batches of 25, retrying unprocessed items with backoff.
async fn batch_write(
    table: &Table,
    requests: Vec<WriteRequest>,
    limiter: Option<&RateLimiter>,
) -> Result<()> {
    let batches: Vec<Vec<WriteRequest>> = requests.chunks(WRITE_BATCH).map(<[_]>::to_vec).collect();
    stream::iter(batches)
        .map(|mut batch| async move {
            let mut attempt = 0;
            while !batch.is_empty() {
                if let Some(limiter) = limiter {
                    limiter.acquire(batch.len()).await;
                }
                let out = table
                    .client
                    .batch_write_item()
                    .request_items(&table.name, batch)
                    .send()
                    .await
                    .map_err(aws_error)
                    .with_context(|| format!("writing to table {:?}", table.name))?;
                batch = out
                    .unprocessed_items()
                    .and_then(|u| u.get(&table.name))
                    .cloned()
                    .unwrap_or_default();
                if !batch.is_empty() {
                    // The table is throttling: back off before the rest of this batch.
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
            anyhow::Ok(())
        })
        .buffer_unordered(WRITES_IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

fn put(item: Item) -> Result<WriteRequest> {
    Ok(WriteRequest::builder()
        .put_request(
            PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map_err(|e| anyhow!("{e}"))?,
        )
        .build())
}

fn delete(key: Item) -> Result<WriteRequest> {
    Ok(WriteRequest::builder()
        .delete_request(
            DeleteRequest::builder()
                .set_key(Some(key))
                .build()
                .map_err(|e| anyhow!("{e}"))?,
        )
        .build())
}

struct Candidate {
    type_name: String,
    item: Item,
    key: Item,
    hash: u128,
    digest: u128,
}

impl Candidate {
    /// The key as a string, for the journal and messages.
    fn id(&self) -> String {
        key_id(&item_to_json(&self.key))
    }
}

impl CopySpec {
    fn transform(&self, mut item: Item, type_name: &str) -> Item {
        if !self.rewriter.is_empty() {
            self.rewriter.item(&mut item, &self.keys);
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

/// What a table holds, as one consistent parallel scan saw it: key -> digest, 32 bytes
/// an item, so that comparing the source with the target costs one scan of each rather
/// than a read per source item.
#[derive(Default)]
struct Index(HashMap<u128, u128>);

impl Index {
    async fn of(table: &Table, keys: &[String], segments: i32) -> Result<Index> {
        let parts = (0..segments).map(|segment| async move {
            let mut part = HashMap::new();
            let mut pages = Pages::new(table, segment, segments);
            while let Some(page) = pages.next().await? {
                for item in page {
                    part.insert(key_hash(&item, keys), digest_bits(&item));
                }
            }
            anyhow::Ok(part)
        });
        let mut index = HashMap::new();
        for part in futures::future::try_join_all(parts).await? {
            index.extend(part);
        }
        Ok(Index(index))
    }
}

fn key_hash(item: &Item, keys: &[String]) -> u128 {
    digest_bits(&key_of(item, keys))
}

fn pair_hash(key_hash: u128, digest: u128) -> u128 {
    let mut hasher = Sha256::new();
    hasher.update(key_hash.to_be_bytes());
    hasher.update(digest.to_be_bytes());
    u128::from_be_bytes(hasher.finalize()[..16].try_into().expect("16 bytes"))
}

fn digest_bits(item: &Item) -> u128 {
    u128::from_str_radix(&digest(item), 16).expect("a digest is 32 hex digits")
}

/// One segment of a parallel scan, a page at a time, with strongly consistent reads.
struct Pages<'a> {
    table: &'a Table,
    segment: i32,
    segments: i32,
    start_key: Option<Item>,
    done: bool,
}

impl<'a> Pages<'a> {
    fn new(table: &'a Table, segment: i32, segments: i32) -> Self {
        Pages {
            table,
            segment,
            segments,
            start_key: None,
            done: false,
        }
    }

    async fn next(&mut self) -> Result<Option<Vec<Item>>> {
        if self.done {
            return Ok(None);
        }
        let out = self
            .table
            .client
            .scan()
            .table_name(&self.table.name)
            .segment(self.segment)
            .total_segments(self.segments)
            .consistent_read(true)
            .set_exclusive_start_key(self.start_key.take())
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("scanning table {:?}", self.table.name))?;
        self.start_key = out.last_evaluated_key().cloned();
        self.done = self.start_key.is_none();
        Ok(Some(out.items.unwrap_or_default()))
    }
}

/// The journal's note of the last verified copy: the fingerprint of what it selected.
const VERIFIED_NOTE: &str = "verified.json";

#[derive(Serialize, Deserialize)]
struct Verified {
    fingerprint: Option<String>,
}

async fn last_verified(journal: &Journal) -> Result<Option<u128>> {
    let Some(body) = journal.read_note(VERIFIED_NOTE).await? else {
        return Ok(None);
    };
    let note: Verified = serde_json::from_slice(&body).with_context(|| {
        format!(
            "{VERIFIED_NOTE} in the journal at {} is corrupt",
            journal.uri()
        )
    })?;
    Ok(note
        .fingerprint
        .and_then(|f| u128::from_str_radix(&f, 16).ok()))
}

async fn note_verified(journal: &Journal, fingerprint: Option<u128>) -> Result<()> {
    let note = Verified {
        fingerprint: fingerprint.map(|f| format!("{f:032x}")),
    };
    journal
        .write_note(VERIFIED_NOTE, serde_json::to_vec(&note)?)
        .await
}

/// Counts what a copy would do, writing nothing. When the source's selected items are
/// exactly those of the last verified copy (same fingerprint), the target is trusted to
/// still hold them and is not read: one scan of the source answers a no-change preview.
/// Changing `triggers` forces a full comparison.
pub async fn plan(spec: &CopySpec, journal: &Journal) -> Result<CopyCounts> {
    if let Some(verified) = last_verified(journal).await? {
        let source = walk(spec, &HashSet::new(), &Index::default(), None, &Mode::Plan).await?;
        if source.fingerprint == verified {
            return Ok(source.all_present());
        }
    }
    let ours = keys_written(journal, &spec.keys).await?;
    let target = Index::of(&spec.target, &spec.keys, spec.segments).await?;
    walk(spec, &ours, &target, None, &Mode::Plan).await
}

/// Copies, journalling before each write, then verifies every written item with one scan
/// of the target. The plan runs first: nothing is written unless it passes, and it gives
/// progress its totals. The target is compared as one scan saw it before the copy: an
/// item someone else creates under a copied key meanwhile is overwritten unjournalled,
/// as with BucketSync's listing.
pub async fn run(
    spec: &CopySpec,
    journal: &Journal,
    progress: &dyn Progress,
    check_plan: impl FnOnce(&CopyCounts) -> Result<()>,
) -> Result<CopyCounts> {
    let ours = keys_written(journal, &spec.keys).await?;
    let target = Index::of(&spec.target, &spec.keys, spec.segments).await?;
    let planned = walk(spec, &ours, &target, None, &Mode::Plan).await?;
    check_plan(&planned)?;
    note_verified(journal, None).await?;
    progress.info(&format!(
        "{} -> {}: {}",
        spec.source.name,
        spec.target.name,
        planned.summary(false)
    ));
    let meter = Meter::new(progress, "copied", planned.copied, planned.bytes_copied);
    let limiter = spec.max_write_rate.map(RateLimiter::new);
    let written = Mutex::new(HashMap::new());
    let mode = Mode::Run {
        journal,
        meter: &meter,
        limiter: limiter.as_ref(),
        written: &written,
    };
    let mut done = CopyCounts::default();
    for pass in 0..=spec.write_order.len() {
        done.merge(walk(spec, &ours, &target, Some(pass), &mode).await?);
    }
    // Types and scans are counted once per pass that saw them: take the plan's.
    done.scanned = planned.scanned;
    done.types_present = planned.types_present;
    progress.status(&meter.line());
    verify(spec, written.into_inner().expect("no writer panicked")).await?;
    note_verified(journal, Some(done.fingerprint)).await?;
    Ok(done)
}

/// Reads the target back (one scan) and checks every written item's digest.
async fn verify(spec: &CopySpec, written: HashMap<u128, u128>) -> Result<()> {
    if written.is_empty() {
        return Ok(());
    }
    let now = Index::of(&spec.target, &spec.keys, spec.segments).await?;
    let wrong: Vec<_> = written
        .iter()
        .filter(|(key, digest)| now.0.get(key) != Some(digest))
        .collect();
    if !wrong.is_empty() {
        bail!(
            "verification failed: {} of the {} items written to table {:?} do not read back as written; \
             `pulumi up` again rewrites them, `pulumi destroy` rolls the copy back",
            wrong.len(),
            written.len(),
            spec.target.name
        );
    }
    Ok(())
}

/// Scans the source in parallel segments; in `Run` mode writes the items of `pass`.
async fn walk(
    spec: &CopySpec,
    ours: &HashSet<u128>,
    target: &Index,
    pass: Option<usize>,
    mode: &Mode<'_>,
) -> Result<CopyCounts> {
    let segments: Vec<_> = (0..spec.segments)
        .map(|segment| scan_segment(spec, ours, target, pass, mode, segment))
        .collect();
    let mut totals = CopyCounts::default();
    for counts in futures::future::try_join_all(segments).await? {
        totals.merge(counts);
    }
    Ok(totals)
}

async fn scan_segment(
    spec: &CopySpec,
    ours: &HashSet<u128>,
    target: &Index,
    pass: Option<usize>,
    mode: &Mode<'_>,
    segment: i32,
) -> Result<CopyCounts> {
    let mut counts = CopyCounts::default();
    let now = now_epoch();
    let mut pages = Pages::new(&spec.source, segment, spec.segments);
    while let Some(page) = pages.next().await? {
        let mut candidates = Vec::new();
        for item in page {
            let type_name = type_of(&item, &spec.type_attribute).to_string();
            if pass.is_some_and(|p| spec.pass_of(&type_name) != p) {
                continue;
            }
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
            let item = spec.transform(item, &type_name);
            let key = key_of(&item, &spec.keys);
            let (hash, digest) = (digest_bits(&key), digest_bits(&item));
            counts.fingerprint = counts.fingerprint.wrapping_add(pair_hash(hash, digest));
            candidates.push(Candidate {
                type_name,
                hash,
                digest,
                item,
                key,
            });
        }
        for chunk in candidates.chunks(CHUNK) {
            decide_and_write(spec, ours, target, mode, chunk, &mut counts).await?;
        }
    }
    Ok(counts)
}

async fn decide_and_write(
    spec: &CopySpec,
    ours: &HashSet<u128>,
    target: &Index,
    mode: &Mode<'_>,
    chunk: &[Candidate],
    counts: &mut CopyCounts,
) -> Result<()> {
    let mut writes: Vec<&Candidate> = Vec::new();
    let mut overwrites = HashSet::new();
    for candidate in chunk {
        let write = match target.0.get(&candidate.hash) {
            None => true,
            Some(current) if *current == candidate.digest => false,
            // A key this resource wrote is kept in step with the source; `onConflict`
            // is about items that were there before.
            Some(_) if ours.contains(&candidate.hash) => true,
            Some(_) => match spec.on_conflict {
                ItemConflict::Skip => false,
                ItemConflict::Overwrite => true,
                ItemConflict::Fail => {
                    counts.conflict_count += 1;
                    if counts.conflicts.len() < 10 {
                        counts.conflicts.push(candidate.id());
                    }
                    false
                }
            },
        };
        if !write {
            counts.skipped += 1;
            counts.by(&candidate.type_name).skipped += 1;
            continue;
        }
        let size = item_size(&candidate.item);
        counts.copied += 1;
        counts.bytes_copied += size;
        counts.by(&candidate.type_name).copied += 1;
        if target.0.contains_key(&candidate.hash) {
            counts.overwritten += 1;
            counts.by(&candidate.type_name).overwritten += 1;
            overwrites.insert(candidate.hash);
        }
        writes.push(candidate);
    }
    let Mode::Run {
        journal,
        meter,
        limiter,
        written,
    } = mode
    else {
        return Ok(());
    };
    if writes.is_empty() {
        return Ok(());
    }
    // The journal keeps the first `previous` of a key, so only items overwritten for the
    // first time are read in full, just before they are replaced.
    let first_overwrites: Vec<Item> = writes
        .iter()
        .filter(|c| overwrites.contains(&c.hash) && !ours.contains(&c.hash))
        .map(|c| c.key.clone())
        .collect();
    let previous = read_items(&spec.target, &spec.keys, first_overwrites).await?;
    let records: Vec<Record> = writes
        .iter()
        .map(|candidate| Record {
            key: item_to_json(&candidate.key),
            previous: previous.get(&candidate.id()).map(item_to_json),
            digest: digest(&candidate.item),
        })
        .collect();
    journal.append(&records).await?;
    let requests = writes
        .iter()
        .map(|c| put(c.item.clone()))
        .collect::<Result<Vec<_>>>()?;
    batch_write(&spec.target, requests, *limiter).await?;
    written
        .lock()
        .expect("no writer panicked")
        .extend(writes.iter().map(|c| (c.hash, c.digest)));
    meter.add(
        writes.len() as u64,
        writes.iter().map(|c| item_size(&c.item)).sum(),
    );
    Ok(())
}

/// What rollback did.
#[derive(Debug, Default)]
pub struct RollbackReport {
    pub deleted: u64,
    pub restored: u64,
    /// Keys whose item someone else changed since the copy: left as they are.
    pub left_alone: Vec<String>,
}

/// Deletes the items this resource created and puts back those it overwrote, where the
/// target still holds what was written.
pub async fn rollback(
    target: &Table,
    keys: &[String],
    journal: &Journal,
    progress: &dyn Progress,
) -> Result<RollbackReport> {
    let state = load_state(journal).await?;
    let meter = Meter::new(progress, "rolled back", state.len() as u64, 0);
    let entries: Vec<(&String, &KeyState)> = state.iter().collect();
    let mut report = RollbackReport::default();
    for chunk in entries.chunks(CHUNK) {
        let wanted = chunk
            .iter()
            .map(|(_, s)| item_from_json(&s.key))
            .collect::<Result<Vec<_>>>()?;
        let current = read_items(target, keys, wanted).await?;
        let mut requests = Vec::new();
        for (id, entry) in chunk {
            let now = current.get(*id);
            let previous = entry.previous.as_ref().map(item_from_json).transpose()?;
            match now {
                Some(item) if digest(item) == entry.digest => match previous {
                    Some(previous) => {
                        requests.push(put(previous)?);
                        report.restored += 1;
                    }
                    None => {
                        requests.push(delete(item_from_json(&entry.key)?)?);
                        report.deleted += 1;
                    }
                },
                // Killed before the write landed: the key holds what it held before.
                None if previous.is_none() => {}
                Some(item) if previous.as_ref().is_some_and(|p| digest(p) == digest(item)) => {}
                _ => report.left_alone.push((*id).clone()),
            }
        }
        batch_write(target, requests, None).await?;
        meter.add(chunk.len() as u64, 0);
    }
    report.left_alone.sort();
    journal.clear().await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_ignore_attribute_order() {
        let a: Item = [
            ("PK".into(), AttributeValue::S("a".into())),
            ("SK".into(), AttributeValue::S("b".into())),
        ]
        .into();
        let mut b = Map::new();
        b.insert(
            "SK".into(),
            crate::copy::item::to_json(&AttributeValue::S("b".into())),
        );
        b.insert(
            "PK".into(),
            crate::copy::item::to_json(&AttributeValue::S("a".into())),
        );
        assert_eq!(key_id(&item_to_json(&a)), key_id(&b));
    }

    #[test]
    fn backoff_stays_under_its_cap() {
        for attempt in 0..20 {
            assert!(backoff(attempt) <= Duration::from_secs(5));
        }
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

    fn counts_of(items: &[(&str, &str)]) -> CopyCounts {
        let mut counts = CopyCounts::default();
        for (key, content) in items {
            let item: Item = [("PK".to_string(), AttributeValue::S(key.to_string()))].into();
            let mut full = item.clone();
            full.insert("v".into(), AttributeValue::S(content.to_string()));
            let part = CopyCounts {
                fingerprint: pair_hash(digest_bits(&item), digest_bits(&full)),
                ..Default::default()
            };
            counts.merge(part);
        }
        counts
    }

    #[test]
    fn fingerprints_ignore_order_and_see_any_changed_item() {
        let same = counts_of(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let shuffled = counts_of(&[("c", "3"), ("a", "1"), ("b", "2")]);
        assert_eq!(same.fingerprint, shuffled.fingerprint);
        for other in [
            counts_of(&[("a", "1"), ("b", "2"), ("c", "4")]),
            counts_of(&[("a", "1"), ("b", "2")]),
            counts_of(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]),
            counts_of(&[("a", "2"), ("b", "1"), ("c", "3")]),
        ] {
            assert_ne!(same.fingerprint, other.fingerprint);
        }
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
