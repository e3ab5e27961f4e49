//! Step 6, ssm-collect, with an action chosen by the state machine:
//! - `send`: requires the instance to be SSM-managed and online (else `NotSsmManaged`); sends the
//!   collection script (`scripts/linux.sh` with AWS-RunShellScript, `scripts/windows.ps1` with
//!   AWS-RunPowerShellScript) to this instance only, with every timeout derived from one budget
//!   ([`cordon_common::collection::Budget`]); returns the command ID, when it was sent and how
//!   long to wait before the first poll.
//! - `poll`: GetCommandInvocation; until the command ends, answers the next (growing) wait; at the
//!   deadline cancels the command and waits, bounded, for its terminal status; once it ended,
//!   hashes the objects the script uploaded, checks them against the hashes the script printed,
//!   and returns them as artifacts and what is missing as gaps.
//!
//! **How the output arrives.** The host's AWS credentials are not used for evidence at all. While
//! the collection runs, the SSM agent usually still holds the compromised role's credentials: it
//! refreshes instance-profile credentials only at about half their lifetime, so the forensic
//! profile is not picked up for up to half an hour (amazon-ssm-agent
//! `core/app/credentialrefresher/credentialrefresher.go`, "half of the token's lifetime"; "SSM
//! Agent will not process requests until" the credentials refresh,
//! <https://docs.aws.amazon.com/systems-manager/latest/userguide/setup-instance-profile.html>),
//! and the revocation denies that role everything but the agent's channel (ARCHITECTURE.md,
//! "Collection inside containment"). So SSM's own S3 output upload, made with the agent's
//! credentials, would be refused. Instead this function presigns one S3 PUT URL per evidence key
//! with its own credentials ("anyone with valid security credentials can create a presigned URL
//! ... the presigned URL uses the permissions of the creator",
//! <https://docs.aws.amazon.com/AmazonS3/latest/userguide/using-presigned-url.html>), valid until
//! the end of the budget, and passes them to the script as constants; the script uploads with
//! curl and prints each object's SHA-256. A URL made with temporary credentials stops working when
//! those expire, whatever its own expiry (same page): the Lambda role's session outlives a
//! one-hour budget in practice, which the README lists as not verified. The first 24,000
//! characters of stdout stay available in GetCommandInvocation
//! (<https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_GetCommandInvocation.html>):
//! the script keeps stdout to the `CORDON_ARTIFACT` / `CORDON_GAP` lines and a summary.
//!
//! The scripts are fixed files compiled into the binary. Nothing from the request reaches the shell:
//! the variable parts are constants chosen from a boolean, integers from the budget and URLs this
//! function made (checked to contain only URL characters, and single-quoted).
//! A resend for the same incident finds the earlier command by its comment and reuses it.

