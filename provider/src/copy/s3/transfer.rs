//! Writing objects: server-side copies (single or multipart), and uploads streamed
//! through this process one part at a time.

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_s3::types::ChecksumAlgorithm;
use md5::Digest;
use tokio::io::AsyncReadExt;

use super::checksum::{full_object_multipart, RunningChecksum};
use super::{head_with_tags, open, stored_checksum, Bucket, ObjectInfo, WriteOptions, PART_SIZE};
use crate::copy::store::{Body, CopySource, CopyTarget, NewObject, Part, Upload};

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
/// the whole object's checksum in `algorithm`, which S3 also checks on receipt, and
/// where asked for, the ETag (MD5, or MD5 of the part MD5s with the part count).
#[derive(Debug, Clone)]
pub(crate) struct Expected {
    pub etag: Option<String>,
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

fn source_of<'a>(bucket: &'a Bucket, key: &'a str) -> CopySource<'a> {
    CopySource {
        object: bucket.at(key),
        expected_owner: bucket.expected_owner.as_deref(),
        if_match: None,
    }
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
    let from = source_of(source, &source_object.key);
    let limits = target.store.copy_limits();
    if size <= limits.single {
        return target
            .store
            .copy(
                &from,
                &CopyTarget {
                    object: target.at(target_key),
                    options,
                    algorithm: &algorithm,
                },
            )
            .await;
    }
    // CreateMultipartUpload copies nothing from the source: headers and tags are given.
    let (_, headers) = head_with_tags(source, &source_object.key)
        .await?
        .ok_or_else(|| {
            anyhow!(
                "source object s3://{}/{} vanished during the copy",
                source.name,
                source_object.key
            )
        })?;
    // Every part from the version listed: a source replaced meanwhile fails the copy
    // instead of splicing two versions.
    let from = CopySource {
        if_match: Some(&source_object.etag),
        ..from
    };
    // Where the source keeps a full-object CRC, the upload carries that algorithm and
    // the completion the source's value: the target refuses a whole that differs, and
    // keeps the checksum that verification compares.
    let whole = match full_object_multipart(&algorithm) {
        true => stored_checksum(source, &source_object.key, &algorithm)
            .await?
            .map(|value| (algorithm.clone(), value)),
        false => None,
    };
    let new = NewObject {
        headers: &headers,
        options,
    };
    let upload = Multipart::start(target, target_key, new, whole.as_ref().map(|(a, _)| a)).await?;
    let result = async {
        let mut parts = Vec::new();
        let mut start = 0;
        let mut number = 1;
        while start < size {
            let end = (start + limits.part).min(size) - 1;
            parts.push(
                target
                    .store
                    .upload_part_copy(upload.upload(), number, &from, (start, end))
                    .await?,
            );
            start = end + 1;
            number += 1;
        }
        let whole = whole.as_ref().map(|(a, value)| (a, value.as_str()));
        upload.complete(parts, whole).await
    }
    .await;
    upload.finish(result).await
}

/// Whether an upload computes the MD5 ETag the target must report, a second hash of
/// every byte besides the checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EtagMd5 {
    /// A proof rests on it whatever the target reports.
    Always,
    /// Until the target reports the checksum of a part (or, for one PUT, from the start:
    /// its answer comes after the bytes are sent), after which the checksum proves it.
    UntilChecksumReported,
    Never,
}

