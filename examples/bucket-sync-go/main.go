// BucketSync (and, when tables are configured, DynamoCopy) with the Go SDK; the copies'
// outputs become the stack's outputs.
package main

import (
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/config"
	"github.com/stackmigrate/stackmigrate/sdk/go/stackmigrate"
)

func main() {
	pulumi.Run(func(ctx *pulumi.Context) error {
		conf := config.New(ctx, "")
		// The provider's connections come from the stack's stackmigrate:source and
		// stackmigrate:target config (or the AWS SDK's chain when unset).
		rawImages, err := stackmigrate.NewBucketSync(ctx, "rawImages", &stackmigrate.BucketSyncArgs{
			SourceBucket: pulumi.String(conf.Require("sourceBucket")),
			TargetBucket: pulumi.String(conf.Require("targetBucket")),
			Exclude:      pulumi.ToStringArray([]string{"*.json", "*.ndjson", "*/delta/*", "*/snapshot/*"}),
		})
		if err != nil {
			return err
		}
		ctx.Export("objectsScanned", rawImages.ObjectsScanned)
		ctx.Export("objectsCopied", rawImages.ObjectsCopied)
		ctx.Export("objectsSkipped", rawImages.ObjectsSkipped)
		ctx.Export("objectsExcluded", rawImages.ObjectsExcluded)
		ctx.Export("bytesCopied", rawImages.BytesCopied)
		ctx.Export("verified", rawImages.Verified)
		ctx.Export("journalUri", rawImages.JournalUri)

		sourceTable, targetTable := conf.Get("sourceTable"), conf.Get("targetTable")
		if sourceTable == "" || targetTable == "" {
			return nil
		}
		receipts, err := stackmigrate.NewDynamoCopy(ctx, "receipts", &stackmigrate.DynamoCopyArgs{
			SourceTable:  pulumi.String(sourceTable),
			TargetTable:  pulumi.String(targetTable),
			ExcludeTypes: pulumi.ToStringArray([]string{"COMPACTION_RUN", "COMPACTION_LOCK", "EMBEDDING_BATCH_RESULT", "JOB", "JOB_METRIC"}),
		})
		if err != nil {
			return err
		}
		ctx.Export("itemsCopied", receipts.ItemsCopied)
		ctx.Export("itemsVerified", receipts.Verified)
		return nil
	})
}
