use super::*;
use aws_sdk_ec2::operation::create_snapshots::CreateSnapshotsOutput;
use aws_sdk_ec2::operation::create_tags::CreateTagsOutput;
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::describe_locked_snapshots::DescribeLockedSnapshotsOutput;
use aws_sdk_ec2::operation::describe_snapshots::DescribeSnapshotsOutput;
use aws_sdk_ec2::operation::lock_snapshot::LockSnapshotOutput;
use aws_sdk_ec2::types::{
    EbsInstanceBlockDevice, Instance, InstanceBlockDeviceMapping, Reservation, Snapshot,
    SnapshotInfo, SnapshotState,
};
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use cordon_common::testing::ec2_error;
use serde_json::json;

const ID: &str = "i-0123456789abcdef0";

fn incident() -> Incident {
    Incident::from_value(json!({"incident_id": "IR-3", "instance_id": ID})).unwrap()
}

fn describe() -> Rule {
    mock!(aws_sdk_ec2::Client::describe_instances).then_output(|| {
        let vol = |d: &str, v: &str| {
            InstanceBlockDeviceMapping::builder()
                .device_name(d)
                .ebs(EbsInstanceBlockDevice::builder().volume_id(v).build())
                .build()
        };
        DescribeInstancesOutput::builder()
            .reservations(
                Reservation::builder()
                    .instances(
                        Instance::builder()
                            .instance_id(ID)
                            .block_device_mappings(vol("/dev/xvda", "vol-root"))
                            .block_device_mappings(vol("/dev/sdf", "vol-data"))
                            .build(),
                    )
                    .build(),
            )
            .build()
    })
}

fn policy() -> LockPolicy {
    LockPolicy::new("COMPLIANCE", "90").unwrap()
}

fn no_locks() -> Rule {
    mock!(aws_sdk_ec2::Client::describe_locked_snapshots)
        .then_output(|| DescribeLockedSnapshotsOutput::builder().build())
}

fn lock() -> Rule {
    mock!(aws_sdk_ec2::Client::lock_snapshot)
        .match_requests(|r| {
            r.lock_mode() == Some(&LockMode::Compliance)
                && r.lock_duration() == Some(90)
                && r.cool_off_period().is_none()
        })
        .then_output(|| {
            LockSnapshotOutput::builder()
                .lock_state(LockState::Compliance)
                .lock_duration(90)
                .build()
        })
}

fn locked(id: &str, state: LockState) -> LockedSnapshotsInfo {
    LockedSnapshotsInfo::builder()
        .snapshot_id(id)
        .lock_state(state)
        .lock_duration(90)
        .build()
}

fn ec2(rules: &[&Rule]) -> aws_sdk_ec2::Client {
    mock_client!(aws_sdk_ec2, RuleMode::MatchAny, rules, |c| c
        .retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled()))
}

fn snapshot_of(volume: &str, snapshot: &str) -> Snapshot {
    Snapshot::builder()
        .volume_id(volume)
        .snapshot_id(snapshot)
        .state(SnapshotState::Completed)
        .build()
}