/// Streams an object from one S3 service to another. Memory: one part at a time.
/// What the target must report is computed on the way, so the caller can verify. The
/// target gets the source's checksum algorithm where S3 allows it, so it keeps the
/// source's checksum; the read is checked against it as it goes.
///
/// The MD5 ETag is computed only where a proof may rest on it: the source stores no
/// checksum and its ETag is its MD5, or the target may not report checksums (it has
/// not for this run, nor for this object's first part).
pub(crate) async fn streamed_copy(
    source: &Bucket,
    source_object: &ObjectInfo,
    target: &Bucket,
    target_key: &str,
    options: &WriteOptions,
    target_reports_checksums: bool,
) -> Result<Streamed> {
    let download = open(source, &source_object.key, None).await?;
    let stored = download.head.checksum.clone();
    let md5 = match (
        stored.is_none() && !source_object.etag.contains('-'),
        target_reports_checksums,
    ) {
        (true, _) => EtagMd5::Always,
        (false, false) => EtagMd5::UntilChecksumReported,
        (false, true) => EtagMd5::Never,
    };
    let mut headers = download.head.headers.clone();
    if download.head.tag_count > 0 {
        headers.tagging = source.store.tagging(source.at(&source_object.key)).await?;
    }
    let size = download.head.info.size;
    let mut body = download.body;
    let preferred = stored.as_ref().map(|(algorithm, _)| algorithm.clone());
    let new = NewObject {
        headers: &headers,
        options,
    };
    let (written, expected) =
        upload_stream(&mut body, size, new, target, target_key, preferred, md5).await?;
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
/// what was written and what the target must report for the content (its ETag as
/// `md5` says).
pub(crate) async fn upload_stream<R: tokio::io::AsyncRead + Unpin>(
    body: &mut R,
    size: u64,
    new: NewObject<'_>,
    target: &Bucket,
    key: &str,
    preferred: Option<ChecksumAlgorithm>,
    md5: EtagMd5,
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
            etag: (md5 != EtagMd5::Never).then(|| md5_etag(&buffer, None)),
            checksum: RunningChecksum::of(&algorithm, &buffer),
            algorithm,
        };
        let body = Body {
            bytes: buffer,
            checksum: Some((&expected.algorithm, &expected.checksum)),
        };
        let written = target.store.put(target.at(key), body, new).await?;
        return Ok((written, expected));
    }
    let upload = Multipart::start(target, key, new, Some(&algorithm)).await?;
    let result = async {
        let mut parts = Vec::new();
        // The parts' MD5s, while the ETag is wanted.
        let mut part_md5s = (md5 != EtagMd5::Never).then(Vec::new);
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
            if let Some(md5s) = &mut part_md5s {
                md5s.extend_from_slice(&md5::Md5::digest(&part));
            }
            whole.update(&part);
            let part_checksum = RunningChecksum::of(&algorithm, &part);
            let uploaded = target
                .store
                .upload_part(
                    upload.upload(),
                    number,
                    Body {
                        bytes: part,
                        checksum: Some((&algorithm, &part_checksum)),
                    },
                )
                .await?;
            match uploaded.checksum {
                Some(reported) if reported != part_checksum => bail!(
                    "the target reports {} {reported} for part {number} of {key}, the bytes sent have {part_checksum}",
                    algorithm.as_str()
                ),
                Some(_) if md5 == EtagMd5::UntilChecksumReported => part_md5s = None,
                _ => {}
            }
            parts.push(Part {
                checksum: Some(part_checksum),
                ..uploaded
            });
            number += 1;
        }
        if total != size {
            bail!("source object changed during the copy: expected {size} bytes, read {total}");
        }
        let expected = Expected {
            etag: part_md5s.map(|md5s| md5_etag(&md5s, Some(number - 1))),
            checksum: whole.base64(),
            algorithm: algorithm.clone(),
        };
        let written = upload
            .complete(parts, Some((&algorithm, &expected.checksum)))
            .await?;
        Ok((written, expected))
    }
    .await;
    upload.finish(result).await
}

/// An ETag as S3 makes it: the MD5 of the bytes, or for a multipart upload the MD5 of
/// its parts' MD5s and the part count.
fn md5_etag(bytes: &[u8], parts: Option<i32>) -> String {
    let md5 = hex::encode(md5::Md5::digest(bytes));
    match parts {
        Some(count) => format!("\"{md5}-{count}\""),
        None => format!("\"{md5}\""),
    }
}

/// A multipart upload under way.
struct Multipart<'a> {
    target: &'a Bucket,
    key: &'a str,
    id: String,
}

