//! The Pulumi ResourceProvider gRPC service: decodes requests, calls a resource,
//! encodes its answer. Nothing here knows about S3 or DynamoDB.

mod answers;
mod log;
mod service;

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, OnceLock, RwLock};

use prost::Message;
use prost_types::Struct;
use pulumi_gestalt_proto::pulumi::pulumirpc as rpc;
use tonic::Status;

use crate::config::ProviderConfig;
use crate::copy::retry::Attempts;
use crate::registry::{self, Registered, Registry};
use crate::resources::secrets::Secrets;
use crate::resources::{
    check_journal, journal_path, Clients, CommonOutputs, Context, FailedAfterWriting, RunNote,
    RUNS_FOLDER,
};
use crate::stacks::Stacks;
use crate::wire::Props;
use log::{EngineLog, Masked, WithRetries};

pub struct Provider {
    registry: Registry,
    configured: RwLock<Configured>,
    engine: RwLock<Option<String>>,
    stacks: RwLock<Arc<Stacks>>,
    schema: OnceLock<String>,
    /// Plan answers shared between the Diffs of one `pulumi up` (None: every Diff scans).
    answers: Option<answers::Answers>,
    /// The resources this deployment's program declared (their Check was asked): a run
    /// of one of them that an earlier deployment left is this deployment's to finish.
    declared: std::sync::Mutex<HashSet<String>>,
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
        Provider {
            answers: Some(answers::Answers::new()),
            ..Provider::with_registry(engine, registry::all())
        }
    }

    /// A provider serving `registry`'s resources and functions.
    pub(crate) fn with_registry(engine: Option<String>, registry: Registry) -> Self {
        Provider {
            registry,
            configured: RwLock::new(Configured::new(ProviderConfig::default())),
            engine: RwLock::new(engine),
            stacks: RwLock::new(Arc::new(Stacks::new(current_dir()))),
            schema: OnceLock::new(),
            answers: None,
            declared: Default::default(),
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
    ) -> anyhow::Result<T>
    where
        F: Future<Output = anyhow::Result<T>>,
    {
        self.with_state_context(urn, None, &Secrets::default(), operation)
            .await
    }

    /// `with_context` for a resource the engine holds: `state` names its journal.
    /// `secrets` collects the values from secrets the operation meets.
    async fn with_state_context<T, F>(
        &self,
        urn: &str,
        state: Option<&serde_json::Map<String, serde_json::Value>>,
        secrets: &Secrets,
        operation: impl FnOnce(Context) -> F,
    ) -> anyhow::Result<T>
    where
        F: Future<Output = anyhow::Result<T>>,
    {
        let log = Arc::new(self.logger(urn));
        let Configured { config, clients } = self.configured();
        let attempts = Arc::new(Attempts::default());
        let ctx = Context {
            config,
            clients,
            urn: urn.to_string(),
            progress: Arc::new(Masked {
                inner: Arc::new(WithRetries {
                    inner: log.clone(),
                    attempts: attempts.clone(),
                }),
                secrets: secrets.clone(),
            }),
            stacks: self
                .stacks
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            run_inputs: None,
            journal_at: state.and_then(CommonOutputs::journal_at),
            compare_target: state.is_some_and(CommonOutputs::drift_pending),
            pending_claim: Default::default(),
            resolved: Default::default(),
            secrets: secrets.clone(),
            announce_run: false,
        };
        let result = Attempts::count(attempts, operation(ctx)).await;
        log.finish().await;
        result
    }
}

/// An error as the engine shows it: the whole chain on one line, with every value from
/// a secret the operation met masked (an error may name a table a stack keeps secret).
fn status(error: anyhow::Error, secrets: &Secrets) -> Status {
    Status::unknown(secrets.mask(&format!("{error:#}")))
}

/// The values the engine marked secret in `props`, tracked so that messages mask them.
fn secrets_in(props: &Props) -> Secrets {
    let secrets = Secrets::default();
    for key in &props.secret_keys {
        if let Some(value) = props.value.get(key) {
            secrets.add(value);
        }
    }
    secrets
}

