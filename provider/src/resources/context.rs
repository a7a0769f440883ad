//! What a resource operation may use besides its inputs, and the helpers the resources
//! share: names from stack outputs, the journal, bucket pairs, rollback of a bucket.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::ProviderConfig;
use crate::connection::SideClients;
use crate::copy::journal::{BeforeFirstWrite, Journal, Location, Provision};
use crate::copy::progress::Progress;
use crate::copy::s3::{Bucket, Buckets};
use crate::copy::store::BucketAccess;
use crate::copy::sync;
use crate::copy::RolledBack;
use crate::stacks::{StackOutputs, Stacks};

/// The clients of both sides, built once per Configure and shared by every operation.
pub struct Clients {
    pub source: SideClients,
    pub target: SideClients,
}

impl Clients {
    pub fn new(config: &ProviderConfig) -> Self {
        Clients {
            source: SideClients::new("source", config.source.clone()),
            target: SideClients::new("target", config.target.clone()),
        }
    }
}

/// Everything a resource operation may use besides its inputs.
#[derive(Clone)]
pub struct Context {
    pub config: Arc<ProviderConfig>,
    pub clients: Arc<Clients>,
    pub urn: String,
    pub progress: Arc<dyn Progress>,
    pub stacks: Arc<Stacks>,
    /// The inputs of a run that may write (secrets left out): kept in the journal with
    /// its first record, so that a run the engine lost track of (the plugin killed) can
    /// be imported and rolled back.
    pub run_inputs: Option<Arc<Map<String, Value>>>,
    /// The journal the resource's state names (Read, Update, Delete): where the earlier
    /// runs recorded their writes, whatever today's configuration would compute.
    pub journal_at: Option<String>,
    /// Compare with the target itself, trusting no note of an earlier verified copy:
    /// refresh, and every operation after a refresh found drift, so lost target data is
    /// seen, counted and repaired.
    pub compare_target: bool,
    /// A claim on the target that `claim_target` found free in a run that writes: the
    /// next journal opened stores it before its first write.
    pub pending_claim: Arc<std::sync::Mutex<Option<PendingClaim>>>,
    /// Values from secrets met so far (the stacks' secret outputs, secret inputs): the
    /// outputs holding them are secret, and progress shows them masked.
    pub secrets: super::secrets::Secrets,
    /// The outputs naming what a run writes to, noted by `resolved` as soon as it knows.
    pub resolved: Arc<std::sync::Mutex<Option<Map<String, Value>>>>,
    /// A Create that writes: the run is announced in its stack's runs folder before its
    /// first write, and the note removed once the engine holds the resource, so that a
    /// destroy of this stack that does not hold it (the plugin or `pulumi` was killed)
    /// stops instead of leaving its writes in place.
    pub announce_run: bool,
}

/// What a migration writes into, as another migration into the same place sees it.
pub(crate) struct TargetClaim {
    /// One folder per target: `table/<hash of what DynamoDB says the table is>` or
    /// `bucket/<name>`.
    pub place: String,
    /// Within a bucket, the prefix written: two claims meet when one prefix holds the
    /// other.
    pub prefix: String,
    /// For people: `table "prod-receipts"`, `s3://bucket/prefix`.
    pub describe: String,
    /// Other live migrations into this target are allowed when they share it too.
    pub share: bool,
}

impl TargetClaim {
    pub fn table(name: &str, identity: &str) -> TargetClaim {
        TargetClaim {
            place: format!(
                "table/{}",
                &hex::encode(Sha256::digest(identity.as_bytes()))[..32]
            ),
            prefix: String::new(),
            describe: format!("table {name:?}"),
            share: false,
        }
    }

    pub fn bucket(name: &str, prefix: &str) -> TargetClaim {
        TargetClaim {
            place: format!("bucket/{}", path_part(name)),
            prefix: prefix.to_string(),
            describe: format!("s3://{name}/{prefix}"),
            share: false,
        }
    }

