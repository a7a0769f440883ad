import * as pulumi from "@pulumi/pulumi";
import * as stackmigrate from "@stackmigrate/stackmigrate";

const config = new pulumi.Config();

// The provider's connections come from the stack's stackmigrate:source and
// stackmigrate:target config (or the AWS SDK's chain when unset).
const rawImages = new stackmigrate.BucketSync("rawImages", {
    sourceBucket: config.require("sourceBucket"),
    targetBucket: config.require("targetBucket"),
    exclude: ["*.json", "*.ndjson", "*/delta/*", "*/snapshot/*"],
});

export const objectsScanned = rawImages.objectsScanned;
export const objectsCopied = rawImages.objectsCopied;
export const objectsSkipped = rawImages.objectsSkipped;
export const objectsExcluded = rawImages.objectsExcluded;
export const bytesCopied = rawImages.bytesCopied;
export const verified = rawImages.verified;
export const journalUri = rawImages.journalUri;
