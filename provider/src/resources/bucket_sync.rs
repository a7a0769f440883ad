//! BucketSync: keeps a target bucket (or prefix) in step with a source one, like
//! `aws s3 sync`, with a plan at preview, a journal, verification and rollback.

use anyhow::{bail, Result};
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{BucketInputs, Context, Failure, Migration, Planned, TargetClaim};
use crate::copy::filter::KeyFilter;
use crate::copy::s3::{self, WriteOptions};
use crate::copy::sync::{self, SyncCounts, SyncSpec};
use aws_sdk_s3::types::{ServerSideEncryption, StorageClass};

pub struct BucketSync;

/// What to do with an object that already exists in the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnConflict {
    /// Overwrite it unless it is identical (same size and ETag) to the source object.
    #[default]
    SkipIdentical,
    /// Never touch it.
    Skip,
    /// Overwrite it, even when identical.
    Overwrite,
}

impl From<OnConflict> for sync::OnConflict {
    fn from(choice: OnConflict) -> Self {
        match choice {
            OnConflict::SkipIdentical => sync::OnConflict::SkipIdentical,
            OnConflict::Skip => sync::OnConflict::Skip,
            OnConflict::Overwrite => sync::OnConflict::Overwrite,
        }
    }
}

/// What to do with source objects in an archive storage class (S3 Glacier Flexible
/// Retrieval, Deep Archive, Intelligent-Tiering's archive tiers), which cannot be read
/// until restored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Archived {
    /// Fail at preview naming them, before anything is written.
    #[default]
    Fail,
    /// Leave them out (the target keeps what it has at their keys) and count them.
    Skip,
}

/// How each written object is proven to hold its source's content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Verify {
    /// By a whole-content checksum or the MD5 ETag both sides report; where neither covers both (multipart or KMS-encrypted sources without a stored checksum) only the sizes compare, and `verified` is false.
    #[default]
    Checksums,
    /// As `checksums`, and where those cannot tell, both objects are read back and the MD5s of their bytes compared, so `verified` can be true for every object; such objects are read twice more.
    Content,
}

impl From<Archived> for sync::Archived {
    fn from(choice: Archived) -> Self {
        match choice {
            Archived::Fail => sync::Archived::Fail,
            Archived::Skip => sync::Archived::Skip,
        }
    }
}

