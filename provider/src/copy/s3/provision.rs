//! A private bucket made for the default journal, as CDK's bootstrap bucket is made:
//! public access blocked, encrypted by default, versioned, old versions expiring.

use anyhow::{bail, Context, Result};

use super::Bucket;
use crate::copy::store::BucketAccess;

/// Days a journal object's overwritten or deleted versions are kept.
const OLD_VERSIONS_KEPT_DAYS: i32 = 30;

/// Whether the bucket exists (and these credentials may see it).
pub(crate) async fn exists(bucket: &Bucket) -> Result<bool> {
    let access = bucket
        .store
        .bucket_access(&bucket.name)
        .await
        .with_context(|| format!("reading bucket {:?}", bucket.name))?;
    match access {
        BucketAccess::Exists => Ok(true),
        BucketAccess::Missing => Ok(false),
        BucketAccess::Denied => bail!("reading bucket {:?}: access denied", bucket.name),
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
    bucket.store.create_bucket(&bucket.name, region).await?;
    let mut refused = Vec::new();
    let name = &bucket.name;
    for (setting, outcome) in bucket
        .store
        .make_private(name, OLD_VERSIONS_KEPT_DAYS)
        .await
    {
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