    /// The same claim, shared with other migrations that share it (`shareTarget`).
    pub fn shared(self, share: bool) -> TargetClaim {
        TargetClaim { share, ..self }
    }
}

/// A claim to store: the claims folder, the claim's name in it, and its body.
pub(crate) type PendingClaim = (Journal, String, Vec<u8>);

/// One live migration's claim on its target, kept beside the journals until its destroy.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Claim {
    owner: String,
    urn: String,
    prefix: String,
    /// Shared with other migrations that share it: their rollbacks hand each other the
    /// backups of what the other wrote over.
    #[serde(default)]
    share: bool,
    /// The owner's journal, where a sharer's rollback hands it backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    journal: Option<String>,
}

/// Where a resource's journal notes which claims it holds, for its destroy to remove.
#[derive(Serialize, Deserialize)]
struct Held {
    /// The claims folder's URI and the claim's name in it.
    claims: Vec<(String, String)>,
}

/// The journal note listing the claims this resource holds.
const CLAIMS_NOTE: &str = "claims.json";

/// Where claims live at the journals' root: `%` and a non-hex letter is no escaped path
/// part's output, so no project's journals meet it.
const CLAIMS_FOLDER: &str = "%claims";

/// Where runs that write announce themselves at the journals' root, one folder per
/// project and stack, from just before their first write until the engine holds them.
pub const RUNS_FOLDER: &str = "%runs";

/// A run in flight, as a destroy of its stack sees it.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RunNote {
    pub urn: String,
    pub journal: String,
    /// The machine and the `pulumi` process the run served: runs announced by the
    /// deployment now running are in flight, not interrupted.
    pub deployment: String,
}

/// The deployment this provider serves: its machine and the `pulumi` process that
/// started it (every provider process of one deployment has the same parent).
pub(crate) fn deployment() -> String {
    format!("{}/{}", host_name(), engine_process())
}

/// The `pulumi` process this provider was started by, read once at start-up: a parent
/// that changes later (the process re-parented) means `pulumi` is gone.
fn engine_process() -> u32 {
    static STARTED_BY: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *STARTED_BY.get_or_init(parent_process)
}

/// Whether the `pulumi` process that started this provider still runs, so that what
/// this provider answers reaches the engine's state.
fn engine_alive() -> bool {
    parent_process() == engine_process()
}

#[cfg(unix)]
fn parent_process() -> u32 {
    std::os::unix::process::parent_id()
}

/// Without a parent's ID in std: this process stands for its deployment.
#[cfg(not(unix))]
fn parent_process() -> u32 {
    std::process::id()
}

fn host_name() -> String {
    #[cfg(unix)]
    {
        let mut buffer = [0u8; 256];
        // SAFETY: the buffer is writable for its whole length, which is passed.
        let got = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
        if got == 0 {
            let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
            return String::from_utf8_lossy(&buffer[..end]).into_owned();
        }
    }
    std::env::var("COMPUTERNAME").unwrap_or_else(|_| "unknown-host".to_string())
}

async fn held_in(journal: &Journal) -> Result<Held> {
    match journal.read_note(CLAIMS_NOTE).await? {
        Some(body) => serde_json::from_slice(&body).with_context(|| {
            format!(
                "{CLAIMS_NOTE} in the journal at {} is corrupt",
                journal.uri()
            )
        }),
        None => Ok(Held { claims: Vec::new() }),
    }
}

