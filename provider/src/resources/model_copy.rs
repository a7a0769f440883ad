//! ModelCopy: copies a trained model (a run's `best/` or a checkpoint, and its
//! `run.json`) between training buckets, refusing an incomplete model at preview.

use anyhow::Result;
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{BucketInputs, Context, Failure, Migration, Planned};
use crate::copy::filter::KeyFilter;
use crate::copy::model::{self, Choice};
use crate::copy::s3::Lister;
use crate::copy::sync::{self, Archived, OnConflict, SyncCounts, SyncSpec};

pub struct ModelCopy;

fn default_output() -> String {
    "layoutlm_training_bucket".to_string()
}

fn default_exclude() -> Vec<String> {
    vec!["*.log".to_string()]
}

fn default_runs_prefix() -> String {
    "runs/".to_string()
}

/// Inputs of ModelCopy.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inputs {
    /// Training bucket to copy from. Default: the `output` of `sourceStack`.
    #[schemars(extend("x-replace-on-change" = true))]
    pub source_bucket: Option<String>,
    /// Training bucket to copy into. Default: the `output` of `targetStack`.
    #[schemars(extend("x-replace-on-change" = true))]
    pub target_bucket: Option<String>,
    /// Stack output naming the training bucket. Default `layoutlm_training_bucket`.
    #[serde(default = "default_output")]
    pub output: String,
    /// Where runs live, `<runsPrefix><runId>/`. Default `runs/`.
    #[serde(default = "default_runs_prefix")]
    pub runs_prefix: String,
    /// Run to copy. Default: the run with the newest object, as inference picks it.
    #[schemars(extend("x-replace-on-change" = true))]
    pub run_id: Option<String>,
    /// `best`, `latest` (highest step) or `checkpoint-<step>`. Default: `best` when it holds `model.safetensors`, else the highest step holding weights, compared as numbers.
    #[schemars(extend("x-replace-on-change" = true))]
    pub checkpoint: Option<String>,
    /// Globs of files not to copy, relative to the model directory. Default `*.log`. Tokenizer, config and weight files can never be excluded.
    #[serde(default = "default_exclude")]
    pub exclude: Vec<String>,
}

/// Outputs of ModelCopy.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Outputs {
    /// The source training bucket, as given or read from the source stack.
    pub source_bucket: String,
    /// The target training bucket, as given or read from the target stack.
    pub target_bucket: String,
    /// The run copied.
    pub run_id: String,
    /// The checkpoint copied: `best` or `checkpoint-<step>`.
    pub checkpoint: String,
    /// Where the model is in the target: point inference here.
    pub model_uri: String,
    /// Files written to the target.
    #[schemars(extend("x-pending" = true))]
    pub files_copied: u64,
    /// Bytes written to the target.
    pub bytes_copied: u64,
    /// True once every written file was proven equal to its source by a checksum, an MD5 ETag, or by reading both back where those cannot tell.
    pub verified: bool,
}

struct Plan {
    choice: Choice,
    specs: Vec<SyncSpec>,
}

impl ModelCopy {
    async fn plan_copy(ctx: &Context, inputs: &Inputs) -> Result<Plan> {
        let pair = ctx
            .bucket_pair(BucketInputs::whole(
                &inputs.source_bucket,
                &inputs.target_bucket,
                &inputs.output,
            ))
            .await?;
        let (source, target) = (pair.source, pair.target);
        let mut objects = Vec::new();
        let mut lister = Lister::new(&source, &inputs.runs_prefix);
        while let Some(object) = lister.next().await? {
            objects.push(object);
        }
        let choice = model::choose(
            &objects,
            &inputs.runs_prefix,
            inputs.run_id.as_deref(),
            inputs.checkpoint.as_deref(),
        )?;
        let filter = KeyFilter::new(&[], &inputs.exclude)?;
        let files: Vec<_> = objects
            .into_iter()
            .filter(|o| o.key.starts_with(&choice.model_prefix))
            .collect();
        model::check_complete(&source, &choice.model_prefix, &files, &filter).await?;
        let server_side = pair.server_side;
        let spec = |prefix: &str, filter: KeyFilter| SyncSpec {
            source: source.clone(),
            source_prefix: prefix.to_string(),
            target: target.clone(),
            target_prefix: prefix.to_string(),
            server_side,
            filter,
            on_conflict: OnConflict::SkipIdentical,
            delete_extraneous: false,
            archived: Archived::Fail,
            write: Default::default(),
            // Weights and snapshots are few and large: proof by reading, never by size.
            verify_content: true,
        };
        let specs = vec![
            spec(&choice.model_prefix, filter),
            spec(
                &format!("{}run.json", choice.run_prefix),
                KeyFilter::default(),
            ),
        ];
        Ok(Plan { choice, specs })
    }

