//! Benchmark drivers run by `bench/compare.py` against the services of
//! `scripts/services.sh` (read from its environment: STACKMIGRATE_S3_A and _B, their
//! _KEY and _SECRET, STACKMIGRATE_DYNAMODB). Each prints one JSON line with the seconds of
//! the timed part.
//!
//!   stackmigrate-bench sync SOURCE_BUCKET TARGET_BUCKET
//!       BucketSync's engine without Pulumi: plan, journalled copies, verification.
//!   stackmigrate-bench s3-copy-ceiling SOURCE_BUCKET TARGET_BUCKET
//!       The server's copy ceiling: every object listed first (not timed), then only
//!       CopyObject calls, at each concurrency of a sweep (8 to 512 in flight, each
//!       into a prefix of its own); the best of the sweep, so no copy can beat it.
//!       `copies` says how many copies of the source the sweep left in the target.
//!   stackmigrate-bench s3-put-ceiling SOURCE_BUCKET TARGET_BUCKET
//!       The ceiling of a streamed copy into gateway "b": the sizes of the objects of
//!       SOURCE_BUCKET (gateway "a") listed first (not timed), then only uploads of as
//!       many bytes, held in memory, into TARGET_BUCKET on "b" (one PutObject up to
//!       8 MiB, else 8 MiB parts one after another, as a streamed copy sends them), at
//!       each concurrency of a sweep (1 to 32 objects in flight); the best of the sweep.
//!   stackmigrate-bench dynamo-write-ceiling SOURCE_TABLE TARGET_TABLE
//!       The table's write ceiling: every item read first (not timed), then only
//!       25-item BatchWriteItem calls, unprocessed items resent at once, at each
//!       concurrency of a sweep (4 to 128 batches in flight); the best of the sweep.
//!   stackmigrate-bench fill-table TABLE COUNT [FIRST]
//!       Writes COUNT Portfolio-shaped WORD items (about 200 bytes each, numbered from
//!       FIRST) into an existing table, generated as they are sent: the scale benchmark's
//!       source at ten million items without ten million items in memory.
//!   stackmigrate-bench fill-bucket BUCKET COUNT [FIRST]
//!       Puts COUNT small objects (256 bytes to 4 KiB) into an existing bucket.
//!   stackmigrate-bench spill-scale COUNT
//!       DynamoCopy's per-item bookkeeping at COUNT items without a server: the target
//!       index, the journal's keys, a lookup of each source item in both (100 at a time,
//!       as a copy decides), the written items and the verification's lookups, in the
//!       provider's own spill maps. Prints each phase's seconds and the peak RSS.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use aws_sdk_s3::config::RequestChecksumCalculation;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::json;
use stackmigrate::connection::{Connection, SideClients};
use stackmigrate::copy::filter::KeyFilter;
use stackmigrate::copy::journal::{Journal, Location};
use stackmigrate::copy::progress::Silent;
use stackmigrate::copy::s3::{self, Bucket, Buckets, Lister};
use stackmigrate::copy::spill::SpillMap;
use stackmigrate::copy::sync::{self, Archived, OnConflict, SyncSpec};

/// Objects filled at once.
const COPIES_IN_FLIGHT: usize = 128;
/// Batches filled at once (as many as DynamoCopy writes).
const WRITES_IN_FLIGHT: usize = 32;
/// The concurrencies a ceiling tries: the best of them is the ceiling.
const COPY_SWEEP: [usize; 5] = [8, 32, 128, 256, 512];
const WRITE_SWEEP: [usize; 6] = [4, 8, 16, 32, 64, 128];
const PUT_SWEEP: [usize; 4] = [1, 4, 8, 32];
/// The part size of a streamed copy, as the provider uploads it.
const PART_BYTES: u64 = 8 * 1024 * 1024;

/// The fastest run of a sweep, with every run's seconds by concurrency.
fn best_of(runs: Vec<(usize, f64)>) -> serde_json::Value {
    let (concurrency, seconds) = runs
        .iter()
        .copied()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or_default();
    let sweep: serde_json::Map<String, serde_json::Value> = runs
        .iter()
        .map(|(n, s)| (n.to_string(), json!(s)))
        .collect();
    json!({"seconds": seconds, "concurrency": concurrency, "sweep": sweep})
}