/// Fails with a message naming the bucket and the endpoint when the bucket cannot be
/// reached, so bad names stop at preview.
async fn check_bucket(bucket: &Bucket, role: &str, endpoint: &str) -> Result<()> {
    let access = bucket
        .store
        .bucket_access(&bucket.name)
        .await
        .with_context(|| {
            format!(
                "{role} bucket {:?} at {endpoint} cannot be reached",
                bucket.name
            )
        })?;
    match (access, &bucket.expected_owner) {
        (BucketAccess::Exists, _) => Ok(()),
        (BucketAccess::Missing, _) => bail!(
            "{role} bucket {:?} does not exist at {endpoint}; check the bucket name or the stack output that names it",
            bucket.name
        ),
        (BucketAccess::Denied, Some(owner)) => bail!(
            "{role} bucket {:?} at {endpoint}: access denied; check that account {owner} (the {role} connection's expectedBucketOwner) owns it, and the {role} connection's credentials",
            bucket.name
        ),
        (BucketAccess::Denied, None) => bail!(
            "{role} bucket {:?} at {endpoint}: access denied; check the {role} connection's credentials",
            bucket.name
        ),
    }
}

/// The default journal's bucket name (on AWS followed by `-<account>-<region>`).
const DEFAULT_JOURNAL_BUCKET: &str = "stackmigrate-journal";

/// The journal note holding the inputs of the run that first wrote.
const INPUTS_NOTE: &str = "inputs.json";

/// Which side of the migration a name belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

/// Two buckets on either side of a copy, checked to exist and to be distinct places.
pub(crate) struct BucketPair {
    pub source: Bucket,
    pub target: Bucket,
    /// Same S3 service and identity on both sides: objects are copied server side.
    pub server_side: bool,
}

/// The bucket inputs every bucket resource has.
pub(crate) struct BucketInputs<'a> {
    pub source_bucket: &'a Option<String>,
    pub target_bucket: &'a Option<String>,
    /// The stack output naming both buckets.
    pub output: Option<&'a str>,
    /// The prefixes copied from and into: the same bucket is allowed when they do not
    /// overlap.
    pub source_prefix: &'a str,
    pub target_prefix: &'a str,
}

impl<'a> BucketInputs<'a> {
    /// Whole buckets, named by inputs or the stack output `output`.
    pub fn whole(
        source_bucket: &'a Option<String>,
        target_bucket: &'a Option<String>,
        output: &'a str,
    ) -> Self {
        BucketInputs {
            source_bucket,
            target_bucket,
            output: Some(output),
            source_prefix: "",
            target_prefix: "",
        }
    }
}

impl Context {
    /// Notes outputs that name what this run writes to (nothing counted yet): when the
    /// run then fails after writing and the target no longer answers a plan, the engine
    /// keeps them in the state, so that `pulumi destroy` still finds the target.
    pub(crate) fn resolved<O: Serialize>(&self, outputs: &O) {
        if let Ok(Value::Object(outputs)) = serde_json::to_value(outputs) {
            *self.resolved.lock().expect("not poisoned") = Some(outputs);
        }
    }

    pub(crate) fn side(&self, side: Side) -> &SideClients {
        match side {
            Side::Source => &self.clients.source,
            Side::Target => &self.clients.target,
        }
    }

