//! Quarantine against a small stateful EC2/ELBv2 world, so that verification reads back what the
//! step changed and a rerun sees the first run's result.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::*;
use aws_sdk_ec2::operation::authorize_security_group_egress::AuthorizeSecurityGroupEgressOutput;
use aws_sdk_ec2::operation::authorize_security_group_ingress::AuthorizeSecurityGroupIngressOutput;
use aws_sdk_ec2::operation::create_security_group::CreateSecurityGroupOutput;
use aws_sdk_ec2::operation::create_tags::CreateTagsOutput;
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::describe_network_interfaces::DescribeNetworkInterfacesOutput;
use aws_sdk_ec2::operation::describe_security_groups::DescribeSecurityGroupsOutput;
use aws_sdk_ec2::operation::modify_network_interface_attribute::ModifyNetworkInterfaceAttributeOutput;
use aws_sdk_ec2::operation::revoke_security_group_egress::RevokeSecurityGroupEgressOutput;
use aws_sdk_ec2::types::{
    GroupIdentifier, Instance, InstanceNetworkInterface, NetworkInterface, Reservation,
};
use aws_sdk_elasticloadbalancingv2::operation::deregister_targets::DeregisterTargetsOutput;
use aws_sdk_elasticloadbalancingv2::operation::describe_target_groups::DescribeTargetGroupsOutput;
use aws_sdk_elasticloadbalancingv2::operation::describe_target_health::DescribeTargetHealthOutput;
use aws_sdk_elasticloadbalancingv2::types::{
    TargetDescription, TargetGroup, TargetHealth, TargetHealthDescription, TargetHealthReasonEnum,
    TargetHealthStateEnum,
};
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use cordon_common::testing::ec2_error;
use cordon_common::timeline::Outcome;

const ID: &str = "i-0123456789abcdef0";

#[derive(Default)]
struct State {
    /// interface → groups
    enis: BTreeMap<String, Vec<String>>,
    /// group name → (id, ingress rules, egress rules)
    groups: BTreeMap<String, (String, Vec<IpPermission>, Vec<IpPermission>)>,
    registered: bool,
    tags: Vec<(String, String)>,
    /// every ModifyNetworkInterfaceAttribute: (interface, groups)
    moves: Vec<(String, Vec<String>)>,
    mutations: usize,
}

type World = Arc<Mutex<State>>;

fn world() -> World {
    let mut s = State::default();
    s.enis.insert("eni-a".into(), vec!["sg-web".into()]);
    s.enis
        .insert("eni-b".into(), vec!["sg-web".into(), "sg-db".into()]);
    s.registered = true;
    Arc::new(Mutex::new(s))
}

fn all_v4() -> IpPermission {
    IpPermission::builder()
        .ip_protocol("-1")
        .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
        .build()
}

