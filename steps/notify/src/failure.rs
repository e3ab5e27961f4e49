//! Failure announced from outside the execution. An EventBridge rule on the state machine's
//! "Step Functions Execution Status Change" events for `FAILED`, `TIMED_OUT` and `ABORTED`
//! invokes notify with the event itself
//! (<https://docs.aws.amazon.com/step-functions/latest/dg/eventbridge-integration.html>). A failed
//! execution cannot announce its own failure: a containment step that fails must fail the
//! execution at its own state, so that a redrive reruns it
//! (<https://docs.aws.amazon.com/step-functions/latest/dg/redrive-executions.html>).
//!
//! notify reads the execution's history (`GetExecutionHistory`) to say which state failed, with
//! which error and cause, and what had been done before it (every step's output in the history
//! carries its `actions` and `gaps`), and how to redrive. It publishes once per failed attempt: the
//! de-duplication record is keyed on the execution, its redrive count (an attempt) and the
//! outcome, `notifications/<execution>.attempt-<n>.<outcome>.json`, so the failure of a redriven
//! attempt is announced again and the all-clear of the attempt that succeeds is announced once.
//!
//! A rejected request (the "Announce rejected request" state ran) was already announced by the
//! execution itself and is not announced twice.

use std::fmt::Write as _;

use aws_sdk_sfn::types::{HistoryEvent, HistoryEventType};
use aws_sdk_sns::types::MessageAttributeValue;
use cordon_common::timeline::Outcome as ActionOutcome;
use cordon_common::{lambda, Incident, StepError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{collect, subject_text, Clients, Collected};

/// The state that announces a rejected request: an execution that went through it was announced.
pub const REJECTION_STATE: &str = "Announce rejected request";
/// History pages read at most (1,000 events each): a response is far shorter.
const MAX_HISTORY_PAGES: usize = 20;

/// The EventBridge event, as Step Functions sends it.
#[derive(Debug, Deserialize)]
pub struct StatusChange {
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    pub source: String,
    pub detail: Detail,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Detail {
    pub execution_arn: String,
    #[serde(default)]
    pub state_machine_arn: Option<String>,
    pub name: String,
    pub status: String,
    #[serde(default)]
    pub input: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub cause: Option<String>,
    /// Present on every status-change event since redrive exists; 0 for a first attempt.
    #[serde(default)]
    pub redrive_count: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ending {
    ContainmentFailed,
    TimedOut,
    Aborted,
}

impl Ending {
    fn of(status: &str) -> Option<Self> {
        match status {
            "FAILED" => Some(Ending::ContainmentFailed),
            "TIMED_OUT" => Some(Ending::TimedOut),
            "ABORTED" => Some(Ending::Aborted),
            _ => None,
        }
    }
    pub fn headline(self) -> &'static str {
        match self {
            Ending::ContainmentFailed => "CONTAINMENT FAILED",
            Ending::TimedOut => "RESPONSE TIMED OUT",
            Ending::Aborted => "RESPONSE ABORTED",
        }
    }
    pub fn status(self) -> &'static str {
        match self {
            Ending::ContainmentFailed => "containment-failed",
            Ending::TimedOut => "timed-out",
            Ending::Aborted => "aborted",
        }
    }
}

/// What the history says about the attempt that ended.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    /// The last state entered before the execution ended: where it failed.
    pub failed_state: Option<String>,
    pub error: Option<String>,
    pub cause: Option<String>,
    /// Every successful Task's output, in order.
    pub results: Vec<Value>,
    /// The execution announced a rejected request itself.
    pub rejected: bool,
    /// The redrive count of the attempt that ended (the number of `ExecutionRedriven` events).
    pub attempt: i64,
}

#[derive(Debug, Serialize)]
pub struct FailureOutput {
    pub outcome: Ending,
    pub execution_arn: String,
    pub attempt: i64,
    pub failed_state: Option<String>,
    pub subject: String,
    pub message_id: Option<String>,
    /// False when this attempt's failure was already announced, or the execution announced it.
    pub published: bool,
}