/// Inputs of BucketSync.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inputs {
    /// Bucket to copy from, on the source connection. Never written. Default: the `output` of `sourceStack`.
    #[schemars(extend("x-replace-on-change" = true))]
    pub source_bucket: Option<String>,
    /// Bucket to copy into, on the target connection. Default: the `output` of `targetStack`.
    #[schemars(extend("x-replace-on-change" = true))]
    pub target_bucket: Option<String>,
    /// Stack output naming the bucket (for example `raw_bucket_name` or `cdn_bucket_name`), read from `sourceStack` for the source and `targetStack` for the target when `sourceBucket` / `targetBucket` are not set.
    pub output: Option<String>,
    /// Only keys under this prefix are copied; it is replaced by `targetPrefix` in the target.
    #[serde(default)]
    #[schemars(extend("x-replace-on-change" = true))]
    pub source_prefix: String,
    /// Prefix the copied keys get in the target.
    #[serde(default)]
    #[schemars(extend("x-replace-on-change" = true))]
    pub target_prefix: String,
    /// Globs (as `aws s3 sync --include`) that re-include keys an `exclude` removed; matched against the key relative to `sourcePrefix`, `*` crossing `/`.
    #[serde(default)]
    pub include: Vec<String>,
    /// Globs (as `aws s3 sync --exclude`) of keys not to copy, relative to `sourcePrefix`; for example `*.json` or `*/delta/*`.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// For a key the target already has: `skipIdentical` (default) overwrites it unless size and ETag match, `skip` never touches it, `overwrite` always writes it. Overwritten objects are backed up in the journal first.
    #[serde(default)]
    pub on_conflict: OnConflict,
    /// Delete target objects (under `targetPrefix`, passing the filters) that the source does not have; they are backed up in the journal first. Default false.
    #[serde(default)]
    pub delete_extraneous: bool,
    /// `checksums` (default): proof by checksum or MD5 ETag, size only where neither covers both sides (then `verified` is false); `content`: read both objects where those cannot tell.
    #[serde(default)]
    pub verify: Verify,
    /// Allow `include`/`exclude` or `sourcePrefix` to select no object of a source bucket that has objects. Default false: such a selection fails at preview, as it is usually a typo.
    #[serde(default)]
    pub allow_empty: bool,
    /// Source objects in an archive storage class (GLACIER, DEEP_ARCHIVE, Intelligent-Tiering archive tiers) cannot be read until restored: `fail` (default) stops at preview naming them, `skip` leaves them out and counts them in `objectsArchived`.
    #[serde(default)]
    pub archived: Archived,
    /// Storage class of the objects this resource writes, as S3 names it (`STANDARD`, `STANDARD_IA`, `INTELLIGENT_TIERING`, `GLACIER_IR`, ...). Default: the target bucket's default (STANDARD), not the source object's.
    pub storage_class: Option<String>,
    /// Encryption of the objects this resource writes: `AES256`, `aws:kms` or `aws:kms:dsse`. Default: the target bucket's default encryption, never the source's KMS key (which the target account may not be allowed to use).
    pub server_side_encryption: Option<String>,
    /// The KMS key (ID, ARN or alias) for `serverSideEncryption: aws:kms` or `aws:kms:dsse`. Default: the account's AWS managed key for S3.
    pub sse_kms_key_id: Option<String>,
    /// Let other live migrations that also set `shareTarget` write into this bucket prefix (or one overlapping it): whichever is destroyed first hands the others its backups of the objects they wrote over, so destroys in any order put back what was there before. Default false: another migration into the prefix is refused at preview, naming it.
    #[serde(default)]
    pub share_target: bool,
}

/// Outputs of BucketSync: what the last run did (in preview, what it would do).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Outputs {
    /// The source bucket, as given or read from the source stack's outputs.
    pub source_bucket: String,
    /// The target bucket, as given or read from the target stack's outputs.
    pub target_bucket: String,
    /// Source objects listed under `sourcePrefix`.
    pub objects_scanned: u64,
    /// Objects written to the target (new ones and overwrites).
    #[schemars(extend("x-pending" = true))]
    pub objects_copied: u64,
    /// Objects the target already had and that were left as they were.
    pub objects_skipped: u64,
    /// Of `objectsCopied`, those that replaced an existing target object.
    pub objects_overwritten: u64,
    /// Target objects deleted because the source lacks them (`deleteExtraneous`).
    pub objects_deleted: u64,
    /// Source objects left out by `include`/`exclude`.
    pub objects_excluded: u64,
    /// Source objects left out because they are archived (`archived: skip`).
    #[serde(default)]
    pub objects_archived: u64,
    /// Bytes written to the target.
    pub bytes_copied: u64,
    /// True once every written object was proven to hold its source's content by a checksum, an MD5 ETag or (with `verify: content`) by reading both; false when any was compared by size only (`verifiedBySize` above zero). `verifiedByChecksum`, `verifiedByEtag`, `verifiedByContent` and `verifiedBySize` say how.
    pub verified: bool,
    /// Written objects proven by whole-content checksums: the target's checksum equals that of the bytes sent, and those bytes match the source's stored checksum.
    #[serde(default)]
    pub verified_by_checksum: u64,
    /// Written objects proven by their MD5 ETag (single part, not KMS-encrypted) where no checksum covers both sides.
    #[serde(default)]
    pub verified_by_etag: u64,
    /// Written objects proven by reading both back and comparing the MD5s of their bytes (`verify: content`), where no checksum or MD5 ETag covers both sides.
    #[serde(default)]
    pub verified_by_content: u64,
    /// Written objects of which only the size could be compared: neither a checksum nor an MD5 ETag covers both sides (multipart or KMS-encrypted sources without a stored checksum). `pulumi up` warns when there are any.
    #[serde(default)]
    pub verified_by_size: u64,
    /// Target keys the last run wrote, overwrote or deleted (in preview: would), for a CdnInvalidation's `keys`: up to 3,000, else `*` alone, which invalidates everything.
    #[serde(default)]
    pub changed_keys: Vec<String>,
}

