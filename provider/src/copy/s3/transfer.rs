//! Writing objects: server-side copies (single or multipart), and uploads streamed
//! through this process one part at a time.

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_s3::primitives::{ByteStream, DateTime, DateTimeFormat};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumType, CompletedMultipartUpload, CompletedPart, MetadataDirective,
};
use md5::{Digest, Md5};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::io::AsyncReadExt;

use super::checksum::{full_object_checksum, full_object_multipart, RunningChecksum};
use super::{
    head_with_tags, open, tagging, Bucket, Headers, ObjectInfo, WriteOptions, COPY_PART_SIZE,
    MAX_SINGLE_COPY, PART_SIZE,
};
use crate::copy::aws_error;

/// An object written by a copy: its ETag, and the checksum the target computed for it
/// in the algorithm the write asked for (None when the target reports none).
#[derive(Debug, Clone)]
pub struct Written {
    pub etag: String,
    pub checksum: Option<String>,
    /// The version the write created, on a versioned bucket.
    pub version: Option<String>,
}

/// What the target must report for an uploaded object, computed from the bytes sent:
/// the ETag (MD5, or MD5 of the part MD5s with the part count) and the whole object's
/// checksum in `algorithm`, which S3 also checks on receipt.
#[derive(Debug, Clone)]
pub(crate) struct Expected {
    pub etag: String,
    pub algorithm: ChecksumAlgorithm,
    pub checksum: String,
}

/// A streamed copy: what was written, what the target must report, and what proves the
/// bytes read were the source's.
pub(crate) struct Streamed {
    pub written: Written,
    pub expected: Expected,
    /// The source's stored checksum of the whole object in `expected.algorithm`.
    pub source_checksum: Option<String>,
    /// The source stores a whole-object checksum, which the SDK checked the read against.
    pub checked_by_sdk: bool,
}

/// Sets the checksum of `$algorithm` on a request or part builder.
macro_rules! with_checksum {
    ($builder:expr, $algorithm:expr, $value:expr) => {
        match $algorithm {
            ChecksumAlgorithm::Crc32 => $builder.checksum_crc32($value),
            ChecksumAlgorithm::Crc32C => $builder.checksum_crc32_c($value),
            ChecksumAlgorithm::Sha1 => $builder.checksum_sha1($value),
            ChecksumAlgorithm::Sha256 => $builder.checksum_sha256($value),
            _ => $builder.checksum_crc64_nvme($value),
        }
    };
}

/// Characters escaped in the `x-amz-copy-source` header: all but unreserved and `/`.
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn copy_source(bucket: &str, key: &str) -> String {
    format!("{bucket}/{}", utf8_percent_encode(key, COPY_SOURCE))
}

/// Copies inside one S3 service: no bytes pass through this process. Headers, metadata
/// and tags are copied by the service (CopyObject's default directives).
///
/// The target computes a checksum of what it wrote: in the source's stored algorithm,
/// so the two compare, or CRC64NVME when the source has none.
pub async fn server_side_copy(
    source: &Bucket,
    source_object: &ObjectInfo,
    target: &Bucket,
    target_key: &str,
    options: &WriteOptions,
) -> Result<Written> {
    let size = source_object.size;
    let algorithm = source_object
        .checksum_algorithm
        .as_deref()
        .map(ChecksumAlgorithm::from)
        .unwrap_or(ChecksumAlgorithm::Crc64Nvme);
    let from = copy_source(&source.name, &source_object.key);
    if size <= MAX_SINGLE_COPY {
        let copy = target
            .client
            .copy_object()
            .copy_source(&from)
            .bucket(&target.name)
            .key(target_key)
            .metadata_directive(MetadataDirective::Copy)
            .set_expected_source_bucket_owner(source.expected_owner.clone())
            .checksum_algorithm(algorithm.clone());
        let out = with_write_options!(copy, options)
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("copying {from} to s3://{}/{target_key}", target.name))?;
        let result = out.copy_object_result();
        return Ok(Written {
            etag: result
                .and_then(|r| r.e_tag())
                .unwrap_or_default()
                .to_string(),
            checksum: result.and_then(|r| checksum_in!(r, &algorithm)),
            version: out.version_id().map(str::to_owned),
        });
    }
    // CreateMultipartUpload copies nothing from the source: headers and tags are given.
    let (_, headers) = head_with_tags(source, &source_object.key)
        .await?
        .ok_or_else(|| anyhow!("source object {from} vanished during the copy"))?;
    // Parts copied server side carry no full-object checksum: verified by size.
    let upload = Multipart::start(target, target_key, &headers, options, None).await?;
    let result = async {
        let mut start = 0;
        let mut number = 1;
        while start < size {
            let end = (start + COPY_PART_SIZE).min(size) - 1;
            let out = target
                .client
                .upload_part_copy()
                .bucket(&target.name)
                .key(target_key)
                .upload_id(&upload.id)
                .part_number(number)
                .copy_source(&from)
                .set_expected_source_bucket_owner(source.expected_owner.clone())
                .copy_source_range(format!("bytes={start}-{end}"))
                .send()
                .await
                .map_err(aws_error)
                .with_context(|| format!("copying part {number} of {from}"))?;
            let etag = out
                .copy_part_result()
                .and_then(|r| r.e_tag())
                .unwrap_or_default();
            upload.parts_push(number, etag, None);
            start = end + 1;
            number += 1;
        }
        upload.complete(None).await
    }
    .await;
    upload_result(result, &upload).await
}