/// A Create or Update that failed after writing: Pulumi's "initialization failed"
/// answer, which makes the engine keep the resource with `state`, so that `pulumi
/// destroy` rolls back what was written.
fn failed_after_writing(
    urn: &str,
    inputs: &Props,
    failed: &FailedAfterWriting,
    secrets: &Secrets,
) -> Status {
    let message = secrets.mask(&failed.to_string());
    let detail = rpc::ErrorResourceInitFailed {
        id: journal_path(urn),
        properties: Some(encode_state(inputs, failed.state.clone(), secrets)),
        reasons: vec![message.clone()],
        inputs: Some(inputs.encode()),
        refresh_before_update: false,
    };
    let details = GoogleRpcStatus {
        code: tonic::Code::Unknown as i32,
        message: message.clone(),
        details: vec![prost_types::Any {
            type_url: "type.googleapis.com/pulumirpc.ErrorResourceInitFailed".into(),
            value: detail.encode_to_vec(),
        }],
    };
    Status::with_details(
        tonic::Code::Unknown,
        message,
        details.encode_to_vec().into(),
    )
}

/// `google.rpc.Status`, the message gRPC carries error details in.
#[derive(Clone, PartialEq, prost::Message)]
struct GoogleRpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

fn failure(property: &str, reason: &str) -> rpc::CheckFailure {
    rpc::CheckFailure {
        property: property.to_string(),
        reason: reason.to_string(),
    }
}

/// Outputs carry the same secrecy as the inputs they came from, and those holding a
/// value from a secret (a name read from a secret stack output) are secret too.
fn encode_state(
    inputs: &Props,
    state: serde_json::Map<String, serde_json::Value>,
    secrets: &Secrets,
) -> Struct {
    let mut secret_keys = inputs.secret_keys.clone();
    secret_keys.extend(secrets.keys_in(&state));
    Props {
        value: state,
        secret_keys,
    }
    .encode()
}

