//! Step 3, snapshot. Takes the incident; snapshots every attached EBS volume, boot volume
//! included, with one CreateSnapshots call so the set is crash-consistent across volumes
//! (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateSnapshots.html>); tags each
//! snapshot with the incident ID, instance ID and volume ID; returns the snapshot IDs and their
//! state. It never waits for completion: containment must not wait for a snapshot to copy.
//!
//! Idempotent: the snapshots are tagged at creation (TagSpecifications, atomic with the call),
//! so a rerun finds those of this incident and volume and makes no new ones. A volume attached
//! after the first run (none is, normally) gets its own CreateSnapshot.
//!
//! Every evidence snapshot is then locked (`LockSnapshot`) in the deployment's retention mode for
//! its retention days ([`LockPolicy`], from `SNAPSHOT_LOCK_MODE` / `SNAPSHOT_LOCK_DAYS`) at once,
//! while still `pending`: "You can lock a snapshot that is in the pending or completed state"; a
//! lock for a duration taken while pending starts counting when the snapshot completes, a pending
//! locked snapshot cannot be deleted, and if its creation fails the lock is canceled
//! (<https://docs.aws.amazon.com/ebs/latest/userguide/lock-snapshot.html>,
//! <https://docs.aws.amazon.com/ebs/latest/userguide/snapshot-lock-considerations.html>). A snapshot
//! in `error` cannot be locked and is left to the final verification to report. Compliance mode is
//! locked with no cooling-off period (`CoolOffPeriod` omitted locks "in compliance mode
//! immediately"; <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_LockSnapshot.html>):
//! the deployment chose compliance, and a cooling-off window is a window to unlock evidence.
//! LockSnapshot on a locked snapshot *modifies* the lock (a governance lock's duration restarts),
//! so a rerun reads the locks first (DescribeLockedSnapshots) and locks only snapshots that are
//! not locked, whose lock expired, or that are locked in governance when the deployment asks for
//! compliance.

use aws_sdk_ec2::types::{
    InstanceSpecification, LockMode, LockState, LockedSnapshotsInfo, ResourceType, Tag,
    TagSpecification,
};
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
    /// The snapshot's lock as EC2 reports it after this step (absent: not locked).
    #[serde(default)]
    pub lock: Option<SnapshotLock>,
}

/// A snapshot lock (`LockedSnapshotsInfo`,
/// <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_LockedSnapshotsInfo.html>).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotLock {
    /// `governance`, `compliance-cooloff`, `compliance` or `expired`.
    pub lock_state: Option<String>,
    pub lock_duration_days: Option<i32>,
    /// Absent while a snapshot locked pending has not completed (the duration starts then).
    pub lock_expires_on: Option<String>,
    pub lock_duration_start_time: Option<String>,
    pub lock_created_on: Option<String>,
}

/// How evidence snapshots are locked: the deployment's retention mode and days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockPolicy {
    pub mode: LockMode,
    /// 1 to 36,500 days (`LockDuration`,
    /// <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_LockSnapshot.html>).
    pub days: i32,
}

impl LockPolicy {
    /// `mode`: `governance` or `compliance` (any case: the S3 Object Lock spelling is upper case).
    pub fn new(mode: &str, days: &str) -> Result<Self, StepError> {
        let mode = match mode.to_ascii_lowercase().as_str() {
            "governance" => LockMode::Governance,
            "compliance" => LockMode::Compliance,
            other => {
                return Err(StepError::invalid(format!(
                    "snapshot lock mode must be governance or compliance, not {other:?}"
                )))
            }
        };
        let days: i32 = days
            .parse()
            .ok()
            .filter(|d| (1..=36_500).contains(d))
            .ok_or_else(|| {
                StepError::invalid(format!(
                    "snapshot lock days must be 1 to 36500, not {days:?}"
                ))
            })?;
        Ok(LockPolicy { mode, days })
    }

    /// From `SNAPSHOT_LOCK_MODE` and `SNAPSHOT_LOCK_DAYS`, which the stack sets.
    pub fn from_env() -> Result<Self, StepError> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| StepError::invalid(format!("{name} is not set")))
        };
        LockPolicy::new(&var("SNAPSHOT_LOCK_MODE")?, &var("SNAPSHOT_LOCK_DAYS")?)
    }

    /// Whether an existing lock already protects as much as this policy asks: a mode at least as
    /// strong, for at least the retention. A lock still in its cooling-off period can be removed
    /// by anyone allowed `ec2:UnlockSnapshot`, and a governance lock or a cooling-off one can be
    /// shortened (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_LockSnapshot.html>),
    /// so neither counts as compliance. A lock set by date rather than duration counts if it runs
    /// for at least the retention from its start.
    fn satisfied_by(&self, lock: Option<&LockedSnapshotsInfo>) -> bool {
        let Some(lock) = lock else { return false };
        let strong = matches!(
            (lock.lock_state(), &self.mode),
            (Some(LockState::Compliance), _) | (Some(LockState::Governance), LockMode::Governance)
        );
        let retention_secs = i64::from(self.days) * 86_400;
        let long_enough = match (
            lock.lock_duration(),
            lock.lock_duration_start_time(),
            lock.lock_expires_on(),
        ) {
            (Some(days), _, _) => days >= self.days,
            (None, Some(start), Some(end)) => end.secs() - start.secs() >= retention_secs,
            _ => false,
        };
        strong && long_enough
    }
}