/// Streams an object from one S3 service to another. Memory: one part at a time.
/// What the target must report is computed on the way, so the caller can verify. The
/// target gets the source's checksum algorithm where S3 allows it, so it keeps the
/// source's checksum; the SDK checks the bytes read against it.
pub(crate) async fn streamed_copy(
    source: &Bucket,
    source_object: &ObjectInfo,
    target: &Bucket,
    target_key: &str,
    options: &WriteOptions,
) -> Result<Streamed> {
    let out = open(source, &source_object.key, None).await?;
    let stored = full_object_checksum(&out);
    let mut headers = headers_of!(out);
    if out.tag_count().unwrap_or_default() > 0 {
        headers.tagging = tagging(source, &source_object.key).await?;
    }
    let size = out.content_length().unwrap_or_default().max(0) as u64;
    let mut body = out.body.into_async_read();
    let preferred = stored.as_ref().map(|(algorithm, _)| algorithm.clone());
    let (written, expected) = upload_stream(
        &mut body, size, &headers, target, target_key, options, preferred,
    )
    .await?;
    Ok(Streamed {
        checked_by_sdk: stored.is_some(),
        source_checksum: stored
            .filter(|(algorithm, _)| *algorithm == expected.algorithm)
            .map(|(_, value)| value),
        written,
        expected,
    })
}

/// Uploads `size` bytes read from `body` with the given headers: one PUT for small
/// objects, multipart beyond PART_SIZE. The target checks and keeps a checksum in the
/// `preferred` algorithm where S3 allows it for the upload, else CRC64NVME. Returns
/// what was written and what the target must report for the content.
pub(crate) async fn upload_stream<R: tokio::io::AsyncRead + Unpin>(
    body: &mut R,
    size: u64,
    headers: &Headers,
    target: &Bucket,
    key: &str,
    options: &WriteOptions,
    preferred: Option<ChecksumAlgorithm>,
) -> Result<(Written, Expected)> {
    let algorithm = preferred
        .filter(|a| size <= PART_SIZE || full_object_multipart(a))
        .unwrap_or(ChecksumAlgorithm::Crc64Nvme);
    if size <= PART_SIZE {
        let mut buffer = Vec::with_capacity(size as usize);
        body.read_to_end(&mut buffer)
            .await
            .context("reading the source object")?;
        if buffer.len() as u64 != size {
            bail!(
                "source object changed during the copy: expected {size} bytes, read {}",
                buffer.len()
            );
        }
        let expected = Expected {
            etag: format!("\"{}\"", hex::encode(Md5::digest(&buffer))),
            checksum: RunningChecksum::of(&algorithm, &buffer),
            algorithm,
        };
        let put = target
            .client
            .put_object()
            .bucket(&target.name)
            .key(key)
            .checksum_algorithm(expected.algorithm.clone())
            .body(ByteStream::from(buffer));
        let mut put = with_checksum!(put, &expected.algorithm, &expected.checksum);
        put = with_write_options!(with_headers!(put, headers), options);
        let out = put
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("writing s3://{}/{key}", target.name))?;
        let written = Written {
            etag: out.e_tag().unwrap_or_default().to_string(),
            checksum: checksum_in!(out, &expected.algorithm),
            version: out.version_id().map(str::to_owned),
        };
        return Ok((written, expected));
    }
    let upload = Multipart::start(target, key, headers, options, Some(algorithm.clone())).await?;
    let result = async {
        let mut part_digests = Vec::new();
        let mut whole = RunningChecksum::new(&algorithm);
        let mut total = 0u64;
        let mut number = 1;
        loop {
            let mut part = Vec::with_capacity(PART_SIZE as usize);
            (&mut *body)
                .take(PART_SIZE)
                .read_to_end(&mut part)
                .await
                .context("reading the source object")?;
            if part.is_empty() {
                break;
            }
            total += part.len() as u64;
            let digest = Md5::digest(&part);
            part_digests.extend_from_slice(&digest);
            whole.update(&part);
            let part_checksum = RunningChecksum::of(&algorithm, &part);
            let request = target
                .client
                .upload_part()
                .bucket(&target.name)
                .key(key)
                .upload_id(&upload.id)
                .part_number(number)
                .checksum_algorithm(algorithm.clone())
                .body(ByteStream::from(part));
            let out = with_checksum!(request, &algorithm, &part_checksum)
                .send()
                .await
                .map_err(aws_error)
                .with_context(|| format!("writing part {number} of s3://{}/{key}", target.name))?;
            upload.parts_push(number, out.e_tag().unwrap_or_default(), Some(part_checksum));
            number += 1;
        }
        if total != size {
            bail!("source object changed during the copy: expected {size} bytes, read {total}");
        }
        let expected = Expected {
            etag: format!(
                "\"{}-{}\"",
                hex::encode(Md5::digest(&part_digests)),
                number - 1
            ),
            checksum: whole.base64(),
            algorithm: algorithm.clone(),
        };
        let written = upload.complete(Some(&expected.checksum)).await?;
        Ok((written, expected))
    }
    .await;
    upload_result(result, &upload).await
}