impl Provider {
    /// Create and Update: a plan in preview (outputs say what would happen, unknown
    /// when inputs are), the copy otherwise. `last_state`: the state the engine holds of
    /// the resource (None when creating), which names its journal.
    async fn run(
        &self,
        resource: &Registered,
        urn: &str,
        inputs: &Props,
        preview: bool,
        last_state: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Struct, Status> {
        if preview && inputs.has_unknowns() {
            return Ok(inputs.encode());
        }
        let creating = last_state.is_none();
        let secrets = secrets_in(inputs);
        let result = self
            .with_state_context(urn, last_state, &secrets, |ctx| async move {
                let journalled = resource.resource.journalled();
                if let Some(state) = last_state.filter(|_| journalled) {
                    let command = if preview { "preview" } else { "up" };
                    check_journal(resource.resource.as_ref(), &ctx, state, command).await?;
                }
                if !preview {
                    let mut recorded = inputs.value.clone();
                    recorded.retain(|key, _| !inputs.secret_keys.contains(key));
                    let ctx = Context {
                        run_inputs: Some(Arc::new(recorded)),
                        announce_run: creating && journalled,
                        ..ctx
                    };
                    let applied = resource.resource.apply(&ctx, &inputs.value).await;
                    if ctx.announce_run && engine_holds(&ctx, &applied).await {
                        ctx.run_handed_over().await;
                    } else if !creating && journalled && applied.is_ok() {
                        ctx.forget_stale_run().await;
                    }
                    return applied;
                }
                if !journalled {
                    let (state, _) = resource.resource.plan(&ctx, &inputs.value).await?;
                    return Ok(state);
                }
                let journal = ctx.journal().await?;
                if creating && journal.has_records().await? {
                    ctx.progress.warn(&interrupted_run(urn));
                }
                if journal.uri().starts_with("file://") {
                    ctx.progress.warn(&format!(
                        "the rollback journal is on this machine's disk ({}): only `pulumi destroy` run here, by this user, can roll back; \
                         set stackmigrate:journal to s3://bucket/prefix (or leave it unset for a bucket on the target connection) where CI runners or colleagues run pulumi",
                        journal.uri()
                    ));
                } else {
                    ctx.progress.info(&format!("rollback journal: {}", journal.uri()));
                }
                let (state, _) = resource.resource.plan(&ctx, &inputs.value).await?;
                // The counts in words come from the plan; these are for scripts.
                ctx.progress.debug(&plan_line(&state));
                Ok(state)
            })
            .await;
        match result {
            Ok(state) => Ok(encode_state(inputs, state, &secrets)),
            Err(error) => match error.downcast_ref::<FailedAfterWriting>() {
                Some(failed) => Err(failed_after_writing(urn, inputs, failed, &secrets)),
                None => Err(status(error, &secrets)),
            },
        }
    }
}

/// Whether the engine keeps the resource after this answer of a Create: a success, or
/// a failure that carries the state; any other failure keeps nothing, which is right
/// only when nothing was written.
async fn engine_holds<T>(ctx: &Context, applied: &anyhow::Result<T>) -> bool {
    match applied {
        Ok(_) => true,
        Err(error) if error.downcast_ref::<FailedAfterWriting>().is_some() => true,
        Err(_) => match ctx.journal().await {
            Ok(journal) => !journal.has_records().await.unwrap_or(true),
            Err(_) => false,
        },
    }
}

/// What a preview says when a resource the engine does not hold has a journal with
/// writes: an earlier `pulumi up` was killed mid-copy.
fn interrupted_run(urn: &str) -> String {
    format!(
        "an earlier `pulumi up` of this resource was interrupted after it had started writing. \
         `pulumi up` finishes the copy; to roll it back instead, run `{}` and then `pulumi destroy`",
        import_command(urn)
    )
}

/// The command that makes the engine hold a resource whose run it lost track of: the
/// provider rebuilds its state from the journal.
fn import_command(urn: &str) -> String {
    let mut parts = urn.splitn(4, "::").skip(2);
    let (type_token, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let type_token = type_token.rsplit('$').next().unwrap_or(type_token);
    format!(
        "pulumi import {type_token} {name} {} --protect=false --generate-code=false --yes",
        journal_path(urn)
    )
}

/// Stops a Delete, before it undoes anything, while a run of this stack that the engine
/// does not hold has written: a destroy would leave those writes in place and exit 0.
/// Resources without a journal look only where the journals live without asking AWS
/// whose account this is (the default journal's name needs it), and only warn when the
/// place cannot be read.
async fn refuse_interrupted_runs(
    ctx: &Context,
    journalled: bool,
    declared: &HashSet<String>,
) -> anyhow::Result<()> {
    let look =
        journalled || ctx.config.journal_setting()?.is_some() || !ctx.clients.target.s3_is_aws();
    if !look {
        return Ok(());
    }
    match ctx.interrupted_runs(declared).await {
        Ok(runs) if !runs.is_empty() => anyhow::bail!(interrupted_runs(&runs)),
        Ok(_) => Ok(()),
        Err(error) if journalled => {
            Err(error.context("looking for interrupted runs of this stack"))
        }
        Err(error) => {
            ctx.progress.warn(&format!(
                "could not look for interrupted runs of this stack, whose writes a destroy would leave: {error:#}"
            ));
            Ok(())
        }
    }
}

/// Why a destroy stops before undoing anything: runs of this stack wrote and the
/// engine holds none of them, so it would never roll them back.
fn interrupted_runs(runs: &[RunNote]) -> String {
    let each = runs
        .iter()
        .map(|run| {
            format!(
                "{} (journal {}): `{}`",
                run.urn,
                run.journal,
                import_command(&run.urn)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    format!(
        "nothing was rolled back: {} of this stack was interrupted after it had started writing (the plugin or \
         `pulumi` was killed), and the stack does not hold it, so this destroy would leave its writes in place. \
         Adopt it, then run `pulumi destroy` again: {each}. Or run `pulumi up` to finish it. If the stack does \
         hold it (`pulumi stack --show-urns` lists it: an up that failed while the journals were unreachable \
         could not remove its note), run `pulumi refresh`, which removes the note. To keep what it wrote and \
         give up its rollback, delete its note in {RUNS_FOLDER}/ at the journals' root",
        if runs.len() == 1 {
            "a `pulumi up` of one resource".to_string()
        } else {
            format!("a `pulumi up` of {} resources", runs.len())
        }
    )
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