/// Reads the history events (oldest first) of one execution.
pub fn summarize(events: &[HistoryEvent]) -> Summary {
    let mut s = Summary::default();
    let mut last_entered: Option<String> = None;
    for e in events {
        match e.r#type() {
            HistoryEventType::ExecutionRedriven => {
                s.attempt += 1;
            }
            t if t.as_str().ends_with("StateEntered") => {
                if let Some(name) = e.state_entered_event_details().map(|d| d.name()) {
                    if name == REJECTION_STATE {
                        s.rejected = true;
                    }
                    last_entered = Some(name.to_owned());
                }
            }
            HistoryEventType::TaskSucceeded => {
                if let Some(out) = e.task_succeeded_event_details().and_then(|d| d.output()) {
                    s.results
                        .push(serde_json::from_str(out).unwrap_or(Value::Null));
                }
            }
            HistoryEventType::LambdaFunctionSucceeded => {
                if let Some(out) = e
                    .lambda_function_succeeded_event_details()
                    .and_then(|d| d.output())
                {
                    s.results
                        .push(serde_json::from_str(out).unwrap_or(Value::Null));
                }
            }
            HistoryEventType::ExecutionFailed => {
                if let Some(d) = e.execution_failed_event_details() {
                    s.error = d.error().map(str::to_owned);
                    s.cause = d.cause().map(str::to_owned);
                }
                s.failed_state = last_entered.clone();
            }
            HistoryEventType::ExecutionTimedOut => {
                if let Some(d) = e.execution_timed_out_event_details() {
                    s.error = d.error().map(str::to_owned);
                    s.cause = d.cause().map(str::to_owned);
                }
                s.failed_state = last_entered.clone();
            }
            HistoryEventType::ExecutionAborted => {
                if let Some(d) = e.execution_aborted_event_details() {
                    s.error = d.error().map(str::to_owned);
                    s.cause = d.cause().map(str::to_owned);
                }
                s.failed_state = last_entered.clone();
            }
            _ => {}
        }
    }
    s
}

pub async fn handle(
    clients: &Clients,
    sfn: &aws_sdk_sfn::Client,
    event: Value,
) -> Result<FailureOutput, StepError> {
    let event: StatusChange = lambda::parse(event)?;
    announce(clients, sfn, event).await
}

#[tracing::instrument(skip(clients, sfn, event), fields(execution = %event.detail.execution_arn, status = %event.detail.status))]
pub async fn announce(
    clients: &Clients,
    sfn: &aws_sdk_sfn::Client,
    event: StatusChange,
) -> Result<FailureOutput, StepError> {
    if event.source != "aws.states" || event.detail_type != "Step Functions Execution Status Change"
    {
        return Err(StepError::invalid(format!(
            "not a Step Functions status-change event: {} / {}",
            event.source, event.detail_type
        )));
    }
    let d = &event.detail;
    let ending = Ending::of(&d.status).ok_or_else(|| {
        StepError::invalid(format!(
            "status {} is not an ending to announce (FAILED, TIMED_OUT, ABORTED)",
            d.status
        ))
    })?;
    let history = read_history(sfn, &d.execution_arn).await?;
    let mut summary = summarize(&history);
    if let Some(n) = d.redrive_count {
        summary.attempt = n;
    }
    summary.error = summary.error.or_else(|| d.error.clone());
    summary.cause = summary.cause.or_else(|| d.cause.clone());

    let input: Value = d
        .input
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    let incident = Incident::from_request(input.clone(), &d.name).ok();
    let instance = incident
        .as_ref()
        .map(|i| i.instance_id.clone())
        .unwrap_or_else(|| "(invalid request)".to_owned());
    let subject = subject_text(&instance, ending.headline());
    let mut out = FailureOutput {
        outcome: ending,
        execution_arn: d.execution_arn.clone(),
        attempt: summary.attempt,
        failed_state: summary.failed_state.clone(),
        subject: subject.clone(),
        message_id: None,
        published: false,
    };
    // The execution announced a rejected request itself; nothing was changed.
    let Some(incident) = incident.filter(|_| !summary.rejected) else {
        tracing::info!("a rejected request: already announced by the execution");
        return Ok(out);
    };
    let record = format!(
        "notifications/{}.attempt-{}.{}.json",
        d.name,
        summary.attempt,
        ending.status()
    );
    if let Some(done) = clients.evidence.get(&incident, &record).await? {
        let done: Value = serde_json::from_slice(&done).unwrap_or_default();
        tracing::info!("this attempt's failure was already announced");
        out.message_id = done["message_id"].as_str().map(str::to_owned);
        return Ok(out);
    }
    let collected = collect(&Value::Array(summary.results.clone()));
    let body = message(
        clients,
        ending,
        &incident,
        &d.execution_arn,
        &summary,
        &collected,
    );
    let attr = |v: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
            .map_err(|e| StepError::invalid(e.to_string()))
    };
    let published = clients
        .sns
        .publish()
        .topic_arn(&clients.topic_arn)
        .subject(&subject)
        .message(&body)
        .message_attributes("status", attr(ending.status())?)
        .message_attributes("incident_id", attr(&incident.incident_id)?)
        .message_attributes("instance_id", attr(&instance)?)
        .message_attributes("severity", attr("critical")?)
        .send()
        .await
        .map_err(|e| StepError::aws("Publish", e))?;
    out.message_id = published.message_id().map(str::to_owned);
    out.published = true;
    let record_body = json!({
        "execution_arn": d.execution_arn,
        "attempt": summary.attempt,
        "outcome": ending,
        "failed_state": summary.failed_state,
        "error": summary.error,
        "topic_arn": clients.topic_arn,
        "message_id": out.message_id,
        "subject": subject,
    });
    clients
        .evidence
        .put(
            &incident,
            crate::STEP,
            &record,
            "application/json",
            serde_json::to_vec_pretty(&record_body).unwrap_or_default(),
        )
        .await?;
    Ok(out)
}

