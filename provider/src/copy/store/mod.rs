//! The storage seam: what the engines ask of a bucket and of a table, one request each,
//! with S3 (`s3`) and DynamoDB (`dynamodb`) behind them in production and in-memory
//! stores for tests (`memory`, `memory_objects`), which drive whole runs (plans, copies,
//! faults and kills at every write, rollbacks) in process.

pub(crate) mod dynamodb;
#[cfg(test)]
pub(crate) mod memory;
#[cfg(test)]
pub(crate) mod memory_objects;
pub(crate) mod s3;

use anyhow::Result;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::WriteRequest;
use aws_sdk_s3::types::ChecksumAlgorithm;

use super::item::Item;
use super::s3::{Headers, ObjectInfo, Version, WriteOptions, Written};

/// Whether a bucket can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BucketAccess {
    Exists,
    Missing,
    Denied,
}

/// One page of a listing in key order, and where the next one starts.
pub(crate) struct ListPage {
    pub objects: Vec<ObjectInfo>,
    pub next: Option<String>,
}

/// An object as HEAD or GET answers for it.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub info: ObjectInfo,
    pub headers: Headers,
    /// The stored checksum of the whole object (never a composite one of parts), in the
    /// algorithm asked for (HEAD) or the strongest it has (GET).
    pub checksum: Option<(ChecksumAlgorithm, String)>,
    pub tag_count: i32,
}

/// A GET's answer, its body read as it is consumed; a whole-object read is checked
/// against the stored checksum as it is read.
pub(crate) struct Download {
    pub head: Head,
    pub body: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
}

/// Where an object is: a bucket and a key in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ObjectAt<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
}

/// As messages name an object: `s3://bucket/key`.
impl std::fmt::Display for ObjectAt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// A multipart upload under way: the object it writes and the ID the store gave it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Upload<'a> {
    pub object: ObjectAt<'a>,
    pub id: &'a str,
}

/// What a new object gets besides its bytes: its headers and the write options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewObject<'a> {
    pub headers: &'a Headers,
    pub options: &'a WriteOptions,
}

/// Bytes sent in one request, with the checksum (algorithm, base64 value) the store
/// checks them against on receipt and keeps.
pub(crate) struct Body<'a> {
    pub bytes: Vec<u8>,
    pub checksum: Option<(&'a ChecksumAlgorithm, &'a str)>,
}

/// The object a server-side copy reads.
pub(crate) struct CopySource<'a> {
    pub object: ObjectAt<'a>,
    /// The account that must own the source bucket.
    pub expected_owner: Option<&'a str>,
    /// The source's ETag as it was listed: a copy of a part fails (PreconditionFailed)
    /// when the object was replaced since, rather than splice two versions.
    pub if_match: Option<&'a str>,
}

/// The object a server-side copy writes.
pub(crate) struct CopyTarget<'a> {
    pub object: ObjectAt<'a>,
    pub options: &'a WriteOptions,
    /// The store computes the copy's checksum in this algorithm.
    pub algorithm: &'a ChecksumAlgorithm,
}

/// A part of a multipart upload, as the completion lists it.
#[derive(Debug, Clone)]
pub(crate) struct Part {
    pub number: i32,
    pub etag: String,
    pub checksum: Option<String>,
}

/// The sizes a store's server-side copies work in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CopyLimits {
    /// The largest object one copy request copies; larger ones are copied in parts.
    pub single: u64,
    /// The size of those parts.
    pub part: u64,
}

impl CopyLimits {
    /// S3's: CopyObject takes up to 5 GiB; parts of 512 MiB keep a 5 TiB object within
    /// 10,000 parts.
    pub const S3: CopyLimits = CopyLimits {
        single: 5 * 1024 * 1024 * 1024,
        part: 512 * 1024 * 1024,
    };
}

