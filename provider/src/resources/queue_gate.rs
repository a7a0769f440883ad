//! QueueGate: the runbook's first check. The prod queues' dead-letter queues must be
//! empty, their backlog small and named state machines idle, at every preview and
//! again at every up, right before the resources that depend on the gate.

use anyhow::{bail, Result};
use async_trait::async_trait;
use aws_smithy_types::date_time::{DateTime, Format};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Context, Failure, Migration, Planned, Side};
use crate::runbook::queues::{self, GateReading, GateSpec, QueueCounts};

pub struct QueueGate;

fn default_max_backlog() -> u64 {
    500
}

/// Inputs of QueueGate.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inputs {
    /// Queues to check, on the target side: URLs or names.
    #[serde(default)]
    #[schemars(extend("x-replace-on-change" = true))]
    pub queues: Vec<String>,
    /// Outputs of `targetStack` naming more queues (URLs or names), for example `embedding_line_queue_url`.
    #[serde(default)]
    pub queue_outputs: Vec<String>,
    /// Dead-letter queues that must be empty besides those the queues' redrive policies name (which are always checked).
    #[serde(default)]
    pub dead_letter_queues: Vec<String>,
    /// The most messages (visible plus in flight) each queue may hold. Default 500.
    #[serde(default = "default_max_backlog")]
    pub max_backlog: u64,
    /// State machine ARNs that must have no running execution.
    #[serde(default)]
    pub idle_state_machines: Vec<String>,
    /// Outputs of `targetStack` naming more such state machines (ARNs).
    #[serde(default)]
    pub idle_state_machine_outputs: Vec<String>,
}

/// One queue as the gate last saw it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    /// The queue's URL.
    pub url: String,
    /// Whether it is a dead-letter queue (given, or named by a queue's redrive policy): it must be empty.
    pub dead_letter: bool,
    /// Messages ready to be received (SQS's approximate count).
    pub visible: u64,
    /// Messages received and not yet deleted.
    pub in_flight: u64,
    /// Messages not yet visible (delay queues).
    pub delayed: u64,
}

impl From<&QueueCounts> for QueueStatus {
    fn from(counts: &QueueCounts) -> Self {
        QueueStatus {
            url: counts.url.clone(),
            dead_letter: counts.dead_letter,
            visible: counts.visible,
            in_flight: counts.in_flight,
            delayed: counts.delayed,
        }
    }
}

/// Outputs of QueueGate.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Outputs {
    /// Every queue checked, dead-letter queues included, with its counts.
    pub queues: Vec<QueueStatus>,
    /// The state machines that were checked for running executions.
    pub idle_state_machines: Vec<String>,
    /// When the gate was last found open (UTC). Every preview and up checks it again, so a diff always shows it.
    #[schemars(extend("x-pending" = true))]
    pub checked_at: String,
}

impl QueueGate {
    async fn spec(ctx: &Context, inputs: &Inputs) -> Result<GateSpec> {
        let mut queues = inputs.queues.clone();
        let mut machines = inputs.idle_state_machines.clone();
        for (property, outputs, into) in [
            ("queueOutputs", &inputs.queue_outputs, &mut queues),
            (
                "idleStateMachineOutputs",
                &inputs.idle_state_machine_outputs,
                &mut machines,
            ),
        ] {
            if outputs.is_empty() {
                continue;
            }
            let Some(stack) = ctx.stack_outputs(Side::Target).await? else {
                bail!("{property} names outputs of the target stack, and stackmigrate:targetStack is not configured: set it, or give the names themselves");
            };
            for output in outputs {
                into.push(stack.string(output)?);
            }
        }
        Ok(GateSpec {
            queues,
            dead_letter_queues: inputs.dead_letter_queues.clone(),
            max_backlog: inputs.max_backlog,
            idle_state_machines: machines,
        })
    }