fn rules(w: &World) -> (Vec<Rule>, Vec<Rule>) {
    let w1 = w.clone();
    let describe = mock!(aws_sdk_ec2::Client::describe_instances).then_compute_output(move |_| {
        let s = w1.lock().unwrap();
        let mut i = Instance::builder().instance_id(ID).vpc_id("vpc-1");
        for (eni, groups) in &s.enis {
            let mut n = InstanceNetworkInterface::builder().network_interface_id(eni);
            for g in groups {
                n = n.groups(GroupIdentifier::builder().group_id(g).build());
            }
            i = i.network_interfaces(n.build());
        }
        for (k, v) in &s.tags {
            i = i.tags(Tag::builder().key(k).value(v).build());
        }
        DescribeInstancesOutput::builder()
            .reservations(Reservation::builder().instances(i.build()).build())
            .build()
    });
    let w2 = w.clone();
    let enis =
        mock!(aws_sdk_ec2::Client::describe_network_interfaces).then_compute_output(move |_| {
            let s = w2.lock().unwrap();
            let mut o = DescribeNetworkInterfacesOutput::builder();
            for (eni, groups) in &s.enis {
                let mut n = NetworkInterface::builder().network_interface_id(eni);
                for g in groups {
                    n = n.groups(GroupIdentifier::builder().group_id(g).build());
                }
                o = o.network_interfaces(n.build());
            }
            o.build()
        });
    let w3 = w.clone();
    let groups =
        mock!(aws_sdk_ec2::Client::describe_security_groups).then_compute_output(move |r| {
            let s = w3.lock().unwrap();
            let name = r
                .filters()
                .iter()
                .find(|f| f.name() == Some("group-name"))
                .map(|f| f.values()[0].clone());
            let mut o = DescribeSecurityGroupsOutput::builder();
            if let Some((id, ingress, egress)) = name.and_then(|n| s.groups.get(&n)) {
                o = o.security_groups(
                    SecurityGroup::builder()
                        .group_id(id)
                        .set_ip_permissions(Some(ingress.clone()))
                        .set_ip_permissions_egress(Some(egress.clone()))
                        .build(),
                );
            }
            o.build()
        });
    let w4 = w.clone();
    let create = mock!(aws_sdk_ec2::Client::create_security_group).then_compute_output(move |r| {
        let mut s = w4.lock().unwrap();
        assert_eq!(r.vpc_id(), Some("vpc-1"));
        assert_eq!(r.tag_specifications()[0].tags()[0].key(), Some(TAG_ROLE));
        let id = format!("sg-{}", r.group_name().unwrap());
        s.groups.insert(
            r.group_name().unwrap().into(),
            (id.clone(), vec![], vec![all_v4()]),
        );
        s.mutations += 1;
        CreateSecurityGroupOutput::builder().group_id(id).build()
    });
    let w5 = w.clone();
    let revoke =
        mock!(aws_sdk_ec2::Client::revoke_security_group_egress).then_compute_output(move |r| {
            let mut s = w5.lock().unwrap();
            s.mutations += 1;
            for (id, _, egress) in s.groups.values_mut() {
                if Some(id.as_str()) == r.group_id() {
                    egress.clear();
                }
            }
            RevokeSecurityGroupEgressOutput::builder().build()
        });
    let w6 = w.clone();
    let ingress = mock!(aws_sdk_ec2::Client::authorize_security_group_ingress).then_compute_output(
        move |r| {
            let mut s = w6.lock().unwrap();
            s.mutations += 1;
            for (id, ingress, _) in s.groups.values_mut() {
                if Some(id.as_str()) == r.group_id() {
                    ingress.extend(r.ip_permissions().iter().cloned());
                }
            }
            AuthorizeSecurityGroupIngressOutput::builder().build()
        },
    );
    let w7 = w.clone();
    let egress =
        mock!(aws_sdk_ec2::Client::authorize_security_group_egress).then_compute_output(move |r| {
            let mut s = w7.lock().unwrap();
            s.mutations += 1;
            assert!(
                r.ip_permissions()[0].ip_ranges().is_empty(),
                "the existing IPv4 rule is not repeated"
            );
            for (id, _, egress) in s.groups.values_mut() {
                if Some(id.as_str()) == r.group_id() {
                    egress.extend(r.ip_permissions().iter().cloned());
                }
            }
            AuthorizeSecurityGroupEgressOutput::builder().build()
        });
    let w8 = w.clone();
    let modify = mock!(aws_sdk_ec2::Client::modify_network_interface_attribute)
        .then_compute_output(move |r| {
            let mut s = w8.lock().unwrap();
            s.mutations += 1;
            let eni = r.network_interface_id().unwrap().to_owned();
            s.enis.insert(eni.clone(), r.groups().to_vec());
            s.moves.push((eni, r.groups().to_vec()));
            ModifyNetworkInterfaceAttributeOutput::builder().build()
        });
    let w9 = w.clone();
    let tag = mock!(aws_sdk_ec2::Client::create_tags).then_compute_output(move |r| {
        let mut s = w9.lock().unwrap();
        s.mutations += 1;
        for t in r.tags() {
            s.tags
                .push((t.key().unwrap().into(), t.value().unwrap().into()));
        }
        CreateTagsOutput::builder().build()
    });
    let tgs =
        mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_groups).then_output(|| {
            DescribeTargetGroupsOutput::builder()
                .target_groups(
                    TargetGroup::builder()
                        .target_group_arn("arn:tg/web")
                        .vpc_id("vpc-1")
                        .build(),
                )
                .build()
        });
    let w10 = w.clone();
    let health = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .then_compute_output(move |_| {
            let s = w10.lock().unwrap();
            let mut o = DescribeTargetHealthOutput::builder();
            if s.registered {
                o = o.target_health_descriptions(
                    TargetHealthDescription::builder()
                        .target(TargetDescription::builder().id(ID).port(80).build())
                        .build(),
                );
            }
            o.build()
        });
    let w11 = w.clone();
    let deregister = mock!(aws_sdk_elasticloadbalancingv2::Client::deregister_targets)
        .then_compute_output(move |r| {
            assert_eq!(r.targets()[0].port(), Some(80));
            w11.lock().unwrap().registered = false;
            DeregisterTargetsOutput::builder().build()
        });
    (
        vec![
            describe, enis, groups, create, revoke, ingress, egress, modify, tag,
        ],
        vec![tgs, health, deregister],
    )
}