impl Outputs {
    fn from_counts(spec: &SyncSpec, counts: &SyncCounts, verified: bool) -> Self {
        Outputs {
            source_bucket: spec.source.name.clone(),
            target_bucket: spec.target.name.clone(),
            objects_scanned: counts.scanned,
            objects_copied: counts.copied,
            objects_skipped: counts.skipped,
            objects_overwritten: counts.overwritten,
            objects_deleted: counts.deleted,
            objects_excluded: counts.excluded,
            objects_archived: counts.archived,
            bytes_copied: counts.bytes_copied,
            verified,
            verified_by_checksum: counts.verified_by_checksum,
            verified_by_etag: counts.verified_by_etag,
            verified_by_content: counts.verified_by_content,
            verified_by_size: counts.verified_by_size,
            changed_keys: counts.changed_keys.clone(),
        }
    }
}

fn normalize_prefix(prefix: &str) -> String {
    prefix.trim_start_matches('/').to_string()
}

impl BucketSync {
    async fn spec(ctx: &Context, inputs: &Inputs) -> Result<SyncSpec> {
        let source_prefix = normalize_prefix(&inputs.source_prefix);
        let target_prefix = normalize_prefix(&inputs.target_prefix);
        let pair = ctx
            .bucket_pair(BucketInputs {
                source_bucket: &inputs.source_bucket,
                target_bucket: &inputs.target_bucket,
                output: inputs.output.as_deref(),
                source_prefix: &source_prefix,
                target_prefix: &target_prefix,
            })
            .await?;
        let claim =
            TargetClaim::bucket(&pair.target.name, &target_prefix).shared(inputs.share_target);
        ctx.claim_target(&claim).await?;
        Ok(SyncSpec {
            source: pair.source,
            source_prefix,
            target: pair.target,
            target_prefix,
            server_side: pair.server_side,
            filter: KeyFilter::new(&inputs.include, &inputs.exclude)?,
            on_conflict: inputs.on_conflict.into(),
            delete_extraneous: inputs.delete_extraneous,
            archived: inputs.archived.into(),
            write: write_options(inputs),
            verify_content: inputs.verify == Verify::Content,
        })
    }
}

/// Archived sources stop the sync unless `archived: skip` leaves them out: say so.
fn archived_advice(err: anyhow::Error) -> anyhow::Error {
    match err.downcast_ref::<sync::ArchivedSources>() {
        Some(archived) => {
            anyhow::anyhow!(archived.message(Some("set `archived: skip` to leave them out")))
        }
        None => err,
    }
}

/// The write options the inputs ask for; `validate` has checked their values.
fn write_options(inputs: &Inputs) -> WriteOptions {
    WriteOptions {
        storage_class: inputs.storage_class.as_deref().map(StorageClass::from),
        server_side_encryption: inputs
            .server_side_encryption
            .as_deref()
            .map(ServerSideEncryption::from),
        sse_kms_key_id: inputs.sse_kms_key_id.clone(),
    }
}