/// Between two runs of a sweep (not timed): what the last one wrote is flushed to disk
/// and the server left a moment, so that no run pays for the one before, as
/// `bench/compare.py` settles between tools.
async fn settle() -> Result<()> {
    let synced = tokio::process::Command::new("sync").status().await?;
    if !synced.success() {
        bail!("sync failed: {synced}");
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    Ok(())
}

fn env(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| {
        format!("{name} is not set: run under `eval \"$(scripts/services.sh start)\"`")
    })
}

/// S3 gateway "a" and DynamoDB Local, as scripts/services.sh started them.
fn clients() -> Result<SideClients> {
    gateway("source", "A")
}

/// S3 gateway `letter` ("A" or "B") and DynamoDB Local.
fn gateway(side: &'static str, letter: &str) -> Result<SideClients> {
    let s3 = format!("STACKMIGRATE_S3_{letter}");
    Ok(SideClients::new(
        side,
        Connection {
            region: Some("us-east-1".into()),
            s3_endpoint: Some(env(&s3)?),
            dynamodb_endpoint: Some(env("STACKMIGRATE_DYNAMODB")?),
            access_key_id: Some(env(&format!("{s3}_KEY"))?),
            secret_access_key: Some(env(&format!("{s3}_SECRET"))?),
            force_path_style: Some(true),
            ..Default::default()
        },
    ))
}

async fn bucket(clients: &SideClients, name: &str) -> Result<Bucket> {
    clients.bucket(name).await
}

async fn engine_sync(source: &str, target: &str) -> Result<serde_json::Value> {
    let clients = clients()?;
    let spec = SyncSpec {
        source: bucket(&clients, source).await?,
        source_prefix: String::new(),
        target: bucket(&clients, target).await?,
        target_prefix: String::new(),
        server_side: true,
        filter: KeyFilter::new(&[], &[])?,
        on_conflict: OnConflict::SkipIdentical,
        delete_extraneous: false,
        archived: Archived::Fail,
        write: Default::default(),
        verify_content: false,
    };
    let journal_dir = tempfile::tempdir()?;
    let started = Instant::now();
    let journal = Journal::open(
        &Location::File(journal_dir.path().to_path_buf()),
        &clients,
        "bench",
    )
    .await?;
    let counts = sync::run(&spec, &journal, &Silent, |_| Ok(())).await?;
    Ok(
        json!({"seconds": started.elapsed().as_secs_f64(), "objects": counts.copied, "bytes": counts.bytes_copied}),
    )
}

async fn s3_copy_ceiling(source: &str, target: &str) -> Result<serde_json::Value> {
    let clients = clients()?;
    let source = bucket(&clients, source).await?;
    let target = bucket(&clients, target).await?;
    let mut objects = Vec::new();
    let mut lister = Lister::new(&source, "");
    while let Some(object) = lister.next().await? {
        objects.push(object);
    }
    let count = objects.len();
    let bytes: u64 = objects.iter().map(|o| o.size).sum();
    let mut runs = Vec::new();
    for concurrency in COPY_SWEEP {
        let prefix = format!("sweep-{concurrency}/");
        let started = Instant::now();
        stream::iter(&objects)
            .map(|object| {
                let (source, target, key) = (&source, &target, format!("{prefix}{}", object.key));
                async move {
                    s3::server_side_copy(source, object, target, &key, &Default::default()).await
                }
            })
            .buffer_unordered(concurrency)
            .try_collect::<Vec<_>>()
            .await?;
        runs.push((concurrency, started.elapsed().as_secs_f64()));
        settle().await?;
    }
    let mut result = best_of(runs);
    result["objects"] = json!(count);
    result["bytes"] = json!(bytes);
    result["copies"] = json!(COPY_SWEEP.len());
    Ok(result)
}