    /// This resource's journal: the one its state names, else the one its URN and the
    /// configuration give. `s3://` journals live on the target side.
    pub(crate) async fn journal(&self) -> Result<Journal> {
        let journal = match &self.journal_at {
            Some(uri) => {
                let location = Location::parse(uri)
                    .with_context(|| format!("the journalUri in this resource's state, {uri:?}"))?;
                Journal::open_at(&location, &self.clients.target)
                    .await
                    .with_context(|| {
                        format!("reading the journal this resource's state names, {uri}")
                    })?
            }
            None => match self.config.journal_setting()? {
                Some(location) => {
                    Journal::open(&location, &self.clients.target, &journal_path(&self.urn)).await?
                }
                None => {
                    let (location, provision) = self.default_journal().await?;
                    Journal::open_provisioned(
                        &location,
                        &self.clients.target,
                        &journal_path(&self.urn),
                        provision,
                    )
                    .await
                    .context("opening the default journal on the target connection (stackmigrate:journal is not set)")?
                }
            },
        };
        let journal = match &self.run_inputs {
            Some(inputs) => {
                journal.note_before_first_record(INPUTS_NOTE, serde_json::to_vec(inputs.as_ref())?)
            }
            None => journal,
        };
        let journal = if self.announce_run {
            let note = RunNote {
                urn: self.urn.clone(),
                journal: journal.uri().to_string(),
                deployment: deployment(),
            };
            journal.before_first_write(BeforeFirstWrite {
                elsewhere: Box::new(self.runs_folder().await?),
                name: self.own_note_name(),
                body: serde_json::to_vec(&note)?,
                here: None,
            })
        } else {
            journal
        };
        let pending = self.pending_claim.lock().expect("not poisoned").take();
        let Some((claims, name, body)) = pending else {
            return Ok(journal);
        };
        let mut held = held_in(&journal).await?;
        let entry = (claims.uri().to_string(), name.clone());
        if !held.claims.contains(&entry) {
            held.claims.push(entry);
        }
        let here = Some((CLAIMS_NOTE.to_string(), serde_json::to_vec(&held)?));
        Ok(journal.before_first_write(BeforeFirstWrite {
            elsewhere: Box::new(claims),
            name,
            body,
            here,
        }))
    }

    /// The journals' root as configured (with how to make the default one's bucket).
    async fn journal_root(&self) -> Result<(Location, Option<Provision>)> {
        Ok(match self.config.journal_setting()? {
            Some(root) => (root, None),
            None => {
                let (root, provision) = self.default_journal().await?;
                (root, Some(provision))
            }
        })
    }

    /// The folder where this stack's runs in flight are announced.
    async fn runs_folder(&self) -> Result<Journal> {
        let (root, provision) = self.journal_root().await?;
        let path = journal_path(&self.urn);
        let stack: Vec<&str> = path.splitn(3, '/').take(2).collect();
        let place = root.join(&format!("{RUNS_FOLDER}/{}", stack.join("/")));
        Journal::open_with(&place, &self.clients.target, provision).await
    }

    /// This resource's note in a folder of claims or runs.
    fn own_note_name(&self) -> String {
        note_name(&self.urn)
    }

    /// Once the engine holds this resource (a Create answered, an import recovered it,
    /// a destroy rolled it back), its run is no longer one to look for. Kept when the
    /// `pulumi` process is gone: then the answer reached no state.
    pub(crate) async fn run_handed_over(&self) {
        if !engine_alive() {
            self.progress.warn(
                "the `pulumi` process that started this run is gone, so its state may not hold this resource; \
                 the run stays announced for `pulumi destroy` to find",
            );
            return;
        }
        self.forget_run().await;
    }

    /// Removes the note announcing this resource's run, if there is one.
    pub(crate) async fn forget_run(&self) {
        let removed = async {
            let runs = self.runs_folder().await?;
            runs.delete_note(&self.own_note_name()).await?;
            runs.remove_if_empty().await;
            anyhow::Ok(())
        }
        .await;
        if let Err(err) = removed {
            self.progress.warn(&format!(
                "the note announcing this run could not be removed ({err:#}); a destroy of this stack will stop on it \
                 until it is deleted (in {RUNS_FOLDER}/ at the journals' root)"
            ));
        }
    }

    /// While the engine hands over this resource's state (an update, a refresh), a note
    /// of its own run is stale: the Create that wrote it answered but could not remove it
    /// (the journals' root was unreachable then). Removed here, so destroys of the stack's
    /// other resources no longer stop on it; a note that cannot be read stays for them.
    pub(crate) async fn forget_stale_run(&self) {
        let Ok(runs) = self.runs_folder().await else {
            return;
        };
        if let Ok(Some(_)) = runs.read_note(&self.own_note_name()).await {
            self.forget_run().await;
        }
    }