use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_ssm::types::CommandInvocationStatus;
use cordon_common::collection::{Budget, CANCEL_WAIT_SECONDS};
use cordon_common::lookup;
use cordon_common::timeline::now;
use cordon_common::{lambda, Artifact, EvidenceWriter, Gap, Incident, StepError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const STEP: &str = "ssm-collect";
pub const LINUX_SCRIPT: &str = include_str!("../scripts/linux.sh");
pub const WINDOWS_SCRIPT: &str = include_str!("../scripts/windows.ps1");
/// Ends the quoted here-document that carries the Linux script; the script must not contain it.
pub const SCRIPT_END: &str = "CORDON_COLLECTION_SCRIPT_END";
/// The evidence objects the script uploads, under `<incident>/<instance>/ssm/`.
pub const COLLECTION_OBJECT: &str = "collection.txt.gz";
pub const MEMORY_OBJECT: &str = "memory.lime";
/// Seconds between status reads while waiting for a cancelled command to end.
const CANCEL_POLL_SECONDS: u64 = 5;

pub struct Clients {
    pub ssm: aws_sdk_ssm::Client,
    pub s3: aws_sdk_s3::Client,
    /// Signs the upload URLs (the same client as `s3` when deployed; presigning sends nothing).
    pub presigner: aws_sdk_s3::Client,
    pub evidence: EvidenceWriter,
}

pub struct Config {
    /// The deployment's collection budget, used when the incident carries none.
    pub default_budget_seconds: u32,
}

impl Config {
    pub fn budget(&self, incident: &Incident) -> Budget {
        Budget::new(
            incident
                .options
                .collection_budget_seconds
                .unwrap_or(self.default_budget_seconds),
        )
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Event {
    Send {
        incident: Value,
    },
    Poll {
        incident: Value,
        command_id: String,
        /// When the command was sent, seconds since the epoch (from `send`).
        sent_at: i64,
        /// Polls made so far (0 for the first).
        #[serde(default)]
        polls: u32,
    },
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
    /// Seconds since the epoch; the poll measures the budget from here.
    pub sent_at: i64,
    /// An earlier attempt for this incident had already sent it.
    pub reused: bool,
    pub budget: BudgetView,
    /// The evidence keys the script was given URLs for.
    pub keys: Vec<String>,
    pub polls: u32,
    pub next_wait_seconds: u32,
}

/// The derived timeouts, as sent (for the record and the notification).
#[derive(Debug, Serialize, PartialEq)]
pub struct BudgetView {
    pub seconds: u32,
    pub delivery_timeout_seconds: u32,
    pub execution_timeout_seconds: u32,
    pub script_seconds: u32,
    pub memory_seconds: u32,
    pub cancel_after_seconds: u32,
}

impl From<Budget> for BudgetView {
    fn from(b: Budget) -> Self {
        BudgetView {
            seconds: b.seconds,
            delivery_timeout_seconds: b.delivery_timeout(),
            execution_timeout_seconds: b.execution_timeout(),
            script_seconds: b.script_budget(),
            memory_seconds: b.memory_budget(),
            cancel_after_seconds: b.deadline(),
        }
    }
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Polled {
    pub command_id: String,
    pub sent_at: i64,
    pub status: String,
    /// The command reached a final status (Success, Failed, TimedOut, Cancelled), or was cancelled
    /// at the deadline and did not confirm in time.
    pub finished: bool,
    pub succeeded: bool,
    /// Cordon cancelled it at the deadline.
    pub cancelled: bool,
    pub response_code: Option<i32>,
    pub status_details: Option<String>,
    pub polls: u32,
    pub next_wait_seconds: u32,
    pub artifacts: Vec<Artifact>,
    pub gaps: Vec<Gap>,
}

pub async fn handle(clients: &Clients, config: &Config, event: Value) -> Result<Output, StepError> {
    match lambda::parse::<Event>(event)? {
        Event::Send { incident } => Ok(Output::Sent(
            send(clients, config, &Incident::from_value(incident)?).await?,
        )),
        Event::Poll {
            incident,
            command_id,
            sent_at,
            polls,
        } => {
            let incident = Incident::from_value(incident)?;
            if !is_command_id(&command_id) {
                return Err(StepError::invalid(format!(
                    "command_id {command_id:?} is not an SSM command ID"
                )));
            }
            if sent_at <= 0 {
                return Err(StepError::invalid(format!(
                    "sent_at {sent_at} is not a time"
                )));
            }
            let now = epoch_now();
            Ok(Output::Polled(
                poll(clients, config, &incident, &command_id, sent_at, polls, now).await?,
            ))
        }
    }
}

fn epoch_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// SSM command IDs are UUIDs.
fn is_command_id(s: &str) -> bool {
    s.len() == 36 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// The comment that marks this incident's command, so a rerun finds it (at most 100 characters).
pub fn comment(incident: &Incident) -> String {
    format!("cordon incident {}", incident.incident_id)
}

/// What the script is given: constants only.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptInput {
    pub memory: bool,
    pub budget: Budget,
    pub collection_url: String,
    pub memory_url: Option<String>,
}

/// A presigned URL is safe between single quotes when it has only URL characters (no quote).
fn is_url(s: &str) -> bool {
    (s.starts_with("https://") || s.starts_with("http://"))
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&()*+,;=%".contains(&b))
}

impl ScriptInput {
    fn check(&self) -> Result<(), StepError> {
        for url in std::iter::once(&self.collection_url).chain(self.memory_url.iter()) {
            if !is_url(url) {
                return Err(StepError::invalid(
                    "a presigned upload URL has characters that cannot be passed to the script",
                ));
            }
        }
        Ok(())
    }

    /// `NAME='value'` pairs, the same for both platforms.
    fn variables(&self) -> Vec<(&'static str, String)> {
        let mut vars = vec![
            (
                "CORDON_CAPTURE_MEMORY",
                if self.memory { "1" } else { "0" }.to_owned(),
            ),
            (
                "CORDON_BUDGET_SECONDS",
                self.budget.script_budget().to_string(),
            ),
            (
                "CORDON_MEMORY_BUDGET_SECONDS",
                self.budget.memory_budget().to_string(),
            ),
            ("CORDON_UPLOAD_COLLECTION_URL", self.collection_url.clone()),
        ];
        if let Some(url) = &self.memory_url {
            vars.push(("CORDON_UPLOAD_MEMORY_URL", url.clone()));
        }
        vars
    }
}

/// The shell lines sent to a Linux host: the fixed script in a quoted here-document (no expansion
/// inside it) run by bash with stdin closed, and its inputs as single-quoted constants.
pub fn linux_commands(input: &ScriptInput) -> Vec<String> {
    let mut lines = vec![format!("CORDON_SCRIPT=$(cat <<'{SCRIPT_END}'")];
    lines.extend(LINUX_SCRIPT.lines().map(str::to_owned));
    lines.push(SCRIPT_END.to_owned());
    lines.push(")".to_owned());
    let vars: Vec<String> = input
        .variables()
        .into_iter()
        .map(|(k, v)| format!("{k}='{v}'"))
        .collect();
    lines.push(format!(
        "{} exec bash -c \"$CORDON_SCRIPT\" cordon-collection </dev/null",
        vars.join(" ")
    ));
    lines
}

pub fn windows_commands(input: &ScriptInput) -> Vec<String> {
    let mut lines: Vec<String> = input
        .variables()
        .into_iter()
        .map(|(k, v)| format!("$env:{k} = '{v}'"))
        .collect();
    lines.extend(WINDOWS_SCRIPT.lines().map(str::to_owned));
    lines
}

fn object_key(incident: &Incident, name: &str) -> String {
    format!("{}ssm/{name}", incident.evidence_prefix())
}

/// A PUT URL for one evidence key, valid for `seconds`.
async fn presign_put(clients: &Clients, key: &str, seconds: u32) -> Result<String, StepError> {
    let config = PresigningConfig::expires_in(Duration::from_secs(u64::from(seconds)))
        .map_err(|e| StepError::invalid(format!("presigning: {e}")))?;
    let request = clients
        .presigner
        .put_object()
        .bucket(clients.evidence.bucket())
        .key(key)
        .presigned(config)
        .await
        .map_err(|e| StepError::aws("PutObject (presign)", e))?;
    Ok(request.uri().to_owned())
}

#[tracing::instrument(skip(clients, config), fields(instance_id = %incident.instance_id, incident_id = %incident.incident_id))]
pub async fn send(
    clients: &Clients,
    config: &Config,
    incident: &Incident,
) -> Result<Sent, StepError> {
    let id = incident.instance_id.as_str();
    let budget = config.budget(incident);
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
    let document = if windows {
        "AWS-RunPowerShellScript"
    } else {
        "AWS-RunShellScript"
    };
    let mut keys = vec![object_key(incident, COLLECTION_OBJECT)];
    if incident.options.memory {
        keys.push(object_key(incident, MEMORY_OBJECT));
    }
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
        let sent_at = command
            .requested_date_time()
            .map(|t| t.secs())
            .unwrap_or_else(epoch_now);
        return Ok(Sent {
            command_id: command.command_id().unwrap_or_default().to_owned(),
            document: document.to_owned(),
            sent_at,
            reused: true,
            budget: budget.into(),
            keys,
            polls: 0,
            next_wait_seconds: budget
                .next_wait(0, (epoch_now() - sent_at).max(0) as u32)
                .max(1),
        });
    }

    // The URLs are valid for the whole budget: delivery may take until its timeout, then the
    // script runs up to its own budget.
    let input = ScriptInput {
        memory: incident.options.memory,
        budget,
        collection_url: presign_put(clients, &keys[0], budget.seconds).await?,
        memory_url: match keys.get(1) {
            Some(key) => Some(presign_put(clients, key, budget.seconds).await?),
            None => None,
        },
    };
    input.check()?;
    let commands = if windows {
        windows_commands(&input)
    } else {
        linux_commands(&input)
    };

    tracing::info!(
        document,
        ?keys,
        budget = budget.seconds,
        "sending collection"
    );
    let sent_at = epoch_now();
    let out = clients
        .ssm
        .send_command()
        .instance_ids(id)
        .document_name(document)
        .comment(&comment)
        .parameters("commands", commands)
        .parameters(
            "executionTimeout",
            vec![budget.execution_timeout().to_string()],
        )
        // Delivery timeout: the agent must pick the command up within this time, or it ends
        // DeliveryTimedOut and never runs (SendCommand TimeoutSeconds).
        .timeout_seconds(budget.delivery_timeout() as i32)
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
        sent_at,
        reused: false,
        budget: budget.into(),
        keys,
        polls: 0,
        next_wait_seconds: budget.next_wait(0, 0),
    })
}

/// What the invocation looks like now.
struct Seen {
    status: Option<CommandInvocationStatus>,
    details: Option<String>,
    response_code: Option<i32>,
    stdout: String,
}

impl Seen {
    fn terminal(&self) -> bool {
        matches!(
            self.status,
            Some(CommandInvocationStatus::Success)
                | Some(CommandInvocationStatus::Failed)
                | Some(CommandInvocationStatus::TimedOut)
                | Some(CommandInvocationStatus::Cancelled)
        )
    }
    fn status_name(&self) -> String {
        self.status
            .as_ref()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_else(|| "Pending".into())
    }
}

async fn invocation(clients: &Clients, command_id: &str, id: &str) -> Result<Seen, StepError> {
    match clients
        .ssm
        .get_command_invocation()
        .command_id(command_id)
        .instance_id(id)
        .send()
        .await
    {
        Ok(i) => Ok(Seen {
            status: i.status().cloned(),
            details: i.status_details().map(str::to_owned),
            response_code: Some(i.response_code()).filter(|c| *c != -1),
            stdout: i.standard_output_content().unwrap_or_default().to_owned(),
        }),
        // Right after SendCommand the invocation may not exist yet: that is "Pending" (the SDKs'
        // own `CommandExecuted` waiter retries on it, botocore `ssm/2014-11-06/waiters-2.json`).
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_invocation_does_not_exist()) =>
        {
            Ok(Seen {
                status: None,
                details: Some("the invocation is not visible yet".into()),
                response_code: None,
                stdout: String::new(),
            })
        }
        Err(e) => Err(StepError::aws("GetCommandInvocation", e)),
    }
}

