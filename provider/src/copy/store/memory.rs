//! An item store in memory, for tests: tables as DynamoDB keeps them (scan segments,
//! pages, unprocessed items), with faults to inject: writes that throttle, and a kill
//! after a given number of written items.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Result};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::WriteRequest;
use tokio::sync::Notify;

use super::{Condition, ItemStore, ScanPage, ScanRequest, TableShape};
use crate::copy::item::{item_to_json, Item};

#[derive(Debug, Default)]
pub(crate) struct MemoryItems {
    state: Mutex<State>,
    /// Told when a write reached the kill point: the run awaiting it is to be dropped.
    killed: Arc<Notify>,
}

#[derive(Debug, Default)]
struct State {
    tables: BTreeMap<String, MemoryTable>,
    faults: Faults,
    /// Puts and deletes applied so far, over all tables.
    written: u64,
    /// Items read so far, by table.
    reads: BTreeMap<String, Reads>,
}

/// Items a table has returned so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reads {
    pub scanned: u64,
    pub got: u64,
}

#[derive(Debug)]
struct MemoryTable {
    keys: Vec<String>,
    /// By the key's canonical form, so a page resumes after its last key.
    items: BTreeMap<String, Item>,
}

/// Faults the store injects into batch writes.
#[derive(Debug, Default, Clone)]
pub(crate) struct Faults {
    /// A batch write applies at most this many of its requests and leaves the rest
    /// unprocessed (throttling; 0: the table accepts no write).
    pub accepted_per_batch: Option<usize>,
    /// Once this many puts and deletes are applied, a write applies no more and never
    /// answers, as a killed process's last request: the test drops the run.
    pub kill_after_writes: Option<u64>,
    /// Once this many puts and deletes are applied, another writer deletes these items
    /// (by key) from the table written to, before the run's next write.
    pub deleted_by_others_after_writes: Option<(u64, Vec<Item>)>,
}

impl MemoryItems {
    pub(crate) fn new() -> Arc<MemoryItems> {
        Arc::new(MemoryItems::default())
    }

    pub(crate) fn create(&self, table: &str, keys: &[&str]) {
        self.lock().tables.insert(
            table.to_string(),
            MemoryTable {
                keys: keys.iter().map(|k| k.to_string()).collect(),
                items: BTreeMap::new(),
            },
        );
    }

    pub(crate) fn put(&self, table: &str, item: Item) {
        let mut state = self.lock();
        let table = state.tables.get_mut(table).expect("created");
        table.items.insert(key_text(&table.keys, &item), item);
    }

    /// Every item of `table`, by key.
    pub(crate) fn items(&self, table: &str) -> BTreeMap<String, Item> {
        self.lock().tables[table].items.clone()
    }

    pub(crate) fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// Puts and deletes applied so far.
    pub(crate) fn written(&self) -> u64 {
        self.lock().written
    }

    /// Items `table` has returned to scans and to gets so far.
    pub(crate) fn reads(&self, table: &str) -> Reads {
        self.lock().reads.get(table).copied().unwrap_or_default()
    }

    /// Resolves once a write reached the kill point.
    pub(crate) async fn killed(&self) {
        self.killed.notified().await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The canonical text of an item's key attributes.
fn key_text(keys: &[String], item: &Item) -> String {
    let key: Item = keys
        .iter()
        .filter_map(|k| Some((k.clone(), item.get(k)?.clone())))
        .collect();
    let sorted: BTreeMap<String, serde_json::Value> = item_to_json(&key).into_iter().collect();
    serde_json::to_string(&sorted).expect("json")
}

fn segment_of(key: &str, segments: i32) -> i32 {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % segments.max(1) as u64) as i32
}

#[async_trait]
impl ItemStore for MemoryItems {
    async fn describe(&self, table: &str) -> Result<Option<TableShape>> {
        Ok(self.lock().tables.get(table).map(|t| TableShape {
            keys: t.keys.clone(),
            key_schema: t.keys.join(", "),
            ttl_attribute: None,
            provisioned_writes: None,
            identity: Some(format!("memory:{table}")),
            index_keys: Vec::new(),
        }))
    }

    async fn table_names(&self) -> Result<Vec<String>> {
        Ok(self.lock().tables.keys().cloned().collect())
    }