    /// Runs of this stack announced by an earlier deployment and never handed over to
    /// the engine (their `pulumi up` was killed), except this resource's own and those
    /// of `declared` (resources the running deployment declares, which it will adopt).
    pub(crate) async fn interrupted_runs(
        &self,
        declared: &HashSet<String>,
    ) -> Result<Vec<RunNote>> {
        let runs = self.runs_folder().await?;
        let now = deployment();
        Ok(self
            .others_notes::<RunNote>(&runs, "run note")
            .await?
            .into_iter()
            .map(|(_, note)| note)
            .filter(|note| note.deployment != now && !declared.contains(&note.urn))
            .collect())
    }

    /// The notes in `folder` (claims, runs) other than this resource's own, each read as
    /// JSON; `what` names them in errors.
    async fn others_notes<T: serde::de::DeserializeOwned>(
        &self,
        folder: &Journal,
        what: &str,
    ) -> Result<Vec<(String, T)>> {
        let own = self.own_note_name();
        let mut found = Vec::new();
        for name in folder.notes().await? {
            if name == own {
                continue;
            }
            let Some(body) = folder.read_note(&name).await? else {
                continue;
            };
            let note = serde_json::from_slice(&body)
                .with_context(|| format!("the {what} {name} at {} is corrupt", folder.uri()))?;
            found.push((name, note));
        }
        Ok(found)
    }

    /// With `stackmigrate:journal` unset: a bucket on the target connection, which every
    /// machine that runs `pulumi` for this stack reaches (as CDK's bootstrap bucket is),
    /// one per account and region on AWS.
    async fn default_journal(&self) -> Result<(Location, Provision)> {
        let target = &self.clients.target;
        let region = target.region().await;
        let bucket = if target.s3_is_aws() {
            let account = target.account_id().await.context(
                "stackmigrate:journal is not set, and the default journal bucket cannot be named without the target account \
                 (STS GetCallerIdentity); set stackmigrate:journal to s3://bucket/prefix on a bucket every machine that runs pulumi reaches",
            )?;
            let region = region.as_deref().unwrap_or("us-east-1");
            format!("{DEFAULT_JOURNAL_BUCKET}-{account}-{region}")
        } else {
            DEFAULT_JOURNAL_BUCKET.to_string()
        };
        let provision = Provision {
            region,
            strict: target.s3_is_aws(),
            advice: "stackmigrate:journal is not set; set it to s3://bucket/prefix on a bucket you made, or to file:///path"
                .to_string(),
        };
        Ok((
            Location::S3 {
                bucket,
                prefix: String::new(),
            },
            provision,
        ))
    }

    /// Refuses a target that another live migration writes into (a table, or a bucket
    /// prefix overlapping this one). In a run that writes, this resource's claim is then
    /// stored just before its journal's first write and kept until its destroy. Claims
    /// live in `%claims/` at the journals' root, where every machine running this stack's
    /// pulumi looks.
    pub(crate) async fn claim_target(&self, target: &TargetClaim) -> Result<()> {
        let (root, provision) = self.journal_root().await?;
        let place = root.join(&format!("{CLAIMS_FOLDER}/{}", target.place));
        let claims = Journal::open_with(&place, &self.clients.target, provision).await?;
        for (name, other) in self.others_notes::<Claim>(&claims, "claim").await? {
            let (a, b) = (other.prefix.as_str(), target.prefix.as_str());
            if !(a.starts_with(b) || b.starts_with(a)) {
                continue;
            }
            if other.share && target.share {
                self.progress.info(&format!(
                    "{} is shared with another live migration, {} (both set shareTarget): whichever is destroyed first \
                     hands the other its backups of what that one wrote over, so the last destroy restores what was there before",
                    target.describe, other.owner
                ));
                continue;
            }
            bail!(
                "{} is the target of another live migration, {} ({}), whose claim is {}/{name}: \
                 two migrations into one target cannot both roll back exactly unless both set `shareTarget: true`; \
                 `pulumi destroy` that one first, or choose another target; if that migration is gone (a killed run \
                 whose stack no longer holds it), delete its claim",
                target.describe,
                other.owner,
                other.urn,
                claims.uri()
            );
        }
        if self.run_inputs.is_some() {
            let claim = Claim {
                owner: journal_path(&self.urn),
                urn: self.urn.clone(),
                prefix: target.prefix.clone(),
                share: target.share,
                journal: Some(self.journal().await?.uri().to_string()),
            };
            let (name, body) = (self.own_note_name(), serde_json::to_vec(&claim)?);
            // A claim this resource already holds is brought up to date at once (a run
            // that writes nothing would leave `shareTarget`'s old value there).
            if claims.read_note(&name).await?.is_some() {
                claims.write_note(&name, body).await?;
            } else {
                *self.pending_claim.lock().expect("not poisoned") = Some((claims, name, body));
            }
        }
        Ok(())
    }

