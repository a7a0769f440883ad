// Data migrations between Pulumi stacks as resources: DynamoDB tables, S3 buckets, ChromaDB snapshots and models. Preview is the dry run, up copies and verifies, destroy rolls back.
package stackmigrate