async fn s3_put_ceiling(source: &str, target: &str) -> Result<serde_json::Value> {
    let source = bucket(&clients()?, source).await?;
    let mut sizes = Vec::new();
    let mut lister = Lister::new(&source, "");
    while let Some(object) = lister.next().await? {
        sizes.push(object.size);
    }
    // Nothing hashed on the way, neither a checksum nor SigV4's SHA-256 of the payload
    // (both are opted out below): the bound for any copy that proves what it sends.
    let client = gateway("target", "B")?.s3().await?;
    let client = aws_sdk_s3::Client::from_conf(
        client
            .config()
            .to_builder()
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .build(),
    );
    // Bytes that do not compress, the same in every part.
    let block: Vec<u8> = (0..PART_BYTES).map(|n| hash(n) as u8).collect();
    let mut runs = Vec::new();
    for concurrency in PUT_SWEEP {
        let started = Instant::now();
        stream::iter(sizes.iter().enumerate())
            .map(|(n, size)| {
                let key = format!("sweep-{concurrency}/{n:06}");
                upload(&client, target, key, *size, &block)
            })
            .buffer_unordered(concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        runs.push((concurrency, started.elapsed().as_secs_f64()));
        settle().await?;
    }
    let mut result = best_of(runs);
    result["objects"] = json!(sizes.len());
    result["bytes"] = json!(sizes.iter().sum::<u64>());
    result["copies"] = json!(PUT_SWEEP.len());
    Ok(result)
}

/// Uploads `size` bytes of `block`: one PutObject up to a part, else a multipart upload
/// whose parts go one after another.
async fn upload(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: String,
    size: u64,
    block: &[u8],
) -> Result<()> {
    let body = |len: u64| ByteStream::from(block[..len as usize].to_vec());
    if size <= PART_BYTES {
        client
            .put_object()
            .bucket(bucket)
            .key(&key)
            .body(body(size))
            .customize()
            .disable_payload_signing()
            .send()
            .await?;
        return Ok(());
    }
    let started = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(&key)
        .send()
        .await?;
    let id = started.upload_id().context("no upload id")?;
    let mut parts = Vec::new();
    let mut left = size;
    for number in 1.. {
        if left == 0 {
            break;
        }
        let len = left.min(PART_BYTES);
        let part = client
            .upload_part()
            .bucket(bucket)
            .key(&key)
            .upload_id(id)
            .part_number(number)
            .body(body(len))
            .customize()
            .disable_payload_signing()
            .send()
            .await?;
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(part.e_tag().map(str::to_owned))
                .build(),
        );
        left -= len;
    }
    client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(&key)
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await?;
    Ok(())
}