#[tracing::instrument(skip(clients, config), fields(instance_id = %incident.instance_id, incident_id = %incident.incident_id))]
pub async fn poll(
    clients: &Clients,
    config: &Config,
    incident: &Incident,
    command_id: &str,
    sent_at: i64,
    polls: u32,
    now: i64,
) -> Result<Polled, StepError> {
    let id = incident.instance_id.as_str();
    let budget = config.budget(incident);
    let elapsed = (now - sent_at).max(0) as u32;
    let polls = polls + 1;
    let mut seen = invocation(clients, command_id, id).await?;
    let mut cancelled = false;
    let mut gaps = Vec::new();

    if !seen.terminal() {
        if elapsed < budget.deadline() {
            return Ok(Polled {
                command_id: command_id.to_owned(),
                sent_at,
                status: seen.status_name(),
                finished: false,
                succeeded: false,
                cancelled: false,
                response_code: None,
                status_details: seen.details,
                polls,
                // At least one second: the deadline itself is handled by the next poll.
                next_wait_seconds: budget.next_wait(polls, elapsed).max(1),
                artifacts: Vec::new(),
                gaps,
            });
        }
        // The budget is spent: cancel, and wait (bounded) for SSM to confirm, so that the
        // profile and the agent's channel are removed only once the command has stopped.
        // "A cancellation request is not guaranteed to be carried out", CancelCommand,
        // <https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_CancelCommand.html>.
        tracing::warn!(
            elapsed,
            deadline = budget.deadline(),
            "budget spent: cancelling"
        );
        let before_cancel = seen.status.clone();
        cancel(clients, command_id, id).await?;
        cancelled = true;
        let mut waited = 0;
        loop {
            seen = invocation(clients, command_id, id).await?;
            if seen.terminal() || waited >= u64::from(CANCEL_WAIT_SECONDS) {
                break;
            }
            tokio::time::sleep(Duration::from_secs(CANCEL_POLL_SECONDS)).await;
            waited += CANCEL_POLL_SECONDS;
        }
        let never_taken = matches!(
            before_cancel,
            None | Some(CommandInvocationStatus::Pending) | Some(CommandInvocationStatus::Delayed)
        );
        gaps.push(Gap::new(
            STEP,
            "OS-level collection",
            if never_taken {
                format!(
                    "the SSM agent never took the command ({} after {elapsed} s): its channel to Systems Manager or its network path stayed closed, so the script never ran; the command was cancelled (status {})",
                    before_cancel.as_ref().map(|s| s.as_str()).unwrap_or("not visible"),
                    seen.status_name()
                )
            } else if seen.terminal() {
                format!(
                    "the collection did not finish within its budget of {} s and was cancelled (status {})",
                    budget.seconds,
                    seen.status_name()
                )
            } else {
                format!(
                    "the collection did not finish within its budget of {} s; CancelCommand was sent but the command had not stopped {CANCEL_WAIT_SECONDS} s later (status {}): it may still be running on the host, without network or credentials",
                    budget.seconds,
                    seen.status_name()
                )
            },
        ));
    } else if seen.status == Some(CommandInvocationStatus::TimedOut)
        && seen.details.as_deref() == Some("DeliveryTimedOut")
    {
        gaps.push(Gap::new(
            STEP,
            "OS-level collection",
            format!(
                "the SSM agent did not take the command before SSM gave up on it (DeliveryTimedOut; delivery timeout {} s): its channel to Systems Manager or its network path was closed; the script never ran",
                budget.delivery_timeout()
            ),
        ));
    } else if seen.status != Some(CommandInvocationStatus::Success) {
        gaps.push(Gap::new(
            STEP,
            "OS-level collection",
            format!(
                "the collection command ended with status {}{}",
                seen.status_name(),
                seen.details
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
        ));
    }

    let never_ran = seen.details.as_deref() == Some("DeliveryTimedOut");
    let artifacts = if never_ran {
        Vec::new()
    } else {
        let (artifacts, mut uploaded_gaps) = uploaded(clients, incident, &seen.stdout).await?;
        gaps.append(&mut uploaded_gaps);
        artifacts
    };
    Ok(Polled {
        command_id: command_id.to_owned(),
        sent_at,
        succeeded: seen.status == Some(CommandInvocationStatus::Success)
            && artifacts.iter().any(|a| a.key.ends_with(COLLECTION_OBJECT)),
        status: seen.status_name(),
        finished: true,
        cancelled,
        response_code: seen.response_code,
        status_details: seen.details,
        polls,
        next_wait_seconds: 0,
        artifacts,
        gaps,
    })
}

async fn cancel(clients: &Clients, command_id: &str, id: &str) -> Result<(), StepError> {
    match clients
        .ssm
        .cancel_command()
        .command_id(command_id)
        .instance_ids(id)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        // Already finished between the read and the cancel: nothing to cancel. The API reference
        // documents these codes only as "isn't valid"
        // (<https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_CancelCommand.html>);
        // reading them as "finished" is an assumption (README, "Not verified"): the status read
        // after the cancel is what decides.
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_invalid_command_id() || s.is_duplicate_instance_id()) =>
        {
            Ok(())
        }
        Err(e) => Err(StepError::aws("CancelCommand", e)),
    }
}

