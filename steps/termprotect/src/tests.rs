use super::*;
use aws_sdk_autoscaling::operation::describe_auto_scaling_instances::DescribeAutoScalingInstancesOutput;
use aws_sdk_autoscaling::operation::detach_instances::DetachInstancesOutput;
use aws_sdk_autoscaling::types::AutoScalingInstanceDetails;
use aws_sdk_ec2::operation::create_tags::CreateTagsOutput;
use aws_sdk_ec2::operation::describe_instance_attribute::DescribeInstanceAttributeOutput;
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::modify_instance_attribute::ModifyInstanceAttributeOutput;
use aws_sdk_ec2::operation::stop_instances::StopInstancesOutput;
use aws_sdk_ec2::types::{
    EbsInstanceBlockDevice, HibernationOptions, InstanceBlockDeviceMapping, InstanceState,
    InstanceStateChange, Reservation,
};
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use cordon_common::testing::{ec2_error, query_error};
use cordon_common::timeline::Outcome;

const ID: &str = "i-0123456789abcdef0";

fn incident() -> Incident {
    Incident::from_value(json!({"incident_id": "IR-4", "instance_id": ID})).unwrap()
}

/// How the seeded instance differs from a plain on-demand one.
#[derive(Clone, Copy, Default)]
struct Kind {
    /// As after a first run: protected, shutdown stop, volumes kept, tagged, out of its group.
    protected: bool,
    spot: bool,
    /// Auto Scaling lifecycle state while in `web-asg` (`None`: in no group).
    lifecycle: Option<&'static str>,
    state: Option<&'static str>,
    hibernation: bool,
}

/// The instance as it is before (`protected = false`) or after (`true`) a first run.
struct World {
    describe: Rule,
    attribute: Rule,
    modify: Rule,
    tag: Rule,
    asg: Rule,
    detach: Rule,
    stop: Rule,
}

fn instance(kind: Kind) -> Instance {
    let mut i = Instance::builder()
        .instance_id(ID)
        .state(
            InstanceState::builder()
                .name(InstanceStateName::from(kind.state.unwrap_or("running")))
                .build(),
        )
        .block_device_mappings(
            InstanceBlockDeviceMapping::builder()
                .device_name("/dev/xvda")
                .ebs(
                    EbsInstanceBlockDevice::builder()
                        .volume_id("vol-root")
                        .delete_on_termination(!kind.protected)
                        .build(),
                )
                .build(),
        );
    if kind.protected {
        i = i.tags(
            aws_sdk_ec2::types::Tag::builder()
                .key(TAG_INCIDENT)
                .value("IR-4")
                .build(),
        );
    }
    if kind.spot {
        i = i.instance_lifecycle(InstanceLifecycleType::Spot);
    }
    if kind.hibernation {
        i = i.hibernation_options(HibernationOptions::builder().configured(true).build());
    }
    i.build()
}

fn world(kind: Kind) -> World {
    let protected = kind.protected;
    World {
        describe: mock!(aws_sdk_ec2::Client::describe_instances)
            .match_requests(|r| r.instance_ids() == [ID])
            .then_output(move || {
                DescribeInstancesOutput::builder()
                    .reservations(Reservation::builder().instances(instance(kind)).build())
                    .build()
            }),
        attribute: mock!(aws_sdk_ec2::Client::describe_instance_attribute).then_compute_output(
            move |r| match r.attribute() {
                Some(InstanceAttributeName::DisableApiTermination) => {
                    DescribeInstanceAttributeOutput::builder()
                        .disable_api_termination(
                            AttributeBooleanValue::builder().value(protected).build(),
                        )
                        .build()
                }
                _ => DescribeInstanceAttributeOutput::builder()
                    .instance_initiated_shutdown_behavior(
                        AttributeValue::builder()
                            .value(if protected { "stop" } else { "terminate" })
                            .build(),
                    )
                    .build(),
            },
        ),
        modify: mock!(aws_sdk_ec2::Client::modify_instance_attribute)
            .match_requests(|r| r.instance_id() == Some(ID))
            .then_output(|| ModifyInstanceAttributeOutput::builder().build()),
        tag: mock!(aws_sdk_ec2::Client::create_tags)
            .match_requests(|r| {
                r.resources() == [ID]
                    && r.tags()[0].key() == Some(TAG_INCIDENT)
                    && r.tags()[0].value() == Some("IR-4")
            })
            .then_output(|| CreateTagsOutput::builder().build()),
        asg: mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_instances)
            .match_requests(|r| r.instance_ids() == [ID])
            .then_output(move || {
                let mut o = DescribeAutoScalingInstancesOutput::builder();
                if let Some(state) = kind.lifecycle.filter(|_| !protected) {
                    o = o.auto_scaling_instances(
                        AutoScalingInstanceDetails::builder()
                            .instance_id(ID)
                            .auto_scaling_group_name("web-asg")
                            .lifecycle_state(state)
                            .build(),
                    );
                }
                o.build()
            }),
        detach: mock!(aws_sdk_autoscaling::Client::detach_instances)
            .match_requests(|r| {
                r.auto_scaling_group_name() == Some("web-asg")
                    && r.instance_ids() == [ID]
                    && r.should_decrement_desired_capacity() == Some(false)
            })
            .then_output(|| DetachInstancesOutput::builder().build()),
        stop: mock!(aws_sdk_ec2::Client::stop_instances)
            .match_requests(move |r| {
                r.instance_ids() == [ID]
                    && r.force().is_none()
                    && r.hibernate() == kind.hibernation.then_some(true)
            })
            .then_output(|| {
                StopInstancesOutput::builder()
                    .stopping_instances(
                        InstanceStateChange::builder()
                            .instance_id(ID)
                            .current_state(
                                InstanceState::builder()
                                    .name(InstanceStateName::Stopping)
                                    .build(),
                            )
                            .previous_state(
                                InstanceState::builder()
                                    .name(InstanceStateName::Running)
                                    .build(),
                            )
                            .build(),
                    )
                    .build()
            }),
    }
}

