//! The Pulumi ResourceProvider gRPC service: decodes requests, calls a resource,
//! encodes its answer. Nothing here knows about S3 or DynamoDB.

mod log;
mod service;

use std::future::Future;
use std::sync::{Arc, OnceLock, RwLock};

use prost_types::Struct;
use pulumi_gestalt_proto::pulumi::pulumirpc as rpc;
use tonic::Status;

use crate::config::ProviderConfig;
use crate::registry::{self, Registered, Registry};
use crate::resources::{Clients, Context};
use crate::stacks::Stacks;
use crate::wire::Props;
use log::EngineLog;

pub struct Provider {
    registry: Registry,
    configured: RwLock<Configured>,
    engine: RwLock<Option<String>>,
    stacks: RwLock<Arc<Stacks>>,
    schema: OnceLock<String>,
}

/// What Configure set: the configuration and the clients built from it.
#[derive(Clone)]
struct Configured {
    config: Arc<ProviderConfig>,
    clients: Arc<Clients>,
}

impl Configured {
    fn new(config: ProviderConfig) -> Self {
        Configured {
            clients: Arc::new(Clients::new(&config)),
            config: Arc::new(config),
        }
    }
}

impl Provider {
    /// `engine` is the engine's address when the engine passed it on the command line.
    pub fn new(engine: Option<String>) -> Self {
        Provider::with_registry(engine, registry::all())
    }

    /// A provider serving `registry`'s resources and functions.
    pub(crate) fn with_registry(engine: Option<String>, registry: Registry) -> Self {
        Provider {
            registry,
            configured: RwLock::new(Configured::new(ProviderConfig::default())),
            engine: RwLock::new(engine),
            stacks: RwLock::new(Arc::new(Stacks::new(current_dir()))),
            schema: OnceLock::new(),
        }
    }

    fn resource(&self, type_token: &str, urn: &str) -> Result<&Registered, Status> {
        // YAML may write `stackmigrate:BucketSync`; the engine normalizes it, but a URN
        // carries the type too, so fall back to it.
        let token = if type_token.is_empty() {
            urn.split("::").nth(2).unwrap_or_default()
        } else {
            type_token
        };
        let token = token.rsplit('$').next().unwrap_or(token);
        self.registry.resource(token).ok_or_else(|| {
            Status::invalid_argument(format!(
                "unknown resource type {token:?}; this provider has {}",
                self.registry.tokens().join(", ")
            ))
        })
    }

    fn configured(&self) -> Configured {
        self.configured
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn logger(&self, urn: &str) -> EngineLog {
        let address = self
            .engine
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        EngineLog::start(address, urn.to_string())
    }

    /// Runs a resource operation with a context and a progress channel to the engine,
    /// and waits for the log lines to be delivered before answering.
    async fn with_context<T, F>(
        &self,
        urn: &str,
        operation: impl FnOnce(Context) -> F,
    ) -> Result<T, Status>
    where
        F: Future<Output = anyhow::Result<T>>,
    {
        let log = Arc::new(self.logger(urn));
        let Configured { config, clients } = self.configured();
        let ctx = Context {
            config,
            clients,
            urn: urn.to_string(),
            progress: log.clone(),
            stacks: self
                .stacks
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        };
        let result = operation(ctx).await;
        log.finish().await;
        result.map_err(|e| Status::unknown(format!("{e:#}")))
    }
}

fn failure(property: &str, reason: &str) -> rpc::CheckFailure {
    rpc::CheckFailure {
        property: property.to_string(),
        reason: reason.to_string(),
    }
}

/// Outputs carry the same secrecy as the inputs they came from.
fn encode_state(inputs: &Props, state: serde_json::Map<String, serde_json::Value>) -> Struct {
    Props {
        value: state,
        secret_keys: inputs.secret_keys.clone(),
    }
    .encode()
}

impl Provider {
    /// Create and Update: a plan in preview (outputs say what would happen, unknown
    /// when inputs are), the copy otherwise.
    async fn run(
        &self,
        resource: &Registered,
        urn: &str,
        inputs: &Props,
        preview: bool,
    ) -> Result<Struct, Status> {
        if preview && inputs.has_unknowns() {
            return Ok(inputs.encode());
        }
        let state = self
            .with_context(urn, |ctx| async move {
                if preview {
                    let (state, _) = resource.resource.plan(&ctx, &inputs.value).await?;
                    ctx.progress.info(&plan_line(&state));
                    Ok(state)
                } else {
                    resource.resource.apply(&ctx, &inputs.value).await
                }
            })
            .await?;
        Ok(encode_state(inputs, state))
    }
}

fn current_dir() -> String {
    std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| ".".to_string())
}

/// The plan, as the preview shows it: every count output, and every map of counts
/// (such as counts per entity type) one entry per line.
fn plan_line(state: &serde_json::Map<String, serde_json::Value>) -> String {
    let counts = |object: &serde_json::Map<String, serde_json::Value>| {
        object
            .iter()
            .filter(|(_, v)| v.is_u64())
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut lines = vec![format!("plan: {}", counts(state))];
    for (output, value) in state {
        let Some(entries) = value.as_object() else {
            continue;
        };
        for (name, entry) in entries {
            if let Some(entry) = entry.as_object().filter(|e| e.values().all(|v| v.is_u64())) {
                lines.push(format!("plan {output} {name}: {}", counts(entry)));
            }
        }
    }
    lines.join("\n")
}
