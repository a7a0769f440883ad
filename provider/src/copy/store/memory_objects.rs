//! An object store in memory, for tests: buckets as S3 keeps them (listing pages,
//! ETags as MD5s or MD5s of parts, whole-object checksums checked on receipt and kept,
//! multipart uploads, tags), with a kill after a given number of writes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Result};
use async_trait::async_trait;
use aws_sdk_s3::types::ChecksumAlgorithm;
use md5::{Digest, Md5};
use tokio::sync::Notify;

use super::{
    Body, BucketAccess, CopyLimits, CopySource, CopyTarget, Download, Head, ListPage, NewObject,
    ObjectAt, ObjectStore, Part, Upload,
};
use crate::copy::s3::{Headers, ObjectInfo, RunningChecksum, Version, Written};

/// Keys a listing page holds: small, so tests page.
const PAGE: usize = 7;

#[derive(Debug, Default)]
pub(crate) struct MemoryObjects {
    state: Mutex<State>,
    /// Told when a write reached the kill point: the run awaiting it is to be dropped.
    killed: Notify,
}

#[derive(Debug, Default)]
struct State {
    buckets: BTreeMap<String, BTreeMap<String, Stored>>,
    uploads: HashMap<String, Uploading>,
    next_upload: u64,
    kill: Option<Kill>,
    /// Writes (puts, copies, completed uploads, deletes) applied so far.
    writes: u64,
    /// S3's unless a test makes multipart copies of small objects.
    copy_limits: Option<CopyLimits>,
    /// Another writer's object, put in place as soon as a part of it has been copied.
    replace_after_part_copy: Option<(String, String, Vec<u8>)>,
    /// Objects encrypted with a key their writer provided (SSE-C): served only with it.
    customer_keyed: std::collections::HashSet<(String, String)>,
    /// Buckets of a service that keeps and reports no checksums (S3-compatible stores
    /// without the feature): writes there store none and answer none.
    checksumless: std::collections::HashSet<String>,
}

/// An object as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub bytes: Arc<Vec<u8>>,
    pub headers: Headers,
    pub etag: String,
    /// The whole object's checksum, None for a multipart upload without one.
    pub checksum: Option<(ChecksumAlgorithm, String)>,
}

impl Stored {
    /// An object written in one piece: its ETag its MD5, its checksum in `algorithm`
    /// or else CRC64NVME, which S3 keeps of every new object unless asked for another.
    fn new(bytes: Vec<u8>, headers: Headers, algorithm: Option<ChecksumAlgorithm>) -> Stored {
        let algorithm = algorithm.unwrap_or(ChecksumAlgorithm::Crc64Nvme);
        Stored {
            checksum: Some((algorithm.clone(), RunningChecksum::of(&algorithm, &bytes))),
            etag: md5_etag(&bytes),
            bytes: Arc::new(bytes),
            headers,
        }
    }

    /// What a write of this object answers (this store keeps no versions).
    fn written(&self, checksum: Option<String>) -> Written {
        Written {
            etag: self.etag.clone(),
            checksum,
            version: None,
        }
    }
}

/// A multipart upload under way.
#[derive(Debug)]
struct Uploading {
    headers: Headers,
    checksum: Option<ChecksumAlgorithm>,
    /// Each part's bytes and ETag.
    parts: BTreeMap<i32, (Vec<u8>, String)>,
}

/// Where a run is killed: at write `at` (counting from 0), which lands first when
/// `lands` (the request reached the store, its answer never came back).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Kill {
    pub at: u64,
    pub lands: bool,
}

fn md5_etag(bytes: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Md5::digest(bytes)))
}

fn info(key: &str, stored: &Stored) -> ObjectInfo {
    ObjectInfo {
        key: key.to_string(),
        size: stored.bytes.len() as u64,
        etag: stored.etag.clone(),
        modified: 0,
        archived: None,
        checksum_algorithm: stored
            .checksum
            .as_ref()
            .map(|(algorithm, _)| algorithm.as_str().to_string()),
    }
}

