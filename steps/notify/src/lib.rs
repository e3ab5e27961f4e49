//! Step 8, notify. Takes the outcome of the execution and everything the steps returned; writes
//! `manifest.json` (every artifact with its SHA-256, every action with before, after and time,
//! every gap, who asked and why, the execution) and publishes **one** SNS message that says what
//! was done, what failed or was skipped and why, and where the evidence is.
//!
//! A rejected request (`InvalidInput`, or an instance that does not exist) is announced but writes
//! nothing: there is no incident to file evidence under. The manifest's content depends only on
//! the execution (its times come from the steps' records and the execution start), so a retry
//! writes the same bytes; a later execution for the same incident writes
//! `manifest-<execution>.json` beside the first. The message is published once per execution:
//! a record of it (`notifications/<execution>.json`) is written after publishing and checked before.

use std::fmt::Write as _;

use aws_sdk_sns::types::MessageAttributeValue;
use cordon_common::incident::{is_incident_id, is_instance_id};
use cordon_common::timeline::Outcome as ActionOutcome;
use cordon_common::{lambda, Action, Artifact, EvidenceWriter, Gap, Incident, StepError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const STEP: &str = "notify";
/// SNS subjects are at most 100 printable ASCII characters
/// (<https://docs.aws.amazon.com/sns/latest/api/API_Publish.html>).
pub const MAX_SUBJECT: usize = 100;

pub struct Clients {
    pub sns: aws_sdk_sns::Client,
    pub evidence: EvidenceWriter,
    pub topic_arn: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Evidence preserved (as far as possible) and the instance contained and verified.
    Contained,
    /// A containment step failed: the instance may still be reachable.
    ContainmentFailed,
    /// Nothing was done: the request was invalid or the instance does not exist.
    Rejected,
}

impl Collected {
    fn changed(&self) -> Vec<String> {
        self.actions
            .iter()
            .filter(|a| a.outcome == ActionOutcome::Changed)
            .map(|a| format!("{} on {}", a.action, a.target))
            .collect()
    }
    fn gap_lines(&self) -> Vec<String> {
        self.gaps
            .iter()
            .map(|g| format!("{}: {}", g.what, g.reason))
            .collect()
    }
    fn snapshot_ids(&self) -> Vec<String> {
        self.snapshots
            .iter()
            .filter_map(|s| s["snapshot_id"].as_str().map(str::to_owned))
            .collect()
    }
}

impl Outcome {
    fn headline(self) -> &'static str {
        match self {
            Outcome::Contained => "CONTAINED",
            Outcome::ContainmentFailed => "CONTAINMENT FAILED",
            Outcome::Rejected => "REQUEST REJECTED",
        }
    }
    fn severity(self) -> &'static str {
        match self {
            Outcome::Contained => "high",
            Outcome::ContainmentFailed => "critical",
            Outcome::Rejected => "warning",
        }
    }
    fn status(self) -> &'static str {
        match self {
            Outcome::Contained => "contained",
            Outcome::ContainmentFailed => "containment-failed",
            Outcome::Rejected => "rejected",
        }
    }
}

/// A Step Functions error as `Catch` hands it on (`Error`, `Cause`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    #[serde(rename = "Error", default)]
    pub error: String,
    #[serde(rename = "Cause", default)]
    pub cause: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub outcome: Outcome,
    pub execution_arn: String,
    /// When the execution started (`$$.Execution.StartTime`): the manifest's time.
    pub execution_started_at: String,
    /// The validated incident; absent when the request itself was rejected.
    #[serde(default)]
    pub incident: Option<Value>,
    /// The raw execution input, for a rejected request.
    #[serde(default)]
    pub request: Option<Value>,
    #[serde(default)]
    pub failure: Option<Failure>,
    /// The execution's state: every step's result.
    #[serde(default)]
    pub results: Option<Value>,
}

#[derive(Debug, Serialize)]
pub struct Output {
    pub outcome: Outcome,
    pub subject: String,
    pub message_id: Option<String>,
    /// False when an earlier attempt of this execution had already published.
    pub published: bool,
    pub manifest_key: Option<String>,
    pub evidence_prefix: Option<String>,
    /// The changes made, one line each (the manifest has the details).
    pub actions: Vec<String>,
    /// What was not done and why, one line each.
    pub gaps: Vec<String>,
    pub snapshot_ids: Vec<String>,
}