#[tokio::test]
async fn one_crash_consistent_call_for_every_volume_boot_included_tagged_with_the_incident() {
    let d = describe();
    let none = mock!(aws_sdk_ec2::Client::describe_snapshots)
        .match_requests(|r| {
            r.owner_ids() == ["self"]
                && r.filters()
                    .iter()
                    .any(|f| f.name() == Some("tag:cordon:incident-id") && f.values() == ["IR-3"])
                && r.filters()
                    .iter()
                    .any(|f| f.name() == Some("tag:cordon:instance-id") && f.values() == [ID])
        })
        // None before the call; the new ones, with their state, when described again after it.
        .sequence()
        .output(|| DescribeSnapshotsOutput::builder().build())
        .output(|| {
            DescribeSnapshotsOutput::builder()
                .snapshots(snapshot_of("vol-root", "snap-1"))
                .snapshots(snapshot_of("vol-data", "snap-2"))
                .build()
        })
        .build();
    let create = mock!(aws_sdk_ec2::Client::create_snapshots)
        .match_requests(|r| {
            let spec = r.instance_specification().unwrap();
            let tags = r.tag_specifications()[0].tags();
            spec.instance_id() == Some(ID)
                && spec.exclude_boot_volume() == Some(false)
                && tags
                    .iter()
                    .any(|t| t.key() == Some(TAG_INCIDENT) && t.value() == Some("IR-3"))
                && tags
                    .iter()
                    .any(|t| t.key() == Some(TAG_INSTANCE) && t.value() == Some(ID))
        })
        .then_output(|| {
            CreateSnapshotsOutput::builder()
                .snapshots(
                    SnapshotInfo::builder()
                        .volume_id("vol-root")
                        .snapshot_id("snap-1")
                        .state(SnapshotState::Pending)
                        .build(),
                )
                .snapshots(
                    SnapshotInfo::builder()
                        .volume_id("vol-data")
                        .snapshot_id("snap-2")
                        .state(SnapshotState::Pending)
                        .build(),
                )
                .build()
        });
    let tag = mock!(aws_sdk_ec2::Client::create_tags)
        .match_requests(|r| r.tags()[0].key() == Some(TAG_VOLUME))
        .then_output(|| CreateTagsOutput::builder().build());
    let (locks, lock) = (no_locks(), lock());
    let out = snapshot(
        &ec2(&[&d, &none, &create, &tag, &locks, &lock]),
        &policy(),
        &incident(),
    )
    .await
    .unwrap();

    assert_eq!(create.num_calls(), 1);
    assert_eq!(tag.num_calls(), 2, "each snapshot tagged with its volume");
    assert_eq!(lock.num_calls(), 2, "each snapshot locked");
    assert_eq!(out.snapshots.len(), 2);
    assert_eq!(out.snapshots[0].state.as_deref(), Some("completed"));
    assert_eq!(
        out.snapshots[0]
            .lock
            .as_ref()
            .unwrap()
            .lock_state
            .as_deref(),
        Some("compliance")
    );
    assert_eq!(out.actions.len(), 3);
    let lock_action = &out.actions[1];
    assert_eq!(lock_action.action, "lock snapshot");
    assert_eq!(lock_action.before, json!(null));
    assert_eq!(lock_action.after["lock_mode"], "compliance");
    assert_eq!(lock_action.after["lock_duration_days"], 90);
}

#[tokio::test]
async fn a_rerun_finds_the_snapshots_of_this_incident_and_makes_none() {
    let d = describe();
    let found = mock!(aws_sdk_ec2::Client::describe_snapshots).then_output(|| {
        DescribeSnapshotsOutput::builder()
            .snapshots(snapshot_of("vol-root", "snap-1"))
            .snapshots(snapshot_of("vol-data", "snap-2"))
            .build()
    });
    let create = mock!(aws_sdk_ec2::Client::create_snapshots)
        .then_output(|| CreateSnapshotsOutput::builder().build());
    let locks = mock!(aws_sdk_ec2::Client::describe_locked_snapshots)
        .match_requests(|r| r.snapshot_ids() == ["snap-1", "snap-2"])
        .then_output(|| {
            DescribeLockedSnapshotsOutput::builder()
                // Cordon's own locks from the first run (a cooling-off lock is not one: see
                // a_lock_counts_only_if_it_is_as_strong_and_as_long_as_the_policy).
                .snapshots(locked("snap-1", LockState::Compliance))
                .snapshots(locked("snap-2", LockState::Compliance))
                .build()
        });
    let lock = lock();
    let out = snapshot(
        &ec2(&[&d, &found, &create, &locks, &lock]),
        &policy(),
        &incident(),
    )
    .await
    .unwrap();
    assert_eq!(create.num_calls(), 0);
    assert_eq!(lock.num_calls(), 0, "locks found are kept, not modified");
    assert_eq!(out.snapshots.len(), 2);
    assert!(out.snapshots.iter().all(|s| s.lock.is_some()));
    assert!(out.actions.is_empty());
}

