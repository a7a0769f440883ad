//! Table building blocks, as `copy::s3` is for buckets: describing a table, scanning one
//! segment a page at a time, batched reads and writes that retry what the store leaves
//! unprocessed, and a write-rate limit. The table itself is behind `copy::store`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use aws_sdk_dynamodb::types::{DeleteRequest, PutRequest, WriteRequest};
use futures::stream::{self, StreamExt, TryStreamExt};
use tokio::time::Instant;

use super::item::Item;
use super::retry;
pub(crate) use super::store::TableShape;
use super::store::{ItemStore, ScanPage, ScanRequest};

#[derive(Clone, Debug)]
pub struct Table {
    pub(crate) store: Arc<dyn ItemStore>,
    pub name: String,
}

/// Describes a table, or fails naming it, the endpoint, and the tables that do exist.
pub(crate) async fn describe(table: &Table, role: &str, endpoint: &str) -> Result<TableShape> {
    let shape = table
        .store
        .describe(&table.name)
        .await
        .with_context(|| format!("describing {role} table {:?} at {endpoint}", table.name))?;
    if let Some(shape) = shape {
        return Ok(shape);
    }
    let names = table.store.table_names().await.unwrap_or_default();
    bail!(
        "{role} table {:?} does not exist at {endpoint}; tables there: {}",
        table.name,
        if names.is_empty() {
            "(none)".into()
        } else {
            names.join(", ")
        }
    )
}

/// Spaces writes out to at most `rate` items per second across all tasks.
pub(crate) struct RateLimiter {
    per_item: Duration,
    next: tokio::sync::Mutex<Instant>,
}

impl RateLimiter {
    pub fn new(rate: f64) -> Self {
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

/// BatchGetItem's limit.
pub(crate) const READ_BATCH: usize = 100;
/// BatchWriteItem's limit.
const WRITE_BATCH: usize = 25;
/// Write batches in flight per call of `batch_write`.
const WRITES_IN_FLIGHT: usize = 4;

/// Reads `keys` (at most `READ_BATCH`) from `table` with strongly consistent reads,
/// retrying unprocessed keys.
pub(crate) async fn batch_get(table: &Table, keys: Vec<Item>) -> Result<Vec<Item>> {
    let pages = retry::until_processed(keys, |pending| table.store.batch_get(&table.name, pending))
        .await
        .with_context(|| format!("reading items of table {:?}", table.name))?;
    Ok(pages.into_iter().flatten().collect())
}

/// Writes requests in batches of 25, retrying unprocessed items with backoff.
pub(crate) async fn batch_write(
    table: &Table,
    requests: Vec<WriteRequest>,
    limiter: Option<&RateLimiter>,
) -> Result<()> {
    let batches: Vec<Vec<WriteRequest>> = requests.chunks(WRITE_BATCH).map(<[_]>::to_vec).collect();
    stream::iter(batches)
        .map(|batch| async move {
            retry::until_processed(batch, |pending| async move {
                if let Some(limiter) = limiter {
                    limiter.acquire(pending.len()).await;
                }
                Ok(((), table.store.batch_write(&table.name, pending).await?))
            })
            .await
            .with_context(|| format!("writing to table {:?}", table.name))
        })
        .buffer_unordered(WRITES_IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

pub(crate) fn put(item: Item) -> Result<WriteRequest> {
    let put = PutRequest::builder().set_item(Some(item)).build()?;
    Ok(WriteRequest::builder().put_request(put).build())
}

pub(crate) fn delete(key: Item) -> Result<WriteRequest> {
    let delete = DeleteRequest::builder().set_key(Some(key)).build()?;
    Ok(WriteRequest::builder().delete_request(delete).build())
}

/// Items per scan page. DynamoDB's own 1 MB page holds ten thousand small items, which
/// take about ten times their size in memory once decoded: a smaller page keeps the
/// segments' pages in flight to a few megabytes, at the same read capacity.
const SCAN_PAGE_ITEMS: i32 = 1000;

/// One segment of a parallel scan, a page at a time, with strongly consistent reads.
/// The next page is asked for only when the caller is done with the last, so a segment
/// holds one page in memory (the SDK's paginator reads one ahead).
pub(crate) struct Pages<'a> {
    table: &'a Table,
    segment: i32,
    segments: i32,
    /// None: the first page is still to be read; Some(None): the last page was read.
    next_key: Option<Option<Item>>,
}

impl<'a> Pages<'a> {
    pub fn new(table: &'a Table, segment: i32, segments: i32) -> Self {
        Pages {
            table,
            segment,
            segments,
            next_key: None,
        }
    }

    pub async fn next(&mut self) -> Result<Option<Vec<Item>>> {
        let start = match self.next_key.take() {
            Some(None) => {
                self.next_key = Some(None);
                return Ok(None);
            }
            Some(Some(key)) => Some(key),
            None => None,
        };
        let ScanPage { items, next } = self
            .table
            .store
            .scan_page(
                &self.table.name,
                ScanRequest {
                    segment: self.segment,
                    segments: self.segments,
                    limit: SCAN_PAGE_ITEMS,
                    start,
                },
            )
            .await?;
        self.next_key = Some(next);
        Ok(Some(items))
    }
}