/// Everything the steps returned that the manifest and the message list.
#[derive(Debug, Default, Serialize)]
pub struct Collected {
    pub artifacts: Vec<Artifact>,
    pub actions: Vec<Action>,
    pub gaps: Vec<Gap>,
    pub snapshots: Vec<Value>,
    /// What containment guarantees, path by path (computed in [`notify`] for a filed incident).
    pub containment: Vec<containment::Row>,
}

/// Walks the state for the `artifacts`, `actions`, `gaps` and `snapshots` lists every step returns,
/// and for the single gaps the state machine records itself (`{step, what, reason}` objects),
/// wherever they are. Entries that do not parse are skipped, not fatal: a notification must go out
/// even if one result is odd.
pub fn collect(results: &Value) -> Collected {
    fn as_gap(map: &serde_json::Map<String, Value>) -> Option<Gap> {
        let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
        keys.sort_unstable();
        if keys != ["reason", "step", "what"] {
            return None;
        }
        let mut gap: Gap = serde_json::from_value(Value::Object(map.clone())).ok()?;
        gap.reason = cause_message(&gap.reason);
        Some(gap)
    }
    fn walk(v: &Value, c: &mut Collected) {
        match v {
            Value::Object(map) if as_gap(map).is_some() => c.gaps.extend(as_gap(map)),
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("artifacts", Value::Array(items)) => c.artifacts.extend(
                            items
                                .iter()
                                .filter_map(|i| serde_json::from_value(i.clone()).ok()),
                        ),
                        ("actions", Value::Array(items)) => c.actions.extend(
                            items
                                .iter()
                                .filter_map(|i| serde_json::from_value(i.clone()).ok()),
                        ),
                        ("gaps", Value::Array(items)) => c.gaps.extend(
                            items
                                .iter()
                                .filter_map(|i| serde_json::from_value(i.clone()).ok()),
                        ),
                        ("snapshots", Value::Array(items)) => {
                            c.snapshots.extend(items.iter().cloned())
                        }
                        _ => walk(v, c),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, c)),
            _ => {}
        }
    }
    let mut c = Collected::default();
    walk(results, &mut c);
    // In the order they happened (the state's layout is not the order of the steps).
    c.actions.sort_by(|a, b| a.at.cmp(&b.at));
    // The same artifact can be listed by two results (a rerun that found it): keep one.
    c.artifacts.sort_by(|a, b| a.key.cmp(&b.key));
    c.artifacts.dedup_by(|a, b| a.key == b.key);
    c
}

pub async fn handle(clients: &Clients, event: Value) -> Result<Output, StepError> {
    let event: Event = lambda::parse(event)?;
    notify(clients, event).await
}

fn execution_name(arn: &str) -> &str {
    arn.rsplit(':').next().unwrap_or(arn)
}

/// Subject: `[Cordon] <instance> <outcome>`, printable ASCII, at most 100 characters.
pub fn subject(instance: &str, outcome: Outcome) -> String {
    subject_text(instance, outcome.headline())
}

/// `[Cordon] <instance> <headline>`, printable ASCII, at most 100 characters.
pub fn subject_text(instance: &str, headline: &str) -> String {
    let s: String = format!("[Cordon] {instance} {headline}")
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    s.chars().take(MAX_SUBJECT).collect()
}