/// Failures of the storage class and encryption inputs: unknown names, or a KMS key
/// without KMS encryption.
fn write_option_failures(inputs: &Inputs) -> Vec<Failure> {
    let mut failures = Vec::new();
    for (value, name, allowed) in [
        (
            &inputs.storage_class,
            "storageClass",
            StorageClass::values(),
        ),
        (
            &inputs.server_side_encryption,
            "serverSideEncryption",
            ServerSideEncryption::values(),
        ),
    ] {
        if let Some(value) = value.as_deref().filter(|v| !allowed.contains(v)) {
            failures.push(Failure::new(
                name,
                format!(
                    "{value:?} is not one S3 knows; use one of {}",
                    allowed.join(", ")
                ),
            ));
        }
    }
    let kms = matches!(
        inputs.server_side_encryption.as_deref(),
        Some("aws:kms" | "aws:kms:dsse")
    );
    if inputs.sse_kms_key_id.is_some() && !kms {
        failures.push(Failure::new(
            "sseKmsKeyId",
            "a KMS key needs serverSideEncryption: aws:kms (or aws:kms:dsse)",
        ));
    }
    failures
}

/// What is needed to tell a selection that is empty by mistake from an empty source.
struct Selection<'a> {
    allow_empty: bool,
    spec: &'a SyncSpec,
    /// Whether the source bucket holds anything at all, asked only when a prefix is set.
    bucket_has_objects: bool,
}

impl<'a> Selection<'a> {
    async fn of(inputs: &Inputs, spec: &'a SyncSpec) -> Result<Selection<'a>> {
        let bucket_has_objects = !inputs.allow_empty
            && !spec.source_prefix.is_empty()
            && s3::Lister::new(&spec.source, "").next().await?.is_some();
        Ok(Selection {
            allow_empty: inputs.allow_empty,
            spec,
            bucket_has_objects,
        })
    }

    /// Fails when the filters or the prefix select nothing from a source that has objects.
    fn check(&self, counts: &SyncCounts) -> Result<()> {
        if self.allow_empty || counts.scanned > counts.excluded {
            return Ok(());
        }
        let source = format!("s3://{}/{}", self.spec.source.name, self.spec.source_prefix);
        if counts.scanned > 0 {
            bail!(
                "include/exclude select none of the {} objects under {source}; fix the globs, or set allowEmpty: true if nothing is meant to be copied",
                counts.scanned
            );
        }
        if self.bucket_has_objects {
            bail!(
                "sourcePrefix {:?} selects nothing: no object of s3://{} starts with it; fix the prefix, or set allowEmpty: true if nothing is meant to be copied",
                self.spec.source_prefix,
                self.spec.source.name
            );
        }
        Ok(())
    }
}

#[async_trait]
impl Migration for BucketSync {
    type Inputs = Inputs;
    type Outputs = Outputs;
    const TOKEN: &'static str = "stackmigrate:index:BucketSync";
    const DESCRIPTION: &'static str = concat!(
        "Copies objects from a source bucket to a target bucket like `aws s3 sync`: \
        preview plans (objects and bytes), up copies (server side on one endpoint, streamed across endpoints), \
        verifies and journals, destroy restores the target.",
        include_str!("examples/BucketSync.md")
    );

    fn validate(inputs: &Inputs) -> Vec<Failure> {
        let mut failures = Vec::new();
        for (property, name) in [
            (&inputs.source_bucket, "sourceBucket"),
            (&inputs.target_bucket, "targetBucket"),
        ] {
            match property {
                Some(bucket) if bucket.trim().is_empty() => {
                    failures.push(Failure::new(name, "must name a bucket"))
                }
                None if inputs.output.is_none() => failures.push(Failure::new(
                    name,
                    "set a bucket name, or `output` to read it from the stack's outputs (for example raw_bucket_name)",
                )),
                _ => {}
            }
        }
        failures.extend(write_option_failures(inputs));
        for (patterns, name) in [(&inputs.include, "include"), (&inputs.exclude, "exclude")] {
            for (index, pattern) in patterns.iter().enumerate() {
                if let Err(err) = KeyFilter::new(&[], std::slice::from_ref(pattern)) {
                    failures.push(Failure::new(
                        &format!("{name}[{index}]"),
                        format!("{err}; globs use *, ?, [abc] and [!abc], with brackets closed"),
                    ));
                }
            }
        }
        failures
    }