/// What HEAD or GET answers for `stored`: its tags counted, not given; its checksum
/// where `with_checksum` wants it.
fn head_of(
    key: &str,
    stored: &Stored,
    with_checksum: impl Fn(&(ChecksumAlgorithm, String)) -> bool,
) -> Head {
    Head {
        info: info(key, stored),
        headers: Headers {
            tagging: None,
            ..stored.headers.clone()
        },
        checksum: stored.checksum.clone().filter(|c| with_checksum(c)),
        tag_count: i32::from(stored.headers.tagging.is_some()),
    }
}

fn check(algorithm: &ChecksumAlgorithm, value: &str, bytes: &[u8]) -> Result<()> {
    let computed = RunningChecksum::of(algorithm, bytes);
    if computed != value {
        bail!(
            "BadDigest: the {} checksum {value} does not match the body's {computed}",
            algorithm.as_str()
        );
    }
    Ok(())
}

impl MemoryObjects {
    pub(crate) fn new() -> Arc<MemoryObjects> {
        Arc::new(MemoryObjects::default())
    }

    /// Another store holding the same buckets and objects (the bytes are shared).
    pub(crate) fn fork(&self) -> Arc<MemoryObjects> {
        let state = self.lock();
        Arc::new(MemoryObjects {
            state: Mutex::new(State {
                buckets: state.buckets.clone(),
                ..State::default()
            }),
            killed: Notify::new(),
        })
    }

    pub(crate) fn create(&self, bucket: &str) {
        self.lock()
            .buckets
            .insert(bucket.to_string(), BTreeMap::new());
    }

    /// Puts an object as another writer would (not counted as a write of the run).
    pub(crate) fn put_object(&self, bucket: &str, key: &str, bytes: &[u8], headers: Headers) {
        let stored = Stored::new(bytes.to_vec(), headers, None);
        self.lock()
            .buckets
            .get_mut(bucket)
            .expect("created")
            .insert(key.to_string(), stored);
    }

    /// Puts an object as a multipart upload without checksums leaves it: an ETag of
    /// part MD5s, no stored checksum (not counted as a write of the run).
    pub(crate) fn put_multipart_object(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let part = Md5::digest(bytes);
        let stored = Stored {
            checksum: None,
            etag: format!("\"{}-1\"", hex::encode(Md5::digest(part))),
            bytes: Arc::new(bytes.to_vec()),
            headers: Headers::default(),
        };
        self.lock()
            .buckets
            .get_mut(bucket)
            .expect("created")
            .insert(key.to_string(), stored);
    }

    /// Every object of `bucket`, by key.
    pub(crate) fn objects(&self, bucket: &str) -> BTreeMap<String, Stored> {
        self.lock().buckets[bucket].clone()
    }

    /// Server-side copies above `limits.single` go in parts of `limits.part`.
    pub(crate) fn set_copy_limits(&self, limits: CopyLimits) {
        self.lock().copy_limits = Some(limits);
    }

    /// Another writer replaces `bucket/key` with `bytes` right after a part of it is
    /// copied (once).
    pub(crate) fn replace_after_part_copy(&self, bucket: &str, key: &str, bytes: &[u8]) {
        self.lock().replace_after_part_copy =
            Some((bucket.to_string(), key.to_string(), bytes.to_vec()));
    }

    /// Marks `bucket/key` as written with a customer-provided key (SSE-C): reads of it
    /// fail, as S3's do without the key.
    pub(crate) fn encrypt_with_customer_key(&self, bucket: &str, key: &str) {
        self.lock()
            .customer_keyed
            .insert((bucket.to_string(), key.to_string()));
    }

    /// Writes into `bucket` keep and answer no checksums from now on.
    pub(crate) fn keep_no_checksums(&self, bucket: &str) {
        self.lock().checksumless.insert(bucket.to_string());
    }