    /// The journals of the other live migrations sharing this resource's targets, read
    /// before a rollback clears its journal (which lists its claims).
    pub(crate) async fn sharer_journals(&self) -> Result<Vec<Journal>> {
        let mut journals = Vec::new();
        for (at, _) in self.held_claims().await? {
            let claims = Journal::open_at(&Location::parse(&at)?, &self.clients.target).await?;
            for (_, other) in self.others_notes::<Claim>(&claims, "claim").await? {
                if let Some(journal) = other.journal.filter(|_| other.share) {
                    let location = Location::parse(&journal)?;
                    journals.push(Journal::open_at(&location, &self.clients.target).await?);
                }
            }
        }
        Ok(journals)
    }

    /// The claims this resource holds, read before a rollback clears its journal.
    pub(crate) async fn held_claims(&self) -> Result<Vec<(String, String)>> {
        Ok(held_in(&self.journal().await?).await?.claims)
    }

    /// Removes claims once the rollback that ends them is done. The rollback stands
    /// whatever happens here: a claim that cannot be removed is named for the user to
    /// delete, as it would refuse the next migration into that target.
    pub(crate) async fn release_claims(&self, held: Vec<(String, String)>) {
        for (at, name) in held {
            let released = async {
                let claims = Journal::open_at(&Location::parse(&at)?, &self.clients.target).await?;
                claims.delete_note(&name).await?;
                claims.remove_if_empty().await;
                anyhow::Ok(())
            }
            .await;
            if let Err(err) = released {
                self.progress.warn(&format!(
                    "the rollback is done, but its claim on the target, {at}/{name}, could not be removed ({err:#}); \
                     delete it, or the next migration into that target is refused"
                ));
            }
        }
    }

    /// The inputs of the run that wrote this resource's journal, if one did.
    pub(crate) async fn recorded_inputs(&self) -> Result<Option<Map<String, Value>>> {
        let journal = self.journal().await?;
        match journal.read_note(INPUTS_NOTE).await? {
            Some(body) => Ok(Some(serde_json::from_slice(&body).with_context(|| {
                format!(
                    "{INPUTS_NOTE} in the journal at {} is corrupt",
                    journal.uri()
                )
            })?)),
            None => Ok(None),
        }
    }

    fn stack_setting(&self, side: Side) -> (&'static str, Option<&str>) {
        match side {
            Side::Source => (
                "stackmigrate:sourceStack",
                self.config.source_stack.as_deref(),
            ),
            Side::Target => (
                "stackmigrate:targetStack",
                self.config.target_stack.as_deref(),
            ),
        }
    }

    /// The outputs of the side's stack, or None when no stack is configured for it.
    pub(crate) async fn stack_outputs(&self, side: Side) -> Result<Option<Arc<StackOutputs>>> {
        let Some(stack) = self.stack_setting(side).1 else {
            return Ok(None);
        };
        let outputs = self.stacks.outputs(stack).await?;
        for name in &outputs.secret {
            if let Some(value) = outputs.values.get(name) {
                self.secrets.add(value);
            }
        }
        Ok(Some(outputs))
    }

