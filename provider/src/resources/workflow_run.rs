//! WorkflowRun: the runbook's step after the copies. A Step Functions state machine is
//! started once the resources it depends on are done (the embedding workflows after
//! the table copy), started again when its inputs (`triggers` among them) change,
//! optionally waited for; destroy stops an execution still running.

use std::time::Duration;

use anyhow::{Context as _, Result};
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Context, Failure, Migration, Planned, Side};
use crate::runbook::workflows::{self, Execution};

pub struct WorkflowRun;

fn default_timeout_seconds() -> u64 {
    3600
}

/// Inputs of WorkflowRun.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inputs {
    /// ARN of the state machine to start, on the target side. Default: the `output` of `targetStack`.
    #[schemars(extend("x-replace-on-change" = true))]
    pub state_machine_arn: Option<String>,
    /// Output of `targetStack` holding the state machine's ARN, when `stateMachineArn` is not set.
    pub output: Option<String>,
    /// The execution's input, as JSON. Default `{}`.
    pub input: Option<Value>,
    /// Wait until the execution ends, and fail the up when it does not succeed. Default: false (start it and go on).
    #[serde(default)]
    pub wait: bool,
    /// With `wait`: how long to wait before failing the up (the execution is left running). Default 3600.
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
}

/// Outputs of WorkflowRun.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Outputs {
    /// The state machine started.
    pub state_machine_arn: String,
    /// The execution this up started (or took over from an interrupted up); empty at preview.
    #[schemars(extend("x-pending" = true))]
    pub execution_arn: String,
    /// The execution's name.
    pub execution_name: String,
    /// `RUNNING`, `SUCCEEDED`, `FAILED`, `TIMED_OUT` or `ABORTED` when last looked at; at preview, `NOT_STARTED`.
    pub status: String,
}

impl WorkflowRun {
    async fn machine(ctx: &Context, inputs: &Inputs) -> Result<String> {
        ctx.resolve(
            Side::Target,
            "stateMachineArn",
            &inputs.state_machine_arn,
            inputs.output.as_deref(),
        )
        .await
    }

    fn input(inputs: &Inputs) -> String {
        inputs
            .input
            .as_ref()
            .map_or_else(|| "{}".to_string(), Value::to_string)
    }

    fn outputs(machine: String, execution: Execution) -> Outputs {
        Outputs {
            state_machine_arn: machine,
            execution_arn: execution.arn,
            execution_name: execution.name,
            status: execution.status,
        }
    }
}

#[async_trait]
impl Migration for WorkflowRun {
    type Inputs = Inputs;
    type Outputs = Outputs;
    const TOKEN: &'static str = "stackmigrate:index:WorkflowRun";
    const DESCRIPTION: &'static str = concat!(
        "Starts a Step Functions state machine once the resources it depends on are done (for example the \
        embedding workflows after a DynamoCopy), and again when its inputs change (put the copy's itemsCopied \
        in triggers); optionally waits for the end and fails the up when the execution fails. An interrupted up \
        takes over the execution it started. Destroy stops an execution still running; what a finished one did \
        is not undone.",
        include_str!("examples/WorkflowRun.md")
    );
    const JOURNALLED: bool = false;

    fn validate(inputs: &Inputs) -> Vec<Failure> {
        let mut failures = Vec::new();
        match (&inputs.state_machine_arn, &inputs.output) {
            (None, None) => failures.push(Failure::new(
                "stateMachineArn",
                "name the state machine: set stateMachineArn, or output to read its ARN from targetStack",
            )),
            (Some(arn), _) if !arn.starts_with("arn:") => failures.push(Failure::new(
                "stateMachineArn",
                format!("{arn:?} is not an ARN (arn:aws:states:REGION:ACCOUNT:stateMachine:NAME)"),
            )),
            _ => {}
        }
        failures.extend(Failure::no_time_to_wait(
            inputs.wait,
            inputs.timeout_seconds,
        ));
        failures
    }

    async fn plan(&self, ctx: &Context, inputs: &Inputs) -> Result<Planned<Outputs>> {
        let machine = Self::machine(ctx, inputs).await?;
        let sfn = ctx.clients.target.sfn().await?;
        workflows::check_exists(&sfn, &machine).await?;
        ctx.progress.info(&format!(
            "would start {machine} with input {}{}",
            Self::input(inputs),
            if inputs.wait { " and wait for it" } else { "" }
        ));
        Ok(Planned {
            // Started at create and whenever an input changes; never by itself.
            pending: false,
            outputs: Outputs {
                state_machine_arn: machine,
                status: "NOT_STARTED".to_string(),
                ..Outputs::default()
            },
        })
    }

    async fn apply(&self, ctx: &Context, inputs: &Inputs) -> Result<Outputs> {
        let machine = Self::machine(ctx, inputs).await?;
        let sfn = ctx.clients.target.sfn().await?;
        let input = Self::input(inputs);
        // The run's inputs, `triggers` among them: a new trigger starts a new execution
        // even while the last one still runs.
        let run = match &ctx.run_inputs {
            Some(inputs) => serde_json::to_string(inputs.as_ref())?,
            None => format!("{machine}\n{input}"),
        };
        let prefix = crate::runbook::run_name(&ctx.urn, &run);
        let mut execution = workflows::start(&sfn, &machine, &input, &prefix).await?;
        ctx.progress.info(&format!(
            "started execution {} of {machine}",
            execution.name
        ));
        if inputs.wait {
            let timeout = Duration::from_secs(inputs.timeout_seconds);
            execution = workflows::wait(&sfn, execution, timeout, ctx.progress.as_ref())
                .await
                .context("the up waited for the workflow (wait: true)")?;
            ctx.progress.info(&format!(
                "execution {} {}",
                execution.name, execution.status
            ));
        }
        Ok(Self::outputs(machine, execution))
    }

    async fn rollback(&self, ctx: &Context, state: &Outputs) -> Result<()> {
        if state.execution_arn.is_empty() {
            return Ok(());
        }
        let sfn = ctx.clients.target.sfn().await?;
        let stopped = workflows::stop_if_running(
            &sfn,
            &state.execution_arn,
            "the stackmigrate resource that started it was destroyed",
        )
        .await?;
        ctx.progress.warn(&match stopped {
            true => format!(
                "stopped execution {}, which was still running; what it did so far is not undone",
                state.execution_name
            ),
            false => format!(
                "execution {} had ended; what it did is not undone",
                state.execution_name
            ),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failures(value: serde_json::Value) -> Vec<String> {
        WorkflowRun::validate(&crate::resources::inputs_from(value))
            .into_iter()
            .map(|f| format!("{}: {}", f.property, f.reason))
            .collect()
    }

    #[test]
    fn a_run_names_its_state_machine_by_arn_and_waits_for_some_time() {
        assert!(failures(serde_json::json!({}))[0]
            .starts_with("stateMachineArn: name the state machine"));
        assert!(
            failures(serde_json::json!({"stateMachineArn": "line-workflow"}))[0]
                .contains("is not an ARN")
        );
        let arn = "arn:aws:states:us-east-1:1:stateMachine:lines";
        assert!(failures(serde_json::json!({"stateMachineArn": arn})).is_empty());
        assert!(failures(serde_json::json!({"output": "embedding_line_workflow_arn"})).is_empty());
        assert_eq!(
            failures(
                serde_json::json!({"stateMachineArn": arn, "wait": true, "timeoutSeconds": 0})
            ),
            ["timeoutSeconds: must be above 0 when wait is true"]
        );
    }
}