    fn outputs(plan: &Plan, counts: &SyncCounts, verified: bool) -> Outputs {
        let target = &plan.specs[0].target.name;
        Outputs {
            source_bucket: plan.specs[0].source.name.clone(),
            target_bucket: target.clone(),
            run_id: plan.choice.run_id.clone(),
            checkpoint: plan.choice.checkpoint.clone(),
            model_uri: format!("s3://{target}/{}", plan.choice.model_prefix),
            files_copied: counts.copied,
            bytes_copied: counts.bytes_copied,
            verified,
        }
    }
}

#[async_trait]
impl Migration for ModelCopy {
    type Inputs = Inputs;
    type Outputs = Outputs;
    const TOKEN: &'static str = "stackmigrate:index:ModelCopy";
    const DESCRIPTION: &'static str = concat!(
        "Copies a trained model between training buckets: the newest run's best/ (or its \
        highest checkpoint, compared as numbers) and run.json, refusing an incomplete model at preview.",
        include_str!("examples/ModelCopy.md")
    );

    fn validate(inputs: &Inputs) -> Vec<Failure> {
        let mut failures = Vec::new();
        for (index, pattern) in inputs.exclude.iter().enumerate() {
            if let Err(err) = KeyFilter::new(&[], std::slice::from_ref(pattern)) {
                failures.push(Failure::new(&format!("exclude[{index}]"), err.to_string()));
            }
        }
        if let Some(checkpoint) = &inputs.checkpoint {
            let valid = checkpoint == "best"
                || checkpoint == "latest"
                || checkpoint
                    .strip_prefix("checkpoint-")
                    .is_some_and(|s| s.parse::<u64>().is_ok());
            if !valid {
                failures.push(Failure::new(
                    "checkpoint",
                    format!("{checkpoint:?} is not best, latest or checkpoint-<step>"),
                ));
            }
        }
        if !inputs.runs_prefix.is_empty() && !inputs.runs_prefix.ends_with('/') {
            failures.push(Failure::new(
                "runsPrefix",
                "must end with /, for example runs/",
            ));
        }
        failures
    }

    async fn plan(&self, ctx: &Context, inputs: &Inputs) -> Result<Planned<Outputs>> {
        let plan = Self::plan_copy(ctx, inputs).await?;
        let journal = ctx.journal().await?;
        let mut total = SyncCounts::default();
        for spec in &plan.specs {
            total.add(&sync::plan(spec, Some(&journal), ctx.progress.as_ref()).await?);
        }
        ctx.progress.info(&format!(
            "model: run {} {} -> {}",
            plan.choice.run_id,
            plan.choice.checkpoint,
            Self::outputs(&plan, &total, false).model_uri
        ));
        Ok(Planned {
            pending: total.changes() > 0,
            outputs: Self::outputs(&plan, &total, false),
        })
    }

    async fn apply(&self, ctx: &Context, inputs: &Inputs) -> Result<Outputs> {
        let plan = Self::plan_copy(ctx, inputs).await?;
        let journal = ctx.journal().await?;
        ctx.resolved(&Self::outputs(&plan, &SyncCounts::default(), false));
        let mut total = SyncCounts::default();
        for spec in &plan.specs {
            total.add(&sync::run(spec, &journal, ctx.progress.as_ref(), |_| Ok(())).await?);
        }
        // Size alone proves nothing: such a run is done but not verified (sync::run warned).
        let verified = total.verified_by_size == 0;
        let outputs = Self::outputs(&plan, &total, verified);
        ctx.progress.info(&format!(
            "{}: {} files copied to {}",
            if verified {
                "done and verified"
            } else {
                "done, not verified"
            },
            total.copied,
            outputs.model_uri
        ));
        Ok(outputs)
    }

    async fn rollback(&self, ctx: &Context, state: &Outputs) -> Result<()> {
        ctx.rollback_bucket(&state.target_bucket).await
    }
}