impl<'a> Multipart<'a> {
    /// `checksum`: the parts carry checksums in this algorithm and the completion the
    /// whole object's, which S3 checks and keeps.
    async fn start(
        target: &'a Bucket,
        key: &'a str,
        new: NewObject<'_>,
        checksum: Option<&ChecksumAlgorithm>,
    ) -> Result<Multipart<'a>> {
        let id = target
            .store
            .create_multipart(target.at(key), new, checksum)
            .await?;
        Ok(Multipart { target, key, id })
    }

    /// The upload, as the store names it.
    fn upload(&self) -> Upload<'_> {
        Upload {
            object: self.target.at(self.key),
            id: &self.id,
        }
    }

    /// Completes the upload; `checksum` is the whole object's, when the parts carry theirs.
    async fn complete(
        &self,
        parts: Vec<Part>,
        checksum: Option<(&ChecksumAlgorithm, &str)>,
    ) -> Result<Written> {
        self.target
            .store
            .complete_multipart(self.upload(), parts, checksum)
            .await
    }

    /// Aborts the upload when the parts could not be written, so no orphan parts are
    /// left billing storage in the target.
    async fn finish<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.target.store.abort_multipart(self.upload()).await;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copy::s3::{head, Headers};
    use crate::copy::store::memory_objects::MemoryObjects;

    #[tokio::test]
    async fn a_streamed_copy_hashes_an_md5_only_where_a_proof_may_rest_on_it() {
        let store = MemoryObjects::new();
        for name in ["dev", "prod", "bare"] {
            store.create(name);
        }
        store.keep_no_checksums("bare");
        let bucket = |name: &str| Bucket {
            store: store.clone(),
            name: name.to_string(),
            expected_owner: None,
        };
        let large = b"0123456789abcdef".repeat(PART_SIZE as usize / 16 + 100);
        store.put_object("dev", "checksummed", b"kept", Headers::default());
        store.put_object("dev", "large", &large, Headers::default());
        store.put_multipart_object("dev", "in-parts", b"no checksum, no MD5 ETag");
        // A source object with an MD5 ETag and no checksum.
        let new = NewObject {
            headers: &Headers::default(),
            options: &WriteOptions::default(),
        };
        upload_stream(
            &mut &b"plain"[..],
            5,
            new,
            &bucket("bare"),
            "plain",
            None,
            EtagMd5::Never,
        )
        .await
        .unwrap();
        let plain = head(&bucket("bare"), "plain").await.unwrap().unwrap().0;

        // (source, object, target, checksums reported earlier in the run, MD5 computed)
        for (from, key, to, run_saw_checksums, md5_wanted) in [
            ("dev", "checksummed", "prod", false, true),
            ("dev", "checksummed", "prod", true, false),
            // The first part's checksum comes back: the rest go without an MD5.
            ("dev", "large", "prod", false, false),
            ("dev", "large", "bare", false, true),
            ("dev", "in-parts", "prod", true, false),
            ("bare", "plain", "prod", true, true),
        ] {
            let (source, target) = (bucket(from), bucket(to));
            let info = match key {
                "plain" => plain.clone(),
                _ => head(&source, key).await.unwrap().unwrap().0,
            };
            let copy = streamed_copy(
                &source,
                &info,
                &target,
                key,
                &WriteOptions::default(),
                run_saw_checksums,
            )
            .await
            .unwrap();
            let case = format!("{key} into {to}, checksums seen: {run_saw_checksums}");
            let etag = copy.expected.etag;
            assert_eq!(etag.is_some(), md5_wanted, "{case}");
            let written = &store.objects(to)[key];
            assert_eq!(written.bytes, store.objects(from)[key].bytes, "{case}");
            let kept = written.checksum.as_ref().map(|(_, value)| value);
            match to {
                "bare" => assert_eq!(kept, None, "{case}"),
                _ => assert_eq!(kept, Some(&copy.expected.checksum), "{case}"),
            }
            if let Some(etag) = etag {
                assert_eq!(etag, written.etag, "{case}");
            }
        }
    }
}
