//! Workflow runs: a Step Functions execution started once the copies it follows are
//! done, optionally waited for, stopped by a rollback while it still runs.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use aws_sdk_sfn::types::ExecutionStatus;

use super::{arn_name, now_millis, poll_interval};
use crate::copy::aws_error;
use crate::copy::progress::Progress;

/// An execution as Step Functions describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Execution {
    pub arn: String,
    pub name: String,
    /// `RUNNING`, `SUCCEEDED`, `FAILED`, `TIMED_OUT` or `ABORTED`.
    pub status: String,
    /// The error and cause of an execution that did not succeed.
    pub failure: Option<String>,
}

impl Execution {
    pub fn running(&self) -> bool {
        self.status == ExecutionStatus::Running.as_str()
    }
}

/// Fails naming the state machine when it does not exist or cannot be read.
pub(crate) async fn check_exists(sfn: &aws_sdk_sfn::Client, machine: &str) -> Result<()> {
    sfn.describe_state_machine()
        .state_machine_arn(machine)
        .send()
        .await
        .map_err(aws_error)
        .with_context(|| format!("reading state machine {machine}"))?;
    Ok(())
}

/// Starts an execution of `machine` with `input`, unless one started by an earlier,
/// interrupted attempt of the same run (its name has `prefix`) is still running: that
/// one is taken over.
pub(crate) async fn start(
    sfn: &aws_sdk_sfn::Client,
    machine: &str,
    input: &str,
    prefix: &str,
) -> Result<Execution> {
    let running = sfn
        .list_executions()
        .state_machine_arn(machine)
        .status_filter(ExecutionStatus::Running)
        .send()
        .await
        .map_err(aws_error)
        .with_context(|| format!("listing the running executions of {machine}"))?;
    if let Some(ours) = running
        .executions()
        .iter()
        .find(|e| e.name().starts_with(prefix))
    {
        return describe(sfn, ours.execution_arn()).await;
    }
    let out = sfn
        .start_execution()
        .state_machine_arn(machine)
        .name(format!("{prefix}-{}", now_millis()))
        .input(input)
        .send()
        .await
        .map_err(aws_error)
        .with_context(|| format!("starting an execution of {machine}"))?;
    describe(sfn, out.execution_arn()).await
}

pub(crate) async fn describe(sfn: &aws_sdk_sfn::Client, arn: &str) -> Result<Execution> {
    let out = sfn
        .describe_execution()
        .execution_arn(arn)
        .send()
        .await
        .map_err(aws_error)
        .with_context(|| format!("reading execution {arn}"))?;
    let failure = match (out.error(), out.cause()) {
        (None, None) => None,
        (error, cause) => Some(
            [error, cause]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": "),
        ),
    };
    Ok(Execution {
        arn: arn.to_string(),
        name: out.name().unwrap_or_default().to_string(),
        status: out.status().as_str().to_string(),
        failure,
    })
}

/// Waits for the execution to end; fails when it ends other than SUCCEEDED or is still
/// running after `timeout` (it is left running: the message says so).
pub(crate) async fn wait(
    sfn: &aws_sdk_sfn::Client,
    execution: Execution,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<Execution> {
    let deadline = Instant::now() + timeout;
    let mut current = execution;
    let mut attempt = 0;
    while current.running() {
        if Instant::now() >= deadline {
            bail!(
                "execution {} of {} is still running after {}s; it was left running",
                current.name,
                arn_name(&machine_of(&current.arn)),
                timeout.as_secs()
            );
        }
        progress.status(&format!(
            "waiting for execution {} ({})",
            current.name, current.status
        ));
        tokio::time::sleep(poll_interval(attempt)).await;
        attempt += 1;
        current = describe(sfn, &current.arn).await?;
    }
    if current.status != ExecutionStatus::Succeeded.as_str() {
        bail!(
            "execution {} of {} ended {}{}",
            current.name,
            arn_name(&machine_of(&current.arn)),
            current.status,
            current
                .failure
                .as_deref()
                .map(|f| format!(" ({f})"))
                .unwrap_or_default()
        );
    }
    Ok(current)
}

/// Stops the execution when it still runs; returns whether it did.
pub(crate) async fn stop_if_running(
    sfn: &aws_sdk_sfn::Client,
    arn: &str,
    cause: &str,
) -> Result<bool> {
    if !describe(sfn, arn).await?.running() {
        return Ok(false);
    }
    sfn.stop_execution()
        .execution_arn(arn)
        .error("stackmigrate.RolledBack")
        .cause(cause)
        .send()
        .await
        .map_err(aws_error)
        .with_context(|| format!("stopping execution {arn}"))?;
    Ok(true)
}

/// The state machine an execution ARN belongs to:
/// `arn:aws:states:R:A:execution:MACHINE:NAME` -> `arn:aws:states:R:A:stateMachine:MACHINE`.
fn machine_of(execution: &str) -> String {
    let parts: Vec<&str> = execution.split(':').collect();
    match parts.as_slice() {
        [head @ .., "execution", machine, _name] => {
            format!("{}:stateMachine:{machine}", head.join(":"))
        }
        _ => execution.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_execution_names_its_state_machine() {
        assert_eq!(
            machine_of("arn:aws:states:us-east-1:123456789012:execution:line-workflow:run-1"),
            "arn:aws:states:us-east-1:123456789012:stateMachine:line-workflow"
        );
    }
}