    /// A table or bucket name: the input when set, else the stack output `output`.
    pub(crate) async fn resolve(
        &self,
        side: Side,
        input: &str,
        explicit: &Option<String>,
        output: Option<&str>,
    ) -> Result<String> {
        if let Some(name) = explicit {
            return Ok(name.clone());
        }
        let Some(output) = output else {
            bail!("{input} is not set and no `output` names the stack output to read it from");
        };
        let (setting, _) = self.stack_setting(side);
        match self.stack_outputs(side).await? {
            Some(outputs) => outputs.string(output),
            None => bail!(
                "{input} is not set and {setting} is not configured: set {input}, or set {setting} so that output {output:?} can be read from it"
            ),
        }
    }

    /// Resolves both buckets, refuses a target that is the source's own place, and
    /// checks that both can be reached: bad names stop at preview.
    pub(crate) async fn bucket_pair(&self, inputs: BucketInputs<'_>) -> Result<BucketPair> {
        let source_name = self
            .resolve(
                Side::Source,
                "sourceBucket",
                inputs.source_bucket,
                inputs.output,
            )
            .await?;
        let target_name = self
            .resolve(
                Side::Target,
                "targetBucket",
                inputs.target_bucket,
                inputs.output,
            )
            .await?;
        let same_place = self.config.source.same_s3_place(&self.config.target).await;
        self.refuse_journal_in(&source_name, same_place)?;
        let (source_prefix, target_prefix) = (inputs.source_prefix, inputs.target_prefix);
        let server_side = self.config.source.same_s3_as(&self.config.target);
        if same_place
            && source_name == target_name
            && (source_prefix.starts_with(target_prefix)
                || target_prefix.starts_with(source_prefix))
        {
            bail!(
                "source and target are the same place (bucket {:?}, prefixes {:?} and {:?}, on S3 endpoints that lead to one server): \
                 a copy would write into its own source; name another targetBucket or non-overlapping prefixes",
                source_name,
                source_prefix,
                target_prefix
            );
        }
        let source = self.clients.source.bucket(&source_name).await?;
        let target = self.clients.target.bucket(&target_name).await?;
        check_bucket(&source, "source", &self.config.source.describe_s3()).await?;
        check_bucket(&target, "target", &self.config.target.describe_s3()).await?;
        Ok(BucketPair {
            source,
            target,
            server_side,
        })
    }

    /// The source is never written: an `s3://` journal (on the target connection) may not
    /// live in a source bucket. `same_place`: one bucket name is one bucket on both sides.
    fn refuse_journal_in(&self, source_bucket: &str, same_place: bool) -> Result<()> {
        let Some(Location::S3 { bucket, .. }) = self.config.journal_setting()? else {
            return Ok(());
        };
        if bucket == source_bucket && same_place {
            bail!(
                "stackmigrate:journal is inside the source bucket {bucket:?}, which is never written; \
                 put the journal in another bucket on the target connection (s3://bucket/prefix) or on disk (file:///path)"
            );
        }
        Ok(())
    }