    /// Reads the queues and machines; fails, naming each, when the gate is closed.
    async fn check(ctx: &Context, inputs: &Inputs) -> Result<Outputs> {
        let spec = Self::spec(ctx, inputs).await?;
        let target = &ctx.clients.target;
        let (sqs, sfn) = (target.sqs().await?, target.sfn().await?);
        let reading: GateReading = queues::read(&sqs, &sfn, &spec).await?;
        let closed = reading.closed_because(spec.max_backlog);
        if !closed.is_empty() {
            bail!(
                "the queue gate is closed, so nothing that depends on it runs: {}. \
                 Let the workers drain the queues (redrive or purge a dead-letter queue once its messages are dealt with), \
                 or raise maxBacklog, then run the command again",
                closed.join("; ")
            );
        }
        for queue in &reading.queues {
            ctx.progress.info(&format!(
                "queue {}: {} visible, {} in flight{}",
                queue.name(),
                queue.visible,
                queue.in_flight,
                if queue.dead_letter {
                    " (dead-letter queue, empty)"
                } else {
                    ""
                }
            ));
        }
        Ok(Outputs {
            queues: reading.queues.iter().map(QueueStatus::from).collect(),
            idle_state_machines: spec.idle_state_machines,
            checked_at: DateTime::from(std::time::SystemTime::now())
                .fmt(Format::DateTime)
                .unwrap_or_default(),
        })
    }
}

#[async_trait]
impl Migration for QueueGate {
    type Inputs = Inputs;
    type Outputs = Outputs;
    const TOKEN: &'static str = "stackmigrate:index:QueueGate";
    const DESCRIPTION: &'static str = concat!(
        "A check before the copies: every dead-letter queue of the given SQS queues empty, each queue's backlog \
        (visible plus in flight) at most maxBacklog, named state machines without a running execution. \
        Checked at every preview and again at every up; resources that depend on it (dependsOn) run only \
        when it is open. It writes nothing, so destroy has nothing to undo.",
        include_str!("examples/QueueGate.md")
    );
    const JOURNALLED: bool = false;

    fn validate(inputs: &Inputs) -> Vec<Failure> {
        let nothing = inputs.queues.is_empty()
            && inputs.queue_outputs.is_empty()
            && inputs.dead_letter_queues.is_empty()
            && inputs.idle_state_machines.is_empty()
            && inputs.idle_state_machine_outputs.is_empty();
        if nothing {
            return vec![Failure::new(
                "queues",
                "the gate checks nothing: name queues (queues or queueOutputs), deadLetterQueues or idleStateMachines",
            )];
        }
        let mut failures = Vec::new();
        for (property, values) in [
            ("queues", &inputs.queues),
            ("deadLetterQueues", &inputs.dead_letter_queues),
        ] {
            for (index, queue) in values.iter().enumerate() {
                if queue.trim().is_empty() {
                    failures.push(Failure::new(
                        &format!("{property}[{index}]"),
                        "is empty: give a queue URL or name",
                    ));
                }
            }
        }
        for (index, arn) in inputs.idle_state_machines.iter().enumerate() {
            if !arn.starts_with("arn:") {
                failures.push(Failure::new(
                    &format!("idleStateMachines[{index}]"),
                    format!("{arn:?} is not an ARN: give the state machine's ARN (arn:aws:states:REGION:ACCOUNT:stateMachine:NAME)"),
                ));
            }
        }
        failures
    }

    async fn plan(&self, ctx: &Context, inputs: &Inputs) -> Result<Planned<Outputs>> {
        Ok(Planned {
            // Open now; checked again when the up reaches it.
            pending: true,
            outputs: Self::check(ctx, inputs).await?,
        })
    }

    async fn apply(&self, ctx: &Context, inputs: &Inputs) -> Result<Outputs> {
        Self::check(ctx, inputs).await
    }

    async fn rollback(&self, _ctx: &Context, _state: &Outputs) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::resources::inputs_from as inputs;

    #[test]
    fn a_gate_must_check_something_and_name_machines_by_arn() {
        let failures = QueueGate::validate(&inputs(serde_json::json!({})));
        assert_eq!(failures[0].property, "queues");
        let failures = QueueGate::validate(&inputs(serde_json::json!({
            "queues": ["lines", " "], "idleStateMachines": ["words-workflow"]
        })));
        let named: Vec<&str> = failures.iter().map(|f| f.property.as_str()).collect();
        assert_eq!(named, ["queues[1]", "idleStateMachines[0]"]);
        assert_eq!(
            inputs::<Inputs>(serde_json::json!({"queues": ["q"]})).max_backlog,
            500
        );
    }
}