fn clients(ec2: &[Rule], elb: &[Rule]) -> Clients {
    Clients {
        ec2: mock_client!(
            aws_sdk_ec2,
            RuleMode::MatchAny,
            ec2.iter().collect::<Vec<_>>().as_slice(),
            |c| c.retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled())
        ),
        elbv2: mock_client!(
            aws_sdk_elasticloadbalancingv2,
            RuleMode::MatchAny,
            elb.iter().collect::<Vec<_>>().as_slice()
        ),
    }
}

fn incident() -> Incident {
    Incident::from_value(json!({"incident_id": "IR-7", "instance_id": ID})).unwrap()
}

#[tokio::test]
async fn quarantine_moves_every_interface_through_the_flush_group_into_isolation() {
    let w = world();
    let (ec2, elb) = rules(&w);
    let out = quarantine(&clients(&ec2, &elb), &incident()).await.unwrap();

    let s = w.lock().unwrap();
    assert!(out.verified);
    assert_eq!(out.isolation_group_id, "sg-cordon-isolation");
    for groups in s.enis.values() {
        assert_eq!(groups, &["sg-cordon-isolation"]);
    }
    let flush = vec!["sg-cordon-flush".to_owned()];
    let iso = vec!["sg-cordon-isolation".to_owned()];
    assert_eq!(
        s.moves,
        vec![
            ("eni-a".into(), flush.clone()),
            ("eni-a".into(), iso.clone()),
            ("eni-b".into(), flush),
            ("eni-b".into(), iso)
        ]
    );
    let (_, ingress, egress) = &s.groups["cordon-isolation"];
    assert!(
        ingress.is_empty() && egress.is_empty(),
        "isolation has no rules"
    );
    let (_, ingress, _) = &s.groups["cordon-flush"];
    assert!(
        missing_all_traffic(ingress).is_none(),
        "flush allows all traffic in"
    );
    assert!(!s.registered, "out of the target group");
    assert!(s.tags.contains(&(TAG_STATUS.into(), "quarantined".into())));
    assert_eq!(out.deregistered.len(), 1);
}

#[tokio::test]
async fn a_rerun_reuses_the_groups_and_changes_nothing() {
    let w = world();
    let (ec2, elb) = rules(&w);
    quarantine(&clients(&ec2, &elb), &incident()).await.unwrap();
    let before = w.lock().unwrap().mutations;

    let (ec2, elb) = rules(&w);
    let out = quarantine(&clients(&ec2, &elb), &incident()).await.unwrap();

    assert_eq!(
        w.lock().unwrap().mutations,
        before,
        "no EC2 change on the second run"
    );
    assert!(
        out.actions.iter().all(|a| a.outcome == Outcome::Unchanged),
        "{:?}",
        out.actions
    );
}

#[tokio::test]
async fn a_group_that_gained_rules_fails_verification() {
    let w = world();
    let (mut ec2, elb) = rules(&w);
    // Revoking "succeeds" but the rule stays: verification must notice.
    ec2[4] = mock!(aws_sdk_ec2::Client::revoke_security_group_egress)
        .then_output(|| RevokeSecurityGroupEgressOutput::builder().build());
    let err = quarantine(&clients(&ec2, &elb), &incident())
        .await
        .unwrap_err();
    assert_eq!(err.name(), "ContainmentNotVerified");
    assert!(err.to_string().contains("egress"), "{err}");
}

#[tokio::test]
async fn throttling_is_transient() {
    let w = world();
    let (mut ec2, elb) = rules(&w);
    ec2[7] = mock!(aws_sdk_ec2::Client::modify_network_interface_attribute)
        .then_http_response(ec2_error(503, "RequestLimitExceeded"));
    let err = quarantine(&clients(&ec2, &elb), &incident())
        .await
        .unwrap_err();
    assert_eq!(err.name(), "Transient");
}

