import pulumi
import pulumi_stackmigrate as stackmigrate

config = pulumi.Config()

# The provider's connections come from the stack's stackmigrate:source and
# stackmigrate:target config (or the AWS SDK's chain when unset).
raw_images = stackmigrate.BucketSync(
    "rawImages",
    source_bucket=config.require("sourceBucket"),
    target_bucket=config.require("targetBucket"),
    exclude=["*.json", "*.ndjson", "*/delta/*", "*/snapshot/*"],
)

pulumi.export("objectsScanned", raw_images.objects_scanned)
pulumi.export("objectsCopied", raw_images.objects_copied)
pulumi.export("objectsSkipped", raw_images.objects_skipped)
pulumi.export("objectsExcluded", raw_images.objects_excluded)
pulumi.export("bytesCopied", raw_images.bytes_copied)
pulumi.export("verified", raw_images.verified)
pulumi.export("journalUri", raw_images.journal_uri)