fn parse_expires(expires: &Option<String>) -> Option<DateTime> {
    expires
        .as_deref()
        .and_then(|s| DateTime::from_str(s, DateTimeFormat::HttpDate).ok())
}

/// Aborts the upload when the parts could not be written, so no orphan parts are left
/// billing storage in the target.
async fn upload_result<T>(result: Result<T>, upload: &Multipart<'_>) -> Result<T> {
    if result.is_err() {
        let _ = upload
            .target
            .client
            .abort_multipart_upload()
            .bucket(&upload.target.name)
            .key(upload.key)
            .upload_id(&upload.id)
            .send()
            .await;
    }
    result
}

struct Multipart<'a> {
    target: &'a Bucket,
    key: &'a str,
    id: String,
    /// The algorithm of the parts' and the whole object's checksums, if they carry any.
    checksum: Option<ChecksumAlgorithm>,
    parts: std::sync::Mutex<Vec<CompletedPart>>,
}

impl<'a> Multipart<'a> {
    /// `checksum`: the parts carry checksums in this algorithm and the completion the
    /// whole object's, which S3 checks and keeps.
    async fn start(
        target: &'a Bucket,
        key: &'a str,
        headers: &Headers,
        options: &WriteOptions,
        checksum: Option<ChecksumAlgorithm>,
    ) -> Result<Multipart<'a>> {
        let mut create = target
            .client
            .create_multipart_upload()
            .bucket(&target.name)
            .key(key);
        if let Some(algorithm) = &checksum {
            create = create
                .checksum_algorithm(algorithm.clone())
                .checksum_type(ChecksumType::FullObject);
        }
        let out = with_write_options!(with_headers!(create, headers), options)
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| {
                format!("starting a multipart upload to s3://{}/{key}", target.name)
            })?;
        Ok(Multipart {
            target,
            key,
            id: out.upload_id().unwrap_or_default().to_string(),
            checksum,
            parts: Default::default(),
        })
    }

    /// Notes a part written; `checksum` is in the upload's algorithm.
    fn parts_push(&self, number: i32, etag: &str, checksum: Option<String>) {
        let mut part = CompletedPart::builder().part_number(number).e_tag(etag);
        if let (Some(algorithm), Some(value)) = (&self.checksum, checksum) {
            part = with_checksum!(part, algorithm, value);
        }
        let part = part.build();
        self.parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(part);
    }

    /// Completes the upload; `checksum` is the whole object's, when the parts carry theirs.
    async fn complete(&self, checksum: Option<&str>) -> Result<Written> {
        let mut parts = std::mem::take(&mut *self.parts.lock().unwrap_or_else(|e| e.into_inner()));
        parts.sort_by_key(|p| p.part_number());
        let mut complete = self
            .target
            .client
            .complete_multipart_upload()
            .bucket(&self.target.name)
            .key(self.key)
            .upload_id(&self.id);
        if let (Some(algorithm), Some(value)) = (&self.checksum, checksum) {
            complete =
                with_checksum!(complete, algorithm, value).checksum_type(ChecksumType::FullObject);
        }
        let out = complete
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| {
                format!(
                    "completing the upload of s3://{}/{}",
                    self.target.name, self.key
                )
            })?;
        Ok(Written {
            etag: out.e_tag().unwrap_or_default().to_string(),
            checksum: self
                .checksum
                .as_ref()
                .and_then(|algorithm| checksum_in!(out, algorithm)),
            version: out.version_id().map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_escapes_all_but_slashes() {
        assert_eq!(
            copy_source("b", "a b/c+d#é.png"),
            "b/a%20b/c%2Bd%23%C3%A9.png"
        );
    }

    #[test]
    fn expires_round_trips_http_dates() {
        let parsed = parse_expires(&Some("Wed, 21 Oct 2015 07:28:00 GMT".into())).unwrap();
        assert_eq!(parsed.secs(), 1445412480);
        assert!(parse_expires(&Some("not a date".into())).is_none());
    }
}
