use super::*;
use aws_sdk_autoscaling::operation::describe_auto_scaling_instances::DescribeAutoScalingInstancesOutput;
use aws_sdk_autoscaling::types::AutoScalingInstanceDetails;
use aws_sdk_ec2::operation::describe_iam_instance_profile_associations::DescribeIamInstanceProfileAssociationsOutput;
use aws_sdk_ec2::operation::describe_instance_attribute::DescribeInstanceAttributeOutput;
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::describe_network_interfaces::DescribeNetworkInterfacesOutput;
use aws_sdk_ec2::operation::describe_security_groups::DescribeSecurityGroupsOutput;
use aws_sdk_ec2::operation::describe_volumes::DescribeVolumesOutput;
use aws_sdk_ec2::types::{AttributeBooleanValue, AttributeValue};
use aws_sdk_ec2::types::{
    ConnectionTrackingConfiguration, HibernationOptions, HttpTokensState, InstanceLifecycleType,
    InstanceMetadataEndpointState, InstanceMetadataOptionsResponse, NetworkInterface,
};
use aws_sdk_ec2::types::{
    EbsInstanceBlockDevice, GroupIdentifier, IamInstanceProfile, IamInstanceProfileAssociation,
    IamInstanceProfileAssociationState, InstanceBlockDeviceMapping, InstanceNetworkInterface,
    InstanceState, InstanceStateName, Reservation, SecurityGroup, Tag, Volume,
};
use aws_sdk_elasticloadbalancingv2::operation::describe_target_groups::DescribeTargetGroupsOutput;
use aws_sdk_elasticloadbalancingv2::operation::describe_target_health::DescribeTargetHealthOutput;
use aws_sdk_elasticloadbalancingv2::types::{
    TargetDescription, TargetGroup, TargetHealthDescription,
};
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_sdk_ssm::operation::describe_instance_information::DescribeInstanceInformationOutput;
use aws_sdk_ssm::types::{InstanceInformation, PingStatus, PlatformType};
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use cordon_common::testing::{ec2_error, s3_error};
use serde_json::json;

const ID: &str = "i-0123456789abcdef0";

fn incident() -> Incident {
    Incident::from_value(json!({"incident_id": "IR-1", "instance_id": ID})).unwrap()
}

fn seeded_instance() -> aws_sdk_ec2::types::Instance {
    let eni = |id: &str, idx: i32| {
        InstanceNetworkInterface::builder()
            .network_interface_id(id)
            .vpc_id("vpc-1")
            .groups(
                GroupIdentifier::builder()
                    .group_id("sg-web")
                    .group_name("web")
                    .build(),
            )
            .attachment(
                aws_sdk_ec2::types::InstanceNetworkInterfaceAttachment::builder()
                    .device_index(idx)
                    .build(),
            )
            .build()
    };
    let vol = |dev: &str, id: &str| {
        InstanceBlockDeviceMapping::builder()
            .device_name(dev)
            .ebs(
                EbsInstanceBlockDevice::builder()
                    .volume_id(id)
                    .delete_on_termination(true)
                    .build(),
            )
            .build()
    };
    aws_sdk_ec2::types::Instance::builder()
        .instance_id(ID)
        .state(
            InstanceState::builder()
                .name(InstanceStateName::Running)
                .build(),
        )
        .vpc_id("vpc-1")
        .block_device_mappings(vol("/dev/xvda", "vol-root"))
        .block_device_mappings(vol("/dev/sdf", "vol-data"))
        .network_interfaces(eni("eni-a", 0))
        .network_interfaces(eni("eni-b", 1))
        .security_groups(GroupIdentifier::builder().group_id("sg-web").build())
        .iam_instance_profile(
            IamInstanceProfile::builder()
                .arn("arn:aws:iam::1:instance-profile/app")
                .build(),
        )
        .tags(Tag::builder().key("Name").value("web-01").build())
        .instance_lifecycle(InstanceLifecycleType::Spot)
        .hibernation_options(HibernationOptions::builder().configured(true).build())
        .metadata_options(
            InstanceMetadataOptionsResponse::builder()
                .http_endpoint(InstanceMetadataEndpointState::Enabled)
                .http_tokens(HttpTokensState::Required)
                .http_put_response_hop_limit(2)
                .build(),
        )
        .build()
}