/// `sweep`: the concurrencies to try, WRITE_SWEEP when empty (a sweep at 1M items takes
/// most of an hour).
async fn dynamo_write_ceiling(
    source: &str,
    target: &str,
    sweep: &[usize],
) -> Result<serde_json::Value> {
    let client = clients()?.dynamodb().await?;
    const SEGMENTS: i32 = 8;
    let segments = (0..SEGMENTS).map(|segment| {
        let client = &client;
        async move {
            let mut items = Vec::new();
            let mut start_key = None;
            loop {
                let out = client
                    .scan()
                    .table_name(source)
                    .segment(segment)
                    .total_segments(SEGMENTS)
                    .set_exclusive_start_key(start_key.take())
                    .send()
                    .await?;
                items.extend(out.items().iter().cloned());
                start_key = out.last_evaluated_key().cloned();
                if start_key.is_none() {
                    return anyhow::Ok(items);
                }
            }
        }
    });
    let items: Vec<_> = futures::future::try_join_all(segments)
        .await?
        .into_iter()
        .flatten()
        .collect();
    let count = items.len();
    let batches = items
        .chunks(25)
        .map(|chunk| {
            chunk
                .iter()
                .map(|item| {
                    Ok(WriteRequest::builder()
                        .put_request(PutRequest::builder().set_item(Some(item.clone())).build()?)
                        .build())
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    let mut runs = Vec::new();
    let sweep = match sweep {
        [] => &WRITE_SWEEP[..],
        chosen => chosen,
    };
    for &concurrency in sweep {
        // The same items each time: from the second run on they replace themselves,
        // which costs DynamoDB as much as a new item.
        let started = Instant::now();
        let batches = stream::iter(batches.iter().cloned().map(Ok));
        write_batches(&client, target, batches, concurrency).await?;
        runs.push((concurrency, started.elapsed().as_secs_f64()));
        settle().await?;
    }
    let mut result = best_of(runs);
    result["items"] = json!(count);
    Ok(result)
}

/// Sends 25-item batches, `in_flight` at once, each batch's unprocessed items resent
/// at once.
async fn write_batches(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    batches: impl futures::Stream<Item = Result<Vec<WriteRequest>>>,
    in_flight: usize,
) -> Result<()> {
    batches
        .map_ok(|mut batch| async move {
            while !batch.is_empty() {
                let out = client
                    .batch_write_item()
                    .request_items(table, batch)
                    .send()
                    .await?;
                batch = out
                    .unprocessed_items()
                    .and_then(|u| u.get(table))
                    .cloned()
                    .unwrap_or_default();
            }
            anyhow::Ok(())
        })
        .try_buffer_unordered(in_flight)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Items of one image line: its words, as the OCR pipeline writes them (PORTFOLIO_DATA.md).
fn word_item(number: u64) -> HashMap<String, AttributeValue> {
    let image = number / 1000;
    let (line, word) = (number % 1000 / 20, number % 20);
    let s = |v: String| AttributeValue::S(v);
    HashMap::from([
        (
            "PK".to_string(),
            s(format!("IMAGE#{image:08x}-0000-4000-8000-{image:012x}")),
        ),
        (
            "SK".to_string(),
            s(format!("LINE#{line:05}#WORD#{word:05}")),
        ),
        ("TYPE".to_string(), s("WORD".to_string())),
        ("text".to_string(), s(format!("word{number}"))),
        (
            "cdn_s3_bucket".to_string(),
            s("raw-image-bucket-dev1234".to_string()),
        ),
        (
            "bounding_box".to_string(),
            AttributeValue::M(HashMap::from([
                (
                    "x".to_string(),
                    AttributeValue::N(format!("0.{:04}", number % 9973)),
                ),
                (
                    "y".to_string(),
                    AttributeValue::N(format!("0.{:04}", line * 37 % 9973)),
                ),
                ("width".to_string(), AttributeValue::N("0.0412".to_string())),
                (
                    "height".to_string(),
                    AttributeValue::N("0.0123".to_string()),
                ),
            ])),
        ),
    ])
}

async fn fill_table(table: &str, count: u64, first: u64) -> Result<serde_json::Value> {
    let client = clients()?.dynamodb().await?;
    let started = Instant::now();
    let batches = (first..first + count).step_by(25).map(|start| {
        (start..(start + 25).min(first + count))
            .map(|n| {
                Ok(WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(word_item(n))).build()?)
                    .build())
            })
            .collect::<Result<Vec<_>>>()
    });
    write_batches(&client, table, stream::iter(batches), WRITES_IN_FLIGHT).await?;
    Ok(json!({"seconds": started.elapsed().as_secs_f64(), "items": count}))
}

async fn fill_bucket(name: &str, count: u64, first: u64) -> Result<serde_json::Value> {
    let clients = clients()?;
    let target = bucket(&clients, name).await?;
    let started = Instant::now();
    stream::iter(first..first + count)
        .map(|n| {
            let target = &target;
            async move {
                let size = 256 + (n * 7919 % 3841) as usize;
                let body = format!("{n:016x}").repeat(size / 16 + 1).into_bytes();
                s3::put_bytes(
                    target,
                    &format!("images/{:03x}/{n:09}.png", n % 4096),
                    body[..size].to_vec(),
                )
                .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(COPIES_IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(json!({"seconds": started.elapsed().as_secs_f64(), "objects": count}))
}

/// Pseudo-random 128-bit hashes, the same for the same seed (SplitMix64, twice).
fn hash(seed: u64) -> u128 {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    };
    let a = mix(seed.wrapping_mul(0x9e3779b97f4a7c15));
    (u128::from(a) << 64) | u128::from(mix(a))
}

fn peak_rss_mib() -> Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM in /proc/self/status")?;
    let kib: f64 = line.split_whitespace().nth(1).context("VmHWM")?.parse()?;
    Ok(kib / 1024.0)
}

fn spill_scale(count: u64) -> Result<serde_json::Value> {
    const BATCH: u64 = 1000;
    let mut phases = serde_json::Map::new();
    let mut timed = |name: &str, work: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        let started = Instant::now();
        work()?;
        phases.insert(name.into(), json!(started.elapsed().as_secs_f64()));
        Ok(())
    };
    let batches = || {
        (0..count)
            .step_by(BATCH as usize)
            .map(|start| start..(start + BATCH).min(count))
    };
    let index: SpillMap<u128, u128> = SpillMap::new()?;
    let ours: SpillMap<u128, ()> = SpillMap::new()?;
    let written: SpillMap<u128, u128> = SpillMap::new()?;
    timed("index the target", &mut || {
        for batch in batches() {
            let entries: Vec<(u128, u128)> = batch.map(|n| (hash(n), hash(n + count))).collect();
            index.insert_all(entries.iter().map(|(k, v)| (k, v)))?;
        }
        Ok(())
    })?;
    timed("read the journal's keys", &mut || {
        for batch in batches() {
            let keys: Vec<u128> = batch.map(|n| hash(n + 2 * count)).collect();
            ours.insert_all(keys.iter().map(|k| (k, &())))?;
        }
        Ok(())
    })?;
    timed("decide each source item", &mut || {
        for batch in batches() {
            for chunk in batch.collect::<Vec<_>>().chunks(100) {
                let keys: Vec<u128> = chunk.iter().map(|n| hash(*n)).collect();
                index.get_all(&keys)?;
                ours.get_all(&keys)?;
            }
        }
        Ok(())
    })?;
    timed("record what was written", &mut || {
        for batch in batches() {
            let entries: Vec<(u128, u128)> = batch.map(|n| (hash(n), hash(n + count))).collect();
            written.insert_all(entries.iter().map(|(k, v)| (k, v)))?;
        }
        Ok(())
    })?;
    timed("verify against the target", &mut || {
        for batch in batches() {
            let keys: Vec<u128> = batch.map(hash).collect();
            written.get_all(&keys)?;
        }
        Ok(())
    })?;
    Ok(json!({"items": count, "seconds": phases, "peak_rss_mib": peak_rss_mib()?}))
}

fn first_number(rest: &[&str]) -> Result<u64> {
    Ok(rest.first().map(|f| f.parse()).transpose()?.unwrap_or(0))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["sync", source, target] => engine_sync(source, target).await?,
        ["s3-copy-ceiling", source, target] => s3_copy_ceiling(source, target).await?,
        ["s3-put-ceiling", source, target] => s3_put_ceiling(source, target).await?,
        ["dynamo-write-ceiling", source, target, ref sweep @ ..] => {
            let sweep = sweep
                .iter()
                .map(|n| n.parse())
                .collect::<Result<Vec<usize>, _>>()?;
            dynamo_write_ceiling(source, target, &sweep).await?
        }
        ["fill-table", table, count, ref first @ ..] => {
            fill_table(table, count.parse()?, first_number(first)?).await?
        }
        ["fill-bucket", name, count, ref first @ ..] => {
            fill_bucket(name, count.parse()?, first_number(first)?).await?
        }
        ["spill-scale", count] => spill_scale(count.parse()?)?,
        _ => bail!(
            "usage: stackmigrate-bench sync|s3-copy-ceiling|s3-put-ceiling SOURCE TARGET, \
             dynamo-write-ceiling SOURCE TARGET [CONCURRENCY...], \
             or fill-table TABLE COUNT [FIRST], fill-bucket BUCKET COUNT [FIRST], spill-scale COUNT (got {args:?})"
        ),
    };
    println!("{result}");
    Ok(())
}