#[tracing::instrument(skip(clients, event), fields(outcome = ?event.outcome))]
pub async fn notify(clients: &Clients, event: Event) -> Result<Output, StepError> {
    let incident = match &event.incident {
        Some(v) => Some(Incident::from_value(v.clone())?),
        None => None,
    };
    if event.outcome != Outcome::Rejected && incident.is_none() {
        return Err(StepError::invalid(
            "an incident is required unless the outcome is rejected",
        ));
    }
    let instance = incident
        .as_ref()
        .map(|i| i.instance_id.clone())
        .or_else(|| requested_instance(event.request.as_ref()))
        .unwrap_or_else(|| "(invalid request)".to_owned());
    let subject = subject(&instance, event.outcome);
    let mut collected = event.results.as_ref().map(collect).unwrap_or_default();
    let execution = execution_name(&event.execution_arn).to_owned();

    // Evidence (manifest, notification record) only for a real incident that was acted on.
    let filed = incident
        .as_ref()
        .filter(|_| event.outcome != Outcome::Rejected);
    if let Some(incident) = filed {
        collected.containment = containment::table(
            event.results.as_ref().unwrap_or(&Value::Null),
            incident,
            &collected.actions,
        );
    }
    let mut manifest_key = None;
    if let Some(incident) = filed {
        let record = format!("notifications/{execution}.json");
        if let Some(done) = clients.evidence.get(incident, &record).await? {
            let done: Value = serde_json::from_slice(&done).unwrap_or_default();
            tracing::info!("this execution's notification was already published");
            return Ok(Output {
                outcome: event.outcome,
                subject,
                message_id: done["message_id"].as_str().map(str::to_owned),
                published: false,
                manifest_key: done["manifest_key"].as_str().map(str::to_owned),
                evidence_prefix: Some(evidence_uri(clients, incident)),
                actions: collected.changed(),
                gaps: collected.gap_lines(),
                snapshot_ids: collected.snapshot_ids(),
            });
        }
        manifest_key =
            Some(write_manifest(clients, incident, &event, &collected, &execution).await?);
    }

    let body = message(
        clients,
        &event,
        incident.as_ref(),
        &instance,
        &collected,
        manifest_key.as_deref(),
    );
    let attr = |v: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
            .map_err(|e| StepError::invalid(e.to_string()))
    };
    let incident_id = incident
        .as_ref()
        .map(|i| i.incident_id.clone())
        .unwrap_or_else(|| execution.clone());
    let published = clients
        .sns
        .publish()
        .topic_arn(&clients.topic_arn)
        .subject(&subject)
        .message(&body)
        .message_attributes("status", attr(event.outcome.status())?)
        .message_attributes("incident_id", attr(&incident_id)?)
        .message_attributes("instance_id", attr(&instance)?)
        .message_attributes("severity", attr(event.outcome.severity())?)
        .send()
        .await
        .map_err(|e| StepError::aws("Publish", e))?;
    let message_id = published.message_id().map(str::to_owned);
    tracing::info!(?message_id, %subject, "notification published");

    if let Some(incident) = filed {
        let record = json!({
            "execution_arn": event.execution_arn,
            "topic_arn": clients.topic_arn,
            "message_id": message_id,
            "subject": subject,
            "manifest_key": manifest_key,
        });
        clients
            .evidence
            .put(
                incident,
                STEP,
                &format!("notifications/{execution}.json"),
                "application/json",
                serde_json::to_vec_pretty(&record).unwrap_or_default(),
            )
            .await?;
    }
    Ok(Output {
        outcome: event.outcome,
        subject,
        message_id,
        published: true,
        manifest_key,
        evidence_prefix: filed.map(|i| evidence_uri(clients, i)),
        actions: collected.changed(),
        gaps: collected.gap_lines(),
        snapshot_ids: collected.snapshot_ids(),
    })
}

/// The instance ID of a rejected request, only if it is a well-formed one (never echo garbage).
fn requested_instance(request: Option<&Value>) -> Option<String> {
    request?
        .get("instance_id")?
        .as_str()
        .filter(|s| is_instance_id(s))
        .map(str::to_owned)
}

fn evidence_uri(clients: &Clients, incident: &Incident) -> String {
    format!(
        "s3://{}/{}",
        clients.evidence.bucket(),
        incident.evidence_prefix()
    )
}

async fn write_manifest(
    clients: &Clients,
    incident: &Incident,
    event: &Event,
    collected: &Collected,
    execution: &str,
) -> Result<String, StepError> {
    let manifest = json!({
        "incident_id": incident.incident_id,
        "instance_id": incident.instance_id,
        "requested_by": incident.requested_by,
        "reason": incident.reason,
        "options": incident.options,
        "execution_arn": event.execution_arn,
        "execution_started_at": event.execution_started_at,
        "outcome": event.outcome,
        "failure": event.failure,
        "evidence_bucket": clients.evidence.bucket(),
        "evidence_prefix": incident.evidence_prefix(),
        "artifacts": collected.artifacts,
        "actions": collected.actions,
        "gaps": collected.gaps,
        "snapshots": collected.snapshots,
        "containment": collected.containment,
    });
    let body =
        serde_json::to_vec_pretty(&manifest).map_err(|e| StepError::invalid(e.to_string()))?;
    match clients
        .evidence
        .put(
            incident,
            STEP,
            "manifest.json",
            "application/json",
            body.clone(),
        )
        .await
    {
        Ok(a) => Ok(a.key),
        // An earlier execution for this incident wrote its own manifest: keep it, add ours beside it.
        Err(StepError::EvidenceConflict { .. }) if is_incident_id(execution) => Ok(clients
            .evidence
            .put(
                incident,
                STEP,
                &format!("manifest-{execution}.json"),
                "application/json",
                body,
            )
            .await?
            .key),
        Err(e) => Err(e),
    }
}