fn describe_ok() -> Rule {
    mock!(aws_sdk_ec2::Client::describe_instances)
        .match_requests(|r| r.instance_ids() == [ID])
        .then_output(|| {
            DescribeInstancesOutput::builder()
                .reservations(Reservation::builder().instances(seeded_instance()).build())
                .build()
        })
}

fn no_retry(c: aws_sdk_ec2::config::Builder) -> aws_sdk_ec2::config::Builder {
    c.retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled())
}

/// The calls every first `record` makes besides the ones a test is about.
struct Others {
    ssm: Rule,
    asg: Rule,
    target_groups: Rule,
    target_health: Rule,
    attribute: Rule,
    get: Rule,
    enis: Rule,
}

fn others() -> Others {
    Others {
        ssm: mock!(aws_sdk_ssm::Client::describe_instance_information).then_output(|| {
            DescribeInstanceInformationOutput::builder()
                .instance_information_list(
                    InstanceInformation::builder()
                        .instance_id(ID)
                        .ping_status(PingStatus::Online)
                        .platform_type(PlatformType::Linux)
                        .build(),
                )
                .build()
        }),
        asg: mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_instances)
            .match_requests(|r| r.instance_ids() == [ID])
            .then_output(|| {
                DescribeAutoScalingInstancesOutput::builder()
                    .auto_scaling_instances(
                        AutoScalingInstanceDetails::builder()
                            .instance_id(ID)
                            .auto_scaling_group_name("web-asg")
                            .lifecycle_state("InService")
                            .build(),
                    )
                    .build()
            }),
        target_groups: mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_groups)
            .then_output(|| {
                DescribeTargetGroupsOutput::builder()
                    .target_groups(
                        TargetGroup::builder()
                            .target_group_arn("arn:tg/web")
                            .vpc_id("vpc-1")
                            .build(),
                    )
                    .target_groups(
                        TargetGroup::builder()
                            .target_group_arn("arn:tg/other-vpc")
                            .vpc_id("vpc-2")
                            .build(),
                    )
                    .build()
            }),
        target_health: mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
            .match_requests(|r| r.target_group_arn() == Some("arn:tg/web"))
            .then_output(|| {
                DescribeTargetHealthOutput::builder()
                    .target_health_descriptions(
                        TargetHealthDescription::builder()
                            .target(TargetDescription::builder().id(ID).port(80).build())
                            .build(),
                    )
                    .build()
            }),
        attribute: mock!(aws_sdk_ec2::Client::describe_instance_attribute).then_compute_output(
            |r| match r.attribute() {
                Some(InstanceAttributeName::DisableApiTermination) => {
                    DescribeInstanceAttributeOutput::builder()
                        .disable_api_termination(
                            AttributeBooleanValue::builder().value(false).build(),
                        )
                        .build()
                }
                _ => DescribeInstanceAttributeOutput::builder()
                    .instance_initiated_shutdown_behavior(
                        AttributeValue::builder().value("terminate").build(),
                    )
                    .build(),
            },
        ),
        get: mock!(aws_sdk_s3::Client::get_object).then_http_response(s3_error(404, "NoSuchKey")),
        enis: mock!(aws_sdk_ec2::Client::describe_network_interfaces)
            .match_requests(|r| {
                r.filters()
                    .iter()
                    .any(|f| f.name() == Some("attachment.instance-id") && f.values() == [ID])
            })
            .then_output(|| {
                DescribeNetworkInterfacesOutput::builder()
                    .network_interfaces(
                        NetworkInterface::builder()
                            .network_interface_id("eni-a")
                            .connection_tracking_configuration(
                                ConnectionTrackingConfiguration::builder()
                                    .tcp_established_timeout(3600)
                                    .udp_stream_timeout(120)
                                    .udp_timeout(30)
                                    .build(),
                            )
                            .build(),
                    )
                    .network_interfaces(
                        NetworkInterface::builder()
                            .network_interface_id("eni-b")
                            .build(),
                    )
                    .build()
            }),
    }
}

