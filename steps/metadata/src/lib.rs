//! Step 1, metadata. Two actions, chosen by the state machine:
//! - `validate` takes the raw execution input and the execution name and returns the validated
//!   [`Incident`]; it calls nothing in AWS, so a bad request ends the execution as `InvalidInput`
//!   before anything is touched.
//! - `record` describes the instance (volumes, network interfaces, security groups, instance
//!   profile association, tags) into `metadata.json`, and what undoing containment would need
//!   (groups and connection tracking timeouts per interface, profile, termination protection,
//!   shutdown behaviour, DeleteOnTermination per volume, Auto Scaling group and lifecycle state,
//!   target groups, instance metadata options, instance state, hibernation, Spot or on-demand)
//!   into `pre-incident-state.json`; it reports whether SSM can reach the instance and returns a
//!   small summary. It changes nothing. A rerun for the same incident keeps what the first run
//!   recorded (the state *before* the response is the one an undo needs) and returns it again.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Instance, InstanceAttributeName};
use cordon_common::lookup::{self, filter, SsmStatus, TargetRegistration};
use cordon_common::{lambda, Artifact, EvidenceWriter, Incident, StepError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod render;

pub const STEP: &str = "metadata";

pub const METADATA: &str = "metadata.json";
pub const PRE_INCIDENT_STATE: &str = "pre-incident-state.json";

pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub autoscaling: aws_sdk_autoscaling::Client,
    pub elbv2: aws_sdk_elasticloadbalancingv2::Client,
    pub evidence: EvidenceWriter,
    /// The deployment's collection budget settings, which "Validate input" applies.
    pub collection: CollectionSettings,
}

/// `COLLECTION_BUDGET_SECONDS` and `COLLECTION_MAX_BUDGET_SECONDS`, set by the CDK app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollectionSettings {
    pub default_budget_seconds: u32,
    pub max_budget_seconds: u32,
}

impl Default for CollectionSettings {
    fn default() -> Self {
        CollectionSettings {
            default_budget_seconds: 1200,
            max_budget_seconds: cordon_common::collection::MAX_BUDGET_SECONDS,
        }
    }
}

/// The request's collection budget checked against this deployment's maximum, or the default
/// written into the incident: every later step reads the same value from it.
pub fn apply_collection_budget(
    mut incident: Incident,
    settings: CollectionSettings,
) -> Result<Incident, StepError> {
    match incident.options.collection_budget_seconds {
        Some(b) if b > settings.max_budget_seconds => {
            return Err(StepError::invalid(format!(
                "options.collection_budget_seconds {b} is more than this deployment allows ({})",
                settings.max_budget_seconds
            )))
        }
        Some(_) => {}
        None => incident.options.collection_budget_seconds = Some(settings.default_budget_seconds),
    }
    Ok(incident)
}

#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Event {
    Validate {
        request: Value,
        execution_name: String,
    },
    Record {
        incident: Value,
    },
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Output {
    Validated { incident: Incident },
    Recorded(Box<Summary>),
}

/// What "Record metadata" hands on: enough for the next steps to choose, no more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub instance_id: String,
    pub state: Option<String>,
    /// `linux` or `windows` (EC2 reports only Windows; everything else is Linux/UNIX).
    pub platform: String,
    pub vpc_id: Option<String>,
    pub volume_ids: Vec<String>,
    pub network_interface_ids: Vec<String>,
    /// The instance profile associated before the response, if any.
    pub profile_arn: Option<String>,
    pub auto_scaling_group: Option<String>,
    pub target_groups: Vec<TargetRegistration>,
    /// `spot`, `on-demand`, `scheduled` or `capacity-block` (see [`instance_lifecycle`]).
    #[serde(default)]
    pub instance_lifecycle: Option<String>,
    /// Whether SSM can run commands on it now (asked afresh on every run).
    pub ssm: SsmStatus,
    /// The pre-incident state was recorded by an earlier attempt or execution and kept.
    #[serde(default)]
    pub resumed: bool,
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
}

