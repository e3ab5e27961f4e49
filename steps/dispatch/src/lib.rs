//! The GuardDuty dispatcher (not a runbook step: it sits in front of the state machine). Takes a
//! batch of queued GuardDuty findings from the SQS event source mapping (`{"finding_id",
//! "instance_id", "reason", "requested_by": "guardduty"}`, one per message, in queue order);
//! starts a Cordon execution for each, in order, while fewer than `max_running` executions of the
//! state machine are RUNNING; returns the rest as `batchItemFailures`, so that they stay in the
//! queue and come back (queued, not dropped). Changes nothing but Step Functions executions and
//! the visibility of the messages it leaves queued.
//!
//! - **Bound.** Step Functions has no cap on concurrent Standard executions, so the dispatcher
//!   counts them: one `ListExecutions` page with `statusFilter=RUNNING` and `maxResults=N`
//!   (<https://docs.aws.amazon.com/step-functions/latest/apireference/API_ListExecutions.html>);
//!   a `nextToken` means N or more run. ListExecutions "is eventually consistent": an execution
//!   started a moment ago may be missing from the list. The queue is FIFO with one message group,
//!   so only one dispatcher runs at a time and the next one runs `retry_delay` later (see
//!   ARCHITECTURE.md, "A storm of findings"), which leaves the list that long to catch up.
//! - **Order.** A FIFO batch is processed in order and, after the first message that is not
//!   started, every later one is returned too, as Lambda asks of FIFO partial batch responses
//!   (<https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html>).
//! - **One execution per finding.** The execution name is the finding id (when it is a valid
//!   incident id, else `gd-` and a SHA-256 of it), so a repeated finding converges on the same
//!   execution: StartExecution with the same name and input as a running execution returns it, and
//!   any other reuse of a name within 90 days is `ExecutionAlreadyExists`
//!   (<https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html>),
//!   which means "already started": the message is done.
//! - **Nothing dropped.** A message whose body is not the expected object still starts an
//!   execution (with the body as its input): the state machine rejects it as `InvalidInput` and
//!   announces the rejection. A start that fails (throttling, a missing permission) leaves the
//!   message queued; after the queue's `maxReceiveCount` receives SQS moves it to the dead-letter
//!   queue, which an alarm watches.
//! - **Retry delay.** A message left queued comes back when its visibility timeout ends. The
//!   queue's own timeout must be at least six times the function timeout (Lambda's advice for SQS
//!   event sources), far longer than a slot takes to free up; the dispatcher sets the returned
//!   messages' visibility to `retry_delay` instead (ChangeMessageVisibilityBatch,
//!   <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_ChangeMessageVisibilityBatch.html>).
//!   If that call fails the messages are still queued, only later: it is logged, not an error.

use aws_sdk_sfn::types::ExecutionStatus;
use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
// An incident id (`^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$`) is also a valid execution name: none of
// the characters StartExecution forbids, at most 80.
use cordon_common::evidence::hex;
use cordon_common::incident::is_incident_id;
use cordon_common::{aws, lambda, StepError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The body field that carries the GuardDuty finding id; it becomes the execution name and is not
/// part of the execution input (the state machine refuses unknown fields).
pub const FINDING_ID_FIELD: &str = "finding_id";

/// Attempts per AWS call: the SDK's standard mode default. A start that still fails is retried by
/// the queue (the message comes back after the retry delay), not by a longer SDK budget.
pub const SDK_MAX_ATTEMPTS: u32 = 3;

/// ListExecutions returns at most 1,000 items per page.
pub const MAX_RUNNING_LIMIT: i32 = 1000;
/// ChangeMessageVisibility accepts 0 to 43,200 seconds (12 hours).
pub const MAX_VISIBILITY_SECONDS: i32 = 43_200;

pub struct Clients {
    pub sfn: aws_sdk_sfn::Client,
    pub sqs: aws_sdk_sqs::Client,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub state_machine_arn: String,
    /// The queue the event source mapping reads (for ChangeMessageVisibilityBatch).
    pub queue_url: String,
    /// Start executions only while fewer than this many run (1 to 1,000).
    pub max_running: i32,
    /// Seconds until a message left queued is offered again (0 to 43,200).
    pub retry_delay_seconds: i32,
}

impl Config {
    /// `STATE_MACHINE_ARN`, `QUEUE_URL`, `MAX_RUNNING_RESPONSES`, `RETRY_DELAY_SECONDS`.
    pub fn from_env() -> Result<Self, StepError> {
        Self::from_values(
            aws::required_env("STATE_MACHINE_ARN")?,
            aws::required_env("QUEUE_URL")?,
            &aws::required_env("MAX_RUNNING_RESPONSES")?,
            &aws::required_env("RETRY_DELAY_SECONDS")?,
        )
    }

    pub fn from_values(
        state_machine_arn: String,
        queue_url: String,
        max_running: &str,
        retry_delay_seconds: &str,
    ) -> Result<Self, StepError> {
        let number = |name: &str, value: &str, min: i32, max: i32| match value.parse::<i32>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(StepError::Config(format!(
                "{name} must be a whole number from {min} to {max}, got {value:?}"
            ))),
        };
        Ok(Config {
            state_machine_arn,
            queue_url,
            max_running: number("MAX_RUNNING_RESPONSES", max_running, 1, MAX_RUNNING_LIMIT)?,
            retry_delay_seconds: number(
                "RETRY_DELAY_SECONDS",
                retry_delay_seconds,
                0,
                MAX_VISIBILITY_SECONDS,
            )?,
        })
    }
}