#[derive(Debug, Serialize)]
pub struct Output {
    pub snapshots: Vec<SnapshotRef>,
    pub actions: Vec<Action>,
}

pub async fn handle(
    ec2: &aws_sdk_ec2::Client,
    policy: &LockPolicy,
    event: Value,
) -> Result<Output, StepError> {
    let event: Event = lambda::parse(event)?;
    let incident = Incident::from_value(event.incident)?;
    snapshot(ec2, policy, &incident).await
}

#[tracing::instrument(skip(ec2), fields(instance_id = %incident.instance_id, incident_id = %incident.incident_id))]
pub async fn snapshot(
    ec2: &aws_sdk_ec2::Client,
    policy: &LockPolicy,
    incident: &Incident,
) -> Result<Output, StepError> {
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
                lock: None,
            });
        }
    }

    lock_all(ec2, policy, &mut existing, &mut timeline).await?;
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
                lock: None,
            })
        })
        .collect())
}

/// Locks every snapshot that is not yet locked as the policy asks, and records each lock.
async fn lock_all(
    ec2: &aws_sdk_ec2::Client,
    policy: &LockPolicy,
    snapshots: &mut [SnapshotRef],
    timeline: &mut Timeline,
) -> Result<(), StepError> {
    let ids: Vec<String> = snapshots.iter().map(|s| s.snapshot_id.clone()).collect();
    if ids.is_empty() {
        return Ok(());
    }
    let locks = describe_locks(ec2, &ids).await?;
    let mode = policy.mode.as_str();
    for s in snapshots.iter_mut() {
        let current = locks
            .iter()
            .find(|l| l.snapshot_id() == Some(s.snapshot_id.as_str()));
        if policy.satisfied_by(current) {
            s.lock = current.map(lock_of);
            continue;
        }
        // Only pending or completed snapshots can be locked (lock-snapshot.html); one in `error`
        // is not evidence and is reported by the final verification.
        if !matches!(s.state.as_deref(), Some("pending") | Some("completed")) {
            tracing::warn!(snapshot_id = %s.snapshot_id, state = ?s.state, "snapshot cannot be locked in this state");
            s.lock = current.map(lock_of);
            continue;
        }
        let before = json!(current.map(lock_of));
        timeline.intend(
            "lock snapshot",
            &s.snapshot_id,
            &before,
            &json!({"lock_mode": mode, "lock_duration_days": policy.days}),
        );
        let out = ec2
            .lock_snapshot()
            .snapshot_id(&s.snapshot_id)
            .lock_mode(policy.mode.clone())
            .lock_duration(policy.days)
            .send()
            .await
            .map_err(|e| StepError::aws("LockSnapshot", e))?;
        let lock = SnapshotLock {
            lock_state: out.lock_state().map(|v| v.as_str().to_owned()),
            lock_duration_days: out.lock_duration(),
            lock_expires_on: out.lock_expires_on().and_then(fmt_time),
            lock_duration_start_time: out.lock_duration_start_time().and_then(fmt_time),
            lock_created_on: out.lock_created_on().and_then(fmt_time),
        };
        let mut after = serde_json::to_value(&lock).unwrap_or_default();
        after["lock_mode"] = json!(mode);
        timeline.record("lock snapshot", &s.snapshot_id, before, after);
        s.lock = Some(lock);
    }
    Ok(())
}

/// The locks of these snapshots (absent from the answer: not locked).
async fn describe_locks(
    ec2: &aws_sdk_ec2::Client,
    ids: &[String],
) -> Result<Vec<LockedSnapshotsInfo>, StepError> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = ec2
            .describe_locked_snapshots()
            .set_snapshot_ids(Some(ids.to_vec()))
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| StepError::aws("DescribeLockedSnapshots", e))?;
        out.extend(page.snapshots().iter().cloned());
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            return Ok(out);
        }
    }
}

fn lock_of(l: &LockedSnapshotsInfo) -> SnapshotLock {
    SnapshotLock {
        lock_state: l.lock_state().map(|v| v.as_str().to_owned()),
        lock_duration_days: l.lock_duration(),
        lock_expires_on: l.lock_expires_on().and_then(fmt_time),
        lock_duration_start_time: l.lock_duration_start_time().and_then(fmt_time),
        lock_created_on: l.lock_created_on().and_then(fmt_time),
    }
}

fn fmt_time(t: &aws_smithy_types::DateTime) -> Option<String> {
    t.fmt(aws_smithy_types::date_time::Format::DateTime).ok()
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
