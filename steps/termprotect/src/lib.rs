//! Step 4, termprotect, with an action chosen by the state machine (`action` defaults to
//! `protect`, so `{"incident": ...}` still works):
//!
//! `protect` makes sure nothing can destroy the instance or its disks while it is investigated:
//! - termination protection on (`DisableApiTermination`). EC2 refuses it for Spot Instances ("You
//!   can't enable termination protection for Spot Instances",
//!   <https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_ChangingDisableAPITermination.html>;
//!   ModifyInstanceAttribute answers `UnsupportedOperation`): a Spot Instance
//!   (`InstanceLifecycle` = `spot` in DescribeInstances) is not asked, and the refusal is a
//!   recorded gap with the reason, not a failure;
//! - shutdown from inside the OS stops rather than terminates (`InstanceInitiatedShutdownBehavior`
//!   = `stop`): termination protection does not cover a shutdown initiated by the instance
//!   (<https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-instance-protection.html>);
//! - DeleteOnTermination off for every EBS volume, so a termination that happens anyway keeps them;
//! - out of its Auto Scaling group without decrementing desired capacity (the group launches a
//!   replacement and keeps serving), because an Auto Scaling group terminates instances regardless
//!   of termination protection. Auto Scaling detaches only instances that are `InService` or
//!   `Standby` (or retained, when the capacity is not decremented)
//!   (<https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-detach-attach-instances.html>);
//!   in another lifecycle state the refusal is a recorded gap with the state;
//! - tagged `cordon:incident-id`.
//!
//! The items are independent: each is attempted whatever happened to the others, and a failure
//! that is not one of the documented refusals fails the step after all of them were attempted.
//! Each change is read first and made only if needed, so a rerun changes nothing and records
//! every item as `unchanged`.
//!
//! `stop` stops the instance (never terminates it), hibernating it when it was launched with
//! hibernation configured, so that its memory lands on the root volume: "When you hibernate an
//! instance, Amazon EC2 signals the operating system to perform hibernation (suspend-to-disk),
//! which saves the contents from the instance memory (RAM) to your Amazon EBS root volume"
//! (<https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Hibernate.html>). A stopped or stopping
//! instance is left alone.

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    AttributeBooleanValue, AttributeValue, EbsInstanceBlockDeviceSpecification, Instance,
    InstanceAttributeName, InstanceBlockDeviceMappingSpecification, InstanceLifecycleType,
    InstanceStateName, Tag,
};
use cordon_common::lookup::{self, AutoScalingMembership};
use cordon_common::timeline::actions;
use cordon_common::timeline::Timeline;
use cordon_common::{lambda, Action, Gap, Incident, StepError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const STEP: &str = "termprotect";
pub const TAG_INCIDENT: &str = "cordon:incident-id";

/// EC2's answer when an attribute cannot be changed for this kind of instance (Spot termination
/// protection: hashicorp/terraform-provider-aws#41206 shows the exact response).
const UNSUPPORTED: &str = "UnsupportedOperation";

pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub autoscaling: aws_sdk_autoscaling::Client,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Event {
    Protect { incident: Value },
    Stop { incident: Value },
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Output {
    Protected(Protected),
    Stopped(Stopped),
}

#[derive(Debug, Serialize)]
pub struct Protected {
    /// The Auto Scaling group the instance was detached from (now or by an earlier run).
    pub detached_from_auto_scaling_group: Option<String>,
    pub actions: Vec<Action>,
    pub gaps: Vec<Gap>,
}

#[derive(Debug, Serialize)]
pub struct Stopped {
    /// The instance state after the step: `stopping`, `stopped`, or what prevented the stop.
    pub state: Option<String>,
    /// Stopped with `Hibernate=true`.
    pub hibernated: bool,
    pub actions: Vec<Action>,
    pub gaps: Vec<Gap>,
}

pub async fn handle(clients: &Clients, mut event: Value) -> Result<Output, StepError> {
    // Payloads written before `stop` existed carry no action: they mean `protect`.
    if let Value::Object(map) = &mut event {
        map.entry("action")
            .or_insert_with(|| Value::String("protect".into()));
    }
    match lambda::parse::<Event>(event)? {
        Event::Protect { incident } => Ok(Output::Protected(
            protect(clients, &Incident::from_value(incident)?).await?,
        )),
        Event::Stop { incident } => Ok(Output::Stopped(
            stop(clients, &Incident::from_value(incident)?).await?,
        )),
    }
}

fn is_spot(instance: &Instance) -> bool {
    instance.instance_lifecycle() == Some(&InstanceLifecycleType::Spot)
}

/// Runs every item; keeps the first failure to return once all were attempted.
struct Items {
    first_error: Option<StepError>,
}

impl Items {
    fn run(&mut self, item: &str, result: Result<(), StepError>) {
        if let Err(e) = result {
            tracing::error!(item, error = %e, "containment item failed; the others are still attempted");
            self.first_error.get_or_insert(e);
        }
    }
}

/// `UnsupportedOperation` from ModifyInstanceAttribute: EC2 refuses the attribute for this kind
/// of instance. The refusal is a gap with EC2's own words; anything else is a failure.
fn refusal<E>(
    operation: &'static str,
    e: aws_sdk_ec2::error::SdkError<E, aws_sdk_ec2::config::http::HttpResponse>,
) -> Result<String, StepError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if e.code() == Some(UNSUPPORTED) {
        Ok(format!(
            "EC2 refused it: {UNSUPPORTED}: {}",
            e.message().unwrap_or_default()
        ))
    } else {
        Err(StepError::aws(operation, e))
    }
}

#[tracing::instrument(skip(clients), fields(instance_id = %incident.instance_id, incident_id = %incident.incident_id))]
pub async fn protect(clients: &Clients, incident: &Incident) -> Result<Protected, StepError> {
    let id = incident.instance_id.as_str();
    let mut timeline = Timeline::new(STEP);
    let mut gaps = Vec::new();
    let mut items = Items { first_error: None };
    let instance = lookup::describe_instance(&clients.ec2, id).await?;

    let result = termination_protection(clients, &instance, &mut timeline, &mut gaps).await;
    items.run("termination protection", result);
    let result = shutdown_behaviour(clients, id, &mut timeline, &mut gaps).await;
    items.run("shutdown behaviour", result);
    let result = keep_volumes(clients, &instance, &mut timeline).await;
    items.run("DeleteOnTermination", result);
    let mut group = None;
    let result = detach(clients, id, &mut timeline, &mut gaps, &mut group).await;
    items.run("Auto Scaling group", result);
    let result = tag(clients, incident, &instance, &mut timeline).await;
    items.run("tag", result);

    if let Some(e) = items.first_error {
        return Err(e);
    }
    Ok(Protected {
        detached_from_auto_scaling_group: group,
        actions: timeline.into_actions(),
        gaps,
    })
}

async fn termination_protection(
    clients: &Clients,
    instance: &Instance,
    timeline: &mut Timeline,
    gaps: &mut Vec<Gap>,
) -> Result<(), StepError> {
    const PROTECT: &str = "enable termination protection";
    const WHAT: &str = "termination protection";
    let id = instance.instance_id().unwrap_or_default();
    if is_spot(instance) {
        gaps.push(Gap::new(
            STEP,
            WHAT,
            "the instance is a Spot Instance, and AWS does not allow termination protection on Spot Instances; shutdown behaviour, DeleteOnTermination and the snapshots still keep its disks",
        ));
        return Ok(());
    }
    let before = clients
        .ec2
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(InstanceAttributeName::DisableApiTermination)
        .send()
        .await
        .map_err(|e| StepError::aws("DescribeInstanceAttribute", e))?
        .disable_api_termination()
        .and_then(|v| v.value())
        .unwrap_or(false);
    if !before {
        timeline.intend(PROTECT, id, &json!(before), &json!(true));
        if let Err(e) = clients
            .ec2
            .modify_instance_attribute()
            .instance_id(id)
            .disable_api_termination(AttributeBooleanValue::builder().value(true).build())
            .send()
            .await
        {
            gaps.push(Gap::new(STEP, WHAT, refusal("ModifyInstanceAttribute", e)?));
            return Ok(());
        }
    }
    timeline.record(PROTECT, id, json!(before), json!(true));
    Ok(())
}

async fn shutdown_behaviour(
    clients: &Clients,
    id: &str,
    timeline: &mut Timeline,
    gaps: &mut Vec<Gap>,
) -> Result<(), StepError> {
    const SHUTDOWN: &str = "set instance-initiated shutdown behaviour to stop";
    let before = clients
        .ec2
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(InstanceAttributeName::InstanceInitiatedShutdownBehavior)
        .send()
        .await
        .map_err(|e| StepError::aws("DescribeInstanceAttribute", e))?
        .instance_initiated_shutdown_behavior()
        .and_then(|v| v.value())
        .map(str::to_owned);
    if before.as_deref() != Some("stop") {
        timeline.intend(SHUTDOWN, id, &json!(before), &json!("stop"));
        if let Err(e) = clients
            .ec2
            .modify_instance_attribute()
            .instance_id(id)
            .instance_initiated_shutdown_behavior(AttributeValue::builder().value("stop").build())
            .send()
            .await
        {
            gaps.push(Gap::new(
                STEP,
                "shutdown behaviour stop",
                refusal("ModifyInstanceAttribute", e)?,
            ));
            return Ok(());
        }
    }
    timeline.record(SHUTDOWN, id, json!(before), json!("stop"));
    Ok(())
}

async fn keep_volumes(
    clients: &Clients,
    instance: &Instance,
    timeline: &mut Timeline,
) -> Result<(), StepError> {
    const KEEP: &str = "keep volume on termination";
    let id = instance.instance_id().unwrap_or_default();
    let volumes = lookup::attached_volumes(instance);
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
        clients
            .ec2
            .modify_instance_attribute()
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
    Ok(())
}

/// Lifecycle states from which DetachInstances takes an instance out of its group without
/// decrementing the desired capacity: `InService`, `Standby`, and the retained states
/// (`...:Retained`) (Auto Scaling User Guide, "Detach or attach instances", considerations).
fn detachable(lifecycle_state: Option<&str>) -> bool {
    matches!(lifecycle_state, Some("InService") | Some("Standby"))
        || lifecycle_state.is_some_and(|s| s.ends_with(":Retained"))
}

/// The instance is leaving the group already (a detach or a termination in progress).
fn leaving(lifecycle_state: Option<&str>) -> bool {
    matches!(lifecycle_state, Some("Detaching") | Some("Detached"))
}

fn not_detachable_gap(m: &AutoScalingMembership) -> Gap {
    Gap::new(
        STEP,
        "detach from Auto Scaling group",
        format!(
            "the instance is {} in Auto Scaling group {}, and Auto Scaling detaches only InService or Standby instances; the group may still terminate it (termination protection does not stop Auto Scaling), so its volumes are kept and snapshotted",
            m.lifecycle_state.as_deref().unwrap_or("in an unknown lifecycle state"),
            m.group
        ),
    )
}

async fn detach(
    clients: &Clients,
    id: &str,
    timeline: &mut Timeline,
    gaps: &mut Vec<Gap>,
    detached_from: &mut Option<String>,
) -> Result<(), StepError> {
    const DETACH: &str = "detach from Auto Scaling group";
    let Some(membership) = lookup::auto_scaling_membership(&clients.autoscaling, id).await? else {
        timeline.record(DETACH, id, json!(null), json!(null));
        return Ok(());
    };
    let state = membership.lifecycle_state.as_deref();
    let before = json!({"group": membership.group, "lifecycle_state": state});
    if leaving(state) {
        timeline.record(DETACH, id, before.clone(), before);
        *detached_from = Some(membership.group);
        return Ok(());
    }
    if !detachable(state) {
        gaps.push(not_detachable_gap(&membership));
        return Ok(());
    }
    timeline.intend(DETACH, id, &before, &json!(null));
    let result = clients
        .autoscaling
        .detach_instances()
        .auto_scaling_group_name(&membership.group)
        .instance_ids(id)
        // Keep capacity: the group replaces the instance and the service keeps running.
        .should_decrement_desired_capacity(false)
        .send()
        .await;
    if let Err(e) = result {
        // Auto Scaling answers ValidationError for an instance that is not (or no longer) in
        // the group or not in a detachable state. Read the membership again rather than the
        // message: gone is the goal reached, a refused state is a gap, anything else fails.
        if e.code() != Some("ValidationError") {
            return Err(StepError::aws("DetachInstances", e));
        }
        match lookup::auto_scaling_membership(&clients.autoscaling, id).await? {
            None => {}
            Some(m) if leaving(m.lifecycle_state.as_deref()) => {}
            Some(m) if !detachable(m.lifecycle_state.as_deref()) => {
                gaps.push(not_detachable_gap(&m));
                return Ok(());
            }
            Some(_) => return Err(StepError::aws("DetachInstances", e)),
        }
    }
    timeline.record(DETACH, id, before, json!(null));
    *detached_from = Some(membership.group);
    Ok(())
}

async fn tag(
    clients: &Clients,
    incident: &Incident,
    instance: &Instance,
    timeline: &mut Timeline,
) -> Result<(), StepError> {
    const TAG: &str = "tag instance with incident";
    let id = incident.instance_id.as_str();
    let before = instance
        .tags()
        .iter()
        .find(|t| t.key() == Some(TAG_INCIDENT))
        .and_then(|t| t.value())
        .map(str::to_owned);
    if before.as_deref() != Some(incident.incident_id.as_str()) {
        timeline.intend(TAG, id, &json!(before), &json!(incident.incident_id));
        clients
            .ec2
            .create_tags()
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
    Ok(())
}

/// Stops (or hibernates) the instance; never terminates it.
///
/// Not stopped, as a recorded gap:
/// - an instance still in an Auto Scaling group in a state other than `Standby`: a stopped
///   instance fails the group's health check and is terminated and replaced ("If the instance is
///   in any state other than running ... Amazon EC2 Auto Scaling considers the instance to be
///   unhealthy and replaces it", <https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-health-checks.html>;
///   instances on standby are not health-checked,
///   <https://docs.aws.amazon.com/autoscaling/ec2/userguide/as-enter-exit-standby.html>);
/// - an instance already shutting down or terminated;
/// - EC2's `UnsupportedOperation` (a Spot Instance can be stopped only if it was launched from a
///   persistent Spot Instance request, and not as part of a fleet,
///   <https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/using-spot-instances-request.html#stopping-a-spot-instance>).
#[tracing::instrument(skip(clients), fields(instance_id = %incident.instance_id, incident_id = %incident.incident_id))]
pub async fn stop(clients: &Clients, incident: &Incident) -> Result<Stopped, StepError> {
    let id = incident.instance_id.as_str();
    let mut timeline = Timeline::new(STEP);
    let mut gaps = Vec::new();
    let instance = lookup::describe_instance(&clients.ec2, id).await?;
    let state = instance.state().and_then(|s| s.name()).cloned();
    let state_name = state.as_ref().map(|s| s.as_str().to_owned());
    // "Hibernates the instance if the instance was enabled for hibernation at launch. If the
    // instance cannot hibernate successfully, a normal shutdown occurs"
    // (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_StopInstances.html).
    let hibernate = instance
        .hibernation_options()
        .and_then(|h| h.configured())
        .unwrap_or(false);
    let action = if hibernate {
        actions::HIBERNATE
    } else {
        actions::STOP
    };
    let done = |state_name, timeline: Timeline, gaps| Stopped {
        state: state_name,
        hibernated: false,
        actions: timeline.into_actions(),
        gaps,
    };

    match state {
        Some(InstanceStateName::Stopped) | Some(InstanceStateName::Stopping) => {
            timeline.record(action, id, json!(state_name), json!(state_name));
            return Ok(done(state_name, timeline, gaps));
        }
        Some(InstanceStateName::ShuttingDown) | Some(InstanceStateName::Terminated) => {
            gaps.push(Gap::new(
                STEP,
                "stop after evidence",
                format!("the instance is {}", state_name.as_deref().unwrap_or("?")),
            ));
            return Ok(done(state_name, timeline, gaps));
        }
        _ => {}
    }
    if let Some(m) = lookup::auto_scaling_membership(&clients.autoscaling, id).await? {
        let lifecycle = m.lifecycle_state.as_deref();
        if lifecycle != Some("Standby") && !leaving(lifecycle) {
            gaps.push(Gap::new(
                STEP,
                "stop after evidence",
                format!(
                    "the instance is still in Auto Scaling group {} ({}): stopped, it would fail the group's health check and be terminated, so it is left running",
                    m.group,
                    lifecycle.unwrap_or("lifecycle state unknown")
                ),
            ));
            return Ok(done(state_name, timeline, gaps));
        }
    }

    timeline.intend(action, id, &json!(state_name), &json!("stopped"));
    let mut request = clients.ec2.stop_instances().instance_ids(id);
    if hibernate {
        request = request.hibernate(true);
    }
    let out = match request.send().await {
        Ok(out) => out,
        Err(e) => {
            gaps.push(Gap::new(
                STEP,
                "stop after evidence",
                refusal("StopInstances", e)?,
            ));
            return Ok(done(state_name, timeline, gaps));
        }
    };
    let after = out
        .stopping_instances()
        .iter()
        .find(|c| c.instance_id() == Some(id))
        .and_then(|c| c.current_state())
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_owned());
    timeline.record(action, id, json!(state_name), json!(after));
    Ok(Stopped {
        state: after,
        hibernated: hibernate,
        actions: timeline.into_actions(),
        gaps,
    })
}

#[cfg(test)]
mod tests;