/// The message body: plain text a responder can read on a phone.
fn message(
    clients: &Clients,
    event: &Event,
    incident: Option<&Incident>,
    instance: &str,
    c: &Collected,
    manifest_key: Option<&str>,
) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "Cordon: {instance} {}", event.outcome.headline());
    let _ = writeln!(m);
    match event.outcome {
        Outcome::Contained => {
            let _ = writeln!(
                m,
                "Every containment measure was applied. What each one stops, and what it does not, \
                 is in the containment table below: \"configuration verified\" means the setting \
                 was read back from AWS, not that traffic was seen to stop."
            );
        }
        Outcome::ContainmentFailed => {
            let _ = writeln!(
                m,
                "CONTAINMENT FAILED. The instance may still be reachable and able to act. Act now: \
                 check the failure below, then redrive the execution (every step is safe to repeat)."
            );
        }
        Outcome::Rejected => {
            let _ = writeln!(
                m,
                "Nothing was changed and no evidence was written: the request was rejected."
            );
        }
    }
    let _ = writeln!(m);
    if let Some(i) = incident {
        let _ = writeln!(m, "Incident:     {}", i.incident_id);
    }
    let _ = writeln!(m, "Instance:     {instance}");
    if let Some(i) = incident {
        let _ = writeln!(
            m,
            "Requested by: {}",
            i.requested_by.as_deref().unwrap_or("(not given)")
        );
        let _ = writeln!(
            m,
            "Reason:       {}",
            i.reason.as_deref().unwrap_or("(not given)")
        );
    }
    let _ = writeln!(m, "Execution:    {}", event.execution_arn);
    if let Some(f) = &event.failure {
        let _ = writeln!(m);
        let _ = writeln!(m, "Failure: {}", f.error);
        let _ = writeln!(m, "  {}", cause_message(&f.cause));
    }
    if !c.containment.is_empty() {
        let _ = writeln!(m);
        m.push_str(&containment::render(&c.containment));
    }

    let (changed, unchanged): (Vec<&Action>, Vec<&Action>) = c
        .actions
        .iter()
        .partition(|a| a.outcome == ActionOutcome::Changed);
    let _ = writeln!(m);
    let _ = writeln!(m, "Done ({}):", changed.len());
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
    if !unchanged.is_empty() {
        let _ = writeln!(m, "Already in place, left as found ({}):", unchanged.len());
        for a in &unchanged {
            let _ = writeln!(m, "  - {} on {}", a.action, a.target);
        }
    }
    let _ = writeln!(m);
    let _ = writeln!(m, "Not done or skipped ({}):", c.gaps.len());
    if c.gaps.is_empty() {
        let _ = writeln!(m, "  nothing");
    }
    for g in &c.gaps {
        let _ = writeln!(m, "  - {} ({}): {}", g.what, g.step, g.reason);
    }
    if !c.snapshots.is_empty() {
        let _ = writeln!(m);
        let _ = writeln!(m, "Snapshots ({}):", c.snapshots.len());
        for s in &c.snapshots {
            let _ = writeln!(
                m,
                "  - {} of {} ({})",
                s["snapshot_id"].as_str().unwrap_or("?"),
                s["volume_id"].as_str().unwrap_or("?"),
                s["state"].as_str().unwrap_or("unknown state")
            );
        }
    }
    if let Some(i) = incident.filter(|_| event.outcome != Outcome::Rejected) {
        let _ = writeln!(m);
        let _ = writeln!(
            m,
            "Evidence: {} ({} objects)",
            evidence_uri(clients, i),
            c.artifacts.len()
        );
        for a in &c.artifacts {
            let _ = writeln!(m, "  - {} ({} bytes, sha256 {})", a.key, a.size, a.sha256);
        }
        if let Some(k) = manifest_key {
            let _ = writeln!(m, "Manifest: s3://{}/{k}", clients.evidence.bucket());
        }
    }
    m
}

/// A Lambda failure's Cause is the JSON `{"errorType", "errorMessage"}`; show the message.
pub(crate) fn cause_message(cause: &str) -> String {
    serde_json::from_str::<Value>(cause)
        .ok()
        .and_then(|v| v["errorMessage"].as_str().map(str::to_owned))
        .unwrap_or_else(|| cause.to_owned())
}

pub mod containment;
pub mod failure;

#[cfg(test)]
mod tests;
