//! Writing objects: server-side copies (single or multipart), and uploads streamed
//! through this process one part at a time.

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_s3::primitives::{ByteStream, DateTime, DateTimeFormat};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};
use md5::{Digest, Md5};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::io::AsyncReadExt;

use super::{
    head_with_tags, open, tagging, Bucket, Headers, ObjectInfo, WriteOptions, COPY_PART_SIZE,
    MAX_SINGLE_COPY, PART_SIZE,
};
use crate::copy::aws_error;

/// An object written by a copy: its ETag as the target reports it.
#[derive(Debug, Clone)]
pub struct Written {
    pub etag: String,
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
pub async fn server_side_copy(
    source: &Bucket,
    source_object: &ObjectInfo,
    target: &Bucket,
    target_key: &str,
    options: &WriteOptions,
) -> Result<Written> {
    let size = source_object.size;
    let from = copy_source(&source.name, &source_object.key);
    if size <= MAX_SINGLE_COPY {
        let copy = target
            .client
            .copy_object()
            .copy_source(&from)
            .bucket(&target.name)
            .key(target_key)
            .metadata_directive(MetadataDirective::Copy);
        let out = with_write_options!(copy, options)
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("copying {from} to s3://{}/{target_key}", target.name))?;
        let etag = out
            .copy_object_result()
            .and_then(|r| r.e_tag())
            .unwrap_or_default()
            .to_string();
        return Ok(Written { etag });
    }
    // CreateMultipartUpload copies nothing from the source: headers and tags are given.
    let (_, headers) = head_with_tags(source, &source_object.key)
        .await?
        .ok_or_else(|| anyhow!("source object {from} vanished during the copy"))?;
    let upload = Multipart::start(target, target_key, &headers, options).await?;
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
                .copy_source_range(format!("bytes={start}-{end}"))
                .send()
                .await
                .map_err(aws_error)
                .with_context(|| format!("copying part {number} of {from}"))?;
            let etag = out
                .copy_part_result()
                .and_then(|r| r.e_tag())
                .unwrap_or_default();
            upload.parts_push(number, etag);
            start = end + 1;
            number += 1;
        }
        upload.complete().await
    }
    .await;
    let etag = upload_result(result, &upload).await?;
    Ok(Written { etag })
}

/// Streams an object from one S3 service to another. Memory: one part at a time.
/// The ETag the target must report is computed on the way, so the caller can verify.
pub(crate) async fn streamed_copy(
    source: &Bucket,
    source_object: &ObjectInfo,
    target: &Bucket,
    target_key: &str,
    options: &WriteOptions,
) -> Result<(Written, String)> {
    let out = open(source, &source_object.key, None).await?;
    let mut headers = headers_of!(out);
    if out.tag_count().unwrap_or_default() > 0 {
        headers.tagging = tagging(source, &source_object.key).await?;
    }
    let size = out.content_length().unwrap_or_default().max(0) as u64;
    let mut body = out.body.into_async_read();
    upload_stream(&mut body, size, &headers, target, target_key, options).await
}

/// Uploads `size` bytes read from `body` with the given headers: one PUT for small
/// objects, multipart beyond PART_SIZE. Returns what was written and the ETag expected
/// from the content (MD5, or MD5 of the part MD5s with the part count).
pub(crate) async fn upload_stream<R: tokio::io::AsyncRead + Unpin>(
    body: &mut R,
    size: u64,
    headers: &Headers,
    target: &Bucket,
    key: &str,
    options: &WriteOptions,
) -> Result<(Written, String)> {
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
        let expected = format!("\"{}\"", hex::encode(Md5::digest(&buffer)));
        let mut put = target
            .client
            .put_object()
            .bucket(&target.name)
            .key(key)
            .body(ByteStream::from(buffer));
        put = with_write_options!(with_headers!(put, headers), options);
        let out = put
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("writing s3://{}/{key}", target.name))?;
        let written = Written {
            etag: out.e_tag().unwrap_or_default().to_string(),
        };
        return Ok((written, expected));
    }
    let upload = Multipart::start(target, key, headers, options).await?;
    let result = async {
        let mut part_digests = Vec::new();
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
            let out = target
                .client
                .upload_part()
                .bucket(&target.name)
                .key(key)
                .upload_id(&upload.id)
                .part_number(number)
                .body(ByteStream::from(part))
                .send()
                .await
                .map_err(aws_error)
                .with_context(|| format!("writing part {number} of s3://{}/{key}", target.name))?;
            upload.parts_push(number, out.e_tag().unwrap_or_default());
            number += 1;
        }
        if total != size {
            bail!("source object changed during the copy: expected {size} bytes, read {total}");
        }
        let expected = format!(
            "\"{}-{}\"",
            hex::encode(Md5::digest(&part_digests)),
            number - 1
        );
        Ok((upload.complete().await?, expected))
    }
    .await;
    let (etag, expected) = upload_result(result, &upload).await?;
    Ok((Written { etag }, expected))
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
    parts: std::sync::Mutex<Vec<CompletedPart>>,
}

impl<'a> Multipart<'a> {
    async fn start(
        target: &'a Bucket,
        key: &'a str,
        headers: &Headers,
        options: &WriteOptions,
    ) -> Result<Multipart<'a>> {
        let create = target
            .client
            .create_multipart_upload()
            .bucket(&target.name)
            .key(key);
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
            parts: Default::default(),
        })
    }

    fn parts_push(&self, number: i32, etag: &str) {
        let part = CompletedPart::builder()
            .part_number(number)
            .e_tag(etag)
            .build();
        self.parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(part);
    }

    async fn complete(&self) -> Result<String> {
        let mut parts = std::mem::take(&mut *self.parts.lock().unwrap_or_else(|e| e.into_inner()));
        parts.sort_by_key(|p| p.part_number());
        let out = self
            .target
            .client
            .complete_multipart_upload()
            .bucket(&self.target.name)
            .key(self.key)
            .upload_id(&self.id)
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
        Ok(out.e_tag().unwrap_or_default().to_string())
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