#[tokio::test]
async fn a_rerun_relocks_an_expired_or_weaker_lock_and_skips_a_snapshot_in_error() {
    let d = describe();
    let found = mock!(aws_sdk_ec2::Client::describe_snapshots).then_output(|| {
        DescribeSnapshotsOutput::builder()
            .snapshots(snapshot_of("vol-root", "snap-1"))
            .snapshots(
                Snapshot::builder()
                    .volume_id("vol-data")
                    .snapshot_id("snap-2")
                    .state(SnapshotState::Error)
                    .build(),
            )
            .build()
    });
    let locks = mock!(aws_sdk_ec2::Client::describe_locked_snapshots).then_output(|| {
        DescribeLockedSnapshotsOutput::builder()
            .snapshots(locked("snap-1", LockState::Governance))
            .build()
    });
    let lock = lock();
    let out = snapshot(&ec2(&[&d, &found, &locks, &lock]), &policy(), &incident())
        .await
        .unwrap();
    assert_eq!(
        lock.num_calls(),
        1,
        "governance is raised to compliance; error is not lockable"
    );
    assert_eq!(out.actions.len(), 1);
    assert_eq!(out.actions[0].target, "snap-1");
    assert_eq!(out.actions[0].before["lock_state"], "governance");
    let data = out
        .snapshots
        .iter()
        .find(|s| s.volume_id == "vol-data")
        .unwrap();
    assert!(data.lock.is_none());
}

#[test]
fn a_lock_counts_only_if_it_is_as_strong_and_as_long_as_the_policy() {
    let p = policy(); // compliance, 90 days
    let with = |state: LockState, days: i32| {
        LockedSnapshotsInfo::builder()
            .snapshot_id("snap-1")
            .lock_state(state)
            .lock_duration(days)
            .build()
    };
    assert!(p.satisfied_by(Some(&with(LockState::Compliance, 90))));
    assert!(p.satisfied_by(Some(&with(LockState::Compliance, 365))));
    assert!(
        !p.satisfied_by(Some(&with(LockState::Compliance, 30))),
        "too short"
    );
    assert!(
        !p.satisfied_by(Some(&with(LockState::ComplianceCooloff, 90))),
        "can still be unlocked"
    );
    assert!(
        !p.satisfied_by(Some(&with(LockState::Governance, 90))),
        "weaker mode"
    );
    assert!(!p.satisfied_by(None));
}

#[test]
fn the_lock_policy_is_validated() {
    assert_eq!(
        LockPolicy::new("GOVERNANCE", "365").unwrap(),
        LockPolicy {
            mode: LockMode::Governance,
            days: 365
        }
    );
    for (mode, days) in [
        ("legal-hold", "1"),
        ("compliance", "0"),
        ("compliance", "36501"),
        ("governance", "x"),
    ] {
        assert_eq!(
            LockPolicy::new(mode, days).unwrap_err().name(),
            "InvalidInput"
        );
    }
}

#[tokio::test]
async fn errors_are_named() {
    let throttled = mock!(aws_sdk_ec2::Client::describe_instances)
        .then_http_response(ec2_error(503, "RequestLimitExceeded"));
    assert_eq!(
        snapshot(&ec2(&[&throttled]), &policy(), &incident())
            .await
            .unwrap_err()
            .name(),
        "Transient"
    );
    let missing = mock!(aws_sdk_ec2::Client::describe_instances)
        .then_http_response(ec2_error(400, "InvalidInstanceID.NotFound"));
    assert_eq!(
        snapshot(&ec2(&[&missing]), &policy(), &incident())
            .await
            .unwrap_err()
            .name(),
        "InstanceNotFound"
    );
    let d = describe();
    let none = mock!(aws_sdk_ec2::Client::describe_snapshots)
        .then_output(|| DescribeSnapshotsOutput::builder().build());
    let denied = mock!(aws_sdk_ec2::Client::create_snapshots)
        .then_http_response(ec2_error(403, "UnauthorizedOperation"));
    assert_eq!(
        snapshot(&ec2(&[&d, &none, &denied]), &policy(), &incident())
            .await
            .unwrap_err()
            .name(),
        "AccessDenied"
    );
}
