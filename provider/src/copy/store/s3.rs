//! The object store on S3: one SDK request per call (the SDK retries the request).

use anyhow::{Context, Result};
use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime, DateTimeFormat};
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketLocationConstraint,
    BucketVersioningStatus, ChecksumAlgorithm, ChecksumMode, ChecksumType,
    CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration, ExpirationStatus,
    LifecycleRule, LifecycleRuleFilter, MetadataDirective, NoncurrentVersionExpiration, Object,
    ObjectStorageClass, OptionalObjectAttributes, PublicAccessBlockConfiguration,
    ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
    ServerSideEncryptionRule, VersioningConfiguration,
};
use aws_sdk_s3::Client;
use futures::stream::{self, StreamExt, TryStreamExt};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::{
    Body, BucketAccess, CopySource, CopyTarget, Download, Head, ListPage, NewObject, ObjectAt,
    ObjectStore, Part, Upload,
};
use crate::copy::aws_error;
use crate::copy::s3::{encode_tags, Headers, ObjectInfo, Version, Written};

#[derive(Debug, Clone)]
pub(crate) struct S3 {
    client: Client,
}

impl S3 {
    pub(crate) fn new(client: Client) -> Self {
        S3 { client }
    }
}

/// The headers of a HeadObject or GetObject response (different types, same getters).
macro_rules! headers_of {
    ($out:expr) => {
        Headers {
            content_type: $out.content_type().map(str::to_owned),
            cache_control: $out.cache_control().map(str::to_owned),
            content_disposition: $out.content_disposition().map(str::to_owned),
            content_encoding: $out.content_encoding().map(str::to_owned),
            content_language: $out.content_language().map(str::to_owned),
            expires: $out.expires_string().map(str::to_owned),
            metadata: $out.metadata().cloned().unwrap_or_default(),
            tagging: None,
        }
    };
}

/// Sets the headers on a PutObject or CreateMultipartUpload request builder.
macro_rules! with_headers {
    ($builder:expr, $headers:expr) => {
        $builder
            .set_content_type($headers.content_type.clone())
            .set_cache_control($headers.cache_control.clone())
            .set_content_disposition($headers.content_disposition.clone())
            .set_content_encoding($headers.content_encoding.clone())
            .set_content_language($headers.content_language.clone())
            .set_expires(parse_expires(&$headers.expires))
            .set_metadata(Some($headers.metadata.clone()).filter(|m| !m.is_empty()))
            .set_tagging($headers.tagging.clone())
    };
}

/// The object a HeadObject or GetObject response describes (different types, same
/// getters), with the stored checksum already chosen.
macro_rules! head_of {
    ($out:expr, $key:expr, $checksum:expr) => {
        Head {
            info: ObjectInfo {
                key: $key.to_string(),
                size: $out.content_length().unwrap_or_default().max(0) as u64,
                etag: $out.e_tag().unwrap_or_default().to_string(),
                modified: $out.last_modified().map(|t| t.secs()).unwrap_or_default(),
                archived: None,
                checksum_algorithm: None,
            },
            headers: headers_of!($out),
            checksum: $checksum,
            tag_count: $out.tag_count().unwrap_or_default(),
        }
    };
}

/// The base64 checksum of `$algorithm` that a response or result carries, if any (the
/// types differ, the getters are the same).
macro_rules! checksum_in {
    ($out:expr, $algorithm:expr) => {
        match $algorithm {
            ChecksumAlgorithm::Crc32 => $out.checksum_crc32(),
            ChecksumAlgorithm::Crc32C => $out.checksum_crc32_c(),
            ChecksumAlgorithm::Crc64Nvme => $out.checksum_crc64_nvme(),
            ChecksumAlgorithm::Sha1 => $out.checksum_sha1(),
            ChecksumAlgorithm::Sha256 => $out.checksum_sha256(),
            _ => None,
        }
        .map(str::to_owned)
    };
}

