//! Step 6, ssm-collect, with an action chosen by the state machine:
//! - `send`: requires the instance to be SSM-managed and online (else `NotSsmManaged`); sends the
//!   collection script (`scripts/linux.sh` with AWS-RunShellScript, `scripts/windows.ps1` with
//!   AWS-RunPowerShellScript) to this instance only, with its output written by SSM to the evidence
//!   bucket under `<incident>/<instance>/ssm/` — GetCommandInvocation keeps only the first 24,000
//!   characters of output, S3 keeps all of it
//!   (<https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_GetCommandInvocation.html>);
//!   returns the command ID.
//! - `poll`: GetCommandInvocation; returns the status and, once finished, the output objects with
//!   their SHA-256 for the manifest.
//!
//! The scripts are fixed files compiled into the binary. Nothing from the request reaches the shell:
//! the only variable part is a constant `CORDON_CAPTURE_MEMORY=1` or `=0` chosen from a boolean.
//! A resend for the same incident finds the earlier command by its comment and reuses it.

use aws_sdk_ssm::types::CommandInvocationStatus;
use cordon_common::lookup;
use cordon_common::timeline::now;
use cordon_common::{lambda, Artifact, EvidenceWriter, Incident, StepError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const STEP: &str = "ssm-collect";
pub const LINUX_SCRIPT: &str = include_str!("../scripts/linux.sh");
pub const WINDOWS_SCRIPT: &str = include_str!("../scripts/windows.ps1");
/// Ends the quoted here-document that carries the Linux script; the script must not contain it.
pub const SCRIPT_END: &str = "CORDON_COLLECTION_SCRIPT_END";

pub struct Clients {
    pub ssm: aws_sdk_ssm::Client,
    pub s3: aws_sdk_s3::Client,
    pub evidence: EvidenceWriter,
}

pub struct Config {
    /// How long the script may run on the host before SSM stops it.
    pub execution_timeout_seconds: u32,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Event {
    Send { incident: Value },
    Poll { incident: Value, command_id: String },
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Output {
    Sent(Sent),
    Polled(Polled),
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Sent {
    pub command_id: String,
    pub document: String,
    pub output_prefix: String,
    /// An earlier attempt for this incident had already sent it.
    pub reused: bool,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Polled {
    pub command_id: String,
    pub status: String,
    /// The command reached a final status (Success, Failed, TimedOut, Cancelled).
    pub finished: bool,
    pub succeeded: bool,
    pub response_code: Option<i32>,
    pub status_details: Option<String>,
    pub artifacts: Vec<Artifact>,
}

pub async fn handle(clients: &Clients, config: &Config, event: Value) -> Result<Output, StepError> {
    match lambda::parse::<Event>(event)? {
        Event::Send { incident } => Ok(Output::Sent(
            send(clients, config, &Incident::from_value(incident)?).await?,
        )),
        Event::Poll {
            incident,
            command_id,
        } => {
            let incident = Incident::from_value(incident)?;
            if !is_command_id(&command_id) {
                return Err(StepError::invalid(format!(
                    "command_id {command_id:?} is not an SSM command ID"
                )));
            }
            Ok(Output::Polled(poll(clients, &incident, &command_id).await?))
        }
    }
}

/// SSM command IDs are UUIDs.
fn is_command_id(s: &str) -> bool {
    s.len() == 36 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// The comment that marks this incident's command, so a rerun finds it (at most 100 characters).
pub fn comment(incident: &Incident) -> String {
    format!("cordon incident {}", incident.incident_id)
}

/// The shell lines sent to a Linux host: the fixed script in a quoted here-document (no expansion
/// inside it) run by bash with stdin closed, and the memory flag as a constant.
pub fn linux_commands(memory: bool) -> Vec<String> {
    let flag = if memory { "1" } else { "0" };
    let mut lines = vec![format!("CORDON_SCRIPT=$(cat <<'{SCRIPT_END}'")];
    lines.extend(LINUX_SCRIPT.lines().map(str::to_owned));
    lines.push(SCRIPT_END.to_owned());
    lines.push(")".to_owned());
    lines.push(format!(
        "CORDON_CAPTURE_MEMORY={flag} exec bash -c \"$CORDON_SCRIPT\" cordon-collection </dev/null"
    ));
    lines
}

pub fn windows_commands(memory: bool) -> Vec<String> {
    let flag = if memory { "1" } else { "0" };
    let mut lines = vec![format!("$env:CORDON_CAPTURE_MEMORY = '{flag}'")];
    lines.extend(WINDOWS_SCRIPT.lines().map(str::to_owned));
    lines
}

#[tracing::instrument(skip(clients, config), fields(instance_id = %incident.instance_id, incident_id = %incident.incident_id))]
pub async fn send(
    clients: &Clients,
    config: &Config,
    incident: &Incident,
) -> Result<Sent, StepError> {
    let id = incident.instance_id.as_str();
    let status = lookup::ssm_status(&clients.ssm, id).await?;
    if !status.ready() {
        let reason = if status.managed {
            format!(
                "its SSM agent is {}",
                status.ping_status.as_deref().unwrap_or("not online")
            )
        } else {
            "Systems Manager does not know it (no agent registered, or no instance profile allowing SSM)".to_owned()
        };
        return Err(StepError::NotSsmManaged {
            instance_id: id.to_owned(),
            reason,
        });
    }
    let windows = status.platform_type.as_deref() == Some("Windows");
    let (document, commands) = if windows {
        (
            "AWS-RunPowerShellScript",
            windows_commands(incident.options.memory),
        )
    } else {
        (
            "AWS-RunShellScript",
            linux_commands(incident.options.memory),
        )
    };
    let output_prefix = format!("{}ssm", incident.evidence_prefix());
    let comment = comment(incident);

    // An earlier attempt's command for this incident, unless it ended badly.
    let earlier = clients
        .ssm
        .list_commands()
        .instance_id(id)
        .send()
        .await
        .map_err(|e| StepError::aws("ListCommands", e))?;
    if let Some(command) = earlier.commands().iter().find(|c| {
        c.comment() == Some(comment.as_str())
            && !matches!(
                c.status().map(|s| s.as_str()),
                Some("Failed") | Some("Cancelled") | Some("TimedOut") | Some("Cancelling")
            )
    }) {
        tracing::info!(command_id = ?command.command_id(), "collection already sent for this incident");
        return Ok(Sent {
            command_id: command.command_id().unwrap_or_default().to_owned(),
            document: document.to_owned(),
            output_prefix,
            reused: true,
        });
    }

    tracing::info!(document, %output_prefix, "sending collection");
    let out = clients
        .ssm
        .send_command()
        .instance_ids(id)
        .document_name(document)
        .comment(&comment)
        .parameters("commands", commands)
        .parameters(
            "executionTimeout",
            vec![config.execution_timeout_seconds.to_string()],
        )
        .output_s3_bucket_name(clients.evidence.bucket())
        .output_s3_key_prefix(&output_prefix)
        // Delivery timeout: the agent must pick the command up within this time.
        .timeout_seconds(600)
        .send()
        .await
        .map_err(|e| StepError::aws("SendCommand", e))?;
    let command_id = out
        .command()
        .and_then(|c| c.command_id())
        .ok_or_else(|| StepError::invalid("SendCommand returned no command ID"))?
        .to_owned();
    tracing::info!(%command_id, "collection sent");
    Ok(Sent {
        command_id,
        document: document.to_owned(),
        output_prefix,
        reused: false,
    })
}

#[tracing::instrument(skip(clients), fields(instance_id = %incident.instance_id, incident_id = %incident.incident_id))]
pub async fn poll(
    clients: &Clients,
    incident: &Incident,
    command_id: &str,
) -> Result<Polled, StepError> {
    let id = incident.instance_id.as_str();
    let invocation = match clients
        .ssm
        .get_command_invocation()
        .command_id(command_id)
        .instance_id(id)
        .send()
        .await
    {
        Ok(i) => i,
        // Right after SendCommand the invocation may not exist yet: that is "Pending".
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_invocation_does_not_exist()) =>
        {
            return Ok(Polled {
                command_id: command_id.to_owned(),
                status: "Pending".into(),
                finished: false,
                succeeded: false,
                response_code: None,
                status_details: Some("the invocation is not visible yet".into()),
                artifacts: Vec::new(),
            });
        }
        Err(e) => return Err(StepError::aws("GetCommandInvocation", e)),
    };
    let status = invocation.status().cloned();
    let finished = matches!(
        status,
        Some(CommandInvocationStatus::Success)
            | Some(CommandInvocationStatus::Failed)
            | Some(CommandInvocationStatus::TimedOut)
            | Some(CommandInvocationStatus::Cancelled)
    );
    let artifacts = if finished {
        output_artifacts(clients, incident, command_id).await?
    } else {
        Vec::new()
    };
    Ok(Polled {
        command_id: command_id.to_owned(),
        succeeded: status == Some(CommandInvocationStatus::Success),
        status: status
            .map(|s| s.as_str().to_owned())
            .unwrap_or_else(|| "Unknown".into()),
        finished,
        response_code: Some(invocation.response_code()).filter(|c| *c != -1),
        status_details: invocation.status_details().map(str::to_owned),
        artifacts,
    })
}

/// Every object SSM wrote for this command, hashed while streamed (outputs can be large).
async fn output_artifacts(
    clients: &Clients,
    incident: &Incident,
    command_id: &str,
) -> Result<Vec<Artifact>, StepError> {
    let prefix = format!(
        "{}ssm/{command_id}/{}/",
        incident.evidence_prefix(),
        incident.instance_id
    );
    let bucket = clients.evidence.bucket();
    let mut artifacts = Vec::new();
    let mut pages = clients
        .s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(&prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| StepError::aws("ListObjectsV2", e))?;
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            let mut body = clients
                .s3
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| StepError::aws("GetObject", e))?
                .body;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            while let Some(chunk) = body
                .try_next()
                .await
                .map_err(|e| StepError::body_read("GetObject", e))?
            {
                size += chunk.len() as u64;
                hasher.update(&chunk);
            }
            artifacts.push(Artifact {
                key: key.to_owned(),
                size,
                sha256: cordon_common::evidence::hex(&hasher.finalize()),
                step: STEP.to_owned(),
                written_at: object
                    .last_modified()
                    .and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok())
                    .unwrap_or_else(now),
            });
        }
    }
    Ok(artifacts)
}

#[cfg(test)]
mod tests;