    async fn plan(&self, ctx: &Context, inputs: &Inputs) -> Result<Planned<Outputs>> {
        let spec = Self::spec(ctx, inputs).await?;
        let selection = Selection::of(inputs, &spec).await?;
        let journal = ctx.journal().await?;
        let counts = sync::plan(&spec, Some(&journal), ctx.progress.as_ref())
            .await
            .map_err(archived_advice)?;
        selection.check(&counts)?;
        Ok(Planned {
            pending: counts.changes() > 0,
            outputs: Outputs::from_counts(&spec, &counts, false),
        })
    }

    async fn apply(&self, ctx: &Context, inputs: &Inputs) -> Result<Outputs> {
        let spec = Self::spec(ctx, inputs).await?;
        let selection = Selection::of(inputs, &spec).await?;
        let journal = ctx.journal().await?;
        ctx.resolved(&Outputs::from_counts(&spec, &SyncCounts::default(), false));
        let counts = sync::run(&spec, &journal, ctx.progress.as_ref(), |planned| {
            selection.check(planned)
        })
        .await
        .map_err(archived_advice)?;
        // Size alone proves nothing: such a run is done but not verified (sync::run warned).
        let verified = counts.verified_by_size == 0;
        let done = if verified {
            "done and verified"
        } else {
            "done, not verified"
        };
        ctx.progress
            .info(&format!("{done}: {}", counts.summary(true)));
        Ok(Outputs::from_counts(&spec, &counts, verified))
    }

    async fn rollback(&self, ctx: &Context, state: &Outputs) -> Result<()> {
        ctx.rollback_bucket(&state.target_bucket).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::resources::inputs_from as inputs;

    #[test]
    fn invalid_globs_are_named_with_their_index() {
        let failures = BucketSync::validate(&inputs(serde_json::json!({
            "sourceBucket": "a", "targetBucket": "b", "exclude": ["*.json", "img/[ab"]
        })));
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].property, "exclude[1]");
        assert!(
            failures[0].reason.contains("img/[ab"),
            "{}",
            failures[0].reason
        );
    }

    #[test]
    fn on_conflict_accepts_only_its_values() {
        let err = serde_json::from_value::<Inputs>(serde_json::json!({
            "sourceBucket": "a", "targetBucket": "b", "onConflict": "replace"
        }))
        .unwrap_err();
        assert!(err.to_string().contains("skipIdentical"), "{err}");
    }

    #[test]
    fn storage_class_and_encryption_are_checked_against_what_s3_knows() {
        let failures = BucketSync::validate(&inputs(serde_json::json!({
            "sourceBucket": "a", "targetBucket": "b",
            "storageClass": "STANDARD-IA", "serverSideEncryption": "kms", "sseKmsKeyId": "alias/prod"
        })));
        let named: Vec<&str> = failures.iter().map(|f| f.property.as_str()).collect();
        assert_eq!(
            named,
            ["storageClass", "serverSideEncryption", "sseKmsKeyId"]
        );
        assert!(
            failures[0].reason.contains("STANDARD_IA"),
            "{}",
            failures[0].reason
        );
        assert!(
            failures[1].reason.contains("aws:kms"),
            "{}",
            failures[1].reason
        );

        let good = inputs(serde_json::json!({
            "sourceBucket": "a", "targetBucket": "b",
            "storageClass": "STANDARD_IA", "serverSideEncryption": "aws:kms", "sseKmsKeyId": "alias/prod"
        }));
        assert!(BucketSync::validate(&good).is_empty());
        let options = write_options(&good);
        assert_eq!(options.storage_class, Some(StorageClass::StandardIa));
        assert_eq!(
            options.server_side_encryption,
            Some(ServerSideEncryption::AwsKms)
        );
        assert_eq!(options.sse_kms_key_id.as_deref(), Some("alias/prod"));
        assert_eq!(
            write_options(&inputs(serde_json::json!({"output": "raw"}))),
            WriteOptions::default()
        );
    }
}
