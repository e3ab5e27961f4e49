//! Step 3, snapshot. Takes the incident; snapshots every attached EBS volume, boot volume
//! included, with one CreateSnapshots call so the set is crash-consistent across volumes
//! (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateSnapshots.html>); tags each
//! snapshot with the incident ID, instance ID and volume ID; returns the snapshot IDs and their
//! state. It never waits for completion: containment must not wait for a snapshot to copy.
//!
//! Idempotent: the snapshots are tagged at creation (TagSpecifications, atomic with the call),
//! so a rerun finds those of this incident and volume and makes no new ones. A volume attached
//! after the first run (none is, normally) gets its own CreateSnapshot.

use aws_sdk_ec2::types::{InstanceSpecification, ResourceType, Tag, TagSpecification};
use cordon_common::lookup::{self, filter};
use cordon_common::timeline::Timeline;
use cordon_common::{lambda, Action, Incident, StepError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const STEP: &str = "snapshot";
pub const TAG_INCIDENT: &str = "cordon:incident-id";
pub const TAG_INSTANCE: &str = "cordon:instance-id";
pub const TAG_VOLUME: &str = "cordon:volume-id";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub incident: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    pub volume_id: String,
    pub snapshot_id: String,
    pub state: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Output {
    pub snapshots: Vec<SnapshotRef>,
    pub actions: Vec<Action>,
}

pub async fn handle(ec2: &aws_sdk_ec2::Client, event: Value) -> Result<Output, StepError> {
    let event: Event = lambda::parse(event)?;
    let incident = Incident::from_value(event.incident)?;
    snapshot(ec2, &incident).await
}

#[tracing::instrument(skip(ec2), fields(instance_id = %incident.instance_id, incident_id = %incident.incident_id))]
pub async fn snapshot(ec2: &aws_sdk_ec2::Client, incident: &Incident) -> Result<Output, StepError> {
    let id = incident.instance_id.as_str();
    let instance = lookup::describe_instance(ec2, id).await?;
    let volumes: Vec<String> = lookup::attached_volumes(&instance)
        .into_iter()
        .map(|(_, volume_id, _)| volume_id)
        .collect();
    let mut timeline = Timeline::new(STEP);

    let mut existing = existing_snapshots(ec2, incident).await?;
    let missing: Vec<&String> = volumes
        .iter()
        .filter(|v| !existing.iter().any(|s| &s.volume_id == *v))
        .collect();

    if !missing.is_empty() && existing.is_empty() {
        // First run: one multi-volume, crash-consistent set.
        let after = json!({"volumes": volumes});
        timeline.intend(
            "create crash-consistent snapshots",
            id,
            &json!(null),
            &after,
        );
        let out = ec2
            .create_snapshots()
            .instance_specification(
                InstanceSpecification::builder()
                    .instance_id(id)
                    .exclude_boot_volume(false)
                    .build(),
            )
            .description(format!(
                "Cordon incident {} evidence of {id}",
                incident.incident_id
            ))
            .tag_specifications(tags(incident, None))
            .send()
            .await
            .map_err(|e| StepError::aws("CreateSnapshots", e))?;
        let created: Vec<(String, String)> = out
            .snapshots()
            .iter()
            .filter_map(|s| Some((s.volume_id()?.to_owned(), s.snapshot_id()?.to_owned())))
            .collect();
        // The volume ID differs per snapshot, so it is tagged one snapshot at a time.
        for (volume_id, snapshot_id) in &created {
            ec2.create_tags()
                .resources(snapshot_id)
                .tags(Tag::builder().key(TAG_VOLUME).value(volume_id).build())
                .send()
                .await
                .map_err(|e| StepError::aws("CreateTags", e))?;
        }
        timeline.record(
            "create crash-consistent snapshots",
            id,
            json!(null),
            json!(created.iter().map(|(_, s)| s).collect::<Vec<_>>()),
        );
        // Described again for their state (CreateSnapshots does not always return it).
        existing = existing_snapshots(ec2, incident).await?;
    } else {
        for volume_id in missing {
            timeline.intend(
                "create snapshot",
                volume_id,
                &json!(null),
                &json!("snapshot"),
            );
            let s = ec2
                .create_snapshot()
                .volume_id(volume_id)
                .description(format!(
                    "Cordon incident {} evidence of {id}",
                    incident.incident_id
                ))
                .tag_specifications(tags(incident, Some(volume_id)))
                .send()
                .await
                .map_err(|e| StepError::aws("CreateSnapshot", e))?;
            let snapshot_id = s.snapshot_id().unwrap_or_default().to_owned();
            timeline.record(
                "create snapshot",
                volume_id,
                json!(null),
                json!(snapshot_id),
            );
            existing.push(SnapshotRef {
                volume_id: volume_id.clone(),
                snapshot_id,
                state: s.state().map(|st| st.as_str().to_owned()),
            });
        }
    }

    existing.sort_by(|a, b| a.volume_id.cmp(&b.volume_id));
    Ok(Output {
        snapshots: existing,
        actions: timeline.into_actions(),
    })
}

/// Snapshots this account made for this incident and instance (found by the tags set at creation).
async fn existing_snapshots(
    ec2: &aws_sdk_ec2::Client,
    incident: &Incident,
) -> Result<Vec<SnapshotRef>, StepError> {
    let out = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(filter(
            &format!("tag:{TAG_INCIDENT}"),
            &incident.incident_id,
        ))
        .filters(filter(
            &format!("tag:{TAG_INSTANCE}"),
            &incident.instance_id,
        ))
        .send()
        .await
        .map_err(|e| StepError::aws("DescribeSnapshots", e))?;
    Ok(out
        .snapshots()
        .iter()
        .filter_map(|s| {
            Some(SnapshotRef {
                volume_id: s.volume_id()?.to_owned(),
                snapshot_id: s.snapshot_id()?.to_owned(),
                state: s.state().map(|st| st.as_str().to_owned()),
            })
        })
        .collect())
}

fn tags(incident: &Incident, volume_id: Option<&str>) -> TagSpecification {
    let mut spec = TagSpecification::builder()
        .resource_type(ResourceType::Snapshot)
        .tags(
            Tag::builder()
                .key(TAG_INCIDENT)
                .value(&incident.incident_id)
                .build(),
        )
        .tags(
            Tag::builder()
                .key(TAG_INSTANCE)
                .value(&incident.instance_id)
                .build(),
        )
        .tags(
            Tag::builder()
                .key("Name")
                .value(format!("cordon-{}", incident.incident_id))
                .build(),
        );
    if let Some(v) = volume_id {
        spec = spec.tags(Tag::builder().key(TAG_VOLUME).value(v).build());
    }
    spec.build()
}

#[cfg(test)]
mod tests;