    pub(crate) fn set_kill(&self, kill: Option<Kill>) {
        self.lock().kill = kill;
    }

    pub(crate) fn writes(&self) -> u64 {
        self.lock().writes
    }

    /// Resolves once a write reached the kill point.
    pub(crate) async fn killed(&self) {
        self.killed.notified().await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies one write, or, at the kill point, applies it when it lands and never
    /// answers.
    async fn write<T>(&self, apply: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let killed = {
            let mut state = self.lock();
            match state.kill {
                Some(kill) if state.writes >= kill.at => {
                    if kill.lands && state.writes == kill.at {
                        state.writes += 1;
                        apply(&mut state)?;
                    }
                    true
                }
                _ => {
                    state.writes += 1;
                    return apply(&mut state);
                }
            }
        };
        if killed {
            self.killed.notify_one();
        }
        std::future::pending().await
    }

    fn read(&self, at: ObjectAt<'_>) -> Result<Stored> {
        let state = self.lock();
        if state
            .customer_keyed
            .contains(&(at.bucket.to_string(), at.key.to_string()))
        {
            bail!("InvalidRequest: {at} is encrypted with a customer-provided key");
        }
        state
            .buckets
            .get(at.bucket)
            .ok_or_else(|| anyhow!("NoSuchBucket: {}", at.bucket))?
            .get(at.key)
            .cloned()
            .ok_or_else(|| anyhow!("NoSuchKey: {at}"))
    }

    /// Stores `stored` at `at` as one write; `checksum`: the one the write answers with.
    async fn store(
        &self,
        at: ObjectAt<'_>,
        stored: Stored,
        checksum: Option<String>,
    ) -> Result<Written> {
        let (stored, checksum) = match self.lock().checksumless.contains(at.bucket) {
            true => (
                Stored {
                    checksum: None,
                    ..stored
                },
                None,
            ),
            false => (stored, checksum),
        };
        let written = stored.written(checksum);
        self.write(|state| {
            bucket_mut(state, at.bucket)?.insert(at.key.to_string(), stored);
            Ok(written)
        })
        .await
    }
}

fn bucket_mut<'a>(state: &'a mut State, bucket: &str) -> Result<&'a mut BTreeMap<String, Stored>> {
    state
        .buckets
        .get_mut(bucket)
        .ok_or_else(|| anyhow!("NoSuchBucket: {bucket}"))
}

#[async_trait]
impl ObjectStore for MemoryObjects {
    async fn bucket_access(&self, bucket: &str) -> Result<BucketAccess> {
        Ok(match self.lock().buckets.contains_key(bucket) {
            true => BucketAccess::Exists,
            false => BucketAccess::Missing,
        })
    }

    async fn create_bucket(&self, bucket: &str, _region: Option<&str>) -> Result<()> {
        self.lock().buckets.entry(bucket.to_string()).or_default();
        Ok(())
    }

