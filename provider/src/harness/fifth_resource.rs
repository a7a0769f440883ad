//! CONTRIBUTING's steps, checked: a new resource is a file (its inputs, outputs and
//! policy), its engine (here the journalled single write the snapshot pointer uses), a
//! line in the registry (`registry::all_resources`, in test builds) and an examples
//! file; the schema, its checks, Check, Diff, Create and Delete follow.

use anyhow::Result;
use async_trait::async_trait;
use pulumi_gestalt_proto::pulumi::pulumirpc::{
    self as rpc, resource_provider_server::ResourceProvider,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tonic::Request;

use super::{unique, Harness};
use crate::copy::s3::{self, Bucket, Buckets};
use crate::copy::sync::put_journalled;
use crate::resources::{Context, Failure, Migration, Planned};

/// Writes one marker object into a bucket.
pub(crate) struct Marker;

/// Inputs of Marker.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Inputs {
    /// Bucket to mark, on the target connection.
    #[schemars(extend("x-replace-on-change" = true))]
    target_bucket: String,
    /// The marker's key.
    key: String,
}

/// Outputs of Marker.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Outputs {
    /// The bucket marked.
    target_bucket: String,
    /// Whether the marker is (or would be) written.
    #[schemars(extend("x-pending" = true))]
    written: bool,
}

#[async_trait]
impl Migration for Marker {
    type Inputs = Inputs;
    type Outputs = Outputs;
    const TOKEN: &'static str = "stackmigrate:index:Marker";
    const DESCRIPTION: &'static str = concat!(
        "Writes one marker object.",
        include_str!("examples/Marker.md")
    );

    fn validate(inputs: &Inputs) -> Vec<Failure> {
        if inputs.key.is_empty() {
            return vec![Failure::new("key", "must name an object key")];
        }
        Vec::new()
    }

    async fn plan(&self, ctx: &Context, inputs: &Inputs) -> Result<Planned<Outputs>> {
        let target = bucket(ctx, &inputs.target_bucket).await?;
        let missing = s3::head(&target, &inputs.key).await?.is_none();
        Ok(Planned {
            pending: missing,
            outputs: Outputs {
                target_bucket: target.name,
                written: missing,
            },
        })
    }

    async fn apply(&self, ctx: &Context, inputs: &Inputs) -> Result<Outputs> {
        let target = bucket(ctx, &inputs.target_bucket).await?;
        let journal = ctx.journal().await?;
        ctx.resolved(&Outputs {
            target_bucket: target.name.clone(),
            written: false,
        });
        put_journalled(&target, &inputs.key, b"marked".to_vec(), &journal, None).await?;
        Ok(Outputs {
            target_bucket: target.name,
            written: true,
        })
    }

    async fn rollback(&self, ctx: &Context, state: &Outputs) -> Result<()> {
        ctx.rollback_bucket(&state.target_bucket).await
    }
}

async fn bucket(ctx: &Context, name: &str) -> Result<Bucket> {
    ctx.clients.target.bucket(name).await
}

#[tokio::test]
async fn a_fifth_resource_is_a_file_an_engine_and_a_registry_line() {
    let h = Harness::new().await;

    let schema = h
        .provider
        .get_schema(Request::new(rpc::GetSchemaRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .schema;
    let schema: serde_json::Value = serde_json::from_str(&schema).unwrap();
    let marker = &schema["resources"]["stackmigrate:index:Marker"];
    assert_eq!(
        marker["inputProperties"]["targetBucket"]["replaceOnChanges"],
        true
    );
    assert!(schema["resources"]["stackmigrate:index:BucketSync"].is_object());

    let target = h.bucket("prod").await;
    let urn = format!(
        "urn:pulumi:test::harness::stackmigrate:index:Marker::{}",
        unique("m")
    );
    let failures = h
        .check(&urn, json!({"targetBucket": target, "key": ""}))
        .await;
    assert_eq!(
        failures,
        [("key".to_string(), "must name an object key".to_string())]
    );

    let inputs = json!({"targetBucket": target, "key": "marker"});
    let (_, planned) = h.create(&urn, inputs.clone(), true).await.unwrap();
    assert_eq!(planned["written"], true);
    assert!(h.contents(&target).await.is_empty(), "preview wrote");
    let (_, state) = h.create(&urn, inputs.clone(), false).await.unwrap();
    assert_eq!(
        h.contents(&target).await,
        [("marker".to_string(), "marked".to_string())]
    );
    assert!(
        !h.diff(&urn, (&inputs, &state), inputs.clone())
            .await
            .changed
    );
    let elsewhere = json!({"targetBucket": "other", "key": "marker"});
    assert_eq!(
        h.diff(&urn, (&inputs, &state), elsewhere).await.replaces,
        ["targetBucket"]
    );

    h.delete(&urn, &state).await.unwrap();
    assert!(
        h.contents(&target).await.is_empty(),
        "rollback left the marker"
    );
}