/// Sets the write options on a PutObject, CopyObject or CreateMultipartUpload builder.
macro_rules! with_write_options {
    ($builder:expr, $options:expr) => {
        $builder
            .set_storage_class($options.storage_class.clone())
            .set_server_side_encryption($options.server_side_encryption.clone())
            .set_ssekms_key_id($options.sse_kms_key_id.clone())
    };
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

/// What a PutObject or CompleteMultipartUpload response says was written (different
/// types, same getters); the checksum in the algorithm of `$checksum`, when sent.
macro_rules! written {
    ($out:expr, $checksum:expr) => {
        Written {
            etag: $out.e_tag().unwrap_or_default().to_string(),
            checksum: $checksum.and_then(|(algorithm, _): (&ChecksumAlgorithm, &str)| {
                checksum_in!($out, algorithm)
            }),
            version: $out.version_id().map(str::to_owned),
        }
    };
}

/// Sends a body's checksum, if it has one, with a PutObject or UploadPart builder.
macro_rules! with_body_checksum {
    ($builder:expr, $body:expr) => {
        match $body.checksum {
            Some((algorithm, value)) => {
                with_checksum!(
                    $builder.checksum_algorithm(algorithm.clone()),
                    algorithm,
                    value
                )
            }
            None => $builder,
        }
    };
}

/// Sends a PutObject or UploadPart. A body with a checksum goes with an unsigned
/// payload: the checksum header is signed and S3 refuses a body that does not match it,
/// so SigV4 need not hash every byte once more (SHA-256, the largest cost of a streamed
/// copy's CPU after the checksums).
macro_rules! send_body {
    ($request:expr, $body:expr) => {
        match $body.checksum.is_some() {
            true => $request.customize().disable_payload_signing().send().await,
            false => $request.send().await,
        }
    };
}

/// The algorithms S3 may store a whole-object checksum in, strongest first.
const ALGORITHMS: [ChecksumAlgorithm; 5] = [
    ChecksumAlgorithm::Crc64Nvme,
    ChecksumAlgorithm::Crc32C,
    ChecksumAlgorithm::Crc32,
    ChecksumAlgorithm::Sha256,
    ChecksumAlgorithm::Sha1,
];

/// Whether a stored checksum covers the parts of a multipart upload rather than the whole
/// object. A server that does not say the type (moto) may keep a composite one for a
/// multipart object: only a single-part object's untyped checksum is whole.
fn is_composite(kind: Option<&ChecksumType>, etag: Option<&str>) -> bool {
    match kind {
        Some(kind) => *kind == ChecksumType::Composite,
        None => etag.unwrap_or_default().contains('-'),
    }
}

/// Whether S3 answered 404: the object or bucket is not there.
fn not_found<E>(err: &SdkError<E>) -> bool {
    err.raw_response()
        .is_some_and(|r| r.status().as_u16() == 404)
}

fn parse_expires(expires: &Option<String>) -> Option<DateTime> {
    expires
        .as_deref()
        .and_then(|s| DateTime::from_str(s, DateTimeFormat::HttpDate).ok())
}

/// Characters escaped in the `x-amz-copy-source` header: all but unreserved and `/`.
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn copy_source(from: ObjectAt<'_>) -> String {
    format!(
        "{}/{}",
        from.bucket,
        utf8_percent_encode(from.key, COPY_SOURCE)
    )
}

/// The archive storage class of a listed object that is not restored, or None when it
/// can be read. Glacier Instant Retrieval is read like Standard.
fn archive_of_listing(object: &Object) -> Option<String> {
    let class = object.storage_class()?;
    let archived = matches!(
        class,
        ObjectStorageClass::Glacier | ObjectStorageClass::DeepArchive
    );
    let restored = object.restore_status().is_some_and(|r| {
        r.is_restore_in_progress() == Some(false) && r.restore_expiry_date().is_some()
    });
    (archived && !restored).then(|| class.as_str().to_string())
}

impl S3 {
    /// Intelligent-Tiering says which tier an object is in only to HeadObject: those of
    /// this page are asked, a page's worth at a time.
    async fn mark_tiered_archives(
        &self,
        bucket: &str,
        page: &mut [ObjectInfo],
        listed: &[Object],
    ) -> Result<()> {
        let tiered: Vec<usize> = listed
            .iter()
            .enumerate()
            .filter(|(_, o)| o.storage_class() == Some(&ObjectStorageClass::IntelligentTiering))
            .map(|(index, _)| index)
            .collect();
        let tiers: Vec<(usize, Option<String>)> = stream::iter(tiered)
            .map(|index| {
                let key = page[index].key.clone();
                async move {
                    let out = self
                        .client
                        .head_object()
                        .bucket(bucket)
                        .key(&key)
                        .send()
                        .await
                        .map_err(aws_error)
                        .with_context(|| format!("reading s3://{bucket}/{key}"))?;
                    let tier = out
                        .archive_status()
                        .filter(|_| {
                            out.restore()
                                .is_none_or(|r| r.contains("ongoing-request=\"true\""))
                        })
                        .map(|status| format!("INTELLIGENT_TIERING {}", status.as_str()));
                    anyhow::Ok((index, tier))
                }
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        for (index, tier) in tiers {
            page[index].archived = tier;
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for S3 {
    async fn bucket_access(&self, bucket: &str) -> Result<BucketAccess> {
        match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(BucketAccess::Exists),
            Err(err) => {
                let code = err
                    .as_service_error()
                    .and_then(|e| e.code())
                    .map(str::to_owned);
                let status = err.raw_response().map(|r| r.status().as_u16());
                match (code.as_deref(), status) {
                    (_, Some(404)) | (Some("NotFound" | "NoSuchBucket"), _) => {
                        Ok(BucketAccess::Missing)
                    }
                    (_, Some(403)) => Ok(BucketAccess::Denied),
                    _ => Err(aws_error(err)).with_context(|| format!("reading bucket {bucket:?}")),
                }
            }
        }
    }

    async fn create_bucket(&self, bucket: &str, region: Option<&str>) -> Result<()> {
        let mut create = self.client.create_bucket().bucket(bucket);
        // us-east-1 is the one region that takes no location constraint.
        if let Some(region) = region.filter(|r| *r != "us-east-1") {
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region))
                    .build(),
            );
        }
        match create.send().await {
            Ok(_) => Ok(()),
            // Another machine made it a moment ago: fine, it is ours.
            Err(err)
                if err.as_service_error().and_then(|e| e.code())
                    == Some("BucketAlreadyOwnedByYou") =>
            {
                Ok(())
            }
            Err(err) => Err(aws_error(err)).with_context(|| format!("creating bucket {bucket:?}")),
        }
    }

    async fn make_private(&self, bucket: &str, keep_days: i32) -> Vec<(&'static str, Result<()>)> {
        let client = &self.client;
        let encryption = async {
            let rule = ServerSideEncryptionRule::builder()
                .apply_server_side_encryption_by_default(
                    ServerSideEncryptionByDefault::builder()
                        .sse_algorithm(ServerSideEncryption::Aes256)
                        .build()?,
                )
                .build();
            client
                .put_bucket_encryption()
                .bucket(bucket)
                .server_side_encryption_configuration(
                    ServerSideEncryptionConfiguration::builder()
                        .rules(rule)
                        .build()?,
                )
                .send()
                .await
                .map(drop)
                .map_err(aws_error)
        };
        let expiry = async {
            let rule = LifecycleRule::builder()
                .id("stackmigrate-journal")
                .status(ExpirationStatus::Enabled)
                .filter(LifecycleRuleFilter::builder().prefix("").build())
                .noncurrent_version_expiration(
                    NoncurrentVersionExpiration::builder()
                        .noncurrent_days(keep_days)
                        .build(),
                )
                .abort_incomplete_multipart_upload(
                    AbortIncompleteMultipartUpload::builder()
                        .days_after_initiation(7)
                        .build(),
                )
                .build()?;
            client
                .put_bucket_lifecycle_configuration()
                .bucket(bucket)
                .lifecycle_configuration(
                    BucketLifecycleConfiguration::builder()
                        .rules(rule)
                        .build()?,
                )
                .send()
                .await
                .map(drop)
                .map_err(aws_error)
        };
        vec![
            (
                "public access block",
                client
                    .put_public_access_block()
                    .bucket(bucket)
                    .public_access_block_configuration(
                        PublicAccessBlockConfiguration::builder()
                            .block_public_acls(true)
                            .ignore_public_acls(true)
                            .block_public_policy(true)
                            .restrict_public_buckets(true)
                            .build(),
                    )
                    .send()
                    .await
                    .map(drop)
                    .map_err(aws_error),
            ),
            ("default encryption", encryption.await),
            (
                "versioning",
                client
                    .put_bucket_versioning()
                    .bucket(bucket)
                    .versioning_configuration(
                        VersioningConfiguration::builder()
                            .status(BucketVersioningStatus::Enabled)
                            .build(),
                    )
                    .send()
                    .await
                    .map(drop)
                    .map_err(aws_error),
            ),
            ("expiry of old versions", expiry.await),
        ]
    }

    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start: Option<String>,
    ) -> Result<ListPage> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(start)
            .optional_object_attributes(OptionalObjectAttributes::RestoreStatus)
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("listing s3://{bucket}/{prefix}"))?;
        let mut objects: Vec<ObjectInfo> = out
            .contents()
            .iter()
            .map(|object| ObjectInfo {
                key: object.key().unwrap_or_default().to_string(),
                size: object.size().unwrap_or_default().max(0) as u64,
                etag: object.e_tag().unwrap_or_default().to_string(),
                modified: object.last_modified().map(|t| t.secs()).unwrap_or_default(),
                archived: archive_of_listing(object),
                checksum_algorithm: object
                    .checksum_algorithm()
                    .first()
                    .map(|a| a.as_str().to_string()),
            })
            .collect();
        self.mark_tiered_archives(bucket, &mut objects, out.contents())
            .await?;
        Ok(ListPage {
            objects,
            next: out.next_continuation_token().map(str::to_owned),
        })
    }

    async fn head(
        &self,
        at: ObjectAt<'_>,
        checksum: Option<&ChecksumAlgorithm>,
    ) -> Result<Option<Head>> {
        let out = match self
            .client
            .head_object()
            .bucket(at.bucket)
            .key(at.key)
            .set_checksum_mode(checksum.map(|_| ChecksumMode::Enabled))
            .send()
            .await
        {
            Ok(out) => out,
            Err(err) if not_found(&err) => return Ok(None),
            Err(err) => return Err(aws_error(err)).with_context(|| format!("reading {at}")),
        };
        let composite = is_composite(out.checksum_type(), out.e_tag());
        let checksum = checksum.and_then(|algorithm| {
            checksum_in!(out, algorithm)
                .filter(|value| !composite && !value.contains('-'))
                .map(|value| (algorithm.clone(), value))
        });
        Ok(Some(head_of!(out, at.key, checksum)))
    }

    async fn needs_customer_key(&self, at: ObjectAt<'_>) -> Result<bool> {
        match self
            .client
            .head_object()
            .bucket(at.bucket)
            .key(at.key)
            .send()
            .await
        {
            Ok(_) => Ok(false),
            Err(err) if not_found(&err) => Ok(false),
            Err(err)
                if err
                    .raw_response()
                    .is_some_and(|r| r.status().as_u16() == 400) =>
            {
                Ok(true)
            }
            Err(err) => Err(aws_error(err)).with_context(|| format!("reading {at}")),
        }
    }

    async fn tagging(&self, at: ObjectAt<'_>) -> Result<Option<String>> {
        let out = self
            .client
            .get_object_tagging()
            .bucket(at.bucket)
            .key(at.key)
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("reading the tags of {at}"))?;
        Ok(encode_tags(
            out.tag_set().iter().map(|t| (t.key(), t.value())),
        ))
    }

    async fn get(&self, at: ObjectAt<'_>, range: Option<(u64, u64)>) -> Result<Download> {
        let out = self
            .client
            .get_object()
            .bucket(at.bucket)
            .key(at.key)
            // Whole-object reads come with the stored checksum, which the SDK checks the
            // body against (a range cannot be checked).
            .set_checksum_mode(range.is_none().then_some(ChecksumMode::Enabled))
            .set_range(range.map(|(start, end)| format!("bytes={start}-{}", end.saturating_sub(1))))
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("reading {at}"))?;
        let checksum = (!is_composite(out.checksum_type(), out.e_tag()))
            .then(|| {
                ALGORITHMS.into_iter().find_map(|algorithm| {
                    checksum_in!(out, &algorithm)
                        .filter(|value| !value.contains('-'))
                        .map(|value| (algorithm, value))
                })
            })
            .flatten();
        Ok(Download {
            head: head_of!(out, at.key, checksum),
            body: Box::new(out.body.into_async_read()),
        })
    }

    async fn put(&self, at: ObjectAt<'_>, body: Body<'_>, new: NewObject<'_>) -> Result<Written> {
        let put = self
            .client
            .put_object()
            .bucket(at.bucket)
            .key(at.key)
            .body(ByteStream::from(body.bytes));
        let request = with_write_options!(
            with_headers!(with_body_checksum!(put, body), new.headers),
            new.options
        );
        let out = send_body!(request, body)
            .map_err(aws_error)
            .with_context(|| format!("writing {at}"))?;
        Ok(written!(out, body.checksum))
    }

    async fn put_if(
        &self,
        at: ObjectAt<'_>,
        bytes: Vec<u8>,
        current: Option<&str>,
    ) -> Result<Option<Written>> {
        let put = self
            .client
            .put_object()
            .bucket(at.bucket)
            .key(at.key)
            .body(ByteStream::from(bytes));
        let put = match current {
            Some(etag) => put.if_match(etag),
            None => put.if_none_match("*"),
        };
        match put.send().await {
            Ok(out) => Ok(Some(written!(out, None))),
            // 412: another write came first; 409: one is under way.
            Err(err)
                if err
                    .raw_response()
                    .is_some_and(|r| matches!(r.status().as_u16(), 412 | 409)) =>
            {
                Ok(None)
            }
            Err(err) => Err(aws_error(err)).with_context(|| format!("writing {at}")),
        }
    }

    async fn copy(&self, from: &CopySource<'_>, to: &CopyTarget<'_>) -> Result<Written> {
        let algorithm = to.algorithm;
        let source = copy_source(from.object);
        let copy = self
            .client
            .copy_object()
            .copy_source(&source)
            .bucket(to.object.bucket)
            .key(to.object.key)
            .metadata_directive(MetadataDirective::Copy)
            .set_expected_source_bucket_owner(from.expected_owner.map(str::to_owned))
            .checksum_algorithm(algorithm.clone());
        let out = with_write_options!(copy, to.options)
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("copying {source} to {}", to.object))?;
        let result = out.copy_object_result();
        Ok(Written {
            etag: result
                .and_then(|r| r.e_tag())
                .unwrap_or_default()
                .to_string(),
            checksum: result.and_then(|r| checksum_in!(r, algorithm)),
            version: out.version_id().map(str::to_owned),
        })
    }

    async fn create_multipart(
        &self,
        at: ObjectAt<'_>,
        new: NewObject<'_>,
        checksum: Option<&ChecksumAlgorithm>,
    ) -> Result<String> {
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(at.bucket)
            .key(at.key);
        if let Some(algorithm) = checksum {
            create = create
                .checksum_algorithm(algorithm.clone())
                .checksum_type(ChecksumType::FullObject);
        }
        let out = with_write_options!(with_headers!(create, new.headers), new.options)
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("starting a multipart upload to {at}"))?;
        Ok(out.upload_id().unwrap_or_default().to_string())
    }

    async fn upload_part(&self, upload: Upload<'_>, number: i32, body: Body<'_>) -> Result<Part> {
        let sent = body.checksum;
        let request = self
            .client
            .upload_part()
            .bucket(upload.object.bucket)
            .key(upload.object.key)
            .upload_id(upload.id)
            .part_number(number)
            .body(ByteStream::from(body.bytes));
        let out = send_body!(with_body_checksum!(request, body), body)
            .map_err(aws_error)
            .with_context(|| format!("writing part {number} of {}", upload.object))?;
        Ok(Part {
            number,
            etag: out.e_tag().unwrap_or_default().to_string(),
            checksum: sent.and_then(|(algorithm, _)| checksum_in!(out, algorithm)),
        })
    }

    async fn upload_part_copy(
        &self,
        upload: Upload<'_>,
        number: i32,
        from: &CopySource<'_>,
        (start, end): (u64, u64),
    ) -> Result<Part> {
        let source = copy_source(from.object);
        let out = self
            .client
            .upload_part_copy()
            .bucket(upload.object.bucket)
            .key(upload.object.key)
            .upload_id(upload.id)
            .part_number(number)
            .copy_source(&source)
            .set_expected_source_bucket_owner(from.expected_owner.map(str::to_owned))
            .set_copy_source_if_match(from.if_match.map(str::to_owned))
            .copy_source_range(format!("bytes={start}-{end}"))
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("copying part {number} of {source}"))?;
        let result = out.copy_part_result();
        // The part's checksum comes in the algorithm the upload was started with.
        let checksum = result.and_then(|r| {
            [
                ChecksumAlgorithm::Crc64Nvme,
                ChecksumAlgorithm::Crc32,
                ChecksumAlgorithm::Crc32C,
                ChecksumAlgorithm::Sha1,
                ChecksumAlgorithm::Sha256,
            ]
            .iter()
            .find_map(|algorithm| checksum_in!(r, algorithm))
        });
        Ok(Part {
            number,
            etag: result
                .and_then(|r| r.e_tag())
                .unwrap_or_default()
                .to_string(),
            checksum,
        })
    }

    async fn complete_multipart(
        &self,
        upload: Upload<'_>,
        mut parts: Vec<Part>,
        checksum: Option<(&ChecksumAlgorithm, &str)>,
    ) -> Result<Written> {
        parts.sort_by_key(|p| p.number);
        let completed = parts
            .into_iter()
            .map(|part| {
                let built = CompletedPart::builder()
                    .part_number(part.number)
                    .e_tag(part.etag);
                match (checksum, part.checksum) {
                    (Some((algorithm, _)), Some(value)) => with_checksum!(built, algorithm, value),
                    _ => built,
                }
                .build()
            })
            .collect();
        let mut complete = self
            .client
            .complete_multipart_upload()
            .bucket(upload.object.bucket)
            .key(upload.object.key)
            .upload_id(upload.id);
        if let Some((algorithm, value)) = checksum {
            complete =
                with_checksum!(complete, algorithm, value).checksum_type(ChecksumType::FullObject);
        }
        let out = complete
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("completing the upload of {}", upload.object))?;
        Ok(written!(out, checksum))
    }

    async fn abort_multipart(&self, upload: Upload<'_>) {
        let _ = self
            .client
            .abort_multipart_upload()
            .bucket(upload.object.bucket)
            .key(upload.object.key)
            .upload_id(upload.id)
            .send()
            .await;
    }

    async fn delete(&self, at: ObjectAt<'_>) -> Result<Option<String>> {
        let out = self
            .client
            .delete_object()
            .bucket(at.bucket)
            .key(at.key)
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("deleting {at}"))?;
        Ok(out.version_id().map(str::to_owned))
    }

    async fn delete_version(&self, at: ObjectAt<'_>, version: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(at.bucket)
            .key(at.key)
            .version_id(version)
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("deleting version {version} of {at}"))?;
        Ok(())
    }

    async fn versioning_enabled(&self, bucket: &str) -> Result<bool> {
        let out = self
            .client
            .get_bucket_versioning()
            .bucket(bucket)
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("reading the versioning of s3://{bucket}"))?;
        Ok(out.status() == Some(&BucketVersioningStatus::Enabled))
    }

    async fn versions(&self, at: ObjectAt<'_>) -> Result<Vec<Version>> {
        let key = at.key;
        let mut found: Vec<(i64, bool, Version)> = Vec::new();
        let (mut key_marker, mut version_marker) = (None, None);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(at.bucket)
                .prefix(key)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(aws_error)
                .with_context(|| format!("listing the versions of {at}"))?;
            for v in page.versions().iter().filter(|v| v.key() == Some(key)) {
                let version = Version {
                    id: v.version_id().unwrap_or("null").to_string(),
                    etag: v.e_tag().unwrap_or_default().to_string(),
                    delete_marker: false,
                };
                let when = v
                    .last_modified()
                    .map(|t| t.as_nanos() as i64)
                    .unwrap_or_default();
                found.push((when, v.is_latest() == Some(true), version));
            }
            for m in page
                .delete_markers()
                .iter()
                .filter(|m| m.key() == Some(key))
            {
                let marker = Version {
                    id: m.version_id().unwrap_or("null").to_string(),
                    etag: String::new(),
                    delete_marker: true,
                };
                let when = m
                    .last_modified()
                    .map(|t| t.as_nanos() as i64)
                    .unwrap_or_default();
                found.push((when, m.is_latest() == Some(true), marker));
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            version_marker = page.next_version_id_marker().map(str::to_owned);
        }
        // The latest first, then by time: listings order each key's versions newest
        // first, but versions and markers come in separate lists.
        found.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
        Ok(found.into_iter().map(|(_, _, v)| v).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::types::RestoreStatus;

    #[test]
    fn copy_source_escapes_all_but_slashes() {
        assert_eq!(
            copy_source(ObjectAt {
                bucket: "b",
                key: "a b/c+d#é.png"
            }),
            "b/a%20b/c%2Bd%23%C3%A9.png"
        );
    }

    #[test]
    fn expires_round_trips_http_dates() {
        let parsed = parse_expires(&Some("Wed, 21 Oct 2015 07:28:00 GMT".into())).unwrap();
        assert_eq!(parsed.secs(), 1445412480);
        assert!(parse_expires(&Some("not a date".into())).is_none());
    }

    fn listed(class: ObjectStorageClass, restore: Option<RestoreStatus>) -> Object {
        Object::builder()
            .key("k")
            .storage_class(class)
            .set_restore_status(restore)
            .build()
    }

    #[test]
    fn only_unrestored_glacier_and_deep_archive_objects_are_archived() {
        assert_eq!(
            archive_of_listing(&listed(ObjectStorageClass::Glacier, None)).as_deref(),
            Some("GLACIER")
        );
        assert_eq!(
            archive_of_listing(&listed(ObjectStorageClass::DeepArchive, None)).as_deref(),
            Some("DEEP_ARCHIVE")
        );
        for readable in [
            ObjectStorageClass::Standard,
            ObjectStorageClass::GlacierIr,
            ObjectStorageClass::StandardIa,
        ] {
            assert_eq!(archive_of_listing(&listed(readable, None)), None);
        }
        let restored = RestoreStatus::builder()
            .is_restore_in_progress(false)
            .restore_expiry_date(DateTime::from_secs(2_000_000_000))
            .build();
        assert_eq!(
            archive_of_listing(&listed(ObjectStorageClass::Glacier, Some(restored))),
            None
        );
        let restoring = RestoreStatus::builder()
            .is_restore_in_progress(true)
            .build();
        assert!(
            archive_of_listing(&listed(ObjectStorageClass::Glacier, Some(restoring))).is_some()
        );
    }
}
