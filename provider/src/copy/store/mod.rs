//! The storage seam: what the engines ask of a table, with DynamoDB behind it in
//! production (`dynamodb`) and an in-memory table for tests (`memory`), which drive whole
//! runs (plans, copies, faults and kills at every write, rollbacks) in process.

pub(crate) mod dynamodb;
#[cfg(test)]
pub(crate) mod memory;

use anyhow::Result;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::WriteRequest;

use super::item::Item;

/// What a copy needs to know about a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableShape {
    /// Key attribute names, hash key first.
    pub keys: Vec<String>,
    /// The key schema for people: `PK (S, hash), SK (S, range)`.
    pub key_schema: String,
    pub ttl_attribute: Option<String>,
    /// Write capacity units of a provisioned table; None on demand.
    pub provisioned_writes: Option<i64>,
    /// What the service says this table is (its ARN, ID and creation time), whatever
    /// endpoint spelling or credentials reached it: two equal identities are one table.
    pub identity: Option<String>,
}

/// One page of a scan, and the key to start the next one after (None: the last page).
pub(crate) struct ScanPage {
    pub items: Vec<Item>,
    pub next: Option<Item>,
}

/// A DynamoDB-like item store: one request each, no retries of what it leaves
/// unprocessed (`copy::dynamodb` retries those, under the one retry policy).
#[async_trait]
pub(crate) trait ItemStore: Send + Sync + std::fmt::Debug {
    /// The table's shape, or None when there is no such table.
    async fn describe(&self, table: &str) -> Result<Option<TableShape>>;
    /// Some of the tables that exist, for a message naming them.
    async fn table_names(&self) -> Result<Vec<String>>;
    /// Up to `limit` items of segment `segment` of `segments`, strongly consistent,
    /// after `start`.
    async fn scan_page(
        &self,
        table: &str,
        segment: i32,
        segments: i32,
        limit: i32,
        start: Option<Item>,
    ) -> Result<ScanPage>;
    /// The items of `keys` that exist (strongly consistent), and the keys left
    /// unprocessed.
    async fn batch_get(&self, table: &str, keys: Vec<Item>) -> Result<(Vec<Item>, Vec<Item>)>;
    /// Applies up to 25 puts and deletes; returns those left unprocessed.
    async fn batch_write(
        &self,
        table: &str,
        requests: Vec<WriteRequest>,
    ) -> Result<Vec<WriteRequest>>;
}
