//! In-process tests: the provider's gRPC service driven directly (Check, Diff, Create,
//! Update, Delete, with preview on and off) against the local services that
//! `scripts/services.sh` starts, so diff, replacement and rollback policy are tested
//! without the Pulumi CLI. Run with `cargo test harness::` under
//! `eval "$(scripts/services.sh start)"`.

pub(crate) mod fifth_resource;
mod lifecycle;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use pulumi_gestalt_proto::pulumi::pulumirpc::{
    self as rpc, diff_response::DiffChanges, property_diff::Kind,
    resource_provider_server::ResourceProvider,
};
use serde_json::{json, Map, Value};
use tonic::Request;

use crate::connection::{Connection, SideClients};
use crate::server::Provider;
use crate::wire::Props;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run these tests under `eval \"$(scripts/services.sh start)\"`")
    })
}

/// MinIO "a" and DynamoDB Local, as both sides of a migration.
fn connection() -> Value {
    json!({
        "endpoint": env("STACKMIGRATE_S3_A"),
        "dynamodbEndpoint": env("STACKMIGRATE_DYNAMODB"),
        "accessKeyId": env("STACKMIGRATE_S3_A_KEY"),
        "secretAccessKey": env("STACKMIGRATE_S3_A_SECRET"),
        "region": "us-east-1",
        "forcePathStyle": true,
    })
}

pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}-{:010x}", fastrand::u64(..) >> 24)
}

fn encode(value: Value) -> prost_types::Struct {
    Props {
        value: value.as_object().cloned().expect("an object"),
        secret_keys: Default::default(),
    }
    .encode()
}

fn decode(value: Option<&prost_types::Struct>) -> Map<String, Value> {
    Props::decode(value).value
}

/// What Diff answered, in plain types.
#[derive(Debug)]
pub(crate) struct Diffed {
    pub changed: bool,
    pub replaces: Vec<String>,
    /// Property -> (replace, input diff).
    pub detailed: Vec<(String, bool, bool)>,
}

/// A configured provider, its own journal directory, and clients for checking results.
pub(crate) struct Harness {
    pub provider: Provider,
    pub clients: SideClients,
    pub journal: tempfile::TempDir,
}

impl Harness {
    pub async fn new() -> Harness {
        let journal = tempfile::tempdir().expect("a temporary directory");
        let provider = Provider::with_registry(None, crate::registry::all());
        let config = json!({
            "source": connection(),
            "target": connection(),
            "journal": format!("file://{}", journal.path().display()),
        });
        provider
            .configure(Request::new(rpc::ConfigureRequest {
                args: Some(encode(config.clone())),
                ..Default::default()
            }))
            .await
            .expect("configure");
        let connection: Connection = serde_json::from_value(config["source"].clone()).unwrap();
        Harness {
            provider,
            clients: SideClients::new("source", connection),
            journal,
        }
    }

    pub async fn check(&self, urn: &str, inputs: Value) -> Vec<(String, String)> {
        let response = self
            .provider
            .check(Request::new(rpc::CheckRequest {
                urn: urn.into(),
                news: Some(encode(inputs)),
                ..Default::default()
            }))
            .await
            .expect("check answers")
            .into_inner();
        response
            .failures
            .into_iter()
            .map(|f| (f.property, f.reason))
            .collect()
    }

    /// Diff as the engine asks it: the last inputs and state, and the new inputs.
    pub async fn diff(
        &self,
        urn: &str,
        (old_inputs, state): (&Value, &Map<String, Value>),
        inputs: Value,
    ) -> Diffed {
        let response = self
            .provider
            .diff(Request::new(rpc::DiffRequest {
                urn: urn.into(),
                id: crate::resources::journal_path(urn),
                olds: Some(encode(Value::Object(state.clone()))),
                old_inputs: Some(encode(old_inputs.clone())),
                news: Some(encode(inputs)),
                ..Default::default()
            }))
            .await
            .expect("diff answers")
            .into_inner();
        assert!(response.delete_before_replace, "the journal is shared");
        let mut detailed: Vec<(String, bool, bool)> = response
            .detailed_diff
            .into_iter()
            .map(|(property, diff)| {
                let replace = diff.kind == Kind::UpdateReplace as i32;
                (property, replace, diff.input_diff)
            })
            .collect();
        detailed.sort();
        Diffed {
            changed: response.changes == DiffChanges::DiffSome as i32,
            replaces: response.replaces,
            detailed,
        }
    }

