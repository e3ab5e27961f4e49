//! Step 4, termprotect. Takes the incident; makes sure nothing can destroy the instance or its
//! disks while it is investigated:
//! - termination protection on (`DisableApiTermination`);
//! - shutdown from inside the OS stops rather than terminates (`InstanceInitiatedShutdownBehavior`
//!   = `stop`): termination protection does not cover a shutdown initiated by the instance
//!   (<https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-instance-protection.html>);
//! - DeleteOnTermination off for every EBS volume, so a termination that happens anyway keeps them;
//! - out of its Auto Scaling group without decrementing desired capacity (the group launches a
//!   replacement and keeps serving), because an Auto Scaling group terminates instances regardless
//!   of termination protection
//!   (<https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-detach-attach-instances.html>);
//! - tagged `cordon:incident-id`.
//!
//! Each change is read first and made only if needed, so a rerun changes nothing and records
//! every item as `unchanged`.

use aws_sdk_ec2::types::{
    AttributeBooleanValue, AttributeValue, EbsInstanceBlockDeviceSpecification,
    InstanceAttributeName, InstanceBlockDeviceMappingSpecification, Tag,
};
use cordon_common::lookup;
use cordon_common::timeline::Timeline;
use cordon_common::{lambda, Action, Incident, StepError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const STEP: &str = "termprotect";
pub const TAG_INCIDENT: &str = "cordon:incident-id";

pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub autoscaling: aws_sdk_autoscaling::Client,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub incident: Value,
}

#[derive(Debug, Serialize)]
pub struct Output {
    /// The Auto Scaling group the instance was detached from (now or by an earlier run).
    pub detached_from_auto_scaling_group: Option<String>,
    pub actions: Vec<Action>,
}

pub async fn handle(clients: &Clients, event: Value) -> Result<Output, StepError> {
    let event: Event = lambda::parse(event)?;
    let incident = Incident::from_value(event.incident)?;
    protect(clients, &incident).await
}

#[tracing::instrument(skip(clients), fields(instance_id = %incident.instance_id, incident_id = %incident.incident_id))]
pub async fn protect(clients: &Clients, incident: &Incident) -> Result<Output, StepError> {
    let id = incident.instance_id.as_str();
    let ec2 = &clients.ec2;
    let mut timeline = Timeline::new(STEP);
    let instance = lookup::describe_instance(ec2, id).await?;

    // Termination protection.
    let before = ec2
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(InstanceAttributeName::DisableApiTermination)
        .send()
        .await
        .map_err(|e| StepError::aws("DescribeInstanceAttribute", e))?
        .disable_api_termination()
        .and_then(|v| v.value())
        .unwrap_or(false);
    const PROTECT: &str = "enable termination protection";
    if !before {
        timeline.intend(PROTECT, id, &json!(before), &json!(true));
        ec2.modify_instance_attribute()
            .instance_id(id)
            .disable_api_termination(AttributeBooleanValue::builder().value(true).build())
            .send()
            .await
            .map_err(|e| StepError::aws("ModifyInstanceAttribute", e))?;
    }
    timeline.record(PROTECT, id, json!(before), json!(true));

    // Shutdown behaviour.
    let before = ec2
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(InstanceAttributeName::InstanceInitiatedShutdownBehavior)
        .send()
        .await
        .map_err(|e| StepError::aws("DescribeInstanceAttribute", e))?
        .instance_initiated_shutdown_behavior()
        .and_then(|v| v.value())
        .map(str::to_owned);
    const SHUTDOWN: &str = "set instance-initiated shutdown behaviour to stop";
    if before.as_deref() != Some("stop") {
        timeline.intend(SHUTDOWN, id, &json!(before), &json!("stop"));
        ec2.modify_instance_attribute()
            .instance_id(id)
            .instance_initiated_shutdown_behavior(AttributeValue::builder().value("stop").build())
            .send()
            .await
            .map_err(|e| StepError::aws("ModifyInstanceAttribute", e))?;
    }
    timeline.record(SHUTDOWN, id, json!(before), json!("stop"));

    // DeleteOnTermination, all volumes in one call.
    const KEEP: &str = "keep volume on termination";
    let volumes = lookup::attached_volumes(&instance);
    let to_change: Vec<_> = volumes.iter().filter(|(_, _, delete)| *delete).collect();
    if !to_change.is_empty() {
        for (_, volume_id, _) in &to_change {
            timeline.intend(
                KEEP,
                volume_id,
                &json!({"delete_on_termination": true}),
                &json!({"delete_on_termination": false}),
            );
        }
        let mappings = to_change.iter().map(|(device, _, _)| {
            InstanceBlockDeviceMappingSpecification::builder()
                .device_name(device)
                .ebs(
                    EbsInstanceBlockDeviceSpecification::builder()
                        .delete_on_termination(false)
                        .build(),
                )
                .build()
        });
        ec2.modify_instance_attribute()
            .instance_id(id)
            .set_block_device_mappings(Some(mappings.collect()))
            .send()
            .await
            .map_err(|e| StepError::aws("ModifyInstanceAttribute", e))?;
    }
    for (_, volume_id, delete) in &volumes {
        timeline.record(
            KEEP,
            volume_id,
            json!({"delete_on_termination": delete}),
            json!({"delete_on_termination": false}),
        );
    }

    // Auto Scaling group.
    const DETACH: &str = "detach from Auto Scaling group";
    let group = lookup::auto_scaling_group(&clients.autoscaling, id).await?;
    if let Some(group) = &group {
        timeline.intend(DETACH, id, &json!(group), &json!(null));
        clients
            .autoscaling
            .detach_instances()
            .auto_scaling_group_name(group)
            .instance_ids(id)
            // Keep capacity: the group replaces the instance and the service keeps running.
            .should_decrement_desired_capacity(false)
            .send()
            .await
            .map_err(|e| StepError::aws("DetachInstances", e))?;
        timeline.record(DETACH, id, json!(group), json!(null));
    } else {
        timeline.record(DETACH, id, json!(null), json!(null));
    }

    // Tag.
    const TAG: &str = "tag instance with incident";
    let before = instance
        .tags()
        .iter()
        .find(|t| t.key() == Some(TAG_INCIDENT))
        .and_then(|t| t.value())
        .map(str::to_owned);
    if before.as_deref() != Some(incident.incident_id.as_str()) {
        timeline.intend(TAG, id, &json!(before), &json!(incident.incident_id));
        ec2.create_tags()
            .resources(id)
            .tags(
                Tag::builder()
                    .key(TAG_INCIDENT)
                    .value(&incident.incident_id)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| StepError::aws("CreateTags", e))?;
    }
    timeline.record(TAG, id, json!(before), json!(incident.incident_id));

    Ok(Output {
        detached_from_auto_scaling_group: group,
        actions: timeline.into_actions(),
    })
}

#[cfg(test)]
mod tests;
