//! The queue gate: before prod's data is replaced, the queues that feed prod's workers
//! must be quiet (every dead-letter queue empty, the backlog small) and named state
//! machines idle, as the real promotion checks first. SQS's counts are approximate
//! (AWS says so): the gate reads them as SQS gives them.

use anyhow::{Context as _, Result};
use aws_sdk_sfn::types::ExecutionStatus;
use aws_sdk_sqs::types::QueueAttributeName;

use super::arn_name;
use crate::copy::aws_error;

/// What the gate requires.
#[derive(Debug, Clone)]
pub(crate) struct GateSpec {
    /// Queue URLs or names.
    pub queues: Vec<String>,
    /// Dead-letter queues to check besides those the queues' redrive policies name.
    pub dead_letter_queues: Vec<String>,
    /// The most messages (visible and in flight) a queue may hold.
    pub max_backlog: u64,
    /// State machine ARNs that must have no running execution.
    pub idle_state_machines: Vec<String>,
}

/// One queue as the gate saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueueCounts {
    pub url: String,
    /// Messages ready to be received.
    pub visible: u64,
    /// Messages received and not yet deleted.
    pub in_flight: u64,
    /// Messages not yet visible (delay queues).
    pub delayed: u64,
    /// Whether this is a dead-letter queue (given, or named by a redrive policy).
    pub dead_letter: bool,
}

impl QueueCounts {
    pub fn backlog(&self) -> u64 {
        self.visible + self.in_flight
    }

    pub fn total(&self) -> u64 {
        self.visible + self.in_flight + self.delayed
    }

    pub fn name(&self) -> &str {
        self.url.rsplit('/').next().unwrap_or(&self.url)
    }
}

/// A running execution that keeps the gate closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Running {
    pub state_machine: String,
    pub execution: String,
}

/// Everything the gate looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GateReading {
    pub queues: Vec<QueueCounts>,
    pub running: Vec<Running>,
}

impl GateReading {
    /// Why the gate is closed, one reason per queue or machine; empty when it is open.
    pub fn closed_because(&self, max_backlog: u64) -> Vec<String> {
        let queues = self.queues.iter().filter_map(|q| match q.dead_letter {
            true if q.total() > 0 => Some(format!(
                "dead-letter queue {} holds {} messages ({} visible, {} in flight, {} delayed); it must be empty",
                q.name(),
                q.total(),
                q.visible,
                q.in_flight,
                q.delayed
            )),
            false if q.backlog() > max_backlog => Some(format!(
                "queue {} has a backlog of {} messages ({} visible, {} in flight), above maxBacklog {max_backlog}",
                q.name(),
                q.backlog(),
                q.visible,
                q.in_flight
            )),
            _ => None,
        });
        let running = self.running.iter().map(|r| {
            format!(
                "state machine {} has a running execution {}",
                arn_name(&r.state_machine),
                r.execution
            )
        });
        queues.chain(running).collect()
    }
}

/// Reads every queue's counts (and the dead-letter queues their redrive policies name)
/// and the named state machines' running executions. Fails naming a queue or machine
/// that cannot be read.
pub(crate) async fn read(
    sqs: &aws_sdk_sqs::Client,
    sfn: &aws_sdk_sfn::Client,
    spec: &GateSpec,
) -> Result<GateReading> {
    let mut queues: Vec<QueueCounts> = Vec::new();
    let mut dead_letter_arns = Vec::new();
    for queue in &spec.queues {
        let url = queue_url(sqs, queue, None).await?;
        let (counts, redrive) = counts(sqs, &url, false).await?;
        dead_letter_arns.extend(redrive);
        queues.push(counts);
    }
    let mut dead_letter_urls = Vec::new();
    for given in &spec.dead_letter_queues {
        dead_letter_urls.push(queue_url(sqs, given, None).await?);
    }
    for arn in dead_letter_arns {
        let (name, account) = queue_of_arn(&arn)?;
        dead_letter_urls.push(queue_url(sqs, name, account).await?);
    }
    dead_letter_urls.sort();
    dead_letter_urls.dedup();
    for url in dead_letter_urls {
        // A queue listed as both is held to the stricter rule.
        queues.retain(|q| q.url != url);
        queues.push(counts(sqs, &url, true).await?.0);
    }
    let mut running = Vec::new();
    for machine in &spec.idle_state_machines {
        let out = sfn
            .list_executions()
            .state_machine_arn(machine)
            .status_filter(ExecutionStatus::Running)
            .max_results(10)
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| {
                format!("listing the running executions of state machine {machine}")
            })?;
        running.extend(out.executions().iter().map(|e| Running {
            state_machine: machine.clone(),
            execution: e.name().to_string(),
        }));
    }
    Ok(GateReading { queues, running })
}