    /// Create: the state, or the error's message.
    pub async fn create(
        &self,
        urn: &str,
        inputs: Value,
        preview: bool,
    ) -> Result<(String, Map<String, Value>), String> {
        self.provider
            .create(Request::new(rpc::CreateRequest {
                urn: urn.into(),
                properties: Some(encode(inputs)),
                preview,
                ..Default::default()
            }))
            .await
            .map(|r| {
                let r = r.into_inner();
                (r.id, decode(r.properties.as_ref()))
            })
            .map_err(|status| status.message().to_string())
    }

    pub async fn update(
        &self,
        urn: &str,
        state: &Map<String, Value>,
        inputs: Value,
        preview: bool,
    ) -> Result<Map<String, Value>, String> {
        self.provider
            .update(Request::new(rpc::UpdateRequest {
                urn: urn.into(),
                id: crate::resources::journal_path(urn),
                olds: Some(encode(Value::Object(state.clone()))),
                news: Some(encode(inputs)),
                preview,
                ..Default::default()
            }))
            .await
            .map(|r| decode(r.into_inner().properties.as_ref()))
            .map_err(|status| status.message().to_string())
    }

    /// Read with the state and inputs the engine holds, as `pulumi refresh` asks.
    pub async fn refresh(
        &self,
        urn: &str,
        state: &Map<String, Value>,
        inputs: Value,
    ) -> Result<Map<String, Value>, String> {
        self.provider
            .read(Request::new(rpc::ReadRequest {
                urn: urn.into(),
                id: crate::resources::journal_path(urn),
                properties: Some(encode(Value::Object(state.clone()))),
                inputs: Some(encode(inputs)),
                ..Default::default()
            }))
            .await
            .map(|r| decode(r.into_inner().properties.as_ref()))
            .map_err(|status| status.message().to_string())
    }

    pub async fn delete(&self, urn: &str, state: &Map<String, Value>) -> Result<(), String> {
        self.provider
            .delete(Request::new(rpc::DeleteRequest {
                urn: urn.into(),
                id: crate::resources::journal_path(urn),
                properties: Some(encode(Value::Object(state.clone()))),
                ..Default::default()
            }))
            .await
            .map(|_| ())
            .map_err(|status| status.message().to_string())
    }

    pub async fn bucket(&self, prefix: &str) -> String {
        let name = unique(prefix);
        self.clients
            .s3()
            .await
            .expect("clients")
            .create_bucket()
            .bucket(&name)
            .send()
            .await
            .expect("create bucket");
        name
    }

    pub async fn put(&self, bucket: &str, key: &str, body: &str) {
        self.clients
            .s3()
            .await
            .expect("clients")
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .expect("put object");
    }

    /// Key -> body of every object in a bucket.
    pub async fn contents(&self, bucket: &str) -> Vec<(String, String)> {
        let s3 = self.clients.s3().await.expect("clients");
        let listed = s3
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .expect("list");
        let mut contents = Vec::new();
        for object in listed.contents() {
            let key = object.key().unwrap_or_default().to_string();
            let body = s3
                .get_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .expect("get")
                .body
                .collect()
                .await
                .expect("body")
                .into_bytes();
            contents.push((key, String::from_utf8_lossy(&body).into_owned()));
        }
        contents
    }

    /// A table keyed by `PK` and `SK` (strings), as the Portfolio table is.
    pub async fn table(&self, prefix: &str) -> String {
        let name = unique(prefix);
        let key = |name: &str, kind| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .unwrap()
        };
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap()
        };
        self.clients
            .dynamodb()
            .await
            .expect("clients")
            .create_table()
            .table_name(&name)
            .key_schema(key("PK", KeyType::Hash))
            .key_schema(key("SK", KeyType::Range))
            .attribute_definitions(attribute("PK"))
            .attribute_definitions(attribute("SK"))
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .expect("create table");
        name
    }
}
