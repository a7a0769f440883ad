//! A private bucket made for the default journal, as CDK's bootstrap bucket is made:
//! public access blocked, encrypted by default, versioned, old versions expiring.

use anyhow::{Context, Result};
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketLocationConstraint,
    BucketVersioningStatus, CreateBucketConfiguration, ExpirationStatus, LifecycleRule,
    LifecycleRuleFilter, NoncurrentVersionExpiration, PublicAccessBlockConfiguration,
    ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
    ServerSideEncryptionRule, VersioningConfiguration,
};

use super::Bucket;
use crate::copy::aws_error;

/// Days a journal object's overwritten or deleted versions are kept.
const OLD_VERSIONS_KEPT_DAYS: i32 = 30;

/// Whether the bucket exists (and these credentials may see it).
pub(crate) async fn exists(bucket: &Bucket) -> Result<bool> {
    match bucket
        .client
        .head_bucket()
        .bucket(&bucket.name)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(err) if super::not_found(&err) => Ok(false),
        Err(err) => {
            Err(aws_error(err)).with_context(|| format!("reading bucket {:?}", bucket.name))
        }
    }
}

/// Creates the bucket in `region` (None: the endpoint's default) and applies the
/// settings. With `strict` (AWS itself) every setting must take; elsewhere a server
/// that does not implement one is tolerated, and the settings it refused are returned.
pub(crate) async fn create_private(
    bucket: &Bucket,
    region: Option<&str>,
    strict: bool,
) -> Result<Vec<&'static str>> {
    let mut create = bucket.client.create_bucket().bucket(&bucket.name);
    // us-east-1 is the one region that takes no location constraint.
    if let Some(region) = region.filter(|r| *r != "us-east-1") {
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build(),
        );
    }
    if let Err(err) = create.send().await {
        let code = err.as_service_error().and_then(|e| {
            use aws_sdk_s3::error::ProvideErrorMetadata;
            e.code().map(str::to_owned)
        });
        // Another machine made it a moment ago: fine, it is ours.
        if code.as_deref() != Some("BucketAlreadyOwnedByYou") {
            return Err(aws_error(err))
                .with_context(|| format!("creating bucket {:?}", bucket.name));
        }
    }
    let mut refused = Vec::new();
    let client = &bucket.client;
    let name = bucket.name.as_str();
    let outcomes: [(&'static str, Result<()>); 4] = [
        (
            "public access block",
            client
                .put_public_access_block()
                .bucket(name)
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
        (
            "default encryption",
            client
                .put_bucket_encryption()
                .bucket(name)
                .server_side_encryption_configuration(
                    ServerSideEncryptionConfiguration::builder()
                        .rules(
                            ServerSideEncryptionRule::builder()
                                .apply_server_side_encryption_by_default(
                                    ServerSideEncryptionByDefault::builder()
                                        .sse_algorithm(ServerSideEncryption::Aes256)
                                        .build()?,
                                )
                                .build(),
                        )
                        .build()?,
                )
                .send()
                .await
                .map(drop)
                .map_err(aws_error),
        ),
        (
            "versioning",
            client
                .put_bucket_versioning()
                .bucket(name)
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
        (
            "expiry of old versions",
            client
                .put_bucket_lifecycle_configuration()
                .bucket(name)
                .lifecycle_configuration(
                    BucketLifecycleConfiguration::builder()
                        .rules(
                            LifecycleRule::builder()
                                .id("stackmigrate-journal")
                                .status(ExpirationStatus::Enabled)
                                .filter(LifecycleRuleFilter::builder().prefix("").build())
                                .noncurrent_version_expiration(
                                    NoncurrentVersionExpiration::builder()
                                        .noncurrent_days(OLD_VERSIONS_KEPT_DAYS)
                                        .build(),
                                )
                                .abort_incomplete_multipart_upload(
                                    AbortIncompleteMultipartUpload::builder()
                                        .days_after_initiation(7)
                                        .build(),
                                )
                                .build()?,
                        )
                        .build()?,
                )
                .send()
                .await
                .map(drop)
                .map_err(aws_error),
        ),
    ];
    for (setting, outcome) in outcomes {
        match outcome {
            Ok(()) => {}
            Err(err) if strict => {
                return Err(err)
                    .with_context(|| format!("setting the {setting} of bucket {name:?}"))
            }
            Err(_) => refused.push(setting),
        }
    }
    Ok(refused)
}
