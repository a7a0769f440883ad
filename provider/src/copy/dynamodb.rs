//! DynamoDB building blocks, as `s3.rs` is for S3: describing a table, scanning one
//! segment a page at a time, batched reads and writes that retry what the service
//! leaves unprocessed, and a write-rate limit.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeValue, BillingMode, DeleteRequest, KeyType, KeysAndAttributes, PutRequest,
    TimeToLiveStatus, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use futures::stream::{self, StreamExt, TryStreamExt};
use tokio::time::Instant;

use super::aws_error;
use super::connection::Attempts;
use super::item::Item;

#[derive(Clone, Debug)]
pub struct Table {
    pub client: Client,
    pub name: String,
}

/// What a copy needs to know about a table.
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

/// Describes a table, or fails naming it, the endpoint, and the tables that do exist.
pub(crate) async fn describe(table: &Table, role: &str, endpoint: &str) -> Result<TableShape> {
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
    let description = out.table();
    let schema = description.map(|t| t.key_schema()).unwrap_or_default();
    let definitions = description
        .map(|t| t.attribute_definitions())
        .unwrap_or_default();
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
    let key_schema = keys
        .iter()
        .map(|(range, name)| {
            let kind = definitions
                .iter()
                .find(|d| d.attribute_name() == name)
                .map(|d| d.attribute_type().as_str())
                .unwrap_or("?");
            let role = if *range { "range" } else { "hash" };
            format!("{name} ({kind}, {role})")
        })
        .collect::<Vec<_>>()
        .join(", ");
    // An ARN alone repeats across local servers (their account is fixed), so the ID and
    // creation time come with it.
    let identity = description.and_then(|t| {
        Some(format!(
            "{} {} {:?}",
            t.table_arn()?,
            t.table_id().unwrap_or_default(),
            t.creation_date_time()
        ))
    });
    let provisioned_writes = description
        .filter(|t| {
            t.billing_mode_summary().and_then(|b| b.billing_mode())
                != Some(&BillingMode::PayPerRequest)
        })
        .and_then(|t| t.provisioned_throughput())
        .and_then(|p| p.write_capacity_units())
        .filter(|units| *units > 0);
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
        key_schema,
        ttl_attribute,
        provisioned_writes,
        identity,
    })
}

/// A pause before retrying: exponential, capped, with full jitter.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let cap = Duration::from_millis(50 * 2u64.pow(attempt.min(7))).min(Duration::from_secs(5));
    cap.mul_f64(fastrand::f64())
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
            Attempts::record_throttled_retry();
            attempt += 1;
            tokio::time::sleep(backoff(attempt)).await;
        }
    }
    Ok(found)
}

/// Writes requests in batches of 25, retrying unprocessed items with backoff.
pub(crate) async fn batch_write(
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
                    Attempts::record_throttled_retry();
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

pub(crate) fn put(item: Item) -> Result<WriteRequest> {
    Ok(WriteRequest::builder()
        .put_request(
            PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map_err(|e| anyhow!("{e}"))?,
        )
        .build())
}

pub(crate) fn delete(key: Item) -> Result<WriteRequest> {
    Ok(WriteRequest::builder()
        .delete_request(
            DeleteRequest::builder()
                .set_key(Some(key))
                .build()
                .map_err(|e| anyhow!("{e}"))?,
        )
        .build())
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

    pub async fn next(&mut self) -> Result<Option<Vec<HashMap<String, AttributeValue>>>> {
        let start = match self.next_key.take() {
            Some(None) => {
                self.next_key = Some(None);
                return Ok(None);
            }
            Some(Some(key)) => Some(key),
            None => None,
        };
        let out = self
            .table
            .client
            .scan()
            .table_name(&self.table.name)
            .segment(self.segment)
            .total_segments(self.segments)
            .consistent_read(true)
            .limit(SCAN_PAGE_ITEMS)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("scanning table {:?}", self.table.name))?;
        self.next_key = Some(out.last_evaluated_key.filter(|k| !k.is_empty()));
        Ok(Some(out.items.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_its_cap() {
        for attempt in 0..20 {
            assert!(backoff(attempt) <= Duration::from_secs(5));
        }
    }
}