/// What undoing containment needs: every value Cordon is about to change, as it was before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreIncidentState {
    pub instance_id: String,
    pub security_groups_by_interface: BTreeMap<String, Vec<String>>,
    pub instance_profile: Option<ProfileAssociation>,
    pub disable_api_termination: Option<bool>,
    pub instance_initiated_shutdown_behavior: Option<String>,
    /// Volume ID → (device name, DeleteOnTermination).
    pub delete_on_termination: BTreeMap<String, VolumeTermination>,
    pub auto_scaling_group: Option<String>,
    pub target_groups: Vec<TargetRegistration>,
    pub tags: BTreeMap<String, String>,
    // The fields below were added with issue 10 (containment first); a state recorded before
    // them reads them as absent.
    /// Interface ID → its connection tracking timeouts, which quarantine lowers.
    #[serde(default)]
    pub connection_tracking_by_interface: BTreeMap<String, ConnectionTracking>,
    /// The instance metadata options, whose endpoint "Disable instance metadata" turns off.
    #[serde(default)]
    pub metadata_options: Option<MetadataOptions>,
    /// The instance state (`running`, ...), which `stop_after_evidence` changes.
    #[serde(default)]
    pub instance_state: Option<String>,
    /// Launched with hibernation configured: "Stop instance" hibernates it.
    #[serde(default)]
    pub hibernation_configured: Option<bool>,
    /// `spot`, `on-demand`, ... (see [`instance_lifecycle`]): Spot Instances refuse termination
    /// protection and, from a one-time request, stopping.
    #[serde(default)]
    pub instance_lifecycle: Option<String>,
    /// The instance's Auto Scaling lifecycle state (`InService`, `Standby`, ...), which decides
    /// whether it can be detached and how it is attached again.
    #[serde(default)]
    pub auto_scaling_lifecycle_state: Option<String>,
    /// The summary handed to the state machine, kept so that a rerun returns the same one.
    pub summary: Summary,
}

/// An interface's connection tracking timeouts in seconds, as DescribeNetworkInterfaces reports
/// them (`ConnectionTrackingConfiguration`). `None` means not configured: EC2's defaults apply
/// (TCP established 432,000, UDP stream 180, UDP 30;
/// <https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/security-group-connection-tracking.html#connection-tracking-timeouts>).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionTracking {
    pub tcp_established_timeout: Option<i32>,
    pub udp_stream_timeout: Option<i32>,
    pub udp_timeout: Option<i32>,
}