async fn read_history(
    sfn: &aws_sdk_sfn::Client,
    execution_arn: &str,
) -> Result<Vec<HistoryEvent>, StepError> {
    let mut events = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_HISTORY_PAGES {
        let page = sfn
            .get_execution_history()
            .execution_arn(execution_arn)
            .max_results(1000)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| StepError::aws("GetExecutionHistory", e))?;
        events.extend(page.events().iter().cloned());
        match page.next_token() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    // Oldest first, whatever order the service used.
    events.sort_by_key(|e| e.id());
    Ok(events)
}

fn message(
    clients: &Clients,
    ending: Ending,
    incident: &Incident,
    execution_arn: &str,
    s: &Summary,
    c: &Collected,
) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "Cordon: {} {}", incident.instance_id, ending.headline());
    let _ = writeln!(m);
    let _ = writeln!(
        m,
        "The response did not finish. The instance may still be reachable and able to act: \
         read the failure below, fix its cause, then redrive the execution. A redrive reruns \
         the failed state and continues; every step is safe to repeat."
    );
    let _ = writeln!(m);
    let _ = writeln!(m, "Incident:     {}", incident.incident_id);
    let _ = writeln!(m, "Instance:     {}", incident.instance_id);
    let _ = writeln!(
        m,
        "Requested by: {}",
        incident.requested_by.as_deref().unwrap_or("(not given)")
    );
    let _ = writeln!(m, "Execution:    {execution_arn}");
    let _ = writeln!(m, "Attempt:      {} (redrive count)", s.attempt);
    let _ = writeln!(m);
    let _ = writeln!(
        m,
        "Failed state: {}",
        s.failed_state.as_deref().unwrap_or("(unknown)")
    );
    let _ = writeln!(
        m,
        "Error:        {}",
        s.error.as_deref().unwrap_or("(none)")
    );
    let _ = writeln!(
        m,
        "Cause:        {}",
        crate::cause_message(s.cause.as_deref().unwrap_or("(none)"))
    );
    // What is contained so far, path by path, from the outputs of the steps that succeeded.
    let table = crate::containment::table(&Value::Array(s.results.clone()), incident, &c.actions);
    let _ = writeln!(m);
    m.push_str(&crate::containment::render(&table));
    let changed: Vec<_> = c
        .actions
        .iter()
        .filter(|a| a.outcome == ActionOutcome::Changed)
        .collect();
    let _ = writeln!(m);
    let _ = writeln!(m, "Done before the failure ({}):", changed.len());
    if changed.is_empty() {
        let _ = writeln!(m, "  nothing was changed");
    }
    for a in &changed {
        let _ = writeln!(
            m,
            "  - {} on {}: {} -> {} ({})",
            a.action, a.target, a.before, a.after, a.at
        );
    }
    let _ = writeln!(m);
    let _ = writeln!(m, "Not done or skipped ({}):", c.gaps.len());
    for g in &c.gaps {
        let _ = writeln!(m, "  - {} ({}): {}", g.what, g.step, g.reason);
    }
    let _ = writeln!(m);
    let _ = writeln!(
        m,
        "Evidence so far: s3://{}/{}",
        clients.evidence.bucket(),
        incident.evidence_prefix()
    );
    let _ = writeln!(m);
    let _ = writeln!(m, "To resume once the cause is fixed:");
    let _ = writeln!(
        m,
        "  aws stepfunctions redrive-execution --execution-arn {execution_arn}"
    );
    let _ = writeln!(
        m,
        "Do not start a new response for this instance while this one is failed: the incident id \
         is taken, and a second response would not resume this one."
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sfn::types::{
        ExecutionFailedEventDetails, ExecutionRedrivenEventDetails, HistoryEvent,
        StateEnteredEventDetails, TaskSucceededEventDetails,
    };
    use aws_smithy_types::DateTime;

    fn ev(id: i64, t: HistoryEventType) -> aws_sdk_sfn::types::builders::HistoryEventBuilder {
        HistoryEvent::builder()
            .id(id)
            .r#type(t)
            .timestamp(DateTime::from_secs(1_700_000_000 + id))
    }
    fn entered(id: i64, name: &str) -> HistoryEvent {
        ev(id, HistoryEventType::TaskStateEntered)
            .state_entered_event_details(
                StateEnteredEventDetails::builder()
                    .name(name)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }
    fn succeeded(id: i64, output: Value) -> HistoryEvent {
        ev(id, HistoryEventType::TaskSucceeded)
            .task_succeeded_event_details(
                TaskSucceededEventDetails::builder()
                    .resource("invoke")
                    .resource_type("lambda")
                    .output(output.to_string())
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }
    fn failed(id: i64, error: &str) -> HistoryEvent {
        ev(id, HistoryEventType::ExecutionFailed)
            .execution_failed_event_details(
                ExecutionFailedEventDetails::builder()
                    .error(error)
                    .cause("{\"errorType\":\"AccessDenied\",\"errorMessage\":\"not allowed\"}")
                    .build(),
            )
            .build()
            .unwrap()
    }

    #[test]
    fn a_failure_names_the_state_it_happened_in_and_keeps_what_was_done() {
        let action = json!({"Payload": {"actions": [{"step": "termprotect", "action": "enable termination protection",
            "target": "i-01234567", "before": false, "after": true, "at": "2026-01-01T00:00:00Z", "outcome": "changed"}]}});
        let s = summarize(&[
            entered(1, "Protect from termination"),
            succeeded(2, action),
            entered(3, "Quarantine network: final attempt"),
            failed(4, "AccessDenied"),
        ]);
        assert_eq!(
            s.failed_state.as_deref(),
            Some("Quarantine network: final attempt")
        );
        assert_eq!(s.error.as_deref(), Some("AccessDenied"));
        assert_eq!(s.attempt, 0);
        assert!(!s.rejected);
        let c = collect(&Value::Array(s.results));
        assert_eq!(c.actions.len(), 1);
    }

    #[test]
    fn a_redriven_attempt_is_counted_and_a_rejection_is_recognised() {
        let redriven = ev(5, HistoryEventType::ExecutionRedriven)
            .execution_redriven_event_details(
                ExecutionRedrivenEventDetails::builder()
                    .redrive_count(1)
                    .build(),
            )
            .build()
            .unwrap();
        let s = summarize(&[
            entered(1, "A"),
            failed(2, "X"),
            redriven,
            entered(6, "A"),
            failed(7, "X"),
        ]);
        assert_eq!(s.attempt, 1);
        let s = summarize(&[entered(1, REJECTION_STATE), failed(2, "InvalidInput")]);
        assert!(s.rejected);
    }

    #[test]
    fn only_endings_are_announced() {
        assert_eq!(Ending::of("FAILED"), Some(Ending::ContainmentFailed));
        assert_eq!(Ending::of("ABORTED"), Some(Ending::Aborted));
        assert_eq!(Ending::of("TIMED_OUT"), Some(Ending::TimedOut));
        assert_eq!(Ending::of("RUNNING"), None);
        assert_eq!(Ending::of("SUCCEEDED"), None);
    }
}
