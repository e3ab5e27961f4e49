use super::*;
use aws_sdk_autoscaling::operation::describe_auto_scaling_instances::DescribeAutoScalingInstancesOutput;
use aws_sdk_autoscaling::operation::detach_instances::DetachInstancesOutput;
use aws_sdk_autoscaling::types::AutoScalingInstanceDetails;
use aws_sdk_ec2::operation::create_tags::CreateTagsOutput;
use aws_sdk_ec2::operation::describe_instance_attribute::DescribeInstanceAttributeOutput;
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::modify_instance_attribute::ModifyInstanceAttributeOutput;
use aws_sdk_ec2::types::{
    EbsInstanceBlockDevice, Instance, InstanceBlockDeviceMapping, Reservation,
};
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use cordon_common::testing::{ec2_error, query_error};
use cordon_common::timeline::Outcome;

const ID: &str = "i-0123456789abcdef0";

fn incident() -> Incident {
    Incident::from_value(json!({"incident_id": "IR-4", "instance_id": ID})).unwrap()
}

/// The instance as it is before (`protected = false`) or after (`true`) a first run.
struct World {
    describe: Rule,
    attribute: Rule,
    modify: Rule,
    tag: Rule,
    asg: Rule,
    detach: Rule,
}

fn world(protected: bool) -> World {
    World {
        describe: mock!(aws_sdk_ec2::Client::describe_instances).then_output(move || {
            let mut i = Instance::builder().instance_id(ID).block_device_mappings(
                InstanceBlockDeviceMapping::builder()
                    .device_name("/dev/xvda")
                    .ebs(
                        EbsInstanceBlockDevice::builder()
                            .volume_id("vol-root")
                            .delete_on_termination(!protected)
                            .build(),
                    )
                    .build(),
            );
            if protected {
                i = i.tags(
                    aws_sdk_ec2::types::Tag::builder()
                        .key(TAG_INCIDENT)
                        .value("IR-4")
                        .build(),
                );
            }
            DescribeInstancesOutput::builder()
                .reservations(Reservation::builder().instances(i.build()).build())
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
        asg: mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_instances).then_output(
            move || {
                let mut o = DescribeAutoScalingInstancesOutput::builder();
                if !protected {
                    o = o.auto_scaling_instances(
                        AutoScalingInstanceDetails::builder()
                            .instance_id(ID)
                            .auto_scaling_group_name("web-asg")
                            .build(),
                    );
                }
                o.build()
            },
        ),
        detach: mock!(aws_sdk_autoscaling::Client::detach_instances)
            .match_requests(|r| {
                r.auto_scaling_group_name() == Some("web-asg")
                    && r.instance_ids() == [ID]
                    && r.should_decrement_desired_capacity() == Some(false)
            })
            .then_output(|| DetachInstancesOutput::builder().build()),
    }
}

fn clients(w: &World) -> Clients {
    Clients {
        ec2: mock_client!(
            aws_sdk_ec2,
            RuleMode::MatchAny,
            [&w.describe, &w.attribute, &w.modify, &w.tag],
            |c| c.retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled())
        ),
        autoscaling: mock_client!(
            aws_sdk_autoscaling,
            RuleMode::MatchAny,
            [&w.asg, &w.detach],
            |c| c.retry_config(aws_sdk_autoscaling::config::retry::RetryConfig::disabled())
        ),
    }
}

#[tokio::test]
async fn protects_keeps_volumes_and_detaches_without_decrementing() {
    let w = world(false);
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
    let w = world(true);
    let out = protect(&clients(&w), &incident()).await.unwrap();
    assert_eq!(
        w.modify.num_calls() + w.detach.num_calls() + w.tag.num_calls(),
        0
    );
    assert!(out.actions.iter().all(|a| a.outcome == Outcome::Unchanged));
}

#[tokio::test]
async fn errors_are_named() {
    let w = world(false);
    let throttled = mock!(aws_sdk_ec2::Client::modify_instance_attribute)
        .then_http_response(ec2_error(503, "RequestLimitExceeded"));
    let c = Clients {
        ec2: mock_client!(
            aws_sdk_ec2,
            RuleMode::MatchAny,
            [&w.describe, &w.attribute, &throttled],
            |c| c.retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled())
        ),
        autoscaling: mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, [&w.asg]),
    };
    assert_eq!(
        protect(&c, &incident()).await.unwrap_err().name(),
        "Transient"
    );

    let denied = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_instances)
        .then_http_response(query_error(403, "AccessDenied"));
    let w = world(true);
    let c = Clients {
        ec2: mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&w.describe, &w.attribute]),
        autoscaling: mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, [&denied]),
    };
    assert_eq!(
        protect(&c, &incident()).await.unwrap_err().name(),
        "AccessDenied"
    );
}