/// The instance metadata options (DescribeInstances `MetadataOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataOptions {
    pub http_endpoint: Option<String>,
    pub http_tokens: Option<String>,
    pub http_put_response_hop_limit: Option<i32>,
    pub http_protocol_ipv6: Option<String>,
    pub instance_metadata_tags: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileAssociation {
    pub association_id: Option<String>,
    pub arn: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeTermination {
    pub device_name: String,
    pub delete_on_termination: bool,
}

pub async fn handle(clients: &Clients, event: Value) -> Result<Output, StepError> {
    match lambda::parse::<Event>(event)? {
        Event::Validate {
            request,
            execution_name,
        } => Ok(Output::Validated {
            incident: apply_collection_budget(
                Incident::from_request(request, &execution_name)?,
                clients.collection,
            )?,
        }),
        Event::Record { incident } => {
            let incident = Incident::from_value(incident)?;
            Ok(Output::Recorded(Box::new(
                record(clients, &incident).await?,
            )))
        }
    }
}

/// Describes the instance and everything attached to it, and writes `metadata.json` and
/// `pre-incident-state.json`, unless an earlier run for this incident already did.
#[tracing::instrument(skip(clients), fields(instance_id = %incident.instance_id, incident_id = %incident.incident_id))]
pub async fn record(clients: &Clients, incident: &Incident) -> Result<Summary, StepError> {
    let id = incident.instance_id.as_str();
    let instance = lookup::describe_instance(&clients.ec2, id).await?;
    let ssm = lookup::ssm_status(&clients.ssm, id).await?;

    if let Some(bytes) = clients.evidence.get(incident, PRE_INCIDENT_STATE).await? {
        let stored: PreIncidentState = serde_json::from_slice(&bytes).map_err(|e| {
            StepError::invalid(format!("stored {PRE_INCIDENT_STATE} is unreadable: {e}"))
        })?;
        tracing::info!("pre-incident state already recorded for this incident; keeping it");
        let mut artifacts = Vec::new();
        for name in [METADATA, PRE_INCIDENT_STATE] {
            artifacts.extend(clients.evidence.existing(incident, name).await?);
        }
        return Ok(Summary {
            ssm,
            resumed: true,
            artifacts,
            ..stored.summary
        });
    }

    let volumes = clients
        .ec2
        .describe_volumes()
        .filters(filter("attachment.instance-id", id))
        .send()
        .await
        .map_err(|e| StepError::aws("DescribeVolumes", e))?;

    let mut group_ids: Vec<String> = instance
        .network_interfaces()
        .iter()
        .flat_map(|eni| eni.groups())
        .chain(instance.security_groups())
        .filter_map(|g| g.group_id().map(str::to_owned))
        .collect();
    group_ids.sort();
    group_ids.dedup();
    let groups = if group_ids.is_empty() {
        Vec::new()
    } else {
        clients
            .ec2
            .describe_security_groups()
            .set_group_ids(Some(group_ids))
            .send()
            .await
            .map_err(|e| StepError::aws("DescribeSecurityGroups", e))?
            .security_groups
            .unwrap_or_default()
    };

    let associations = clients
        .ec2
        .describe_iam_instance_profile_associations()
        .filters(filter("instance-id", id))
        .send()
        .await
        .map_err(|e| StepError::aws("DescribeIamInstanceProfileAssociations", e))?;
    let association = associations
        .iam_instance_profile_associations()
        .iter()
        .find(|a| {
            matches!(
                a.state().map(|s| s.as_str()),
                Some("associated") | Some("associating")
            )
        });

    let termination = clients
        .ec2
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(InstanceAttributeName::DisableApiTermination)
        .send()
        .await
        .map_err(|e| StepError::aws("DescribeInstanceAttribute", e))?;
    let shutdown = clients
        .ec2
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(InstanceAttributeName::InstanceInitiatedShutdownBehavior)
        .send()
        .await
        .map_err(|e| StepError::aws("DescribeInstanceAttribute", e))?;
    let membership = lookup::auto_scaling_membership(&clients.autoscaling, id).await?;
    let auto_scaling_group = membership.as_ref().map(|m| m.group.clone());
    let target_groups = lookup::target_registrations(&clients.elbv2, instance.vpc_id(), id).await?;
    let interfaces = network_interfaces(&clients.ec2, id).await?;

    let metadata = serde_json::json!({
        "incident_id": incident.incident_id,
        "instance": render::instance(&instance),
        "volumes": volumes.volumes().iter().map(render::volume).collect::<Vec<_>>(),
        "security_groups": groups.iter().map(render::security_group).collect::<Vec<_>>(),
        "iam_instance_profile_associations": associations
            .iam_instance_profile_associations()
            .iter()
            .map(render::association)
            .collect::<Vec<_>>(),
        "auto_scaling_group": auto_scaling_group,
        "auto_scaling_lifecycle_state": membership.as_ref().and_then(|m| m.lifecycle_state.clone()),
        "target_groups": target_groups,
        "network_interfaces": interfaces.iter().map(render::network_interface).collect::<Vec<_>>(),
        "ssm": ssm,
    });

    let summary = Summary {
        instance_id: id.to_owned(),
        state: instance
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_owned()),
        platform: platform(&instance).to_owned(),
        vpc_id: instance.vpc_id().map(str::to_owned),
        volume_ids: render::volume_ids(&instance),
        network_interface_ids: instance
            .network_interfaces()
            .iter()
            .filter_map(|n| n.network_interface_id().map(str::to_owned))
            .collect(),
        profile_arn: association
            .and_then(|a| a.iam_instance_profile())
            .and_then(|p| p.arn())
            .map(str::to_owned),
        auto_scaling_group: auto_scaling_group.clone(),
        target_groups: target_groups.clone(),
        instance_lifecycle: Some(instance_lifecycle(&instance).to_owned()),
        ssm,
        resumed: false,
        artifacts: Vec::new(),
    };
    let pre_incident = PreIncidentState {
        instance_id: id.to_owned(),
        security_groups_by_interface: instance
            .network_interfaces()
            .iter()
            .filter_map(|n| {
                let groups = n
                    .groups()
                    .iter()
                    .filter_map(|g| g.group_id().map(str::to_owned));
                Some((n.network_interface_id()?.to_owned(), groups.collect()))
            })
            .collect(),
        instance_profile: association.map(|a| ProfileAssociation {
            association_id: a.association_id().map(str::to_owned),
            arn: a
                .iam_instance_profile()
                .and_then(|p| p.arn())
                .map(str::to_owned),
        }),
        disable_api_termination: termination
            .disable_api_termination()
            .and_then(|v| v.value()),
        instance_initiated_shutdown_behavior: shutdown
            .instance_initiated_shutdown_behavior()
            .and_then(|v| v.value())
            .map(str::to_owned),
        delete_on_termination: lookup::attached_volumes(&instance)
            .into_iter()
            .map(|(device_name, volume_id, delete_on_termination)| {
                (
                    volume_id,
                    VolumeTermination {
                        device_name,
                        delete_on_termination,
                    },
                )
            })
            .collect(),
        auto_scaling_group,
        target_groups,
        connection_tracking_by_interface: interfaces
            .iter()
            .filter_map(|n| {
                let c = n.connection_tracking_configuration();
                Some((
                    n.network_interface_id()?.to_owned(),
                    ConnectionTracking {
                        tcp_established_timeout: c.and_then(|c| c.tcp_established_timeout()),
                        udp_stream_timeout: c.and_then(|c| c.udp_stream_timeout()),
                        udp_timeout: c.and_then(|c| c.udp_timeout()),
                    },
                ))
            })
            .collect(),
        metadata_options: instance.metadata_options().map(|m| MetadataOptions {
            http_endpoint: m.http_endpoint().map(|v| v.as_str().to_owned()),
            http_tokens: m.http_tokens().map(|v| v.as_str().to_owned()),
            http_put_response_hop_limit: m.http_put_response_hop_limit(),
            http_protocol_ipv6: m.http_protocol_ipv6().map(|v| v.as_str().to_owned()),
            instance_metadata_tags: m.instance_metadata_tags().map(|v| v.as_str().to_owned()),
        }),
        instance_state: instance
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_owned()),
        hibernation_configured: instance.hibernation_options().and_then(|h| h.configured()),
        instance_lifecycle: Some(instance_lifecycle(&instance).to_owned()),
        auto_scaling_lifecycle_state: membership.and_then(|m| m.lifecycle_state),
        tags: instance
            .tags()
            .iter()
            .filter_map(|t| {
                Some((
                    t.key()?.to_owned(),
                    t.value().unwrap_or_default().to_owned(),
                ))
            })
            .collect(),
        summary: summary.clone(),
    };

    // metadata.json first. If this attempt died between the two writes, the rerun finds no
    // pre-incident state but finds metadata.json: it reads back what was written and keeps it
    // (rebuilding it would not give the same bytes: the SSM ping status, states and times change
    // between calls, and a different body under the same key is EvidenceConflict, for good under
    // Object Lock). The pre-incident state is then described now, from the still untouched
    // instance: containment starts only after this step.
    let metadata_artifact = match stored_metadata(clients, incident).await? {
        Some(artifact) => {
            tracing::info!("metadata.json already written by an earlier attempt; keeping it");
            artifact
        }
        None => {
            clients
                .evidence
                .put(
                    incident,
                    STEP,
                    METADATA,
                    "application/json",
                    to_json(&metadata)?,
                )
                .await?
        }
    };
    let state_artifact = clients
        .evidence
        .put(
            incident,
            STEP,
            PRE_INCIDENT_STATE,
            "application/json",
            to_json(&pre_incident)?,
        )
        .await?;
    Ok(Summary {
        artifacts: vec![metadata_artifact, state_artifact],
        ..summary
    })
}