/// An S3-like object store: one request each (the SDK retries a request).
#[async_trait]
pub(crate) trait ObjectStore: Send + Sync + std::fmt::Debug {
    async fn bucket_access(&self, bucket: &str) -> Result<BucketAccess>;
    /// Creates the bucket (None: the endpoint's default region); one this account
    /// already owns is fine.
    async fn create_bucket(&self, bucket: &str, region: Option<&str>) -> Result<()>;
    /// Makes the bucket private, encrypted, versioned, old versions expiring after
    /// `keep_days`: each setting with its outcome.
    async fn make_private(&self, bucket: &str, keep_days: i32) -> Vec<(&'static str, Result<()>)>;
    /// The page of the keys under `prefix` that starts at `start` (None: the first).
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start: Option<String>,
    ) -> Result<ListPage>;
    /// None when there is no such object. `checksum`: the stored checksum wanted.
    async fn head(
        &self,
        at: ObjectAt<'_>,
        checksum: Option<&ChecksumAlgorithm>,
    ) -> Result<Option<Head>>;
    /// Whether the object is encrypted with a key its writer provided (SSE-C), which S3
    /// asks for to serve it: a HEAD without the key is answered 400.
    async fn needs_customer_key(&self, at: ObjectAt<'_>) -> Result<bool>;
    /// The object's tags, URL-encoded as `x-amz-tagging` takes them; None without any.
    async fn tagging(&self, at: ObjectAt<'_>) -> Result<Option<String>>;
    /// The whole object, or bytes `start..end` of it.
    async fn get(&self, at: ObjectAt<'_>, range: Option<(u64, u64)>) -> Result<Download>;
    /// Writes an object in one request.
    async fn put(&self, at: ObjectAt<'_>, body: Body<'_>, new: NewObject<'_>) -> Result<Written>;
    /// Writes a small object only if it is still the one with ETag `current` (None:
    /// only if there is none); None when it is not.
    async fn put_if(
        &self,
        at: ObjectAt<'_>,
        bytes: Vec<u8>,
        current: Option<&str>,
    ) -> Result<Option<Written>>;
    /// Up to which size `copy` copies an object, and the parts of larger copies.
    fn copy_limits(&self) -> CopyLimits {
        CopyLimits::S3
    }
    /// Copies an object inside the store, headers and tags included.
    async fn copy(&self, from: &CopySource<'_>, to: &CopyTarget<'_>) -> Result<Written>;
    /// Starts a multipart upload and returns its ID; `checksum`: the parts and the
    /// whole carry checksums in this algorithm, the whole one full-object.
    async fn create_multipart(
        &self,
        at: ObjectAt<'_>,
        new: NewObject<'_>,
        checksum: Option<&ChecksumAlgorithm>,
    ) -> Result<String>;
    /// Writes part `number`; returns it with the checksum the target reports for it in
    /// the algorithm of the one sent, if any.
    async fn upload_part(&self, upload: Upload<'_>, number: i32, body: Body<'_>) -> Result<Part>;
    /// Copies bytes `start..=end` of `from` as part `number`; returns the part with its
    /// checksum in the upload's algorithm, when it has one.
    async fn upload_part_copy(
        &self,
        upload: Upload<'_>,
        number: i32,
        from: &CopySource<'_>,
        range: (u64, u64),
    ) -> Result<Part>;
    /// `checksum`: the whole object's, when the parts carry theirs.
    async fn complete_multipart(
        &self,
        upload: Upload<'_>,
        parts: Vec<Part>,
        checksum: Option<(&ChecksumAlgorithm, &str)>,
    ) -> Result<Written>;
    async fn abort_multipart(&self, upload: Upload<'_>);
    /// Deletes the current object; on a versioned bucket the answer is the ID of the
    /// delete marker that hides it.
    async fn delete(&self, at: ObjectAt<'_>) -> Result<Option<String>>;
    async fn delete_version(&self, at: ObjectAt<'_>, version: &str) -> Result<()>;
    async fn versioning_enabled(&self, bucket: &str) -> Result<bool>;
    /// Every version and delete marker of exactly this key, newest first.
    async fn versions(&self, at: ObjectAt<'_>) -> Result<Vec<Version>>;
}

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
    /// Key attributes of the table's secondary indexes: (index, attribute, type `S`,
    /// `N` or `B`). An item whose attribute has another type is refused.
    pub index_keys: Vec<(String, String, String)>,
}

/// One Scan request: up to `limit` items of segment `segment` of `segments`, strongly
/// consistent, after `start` (None: from the first).
#[derive(Debug, Clone)]
pub(crate) struct ScanRequest {
    pub segment: i32,
    pub segments: i32,
    pub limit: i32,
    pub start: Option<Item>,
}

/// One page of a scan, and the key to start the next one after (None: the last page).
pub(crate) struct ScanPage {
    pub items: Vec<Item>,
    pub next: Option<Item>,
}

/// What a conditional write requires of the item under its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Condition {
    /// No item, or its string `attribute` sorts before `value` (a lease that expired).
    AbsentOrBefore { attribute: String, value: String },
    /// The item's string `attribute` equals `value` (a lease still held by its owner).
    Equals { attribute: String, value: String },
}

/// A DynamoDB-like item store: one request each, no retries of what it leaves
/// unprocessed (`copy::dynamodb` retries those, under the one retry policy).
#[async_trait]
pub(crate) trait ItemStore: Send + Sync + std::fmt::Debug {
    /// The table's shape, or None when there is no such table.
    async fn describe(&self, table: &str) -> Result<Option<TableShape>>;
    /// Some of the tables that exist, for a message naming them.
    async fn table_names(&self) -> Result<Vec<String>>;
    async fn scan_page(&self, table: &str, request: ScanRequest) -> Result<ScanPage>;
    /// The items of `keys` that exist (strongly consistent), and the keys left
    /// unprocessed.
    async fn batch_get(&self, table: &str, keys: Vec<Item>) -> Result<(Vec<Item>, Vec<Item>)>;
    /// Applies up to 25 puts and deletes; returns those left unprocessed.
    async fn batch_write(
        &self,
        table: &str,
        requests: Vec<WriteRequest>,
    ) -> Result<Vec<WriteRequest>>;
    /// Puts `item` if `condition` holds for the item now under its key; false if not.
    async fn put_if(&self, table: &str, item: Item, condition: &Condition) -> Result<bool>;
    /// Deletes the item under `key` if `condition` holds; false if not.
    async fn delete_if(&self, table: &str, key: Item, condition: &Condition) -> Result<bool>;
}
