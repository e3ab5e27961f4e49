//! Step 2, screenshot. Takes the incident; captures the console screenshot (GetConsoleScreenshot
//! with WakeUp) as `console-screenshot.jpg` and the console output (GetConsoleOutput, Latest) as
//! `console-output.txt`; returns the artifacts and the gaps. Changes nothing on the instance.
//!
//! An instance (or instance type) that cannot give a screenshot or output is a *gap* recorded with
//! AWS's reason, not an error: the response goes on. Only transient failures are errors, so that
//! the state machine retries them. A rerun keeps what an earlier attempt captured (a later
//! screenshot is a different picture, and evidence is never replaced).

use aws_sdk_ec2::error::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use cordon_common::error::AwsErrorKind;
use cordon_common::{lambda, Artifact, EvidenceWriter, Gap, Incident, StepError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const STEP: &str = "screenshot";
pub const SCREENSHOT: &str = "console-screenshot.jpg";
pub const CONSOLE_OUTPUT: &str = "console-output.txt";

pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub evidence: EvidenceWriter,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub incident: Value,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Output {
    pub artifacts: Vec<Artifact>,
    pub gaps: Vec<Gap>,
}

pub async fn handle(clients: &Clients, event: Value) -> Result<Output, StepError> {
    let event: Event = lambda::parse(event)?;
    let incident = Incident::from_value(event.incident)?;
    capture(clients, &incident).await
}

#[tracing::instrument(skip(clients), fields(instance_id = %incident.instance_id, incident_id = %incident.incident_id))]
pub async fn capture(clients: &Clients, incident: &Incident) -> Result<Output, StepError> {
    let mut out = Output::default();
    let id = incident.instance_id.as_str();

    match clients.evidence.existing(incident, SCREENSHOT).await? {
        Some(artifact) => out.artifacts.push(artifact),
        None => {
            // WakeUp: a sleeping display would give a black image
            // (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_GetConsoleScreenshot.html>).
            let shot = clients
                .ec2
                .get_console_screenshot()
                .instance_id(id)
                .wake_up(true)
                .send()
                .await;
            match shot {
                Ok(shot) => match shot.image_data().map(aws_smithy_types::base64::decode) {
                    Some(Ok(jpeg)) if !jpeg.is_empty() => out.artifacts.push(
                        clients
                            .evidence
                            .put(incident, STEP, SCREENSHOT, "image/jpeg", jpeg)
                            .await?,
                    ),
                    Some(Err(e)) => out.gaps.push(Gap::new(
                        STEP,
                        "console screenshot",
                        format!("the image data was not valid base64: {e}"),
                    )),
                    _ => out.gaps.push(Gap::new(
                        STEP,
                        "console screenshot",
                        "EC2 returned no image data",
                    )),
                },
                Err(err) => out.gaps.push(gap_or_error(
                    "GetConsoleScreenshot",
                    "console screenshot",
                    err,
                )?),
            }
        }
    }

    match clients.evidence.existing(incident, CONSOLE_OUTPUT).await? {
        Some(artifact) => out.artifacts.push(artifact),
        None => {
            // Latest: the most recent output rather than the buffer kept at the last start
            // (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_GetConsoleOutput.html>).
            let output = clients
                .ec2
                .get_console_output()
                .instance_id(id)
                .latest(true)
                .send()
                .await;
            match output {
                Ok(output) => match output.output().map(aws_smithy_types::base64::decode) {
                    Some(Ok(text)) if !text.is_empty() => out.artifacts.push(
                        clients
                            .evidence
                            .put(
                                incident,
                                STEP,
                                CONSOLE_OUTPUT,
                                "text/plain; charset=utf-8",
                                text,
                            )
                            .await?,
                    ),
                    Some(Err(e)) => out.gaps.push(Gap::new(
                        STEP,
                        "console output",
                        format!("the output was not valid base64: {e}"),
                    )),
                    _ => out.gaps.push(Gap::new(
                        STEP,
                        "console output",
                        "EC2 has no console output for this instance yet",
                    )),
                },
                Err(err) => out
                    .gaps
                    .push(gap_or_error("GetConsoleOutput", "console output", err)?),
            }
        }
    }
    Ok(out)
}

/// A transient failure is an error (retried by the state machine); an instance that does not
/// exist is `InstanceNotFound`; anything else — an unsupported instance type, a stopped
/// instance, a missing permission — is a gap with AWS's code and message.
fn gap_or_error<E>(
    operation: &'static str,
    what: &str,
    err: SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
) -> Result<Gap, StepError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let err = StepError::aws(operation, err);
    match &err {
        StepError::Aws {
            kind: AwsErrorKind::Transient | AwsErrorKind::InstanceNotFound,
            code,
            ..
        } if code != "IncorrectInstanceState" => Err(err),
        _ => Ok(Gap::new(STEP, what, err.to_string())),
    }
}

#[cfg(test)]
mod tests;