#[tokio::test]
async fn a_rule_revoked_meanwhile_by_another_execution_is_not_an_error() {
    let w = world();
    let (mut ec2, elb) = rules(&w);
    // Another execution in the same VPC revoked the egress rule between our describe and revoke.
    let w2 = w.clone();
    ec2[4] =
        mock!(aws_sdk_ec2::Client::revoke_security_group_egress).then_compute_response(move |_| {
            for (_, _, egress) in w2.lock().unwrap().groups.values_mut() {
                egress.clear();
            }
            aws_smithy_mocks::MockResponse::Http(ec2_error(400, "InvalidPermission.NotFound")())
        });
    let out = quarantine(&clients(&ec2, &elb), &incident()).await.unwrap();
    assert!(out.verified);
}

/// DescribeTargetHealth as ELBv2 answers it: `healthy` while registered, then `after` (with the
/// reason code API_TargetHealth gives it) once DeregisterTargets ran.
fn health_after_deregistration(w: &World, after: TargetHealthStateEnum) -> Rule {
    let w = w.clone();
    mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health).then_compute_output(
        move |_| {
            let registered = w.lock().unwrap().registered;
            let (state, reason) = match (registered, &after) {
                (true, _) => (TargetHealthStateEnum::Healthy, None),
                (false, TargetHealthStateEnum::Draining) => (
                    TargetHealthStateEnum::Draining,
                    Some(TargetHealthReasonEnum::DeregistrationInProgress),
                ),
                (false, other) => (other.clone(), Some(TargetHealthReasonEnum::NotInUse)),
            };
            DescribeTargetHealthOutput::builder()
                .target_health_descriptions(
                    TargetHealthDescription::builder()
                        .target(TargetDescription::builder().id(ID).port(80).build())
                        .target_health(
                            TargetHealth::builder()
                                .state(state)
                                .set_reason(reason)
                                .build(),
                        )
                        .build(),
                )
                .build()
        },
    )
}

#[tokio::test]
async fn a_target_draining_or_unused_after_deregistration_is_out_of_service() {
    // ELBv2 keeps a deregistered target listed as `draining` for the deregistration delay.
    for after in [
        TargetHealthStateEnum::Draining,
        TargetHealthStateEnum::Unused,
    ] {
        let w = world();
        let (ec2, mut elb) = rules(&w);
        elb[1] = health_after_deregistration(&w, after.clone());
        let out = quarantine(&clients(&ec2, &elb), &incident())
            .await
            .unwrap_or_else(|e| panic!("{after:?}: {e}"));
        assert!(out.verified);
        assert_eq!(elb[2].num_calls(), 1, "deregistered once");
        assert_eq!(out.deregistered.len(), 1);
    }
}

#[tokio::test]
async fn a_rerun_while_the_target_drains_does_not_deregister_it_again() {
    let w = world();
    w.lock().unwrap().registered = false; // deregistered by the first attempt, still draining
    let (ec2, mut elb) = rules(&w);
    elb[1] = health_after_deregistration(&w, TargetHealthStateEnum::Draining);
    let out = quarantine(&clients(&ec2, &elb), &incident()).await.unwrap();
    assert!(out.verified);
    assert_eq!(elb[2].num_calls(), 0, "no second DeregisterTargets");
    assert!(out.deregistered.is_empty());
}

#[tokio::test]
async fn a_target_still_in_service_after_deregistration_fails_verification() {
    let w = world();
    let (ec2, mut elb) = rules(&w);
    // DeregisterTargets "succeeds" but the target stays healthy: verification must notice.
    elb[2] = mock!(aws_sdk_elasticloadbalancingv2::Client::deregister_targets)
        .then_output(|| DeregisterTargetsOutput::builder().build());
    elb[1] = health_after_deregistration(&w, TargetHealthStateEnum::Draining);
    let err = quarantine(&clients(&ec2, &elb), &incident())
        .await
        .unwrap_err();
    assert_eq!(err.name(), "ContainmentNotVerified");
    assert!(
        err.to_string()
            .contains("still registered in arn:tg/web (healthy)"),
        "{err}"
    );
}