/// A queue's URL: as given when it is one, else asked of SQS by name.
async fn queue_url(
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
    account: Option<&str>,
) -> Result<String> {
    if queue.starts_with("https://") || queue.starts_with("http://") {
        return Ok(queue.to_string());
    }
    let out = sqs
        .get_queue_url()
        .queue_name(queue)
        .set_queue_owner_aws_account_id(account.map(str::to_owned))
        .send()
        .await
        .map_err(aws_error)
        .with_context(|| format!("finding queue {queue:?}"))?;
    out.queue_url()
        .map(str::to_owned)
        .with_context(|| format!("SQS gave no URL for queue {queue:?}"))
}

/// A queue's counts, and the dead-letter queue its redrive policy names.
async fn counts(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    dead_letter: bool,
) -> Result<(QueueCounts, Option<String>)> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map_err(aws_error)
        .with_context(|| format!("reading the attributes of queue {url}"))?;
    let attributes = out.attributes().cloned().unwrap_or_default();
    let count = |name: QueueAttributeName| -> Result<u64> {
        attributes.get(&name).map_or(Ok(0), |value| {
            value
                .parse()
                .with_context(|| format!("queue {url}: {name:?} is {value:?}, not a count"))
        })
    };
    let redrive = attributes
        .get(&QueueAttributeName::RedrivePolicy)
        .map(|policy| dead_letter_target(policy))
        .transpose()
        .with_context(|| format!("reading the redrive policy of queue {url}"))?;
    Ok((
        QueueCounts {
            url: url.to_string(),
            visible: count(QueueAttributeName::ApproximateNumberOfMessages)?,
            in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)?,
            delayed: count(QueueAttributeName::ApproximateNumberOfMessagesDelayed)?,
            dead_letter,
        },
        redrive,
    ))
}

/// The dead-letter queue ARN of a redrive policy (`{"deadLetterTargetArn": ...}`).
fn dead_letter_target(policy: &str) -> Result<String> {
    let policy: serde_json::Value = serde_json::from_str(policy)?;
    policy["deadLetterTargetArn"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no deadLetterTargetArn in {policy}"))
}

/// A queue ARN's name and account: `arn:aws:sqs:REGION:ACCOUNT:NAME`.
fn queue_of_arn(arn: &str) -> Result<(&str, Option<&str>)> {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts.as_slice() {
        ["arn", _, "sqs", _, account, name] => Ok((name, Some(*account).filter(|a| !a.is_empty()))),
        _ => anyhow::bail!("{arn:?} is not an SQS queue ARN"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(name: &str, visible: u64, in_flight: u64, dead_letter: bool) -> QueueCounts {
        QueueCounts {
            url: format!("http://sqs.local/123456789012/{name}"),
            visible,
            in_flight,
            delayed: 0,
            dead_letter,
        }
    }

    #[test]
    fn the_gate_is_open_at_the_limit_and_closed_above_it() {
        let reading = GateReading {
            queues: vec![
                queue("lines", 300, 200, false),
                queue("lines-dlq", 0, 0, true),
            ],
            running: Vec::new(),
        };
        assert!(reading.closed_because(500).is_empty());
        assert_eq!(
            reading.closed_because(499),
            ["queue lines has a backlog of 500 messages (300 visible, 200 in flight), above maxBacklog 499"]
        );
    }

    #[test]
    fn any_message_in_a_dead_letter_queue_closes_the_gate() {
        let mut dlq = queue("words-dlq", 0, 0, true);
        dlq.delayed = 1;
        let reading = GateReading {
            queues: vec![dlq],
            running: vec![Running {
                state_machine: "arn:aws:states:us-east-1:1:stateMachine:words".into(),
                execution: "run-7".into(),
            }],
        };
        assert_eq!(
            reading.closed_because(500),
            [
                "dead-letter queue words-dlq holds 1 messages (0 visible, 0 in flight, 1 delayed); it must be empty",
                "state machine words has a running execution run-7",
            ]
        );
    }

    #[test]
    fn redrive_policies_name_their_dead_letter_queue() {
        let arn = dead_letter_target(
            r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:123456789012:lines-dlq","maxReceiveCount":"5"}"#,
        )
        .unwrap();
        assert_eq!(
            queue_of_arn(&arn).unwrap(),
            ("lines-dlq", Some("123456789012"))
        );
        assert!(dead_letter_target(r#"{"maxReceiveCount":5}"#).is_err());
        assert!(queue_of_arn("arn:aws:sns:us-east-1:1:topic").is_err());
    }
}