/// One `CORDON_ARTIFACT` line of the script's stdout.
#[derive(Debug, Clone, PartialEq)]
pub struct Reported {
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
}

/// The script's machine lines: what it says it uploaded, and what it says is missing.
pub fn parse_stdout(stdout: &str) -> (Vec<Reported>, Vec<(String, String)>) {
    let (mut reported, mut gaps) = (Vec::new(), Vec::new());
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("CORDON_ARTIFACT ") {
            let field = |k: &str| {
                rest.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .map(str::to_owned)
            };
            if let (Some(name), Some(sha256), Some(bytes)) =
                (field("name="), field("sha256="), field("bytes="))
            {
                if let Ok(bytes) = bytes.parse() {
                    reported.push(Reported {
                        name,
                        sha256: sha256.to_ascii_lowercase(),
                        bytes,
                    });
                }
            }
        } else if let Some(rest) = line.strip_prefix("CORDON_GAP ") {
            if let Some(rest) = rest.strip_prefix("what=") {
                let (what, reason) = rest.split_once(" reason=").unwrap_or((rest, ""));
                gaps.push((what.trim().to_owned(), reason.trim().to_owned()));
            }
        }
    }
    (reported, gaps)
}

/// The objects the script uploaded, hashed while streamed (a memory image can be gigabytes), each
/// checked against the hash the script printed; the script's own gaps, and what is missing.
async fn uploaded(
    clients: &Clients,
    incident: &Incident,
    stdout: &str,
) -> Result<(Vec<Artifact>, Vec<Gap>), StepError> {
    let (reported, mut script_gaps) = parse_stdout(stdout);
    // The script always says what happened to memory; not asked for is not a gap.
    if !incident.options.memory {
        script_gaps.retain(|(what, _)| what != "memory");
    }
    let script_whats: Vec<String> = script_gaps.iter().map(|(w, _)| w.clone()).collect();
    let mut gaps: Vec<Gap> = script_gaps
        .into_iter()
        .map(|(what, reason)| {
            Gap::new(
                STEP,
                match what.as_str() {
                    "memory" => "memory image".to_owned(),
                    other => format!("OS-level collection ({other})"),
                },
                format!("the collection script reported: {reason}"),
            )
        })
        .collect();
    let mut names = vec![COLLECTION_OBJECT];
    if incident.options.memory {
        names.push(MEMORY_OBJECT);
    }
    let mut artifacts = Vec::new();
    for name in names {
        let key = object_key(incident, name);
        let what = if name == MEMORY_OBJECT {
            "memory image"
        } else {
            "OS-level collection"
        };
        let Some(artifact) = hash_object(clients, &key).await? else {
            // The script already said why, or it is said here.
            let explained = script_whats.iter().any(|w| match name {
                MEMORY_OBJECT => w == "memory",
                // `what=collection` lines are about sections (not run, failed), not the upload.
                _ => w == "upload",
            });
            if !explained {
                gaps.push(Gap::new(
                    STEP,
                    what,
                    format!("{name} was not uploaded to the evidence bucket"),
                ));
            }
            continue;
        };
        match reported.iter().find(|r| r.name == name) {
            Some(r) if r.sha256 == artifact.sha256 && r.bytes == artifact.size => {}
            Some(r) => gaps.push(Gap::new(
                STEP,
                what,
                format!(
                    "{name} changed between the host and the bucket: the script reported sha256 {} ({} bytes), the bucket holds sha256 {} ({} bytes); both are kept",
                    r.sha256, r.bytes, artifact.sha256, artifact.size
                ),
            )),
            None => gaps.push(Gap::new(
                STEP,
                what,
                format!(
                    "{name} is in the bucket but the script did not report its hash (its output was cut or it did not finish): sha256 {} is what the bucket holds",
                    artifact.sha256
                ),
            )),
        }
        artifacts.push(artifact);
    }
    Ok((artifacts, gaps))
}

/// SHA-256 of one object, streamed; `None` when it does not exist.
async fn hash_object(clients: &Clients, key: &str) -> Result<Option<Artifact>, StepError> {
    let out = match clients
        .s3
        .get_object()
        .bucket(clients.evidence.bucket())
        .key(key)
        .send()
        .await
    {
        Ok(o) => o,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
        Err(e) => return Err(StepError::aws("GetObject", e)),
    };
    let written_at = out
        .last_modified()
        .and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok())
        .unwrap_or_else(now);
    let mut body = out.body;
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
    Ok(Some(Artifact {
        key: key.to_owned(),
        size,
        sha256: cordon_common::evidence::hex(&hasher.finalize()),
        step: STEP.to_owned(),
        written_at,
    }))
}

#[cfg(test)]
mod tests;