    async fn scan_page(&self, table: &str, request: ScanRequest) -> Result<ScanPage> {
        let ScanRequest {
            segment,
            segments,
            limit,
            start,
        } = request;
        let mut state = self.lock();
        let name = table;
        let table = table_in(&state, name)?;
        let after = start.map(|key| key_text(&table.keys, &key));
        let mut items: Vec<(&String, &Item)> = table
            .items
            .iter()
            .filter(|(key, _)| after.as_ref().is_none_or(|after| *key > after))
            .filter(|(key, _)| segment_of(key, segments) == segment)
            .take(limit as usize + 1)
            .collect();
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next = match (more, items.last()) {
            (true, Some((_, item))) => Some(
                table
                    .keys
                    .iter()
                    .filter_map(|k| Some((k.clone(), item.get(k)?.clone())))
                    .collect(),
            ),
            _ => None,
        };
        let items: Vec<Item> = items.into_iter().map(|(_, item)| item.clone()).collect();
        state.reads.entry(name.to_string()).or_default().scanned += items.len() as u64;
        Ok(ScanPage { items, next })
    }

    async fn batch_get(&self, table: &str, keys: Vec<Item>) -> Result<(Vec<Item>, Vec<Item>)> {
        let mut state = self.lock();
        let name = table;
        let table = table_in(&state, name)?;
        let found: Vec<Item> = keys
            .iter()
            .filter_map(|key| table.items.get(&key_text(&table.keys, key)).cloned())
            .collect();
        state.reads.entry(name.to_string()).or_default().got += found.len() as u64;
        Ok((found, Vec::new()))
    }

    async fn batch_write(
        &self,
        table: &str,
        mut requests: Vec<WriteRequest>,
    ) -> Result<Vec<WriteRequest>> {
        {
            let mut state = self.lock();
            let faults = state.faults.clone();
            let keep = faults.accepted_per_batch.unwrap_or(usize::MAX);
            let unprocessed = requests.split_off(keep.min(requests.len()));
            let mut killed = false;
            for request in requests {
                if faults
                    .kill_after_writes
                    .is_some_and(|at| state.written >= at)
                {
                    killed = true;
                    break;
                }
                let others = match &state.faults.deleted_by_others_after_writes {
                    Some((at, _)) if state.written >= *at => {
                        state.faults.deleted_by_others_after_writes.take()
                    }
                    _ => None,
                };
                state.written += 1;
                let Some(table) = state.tables.get_mut(table) else {
                    bail!("ResourceNotFoundException: no table {table}");
                };
                for item in others.map(|(_, items)| items).unwrap_or_default() {
                    table.items.remove(&key_text(&table.keys, &item));
                }
                if let Some(put) = request.put_request() {
                    let item: Item = put.item().clone();
                    table.items.insert(key_text(&table.keys, &item), item);
                } else if let Some(delete) = request.delete_request() {
                    let key: &HashMap<_, _> = delete.key();
                    table.items.remove(&key_text(&table.keys, key));
                }
            }
            if !killed {
                return Ok(unprocessed);
            }
        }
        self.killed.notify_one();
        std::future::pending().await
    }

    async fn put_if(&self, table: &str, item: Item, condition: &Condition) -> Result<bool> {
        let mut state = self.lock();
        let Some((items, key)) = holding(&mut state, table, &item, condition)? else {
            return Ok(false);
        };
        items.insert(key, item);
        Ok(true)
    }

    async fn delete_if(&self, table: &str, key: Item, condition: &Condition) -> Result<bool> {
        let mut state = self.lock();
        let Some((items, key)) = holding(&mut state, table, &key, condition)? else {
            return Ok(false);
        };
        items.remove(&key);
        Ok(true)
    }
}

/// The table named `table`, as DynamoDB refuses a request to one that does not exist.
fn table_in<'a>(state: &'a State, table: &str) -> Result<&'a MemoryTable> {
    state
        .tables
        .get(table)
        .ok_or_else(|| anyhow!("ResourceNotFoundException: no table {table}"))
}

/// For a conditional write of the item under `key`'s key: the table's items and that
/// key's text when `condition` holds, None when it does not.
fn holding<'a>(
    state: &'a mut State,
    table: &str,
    key: &Item,
    condition: &Condition,
) -> Result<Option<(&'a mut BTreeMap<String, Item>, String)>> {
    let Some(table) = state.tables.get_mut(table) else {
        bail!("ResourceNotFoundException: no table {table}");
    };
    let key = key_text(&table.keys, key);
    Ok(holds(table.items.get(&key), condition).then_some((&mut table.items, key)))
}

/// Whether `condition` holds for `current`, the item under the key (None: none).
fn holds(current: Option<&Item>, condition: &Condition) -> bool {
    let text = |attribute: &str| current.and_then(|item| item.get(attribute)?.as_s().ok());
    match condition {
        Condition::AbsentOrBefore { attribute, value } => {
            text(attribute).is_none_or(|found| found < value)
        }
        Condition::Equals { attribute, value } => text(attribute) == Some(value),
    }
}