    async fn make_private(
        &self,
        _bucket: &str,
        _keep_days: i32,
    ) -> Vec<(&'static str, Result<()>)> {
        Vec::new()
    }

    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start: Option<String>,
    ) -> Result<ListPage> {
        let state = self.lock();
        let objects = state
            .buckets
            .get(bucket)
            .ok_or_else(|| anyhow!("NoSuchBucket: {bucket}"))?;
        let page: Vec<ObjectInfo> = objects
            .iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .filter(|(key, _)| start.as_ref().is_none_or(|after| *key > after))
            .take(PAGE + 1)
            .map(|(key, stored)| info(key, stored))
            .collect();
        let more = page.len() > PAGE;
        let objects: Vec<ObjectInfo> = page.into_iter().take(PAGE).collect();
        let next = more
            .then(|| objects.last().map(|o| o.key.clone()))
            .flatten();
        Ok(ListPage { objects, next })
    }

    async fn head(
        &self,
        at: ObjectAt<'_>,
        checksum: Option<&ChecksumAlgorithm>,
    ) -> Result<Option<Head>> {
        if self.needs_customer_key(at).await? {
            bail!("BadRequest: {at} needs its customer-provided key");
        }
        let Ok(stored) = self.read(at) else {
            return Ok(None);
        };
        let asked = |(algorithm, _): &(ChecksumAlgorithm, String)| Some(algorithm) == checksum;
        Ok(Some(head_of(at.key, &stored, asked)))
    }

    async fn needs_customer_key(&self, at: ObjectAt<'_>) -> Result<bool> {
        Ok(self
            .lock()
            .customer_keyed
            .contains(&(at.bucket.to_string(), at.key.to_string())))
    }

    async fn tagging(&self, at: ObjectAt<'_>) -> Result<Option<String>> {
        Ok(self.read(at)?.headers.tagging)
    }

    async fn get(&self, at: ObjectAt<'_>, range: Option<(u64, u64)>) -> Result<Download> {
        let stored = self.read(at)?;
        let bytes = match range {
            Some((start, end)) => {
                let end = (end as usize).min(stored.bytes.len());
                stored.bytes[(start as usize).min(end)..end].to_vec()
            }
            None => stored.bytes.to_vec(),
        };
        Ok(Download {
            // A range cannot be checked against the whole object's checksum.
            head: head_of(at.key, &stored, |_| range.is_none()),
            body: Box::new(std::io::Cursor::new(bytes)),
        })
    }

    async fn put(&self, at: ObjectAt<'_>, body: Body<'_>, new: NewObject<'_>) -> Result<Written> {
        if let Some((algorithm, value)) = body.checksum {
            check(algorithm, value, &body.bytes)?;
        }
        let algorithm = body.checksum.map(|(a, _)| a.clone());
        let stored = Stored::new(body.bytes, new.headers.clone(), algorithm);
        // The checksum is answered only when one was sent.
        let checksum = body.checksum.and(stored.checksum.clone()).map(|(_, v)| v);
        self.store(at, stored, checksum).await
    }

    async fn put_if(
        &self,
        at: ObjectAt<'_>,
        bytes: Vec<u8>,
        current: Option<&str>,
    ) -> Result<Option<Written>> {
        let stored = Stored::new(bytes, Headers::default(), None);
        self.write(|state| {
            let objects = bucket_mut(state, at.bucket)?;
            if objects.get(at.key).map(|o| o.etag.as_str()) != current {
                return Ok(None);
            }
            let written = stored.written(None);
            objects.insert(at.key.to_string(), stored);
            Ok(Some(written))
        })
        .await
    }

    fn copy_limits(&self) -> CopyLimits {
        self.lock().copy_limits.unwrap_or(CopyLimits::S3)
    }

    async fn copy(&self, from: &CopySource<'_>, to: &CopyTarget<'_>) -> Result<Written> {
        let algorithm = to.algorithm;
        let source = self.read(from.object)?;
        let checksum = RunningChecksum::of(algorithm, &source.bytes);
        // A copy is written in one piece: its ETag is its MD5, a single-part source's too.
        let etag = match source.etag.contains('-') {
            true => md5_etag(&source.bytes),
            false => source.etag.clone(),
        };
        let stored = Stored {
            etag,
            checksum: Some((algorithm.clone(), checksum.clone())),
            ..source
        };
        self.store(to.object, stored, Some(checksum)).await
    }

    async fn create_multipart(
        &self,
        _at: ObjectAt<'_>,
        new: NewObject<'_>,
        checksum: Option<&ChecksumAlgorithm>,
    ) -> Result<String> {
        let mut state = self.lock();
        state.next_upload += 1;
        let id = format!("upload-{}", state.next_upload);
        state.uploads.insert(
            id.clone(),
            Uploading {
                headers: new.headers.clone(),
                checksum: checksum.cloned(),
                parts: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    async fn upload_part(&self, upload: Upload<'_>, number: i32, body: Body<'_>) -> Result<Part> {
        if let Some((algorithm, value)) = body.checksum {
            check(algorithm, value, &body.bytes)?;
        }
        let etag = md5_etag(&body.bytes);
        let mut state = self.lock();
        // The checksum sent, echoed as S3 does, where the service keeps checksums.
        let checksum = body
            .checksum
            .filter(|_| !state.checksumless.contains(upload.object.bucket))
            .map(|(_, value)| value.to_string());
        let uploading = state
            .uploads
            .get_mut(upload.id)
            .ok_or_else(|| anyhow!("NoSuchUpload: {}", upload.id))?;
        uploading.parts.insert(number, (body.bytes, etag.clone()));
        Ok(Part {
            number,
            etag,
            checksum,
        })
    }

    async fn upload_part_copy(
        &self,
        upload: Upload<'_>,
        number: i32,
        from: &CopySource<'_>,
        (start, end): (u64, u64),
    ) -> Result<Part> {
        let source = self.read(from.object)?;
        if from.if_match.is_some_and(|etag| etag != source.etag) {
            bail!("PreconditionFailed: {} was replaced", from.object);
        }
        let bytes = source.bytes[start as usize..=end as usize].to_vec();
        let algorithm = self
            .lock()
            .uploads
            .get(upload.id)
            .and_then(|uploading| uploading.checksum.clone());
        let checksum = algorithm.map(|algorithm| RunningChecksum::of(&algorithm, &bytes));
        let part = Body {
            bytes,
            checksum: None,
        };
        let etag = self.upload_part(upload, number, part).await?.etag;
        let replacement = self.lock().replace_after_part_copy.take();
        if let Some((bucket, key, bytes)) = replacement {
            self.put_object(&bucket, &key, &bytes, Headers::default());
        }
        Ok(Part {
            number,
            etag,
            checksum,
        })
    }

    async fn complete_multipart(
        &self,
        upload: Upload<'_>,
        parts: Vec<Part>,
        checksum: Option<(&ChecksumAlgorithm, &str)>,
    ) -> Result<Written> {
        let Some(uploaded) = self.lock().uploads.remove(upload.id) else {
            bail!("NoSuchUpload: {}", upload.id);
        };
        let mut bytes = Vec::new();
        let mut digests = Vec::new();
        for part in &parts {
            let (body, etag) = uploaded
                .parts
                .get(&part.number)
                .ok_or_else(|| anyhow!("InvalidPart: {}", part.number))?;
            if *etag != part.etag {
                bail!("InvalidPart: part {} has another ETag", part.number);
            }
            digests.extend_from_slice(&hex::decode(etag.trim_matches('"'))?);
            bytes.extend_from_slice(body);
        }
        let whole = match (checksum, &uploaded.checksum) {
            (Some((algorithm, value)), Some(_)) => {
                check(algorithm, value, &bytes)?;
                Some((algorithm.clone(), value.to_string()))
            }
            _ => None,
        };
        let stored = Stored {
            etag: format!("\"{}-{}\"", hex::encode(Md5::digest(&digests)), parts.len()),
            checksum: whole.clone(),
            bytes: Arc::new(bytes),
            headers: uploaded.headers,
        };
        self.store(upload.object, stored, whole.map(|(_, value)| value))
            .await
    }

    async fn abort_multipart(&self, upload: Upload<'_>) {
        self.lock().uploads.remove(upload.id);
    }

    async fn delete(&self, at: ObjectAt<'_>) -> Result<Option<String>> {
        self.write(|state| {
            bucket_mut(state, at.bucket)?.remove(at.key);
            Ok(None)
        })
        .await
    }

    async fn delete_version(&self, at: ObjectAt<'_>, version: &str) -> Result<()> {
        bail!("{at}: no version {version}: this store keeps no versions")
    }

    async fn versioning_enabled(&self, _bucket: &str) -> Result<bool> {
        Ok(false)
    }

    async fn versions(&self, _at: ObjectAt<'_>) -> Result<Vec<Version>> {
        Ok(Vec::new())
    }
}