fn clients(ec2_rules: &[&Rule], s3_rules: &[&Rule], o: &Others) -> Clients {
    let s3 = mock_client!(
        aws_sdk_s3,
        RuleMode::MatchAny,
        s3_rules
            .iter()
            .copied()
            .chain([&o.get])
            .collect::<Vec<_>>()
            .as_slice()
    );
    let ec2 = mock_client!(
        aws_sdk_ec2,
        RuleMode::MatchAny,
        ec2_rules
            .iter()
            .copied()
            .chain([&o.attribute, &o.enis])
            .collect::<Vec<_>>()
            .as_slice(),
        no_retry
    );
    Clients {
        ec2,
        ssm: mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&o.ssm]),
        autoscaling: mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, [&o.asg]),
        elbv2: mock_client!(
            aws_sdk_elasticloadbalancingv2,
            RuleMode::MatchAny,
            [&o.target_groups, &o.target_health]
        ),
        evidence: EvidenceWriter::new(s3, "evidence"),
        collection: CollectionSettings::default(),
    }
}

#[tokio::test]
async fn record_writes_metadata_json_and_returns_a_summary() {
    let describe = describe_ok();
    let volumes = mock!(aws_sdk_ec2::Client::describe_volumes)
        .match_requests(|r| {
            r.filters()
                .iter()
                .any(|f| f.name() == Some("attachment.instance-id") && f.values() == [ID])
        })
        .then_output(|| {
            DescribeVolumesOutput::builder()
                .volumes(Volume::builder().volume_id("vol-root").size(8).build())
                .volumes(Volume::builder().volume_id("vol-data").size(100).build())
                .build()
        });
    let groups = mock!(aws_sdk_ec2::Client::describe_security_groups)
        .match_requests(|r| r.group_ids() == ["sg-web"])
        .then_output(|| {
            DescribeSecurityGroupsOutput::builder()
                .security_groups(
                    SecurityGroup::builder()
                        .group_id("sg-web")
                        .group_name("web")
                        .build(),
                )
                .build()
        });
    let assoc = mock!(aws_sdk_ec2::Client::describe_iam_instance_profile_associations)
        .match_requests(|r| {
            r.filters()
                .iter()
                .any(|f| f.name() == Some("instance-id") && f.values() == [ID])
        })
        .then_output(|| {
            DescribeIamInstanceProfileAssociationsOutput::builder()
                .iam_instance_profile_associations(
                    IamInstanceProfileAssociation::builder()
                        .association_id("iip-assoc-1")
                        .instance_id(ID)
                        .state(IamInstanceProfileAssociationState::Associated)
                        .iam_instance_profile(
                            IamInstanceProfile::builder()
                                .arn("arn:aws:iam::1:instance-profile/app")
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
    let put_state = mock!(aws_sdk_s3::Client::put_object)
        .match_requests(|r| {
            let body: serde_json::Value =
                serde_json::from_slice(r.body().bytes().unwrap_or_default()).unwrap_or_default();
            r.key() == Some("IR-1/i-0123456789abcdef0/pre-incident-state.json")
                && body["security_groups_by_interface"]["eni-b"] == json!(["sg-web"])
                && body["instance_profile"]["association_id"] == "iip-assoc-1"
                && body["disable_api_termination"] == false
                && body["instance_initiated_shutdown_behavior"] == "terminate"
                && body["delete_on_termination"]["vol-data"]["delete_on_termination"] == true
                && body["auto_scaling_group"] == "web-asg"
                && body["target_groups"] == json!([{"target_group_arn": "arn:tg/web", "port": 80}])
                && body["connection_tracking_by_interface"]["eni-a"]
                    == json!({"tcp_established_timeout": 3600, "udp_stream_timeout": 120, "udp_timeout": 30})
                && body["connection_tracking_by_interface"]["eni-b"]
                    == json!({"tcp_established_timeout": null, "udp_stream_timeout": null, "udp_timeout": null})
                && body["metadata_options"]["http_endpoint"] == "enabled"
                && body["metadata_options"]["http_tokens"] == "required"
                && body["metadata_options"]["http_put_response_hop_limit"] == 2
                && body["instance_state"] == "running"
                && body["hibernation_configured"] == true
                && body["instance_lifecycle"] == "spot"
                && body["auto_scaling_lifecycle_state"] == "InService"
        })
        .then_output(|| PutObjectOutput::builder().build());
    let put = mock!(aws_sdk_s3::Client::put_object)
        .match_requests(|r| {
            let body: serde_json::Value =
                serde_json::from_slice(r.body().bytes().unwrap_or_default()).unwrap_or_default();
            r.key() == Some("IR-1/i-0123456789abcdef0/metadata.json")
                && body["instance"]["instance_id"] == ID
                && body["volumes"].as_array().map(Vec::len) == Some(2)
                && body["instance"]["network_interfaces"]
                    .as_array()
                    .map(Vec::len)
                    == Some(2)
                && body["security_groups"][0]["group_id"] == "sg-web"
                && body["iam_instance_profile_associations"][0]["association_id"] == "iip-assoc-1"
                && body["instance"]["tags"]["Name"] == "web-01"
                && body["network_interfaces"][0]["connection_tracking_configuration"]
                    ["tcp_established_timeout"]
                    == 3600
                && body["instance"]["instance_lifecycle"] == "spot"
        })
        .then_output(|| PutObjectOutput::builder().build());
    let o = others();
    let c = clients(
        &[&describe, &volumes, &groups, &assoc],
        &[&put, &put_state],
        &o,
    );

    let summary = record(&c, &incident()).await.unwrap();

    assert_eq!(
        put.num_calls(),
        1,
        "metadata.json written once with the described content"
    );
    assert_eq!(
        put_state.num_calls(),
        1,
        "pre-incident-state.json written once with what an undo needs"
    );
    assert_eq!(
        summary.profile_arn.as_deref(),
        Some("arn:aws:iam::1:instance-profile/app")
    );
    assert_eq!(summary.auto_scaling_group.as_deref(), Some("web-asg"));
    assert!(summary.ssm.ready());
    assert!(!summary.resumed);
    assert_eq!(summary.artifacts.len(), 2);
    assert_eq!(summary.volume_ids, ["vol-root", "vol-data"]);
    assert_eq!(summary.network_interface_ids, ["eni-a", "eni-b"]);
    assert_eq!(summary.vpc_id.as_deref(), Some("vpc-1"));
    assert_eq!(summary.state.as_deref(), Some("running"));
    assert_eq!(summary.platform, "linux");
    assert_eq!(summary.instance_lifecycle.as_deref(), Some("spot"));
    assert_eq!(o.enis.num_calls(), 1);
    assert_eq!(
        summary.artifacts[0].key,
        "IR-1/i-0123456789abcdef0/metadata.json"
    );
}

#[tokio::test]
async fn an_unknown_instance_is_instance_not_found_and_writes_nothing() {
    let describe = mock!(aws_sdk_ec2::Client::describe_instances)
        .then_http_response(ec2_error(400, "InvalidInstanceID.NotFound"));
    let put =
        mock!(aws_sdk_s3::Client::put_object).then_output(|| PutObjectOutput::builder().build());
    let o = others();
    let c = clients(&[&describe], &[&put], &o);
    let err = record(&c, &incident()).await.unwrap_err();
    assert_eq!(err.name(), "InstanceNotFound");
    assert_eq!(put.num_calls(), 0);

    let empty = mock!(aws_sdk_ec2::Client::describe_instances)
        .then_output(|| DescribeInstancesOutput::builder().build());
    let c = clients(&[&empty], &[&put], &o);
    assert_eq!(
        record(&c, &incident()).await.unwrap_err().name(),
        "InstanceNotFound"
    );
}

#[tokio::test]
async fn throttling_is_transient_and_denial_is_access_denied() {
    let put =
        mock!(aws_sdk_s3::Client::put_object).then_output(|| PutObjectOutput::builder().build());
    let throttled = mock!(aws_sdk_ec2::Client::describe_instances)
        .then_http_response(ec2_error(503, "RequestLimitExceeded"));
    let o = others();
    let err = record(&clients(&[&throttled], &[&put], &o), &incident())
        .await
        .unwrap_err();
    assert_eq!(err.name(), "Transient");
    assert_eq!(err.aws_code(), Some("RequestLimitExceeded"));

    let denied = mock!(aws_sdk_ec2::Client::describe_instances)
        .then_http_response(ec2_error(403, "UnauthorizedOperation"));
    let err = record(&clients(&[&denied], &[&put], &o), &incident())
        .await
        .unwrap_err();
    assert_eq!(err.name(), "AccessDenied");
}

#[tokio::test]
async fn validate_calls_nothing_and_rejects_bad_requests() {
    // No rules at all: any AWS call would fail the test with a "no matching rule" error.
    let put =
        mock!(aws_sdk_s3::Client::put_object).then_output(|| PutObjectOutput::builder().build());
    let o = others();
    let c = clients(&[], &[&put], &o);
    let ok = handle(
        &c,
        json!({"action": "validate", "request": {"instance_id": ID}, "execution_name": "exec-9"}),
    )
    .await
    .unwrap();
    let ok = serde_json::to_value(ok).unwrap();
    assert_eq!(ok["incident"]["incident_id"], "exec-9");
    // The deployment's default budget is written into the incident.
    assert_eq!(ok["incident"]["options"]["collection_budget_seconds"], 1200);

    for bad in [
        // Above this deployment's maximum (and above any deployment's).
        json!({"action": "validate", "request": {"instance_id": ID, "options": {"collection_budget_seconds": 3601}}, "execution_name": "e"}),
        json!({"action": "validate", "request": {"instance_id": ID, "options": {"collection_budget_seconds": 299}}, "execution_name": "e"}),
        json!({"action": "validate", "request": {"instance_id": ID, "options": {"collection_network": "before-containment"}}, "execution_name": "e"}),
        json!({"action": "validate", "request": {"instance_id": ID, "options": {"collection_network": "anywhere"}}, "execution_name": "e"}),
        json!({"action": "validate", "request": {"instance_id": "i-nope"}, "execution_name": "e"}),
        json!({"action": "validate", "request": {}, "execution_name": "e"}),
        json!({"action": "record", "incident": {"instance_id": ID}}),
        json!({"action": "explode"}),
        json!("not an event"),
    ] {
        let err = handle(&c, bad.clone()).await.unwrap_err();
        assert_eq!(err.name(), "InvalidInput", "{bad}");
    }
    assert_eq!(put.num_calls(), 0);
    assert_eq!(
        o.ssm.num_calls() + o.get.num_calls(),
        0,
        "validation calls nothing"
    );

    // A deployment with a lower maximum refuses what another would take.
    let mut c = c;
    c.collection.max_budget_seconds = 600;
    let err = handle(
        &c,
        json!({"action": "validate", "request": {"instance_id": ID, "options": {"collection_budget_seconds": 900}}, "execution_name": "e"}),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("more than this deployment allows (600)"),
        "{err}"
    );
}

#[tokio::test]
async fn a_rerun_keeps_the_first_pre_incident_state_and_writes_nothing() {
    let describe = describe_ok();
    let stored = PreIncidentState {
        instance_id: ID.into(),
        security_groups_by_interface: [("eni-a".to_owned(), vec!["sg-web".to_owned()])].into(),
        instance_profile: None,
        disable_api_termination: Some(false),
        instance_initiated_shutdown_behavior: Some("terminate".into()),
        delete_on_termination: BTreeMap::new(),
        auto_scaling_group: None,
        target_groups: vec![],
        tags: BTreeMap::new(),
        connection_tracking_by_interface: BTreeMap::new(),
        metadata_options: None,
        instance_state: Some("running".into()),
        hibernation_configured: None,
        instance_lifecycle: Some("on-demand".into()),
        auto_scaling_lifecycle_state: None,
        summary: Summary {
            instance_id: ID.into(),
            state: Some("running".into()),
            platform: "linux".into(),
            vpc_id: Some("vpc-1".into()),
            volume_ids: vec!["vol-root".into()],
            network_interface_ids: vec!["eni-a".into()],
            profile_arn: Some("arn:aws:iam::1:instance-profile/app".into()),
            auto_scaling_group: None,
            target_groups: vec![],
            instance_lifecycle: Some("on-demand".into()),
            ssm: SsmStatus {
                managed: false,
                online: false,
                ping_status: None,
                platform_type: None,
            },
            resumed: false,
            artifacts: vec![],
        },
    };
    let body = serde_json::to_vec(&stored).unwrap();
    let get = mock!(aws_sdk_s3::Client::get_object)
        .match_requests(|r| r.key() == Some("IR-1/i-0123456789abcdef0/pre-incident-state.json"))
        .then_output(move || GetObjectOutput::builder().body(body.clone().into()).build());
    let head = mock!(aws_sdk_s3::Client::head_object).then_output(|| {
        HeadObjectOutput::builder()
            .metadata("sha256", "ab")
            .content_length(10)
            .build()
    });
    let put =
        mock!(aws_sdk_s3::Client::put_object).then_output(|| PutObjectOutput::builder().build());
    let o = others();
    let c = clients(&[&describe], &[&get, &head, &put], &o);

    let summary = record(&c, &incident()).await.unwrap();

    assert!(summary.resumed);
    assert_eq!(
        summary.profile_arn.as_deref(),
        Some("arn:aws:iam::1:instance-profile/app"),
        "the profile before the first run"
    );
    assert!(summary.ssm.ready(), "SSM status is asked afresh");
    assert_eq!(summary.artifacts.len(), 2);
    assert_eq!(put.num_calls(), 0, "nothing written again");
}

#[test]
fn a_pre_incident_state_recorded_before_issue_10_still_reads() {
    // What an earlier version wrote: none of the connection tracking, metadata options,
    // hibernation, lifecycle or instance state fields.
    let old = json!({
        "instance_id": ID,
        "security_groups_by_interface": {"eni-a": ["sg-web"]},
        "instance_profile": null,
        "disable_api_termination": false,
        "instance_initiated_shutdown_behavior": "stop",
        "delete_on_termination": {},
        "auto_scaling_group": null,
        "target_groups": [],
        "tags": {},
        "summary": {
            "instance_id": ID, "state": "running", "platform": "linux", "vpc_id": "vpc-1",
            "volume_ids": [], "network_interface_ids": ["eni-a"], "profile_arn": null,
            "auto_scaling_group": null, "target_groups": [],
            "ssm": {"managed": false, "online": false, "ping_status": null, "platform_type": null}
        }
    });
    let state: PreIncidentState = serde_json::from_value(old).unwrap();
    assert!(state.connection_tracking_by_interface.is_empty());
    assert_eq!(state.metadata_options, None);
    assert_eq!(state.summary.instance_lifecycle, None);
}

#[test]
fn an_instance_without_a_lifecycle_is_on_demand() {
    let i = aws_sdk_ec2::types::Instance::builder()
        .instance_id(ID)
        .build();
    assert_eq!(instance_lifecycle(&i), "on-demand");
    assert_eq!(instance_lifecycle(&seeded_instance()), "spot");
}

#[tokio::test]
async fn a_retry_after_metadata_json_was_written_keeps_it_and_writes_the_pre_incident_state() {
    let describe = describe_ok();
    let volumes = mock!(aws_sdk_ec2::Client::describe_volumes)
        .then_output(|| DescribeVolumesOutput::builder().build());
    let groups = mock!(aws_sdk_ec2::Client::describe_security_groups)
        .then_output(|| DescribeSecurityGroupsOutput::builder().build());
    let assoc = mock!(aws_sdk_ec2::Client::describe_iam_instance_profile_associations)
        .then_output(|| DescribeIamInstanceProfileAssociationsOutput::builder().build());
    // What the first attempt wrote: different from what a rebuild gives (SSM was offline then).
    let written =
        serde_json::to_vec_pretty(&json!({"incident_id": "IR-1", "ssm": {"online": false}}))
            .unwrap();
    let written_sha = cordon_common::evidence::sha256_hex(&written);
    let get_metadata = mock!(aws_sdk_s3::Client::get_object)
        .match_requests(|r| r.key() == Some("IR-1/i-0123456789abcdef0/metadata.json"))
        .then_output(move || {
            GetObjectOutput::builder()
                .body(written.clone().into())
                .build()
        });
    let head = {
        let sha = written_sha.clone();
        mock!(aws_sdk_s3::Client::head_object)
            .match_requests(|r| r.key() == Some("IR-1/i-0123456789abcdef0/metadata.json"))
            .then_output(move || {
                let raw: Vec<u8> = (0..32)
                    .map(|i| u8::from_str_radix(&sha[2 * i..2 * i + 2], 16).unwrap())
                    .collect();
                HeadObjectOutput::builder()
                    .checksum_sha256(aws_smithy_types::base64::encode(raw))
                    .content_length(40)
                    .build()
            })
    };
    let put_metadata = mock!(aws_sdk_s3::Client::put_object)
        .match_requests(|r| r.key() == Some("IR-1/i-0123456789abcdef0/metadata.json"))
        .then_http_response(s3_error(412, "PreconditionFailed"));
    let put_state = mock!(aws_sdk_s3::Client::put_object)
        .match_requests(|r| r.key() == Some("IR-1/i-0123456789abcdef0/pre-incident-state.json"))
        .then_output(|| PutObjectOutput::builder().build());
    let o = others();
    let c = clients(
        &[&describe, &volumes, &groups, &assoc],
        &[&get_metadata, &head, &put_metadata, &put_state],
        &o,
    );

    let summary = record(&c, &incident()).await.unwrap();

    assert_eq!(put_metadata.num_calls(), 0, "metadata.json is not rebuilt");
    assert_eq!(put_state.num_calls(), 1);
    assert!(!summary.resumed);
    assert_eq!(summary.artifacts.len(), 2);
    assert_eq!(
        summary.artifacts[0].key,
        "IR-1/i-0123456789abcdef0/metadata.json"
    );
    assert_eq!(summary.artifacts[0].sha256, written_sha, "what S3 holds");
    assert_eq!(
        summary.artifacts[1].key,
        "IR-1/i-0123456789abcdef0/pre-incident-state.json"
    );
}

#[tokio::test]
async fn a_stored_metadata_json_of_another_incident_is_refused() {
    let describe = describe_ok();
    let volumes = mock!(aws_sdk_ec2::Client::describe_volumes)
        .then_output(|| DescribeVolumesOutput::builder().build());
    let groups = mock!(aws_sdk_ec2::Client::describe_security_groups)
        .then_output(|| DescribeSecurityGroupsOutput::builder().build());
    let assoc = mock!(aws_sdk_ec2::Client::describe_iam_instance_profile_associations)
        .then_output(|| DescribeIamInstanceProfileAssociationsOutput::builder().build());
    let get_metadata = mock!(aws_sdk_s3::Client::get_object)
        .match_requests(|r| r.key() == Some("IR-1/i-0123456789abcdef0/metadata.json"))
        .then_output(|| {
            GetObjectOutput::builder()
                .body(br#"{"incident_id": "IR-2"}"#.to_vec().into())
                .build()
        });
    let put =
        mock!(aws_sdk_s3::Client::put_object).then_output(|| PutObjectOutput::builder().build());
    let o = others();
    let c = clients(
        &[&describe, &volumes, &groups, &assoc],
        &[&get_metadata, &put],
        &o,
    );
    let err = record(&c, &incident()).await.unwrap_err();
    assert_eq!(err.name(), "InvalidInput");
    assert_eq!(put.num_calls(), 0);
}