    /// Tells the user what a rollback of `place` (`s3://bucket`, `table name`) did to
    /// its `things` (objects, items), and which it left because someone changed them
    /// after the copy (the first few by name).
    pub(crate) fn report_rollback(&self, place: &str, things: &str, report: &RolledBack) {
        const SHOWN: usize = 20;
        self.progress.info(&format!(
            "rolled back {place}: {} {things} deleted, {} restored",
            report.deleted, report.restored
        ));
        if report.handed_over > 0 {
            self.progress.info(&format!(
                "{} {things} in {place} that a migration sharing it wrote over since: their backups went to that migration's journal, \
                 so its destroy puts back what was there before",
                report.handed_over
            ));
        }
        let left_alone = &report.left_alone;
        if left_alone.is_empty() {
            return;
        }
        let more = left_alone.len().saturating_sub(SHOWN);
        self.progress.warn(&format!(
            "{} {things} in {place} changed since the copy were left as they are: {}{}",
            left_alone.len(),
            left_alone
                .iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    }

    /// Rollback of the resources that write to a bucket: undoes the journal's writes in
    /// the target bucket (last written first) and says what it did and what it left.
    pub(crate) async fn rollback_bucket(&self, bucket: &str) -> Result<()> {
        let target = self.clients.target.bucket(bucket).await?;
        let journal = self.journal().await?;
        let sharers = self.sharer_journals().await?;
        let report = sync::rollback(&target, &journal, &sharers, self.progress.as_ref()).await?;
        self.report_rollback(&format!("s3://{}", target.name), "objects", &report);
        Ok(())
    }
}

/// `project/stack/Type/name`, from `urn:pulumi:stack::project::pkg:mod:Type::name`:
/// where a resource's journal lives, and its ID. Stable across runs, so a run that was
/// killed is finished by the next one from the same journal. A child's type is its
/// parents' types and its own (`Parent.Type`), and each part is escaped, so no two
/// resources' journals nest or meet (`a` and `a/b`).
pub fn journal_path(urn: &str) -> String {
    let parts: Vec<&str> = urn.splitn(4, "::").collect();
    let stack = parts[0].rsplit(':').next().unwrap_or("stack");
    let project = parts.get(1).copied().unwrap_or("project");
    let types = parts
        .get(2)
        .map(|chain| {
            chain
                .split('$')
                .map(|token| token.rsplit(':').next().unwrap_or(token))
                .collect::<Vec<_>>()
                .join(".")
        })
        .unwrap_or_else(|| "Resource".to_string());
    let name = parts.get(3).copied().unwrap_or("resource");
    [project, stack, types.as_str(), name]
        .map(path_part)
        .join("/")
}

/// Characters left as they are in a journal path's part: the rest is percent-encoded.
const PATH_PART: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The name of a resource's note in a folder of claims or runs.
pub(crate) fn note_name(urn: &str) -> String {
    format!("{}.json", path_part(&journal_path(urn)))
}

fn path_part(part: &str) -> String {
    match part {
        // Neither a folder itself nor its parent; a bare `%` is no encoding's output.
        "" => "%".to_string(),
        "." | ".." => part.replace('.', "%2E"),
        _ => percent_encoding::utf8_percent_encode(part, PATH_PART).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_path_comes_from_the_urn() {
        assert_eq!(
            journal_path("urn:pulumi:prod::portfolio::stackmigrate:index:BucketSync::rawImages"),
            "portfolio/prod/BucketSync/rawImages"
        );
    }

    #[test]
    fn journal_paths_of_distinct_resources_never_nest() {
        let urn = |types: &str, name: &str| format!("urn:pulumi:prod::portfolio::{types}::{name}");
        let sync = "stackmigrate:index:BucketSync";
        let paths = [
            journal_path(&urn(sync, "a")),
            journal_path(&urn(sync, "a/b")),
            journal_path(&urn(sync, "..")),
            journal_path(&urn(sync, "a%2Fb")),
            journal_path(&urn(&format!("my:index:Images${sync}"), "a")),
        ];
        assert_eq!(paths[1], "portfolio/prod/BucketSync/a%2Fb");
        assert_eq!(paths[2], "portfolio/prod/BucketSync/%2E%2E");
        assert_eq!(paths[4], "portfolio/prod/Images.BucketSync/a");
        for (i, a) in paths.iter().enumerate() {
            for b in &paths[i + 1..] {
                assert!(
                    !a.starts_with(&format!("{b}/")) && !b.starts_with(&format!("{a}/")) && a != b,
                    "{a} and {b} meet"
                );
            }
        }
    }
}