fn clients_with(w: &World, ec2: &[&Rule], asg: &[&Rule]) -> Clients {
    let ec2: Vec<&Rule> = ec2
        .iter()
        .copied()
        .chain([&w.describe, &w.attribute, &w.modify, &w.tag, &w.stop])
        .collect();
    let asg: Vec<&Rule> = asg.iter().copied().chain([&w.asg, &w.detach]).collect();
    Clients {
        ec2: mock_client!(aws_sdk_ec2, RuleMode::MatchAny, ec2.as_slice(), |c| c
            .retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled())),
        autoscaling: mock_client!(
            aws_sdk_autoscaling,
            RuleMode::MatchAny,
            asg.as_slice(),
            |c| c.retry_config(aws_sdk_autoscaling::config::retry::RetryConfig::disabled())
        ),
    }
}

fn clients(w: &World) -> Clients {
    clients_with(w, &[], &[])
}

fn in_service() -> Kind {
    Kind {
        lifecycle: Some("InService"),
        ..Kind::default()
    }
}

#[tokio::test]
async fn protects_keeps_volumes_and_detaches_without_decrementing() {
    let w = world(in_service());
    let out = protect(&clients(&w), &incident()).await.unwrap();
    assert_eq!(
        w.modify.num_calls(),
        3,
        "termination protection, shutdown behaviour, DeleteOnTermination"
    );
    assert_eq!(w.detach.num_calls(), 1);
    assert_eq!(w.tag.num_calls(), 1);
    assert_eq!(
        out.detached_from_auto_scaling_group.as_deref(),
        Some("web-asg")
    );
    assert!(out.gaps.is_empty(), "{:?}", out.gaps);
    assert!(
        out.actions.iter().all(|a| a.outcome == Outcome::Changed),
        "{:?}",
        out.actions
    );
    let keep = out.actions.iter().find(|a| a.target == "vol-root").unwrap();
    assert_eq!(keep.before, json!({"delete_on_termination": true}));
}

#[tokio::test]
async fn a_rerun_changes_nothing() {
    let w = world(Kind {
        protected: true,
        ..in_service()
    });
    let out = protect(&clients(&w), &incident()).await.unwrap();
    assert_eq!(
        w.modify.num_calls() + w.detach.num_calls() + w.tag.num_calls(),
        0
    );
    assert!(out.actions.iter().all(|a| a.outcome == Outcome::Unchanged));
}

#[tokio::test]
async fn a_payload_without_action_means_protect() {
    let w = world(Kind::default());
    let out = handle(
        &clients(&w),
        json!({"incident": {"incident_id": "IR-4", "instance_id": ID}}),
    )
    .await
    .unwrap();
    assert!(matches!(out, Output::Protected(_)));
    assert_eq!(w.stop.num_calls(), 0);
    let bad = handle(
        &clients(&w),
        json!({"action": "terminate", "incident": {"incident_id": "IR-4", "instance_id": ID}}),
    )
    .await
    .unwrap_err();
    assert_eq!(bad.name(), "InvalidInput");
}