/// The `metadata.json` an earlier attempt wrote for this incident, read back: it must be a JSON
/// document of this incident, else the record cannot be continued.
async fn stored_metadata(
    clients: &Clients,
    incident: &Incident,
) -> Result<Option<Artifact>, StepError> {
    let Some(bytes) = clients.evidence.get(incident, METADATA).await? else {
        return Ok(None);
    };
    let stored: Value = serde_json::from_slice(&bytes)
        .map_err(|e| StepError::invalid(format!("stored {METADATA} is unreadable: {e}")))?;
    if stored.get("incident_id").and_then(Value::as_str) != Some(incident.incident_id.as_str()) {
        return Err(StepError::invalid(format!(
            "stored {METADATA} is not a record of incident {}",
            incident.incident_id
        )));
    }
    clients.evidence.existing(incident, METADATA).await
}

/// Pretty JSON. Deterministic for the same state: struct fields serialize in declaration order,
/// `BTreeMap`s in key order, and `serde_json::Value` objects (built with `json!` in source order)
/// keep insertion order, because the workspace builds serde_json with `preserve_order` (a
/// dependency enables it; `cargo tree -i serde_json -e features`).
fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, StepError> {
    serde_json::to_vec_pretty(value)
        .map_err(|e| StepError::invalid(format!("cannot serialize: {e}")))
}

/// The instance's interfaces as DescribeNetworkInterfaces reports them: unlike DescribeInstances,
/// it carries each interface's `ConnectionTrackingConfiguration`
/// (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_NetworkInterface.html>).
async fn network_interfaces(
    ec2: &aws_sdk_ec2::Client,
    instance_id: &str,
) -> Result<Vec<aws_sdk_ec2::types::NetworkInterface>, StepError> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = ec2
            .describe_network_interfaces()
            .filters(filter("attachment.instance-id", instance_id))
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| StepError::aws("DescribeNetworkInterfaces", e))?;
        out.extend(page.network_interfaces().iter().cloned());
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    Ok(out)
}

/// `InstanceLifecycle` "Indicates whether this is a Spot Instance or a Scheduled Instance" and is
/// absent for On-Demand Instances
/// (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_Instance.html>).
pub fn instance_lifecycle(instance: &Instance) -> &str {
    instance
        .instance_lifecycle()
        .map(|l| l.as_str())
        .unwrap_or("on-demand")
}

/// EC2's `Platform` is `windows` for Windows instances and absent for everything else.
pub fn platform(instance: &Instance) -> &'static str {
    match instance.platform() {
        Some(aws_sdk_ec2::types::PlatformValues::Windows) => "windows",
        _ => "linux",
    }
}

#[cfg(test)]
mod tests;