/// The SQS event Lambda's poller sends
/// (<https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html>); only what is used.
#[derive(Debug, Deserialize)]
pub struct SqsEvent {
    #[serde(rename = "Records")]
    pub records: Vec<SqsMessage>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SqsMessage {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
}

/// The partial batch response: the messages to leave in the queue.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchResponse {
    pub batch_item_failures: Vec<ItemFailure>,
}

#[derive(Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemFailure {
    pub item_identifier: String,
}

/// What one queued message asks for: the execution name and input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartRequest {
    pub name: String,
    pub input: String,
}

impl StartRequest {
    /// The finding id as the name (if it can be one) and the body without it as the input. Any
    /// other body is passed on as it is (a JSON string if it is not JSON), for the state machine
    /// to reject and announce.
    pub fn from_body(body: &str) -> Self {
        match serde_json::from_str::<Value>(body) {
            Ok(Value::Object(mut fields)) => {
                let finding_id = match fields.remove(FINDING_ID_FIELD) {
                    Some(Value::String(id)) => Some(id),
                    _ => None,
                };
                let name = match finding_id {
                    Some(id) if is_incident_id(&id) => id,
                    Some(id) => derived_name(&id),
                    None => derived_name(body),
                };
                StartRequest {
                    name,
                    input: Value::Object(fields).to_string(),
                }
            }
            Ok(other) => StartRequest {
                name: derived_name(body),
                input: other.to_string(),
            },
            Err(_) => StartRequest {
                name: derived_name(body),
                input: Value::String(body.to_owned()).to_string(),
            },
        }
    }
}

/// `gd-` and the first 40 hex digits of SHA-256: stable for the same finding, always a valid name.
fn derived_name(source: &str) -> String {
    let digest = Sha256::digest(source.as_bytes());
    format!("gd-{}", &hex(&digest)[..40])
}

pub async fn handle(
    clients: &Clients,
    config: &Config,
    event: Value,
) -> Result<BatchResponse, StepError> {
    let event: SqsEvent = lambda::parse(event)?;
    dispatch(clients, config, &event.records).await
}

#[derive(Debug, PartialEq, Eq)]
enum Started {
    /// A new execution (or the running one with this name and input): it holds a slot.
    Running(String),
    /// The name is taken by another input or a closed execution: this finding was answered.
    AlreadyExists,
}