#[tokio::test]
async fn a_spot_instance_is_not_asked_for_termination_protection_and_the_gap_says_why() {
    let w = world(Kind {
        spot: true,
        ..in_service()
    });
    let out = protect(&clients(&w), &incident()).await.unwrap();
    assert_eq!(
        w.modify.num_calls(),
        2,
        "shutdown behaviour and DeleteOnTermination only"
    );
    assert!(!out
        .actions
        .iter()
        .any(|a| a.action == "enable termination protection"));
    let gap = out
        .gaps
        .iter()
        .find(|g| g.what == "termination protection")
        .unwrap();
    assert!(gap.reason.contains("Spot"), "{}", gap.reason);
    assert_eq!(w.detach.num_calls(), 1, "the other items still run");
    assert_eq!(w.tag.num_calls(), 1);
}

#[tokio::test]
async fn ec2_refusing_termination_protection_is_a_gap_with_its_words() {
    let w = world(Kind::default());
    let refused = mock!(aws_sdk_ec2::Client::modify_instance_attribute)
        .match_requests(|r| r.disable_api_termination().is_some())
        .then_http_response(ec2_error(400, "UnsupportedOperation"));
    let out = protect(&clients_with(&w, &[&refused], &[]), &incident())
        .await
        .unwrap();
    assert_eq!(refused.num_calls(), 1);
    let gap = out
        .gaps
        .iter()
        .find(|g| g.what == "termination protection")
        .unwrap();
    assert!(
        gap.reason.contains("UnsupportedOperation"),
        "{}",
        gap.reason
    );
    assert_eq!(w.modify.num_calls(), 2, "the other attributes still change");
}

#[tokio::test]
async fn another_failure_fails_the_step_after_every_other_item_ran() {
    let w = world(in_service());
    let denied = mock!(aws_sdk_ec2::Client::modify_instance_attribute)
        .match_requests(|r| r.disable_api_termination().is_some())
        .then_http_response(ec2_error(403, "UnauthorizedOperation"));
    let err = protect(&clients_with(&w, &[&denied], &[]), &incident())
        .await
        .unwrap_err();
    assert_eq!(err.name(), "AccessDenied");
    assert_eq!(w.modify.num_calls(), 2, "shutdown behaviour and volumes");
    assert_eq!(w.detach.num_calls(), 1, "still detached from the group");
    assert_eq!(w.tag.num_calls(), 1, "still tagged");
}

#[tokio::test]
async fn a_lifecycle_state_auto_scaling_refuses_is_a_gap_and_no_call() {
    for state in ["Terminating:Wait", "Pending:Wait", "EnteringStandby"] {
        let w = world(Kind {
            lifecycle: Some(state),
            ..Kind::default()
        });
        let out = protect(&clients(&w), &incident()).await.unwrap();
        assert_eq!(w.detach.num_calls(), 0, "{state}");
        let gap = out
            .gaps
            .iter()
            .find(|g| g.what == "detach from Auto Scaling group")
            .unwrap();
        assert!(
            gap.reason.contains(state) && gap.reason.contains("web-asg"),
            "{}",
            gap.reason
        );
        assert!(out.detached_from_auto_scaling_group.is_none());
    }
    for state in ["Standby", "Terminating:Retained"] {
        let w = world(Kind {
            lifecycle: Some(state),
            ..Kind::default()
        });
        let out = protect(&clients(&w), &incident()).await.unwrap();
        assert_eq!(w.detach.num_calls(), 1, "{state} is detachable");
        assert!(out.gaps.is_empty());
    }
}

#[tokio::test]
async fn a_validation_error_is_classified_by_reading_the_membership_again() {
    let refused = mock!(aws_sdk_autoscaling::Client::detach_instances)
        .then_http_response(query_error(400, "ValidationError"));
    // Meanwhile the group put it into Terminating:Wait: a gap.
    let w = world(Kind::default());
    let moved = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_instances)
        .sequence()
        .output(|| {
            DescribeAutoScalingInstancesOutput::builder()
                .auto_scaling_instances(
                    AutoScalingInstanceDetails::builder()
                        .instance_id(ID)
                        .auto_scaling_group_name("web-asg")
                        .lifecycle_state("InService")
                        .build(),
                )
                .build()
        })
        .output(|| {
            DescribeAutoScalingInstancesOutput::builder()
                .auto_scaling_instances(
                    AutoScalingInstanceDetails::builder()
                        .instance_id(ID)
                        .auto_scaling_group_name("web-asg")
                        .lifecycle_state("Terminating:Wait")
                        .build(),
                )
                .build()
        })
        .build();
    let out = protect(&clients_with(&w, &[], &[&moved, &refused]), &incident())
        .await
        .unwrap();
    assert_eq!(refused.num_calls(), 1);
    assert!(out
        .gaps
        .iter()
        .any(|g| g.reason.contains("Terminating:Wait")));

    // Still InService: a real failure.
    let w = world(in_service());
    let refused = mock!(aws_sdk_autoscaling::Client::detach_instances)
        .then_http_response(query_error(400, "ValidationError"));
    let err = protect(&clients_with(&w, &[], &[&refused]), &incident())
        .await
        .unwrap_err();
    assert_eq!(err.name(), "AwsRequestFailed");
    assert_eq!(err.aws_code(), Some("ValidationError"));
}

#[tokio::test]
async fn errors_are_named() {
    let w = world(Kind::default());
    let throttled = mock!(aws_sdk_ec2::Client::modify_instance_attribute)
        .then_http_response(ec2_error(503, "RequestLimitExceeded"));
    assert_eq!(
        protect(&clients_with(&w, &[&throttled], &[]), &incident())
            .await
            .unwrap_err()
            .name(),
        "Transient"
    );

    let denied = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_instances)
        .then_http_response(query_error(403, "AccessDenied"));
    let w = world(Kind {
        protected: true,
        ..Kind::default()
    });
    assert_eq!(
        protect(&clients_with(&w, &[], &[&denied]), &incident())
            .await
            .unwrap_err()
            .name(),
        "AccessDenied"
    );
}

#[tokio::test]
async fn stop_stops_a_running_instance_without_hibernation_or_force() {
    let w = world(Kind::default());
    let out = handle(
        &clients(&w),
        json!({"action": "stop", "incident": {"incident_id": "IR-4", "instance_id": ID}}),
    )
    .await
    .unwrap();
    let Output::Stopped(out) = out else {
        panic!("not a stop output")
    };
    assert_eq!(w.stop.num_calls(), 1);
    assert_eq!(out.state.as_deref(), Some("stopping"));
    assert!(!out.hibernated);
    assert_eq!(out.actions[0].action, "stop instance");
    assert_eq!(out.actions[0].before, json!("running"));
    assert_eq!(w.modify.num_calls() + w.tag.num_calls(), 0);
}

#[tokio::test]
async fn stop_hibernates_an_instance_launched_with_hibernation() {
    let w = world(Kind {
        hibernation: true,
        ..Kind::default()
    });
    let out = stop(&clients(&w), &incident()).await.unwrap();
    assert_eq!(w.stop.num_calls(), 1, "Hibernate=true was sent");
    assert!(out.hibernated);
    assert_eq!(out.actions[0].action, "hibernate instance");
}

#[tokio::test]
async fn stop_leaves_a_stopped_instance_alone() {
    for state in ["stopped", "stopping"] {
        let w = world(Kind {
            state: Some(state),
            ..Kind::default()
        });
        let out = stop(&clients(&w), &incident()).await.unwrap();
        assert_eq!(w.stop.num_calls(), 0);
        assert_eq!(out.actions[0].outcome, Outcome::Unchanged);
    }
}

#[tokio::test]
async fn stop_refusals_are_gaps() {
    // Still in its Auto Scaling group: stopped, the group would terminate it.
    let w = world(in_service());
    let out = stop(&clients(&w), &incident()).await.unwrap();
    assert_eq!(w.stop.num_calls(), 0);
    assert!(out.gaps[0].reason.contains("web-asg"), "{:?}", out.gaps);

    // On standby the group does not health-check it: stopped.
    let w = world(Kind {
        lifecycle: Some("Standby"),
        ..Kind::default()
    });
    stop(&clients(&w), &incident()).await.unwrap();
    assert_eq!(w.stop.num_calls(), 1);

    // EC2 refuses (a one-time Spot request): a gap with EC2's words.
    let w = world(Kind {
        spot: true,
        ..Kind::default()
    });
    let refused = mock!(aws_sdk_ec2::Client::stop_instances)
        .then_http_response(ec2_error(400, "UnsupportedOperation"));
    let out = stop(&clients_with(&w, &[&refused], &[]), &incident())
        .await
        .unwrap();
    assert!(out.gaps[0].reason.contains("UnsupportedOperation"));

    // Terminated already: nothing to stop.
    let w = world(Kind {
        state: Some("terminated"),
        ..Kind::default()
    });
    let out = stop(&clients(&w), &incident()).await.unwrap();
    assert_eq!(w.stop.num_calls(), 0);
    assert!(out.gaps[0].reason.contains("terminated"));

    // Anything else fails.
    let w = world(Kind::default());
    let denied = mock!(aws_sdk_ec2::Client::stop_instances)
        .then_http_response(ec2_error(403, "UnauthorizedOperation"));
    let err = stop(&clients_with(&w, &[&denied], &[]), &incident())
        .await
        .unwrap_err();
    assert_eq!(err.name(), "AccessDenied");
}