#[tracing::instrument(skip_all, fields(messages = messages.len(), max_running = config.max_running))]
pub async fn dispatch(
    clients: &Clients,
    config: &Config,
    messages: &[SqsMessage],
) -> Result<BatchResponse, StepError> {
    if messages.is_empty() {
        return Ok(BatchResponse::default());
    }
    // Without the count nothing may start: the error fails the invocation and the whole batch
    // stays queued (it comes back after the queue's visibility timeout).
    let mut free = free_slots(&clients.sfn, config).await?;
    let mut left: Vec<&SqsMessage> = Vec::new();
    for message in messages {
        // FIFO: once one message stays queued, every later one stays too, in order.
        if !left.is_empty() || free == 0 {
            left.push(message);
            continue;
        }
        let request = StartRequest::from_body(&message.body);
        match start(&clients.sfn, config, &request).await {
            Ok(Started::Running(execution_arn)) => {
                free -= 1;
                tracing::info!(message_id = %message.message_id, name = %request.name, %execution_arn, "started");
            }
            Ok(Started::AlreadyExists) => {
                tracing::info!(message_id = %message.message_id, name = %request.name, "already started earlier: nothing to do");
            }
            Err(e) => {
                tracing::warn!(message_id = %message.message_id, name = %request.name, error = %e, code = e.aws_code().unwrap_or(""), "not started: left queued");
                left.push(message);
            }
        }
    }
    if !left.is_empty() {
        delay(&clients.sqs, config, &left).await;
    }
    tracing::info!(left_queued = left.len(), "dispatched");
    Ok(BatchResponse {
        batch_item_failures: left
            .into_iter()
            .map(|m| ItemFailure {
                item_identifier: m.message_id.clone(),
            })
            .collect(),
    })
}

/// `max_running` minus the RUNNING executions, from one bounded ListExecutions page.
async fn free_slots(sfn: &aws_sdk_sfn::Client, config: &Config) -> Result<i32, StepError> {
    let page = sfn
        .list_executions()
        .state_machine_arn(&config.state_machine_arn)
        .status_filter(ExecutionStatus::Running)
        .max_results(config.max_running)
        .send()
        .await
        .map_err(|e| StepError::aws("ListExecutions", e))?;
    let running = page.executions().len() as i32;
    let free = if page.next_token().is_some() {
        0
    } else {
        (config.max_running - running).max(0)
    };
    tracing::info!(running, free, "running executions counted");
    Ok(free)
}

async fn start(
    sfn: &aws_sdk_sfn::Client,
    config: &Config,
    request: &StartRequest,
) -> Result<Started, StepError> {
    match sfn
        .start_execution()
        .state_machine_arn(&config.state_machine_arn)
        .name(&request.name)
        .input(&request.input)
        .send()
        .await
    {
        Ok(out) => Ok(Started::Running(out.execution_arn().to_owned())),
        Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("ExecutionAlreadyExists") => {
            Ok(Started::AlreadyExists)
        }
        Err(e) => Err(StepError::aws("StartExecution", e)),
    }
}

/// Offers the messages left queued again after `retry_delay_seconds` instead of the queue's
/// visibility timeout. Best effort: on failure they come back later, but they come back.
async fn delay(sqs: &aws_sdk_sqs::Client, config: &Config, messages: &[&SqsMessage]) {
    // ChangeMessageVisibilityBatch takes at most 10 entries: an SQS batch for Lambda from a FIFO
    // queue is at most 10 messages, but chunk anyway.
    for (chunk_index, chunk) in messages.chunks(10).enumerate() {
        let entries: Result<Vec<_>, _> = chunk
            .iter()
            .enumerate()
            .map(|(i, m)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(format!("m{}", chunk_index * 10 + i))
                    .receipt_handle(&m.receipt_handle)
                    .visibility_timeout(config.retry_delay_seconds)
                    .build()
            })
            .collect();
        let entries = match entries {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(error = %e, "visibility change not built: the messages come back after the queue's visibility timeout");
                return;
            }
        };
        match sqs
            .change_message_visibility_batch()
            .queue_url(&config.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(out) => {
                for failed in out.failed() {
                    tracing::warn!(entry = failed.id(), code = failed.code(), message = failed.message().unwrap_or(""), "visibility not changed: the message comes back after the queue's visibility timeout");
                }
            }
            Err(e) => {
                let e = StepError::aws("ChangeMessageVisibilityBatch", e);
                tracing::warn!(error = %e, "visibility not changed: the messages come back after the queue's visibility timeout");
            }
        }
    }
}

#[cfg(test)]
mod tests;
