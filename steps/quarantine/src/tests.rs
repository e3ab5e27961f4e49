//! Quarantine against a small stateful EC2/ELBv2 world, so that verification reads back what the
//! step changed and a rerun sees the first run's result.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::*;
use aws_sdk_ec2::operation::authorize_security_group_egress::AuthorizeSecurityGroupEgressOutput;
use aws_sdk_ec2::operation::authorize_security_group_ingress::AuthorizeSecurityGroupIngressOutput;
use aws_sdk_ec2::operation::create_network_acl_entry::CreateNetworkAclEntryOutput;
use aws_sdk_ec2::operation::create_security_group::CreateSecurityGroupOutput;
use aws_sdk_ec2::operation::create_tags::CreateTagsOutput;
use aws_sdk_ec2::operation::describe_instance_types::DescribeInstanceTypesOutput;
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::describe_network_acls::DescribeNetworkAclsOutput;
use aws_sdk_ec2::operation::describe_network_interfaces::DescribeNetworkInterfacesOutput;
use aws_sdk_ec2::operation::describe_security_groups::DescribeSecurityGroupsOutput;
use aws_sdk_ec2::operation::modify_network_interface_attribute::ModifyNetworkInterfaceAttributeOutput;
use aws_sdk_ec2::operation::revoke_security_group_egress::RevokeSecurityGroupEgressOutput;
use aws_sdk_ec2::types::{
    ConnectionTrackingConfiguration, ConnectionTrackingSpecificationResponse,
    DefaultConnectionTrackingConfiguration, GroupIdentifier, Instance, InstanceNetworkInterface,
    InstancePrivateIpAddress, InstanceType, InstanceTypeHypervisor, InstanceTypeInfo, NetworkAcl,
    NetworkAclAssociation, NetworkAclEntry, NetworkInfo, NetworkInterface, NetworkInterfaceType,
    Reservation, RuleAction,
};
use aws_sdk_elasticloadbalancingv2::operation::deregister_targets::DeregisterTargetsOutput;
use aws_sdk_elasticloadbalancingv2::operation::describe_target_groups::DescribeTargetGroupsOutput;
use aws_sdk_elasticloadbalancingv2::operation::describe_target_health::DescribeTargetHealthOutput;
use aws_sdk_elasticloadbalancingv2::types::{
    TargetDescription, TargetGroup, TargetHealth, TargetHealthDescription, TargetHealthReasonEnum,
    TargetHealthStateEnum,
};
use aws_smithy_mocks::{mock, mock_client, MockResponse, Rule, RuleMode};
use cordon_common::testing::ec2_error;
use cordon_common::timeline::Outcome;

const ID: &str = "i-0123456789abcdef0";

/// The default rules of an ACL that allows all IPv4 traffic (AWS's default ACL without IPv6).
fn allow_all_entries() -> Vec<NetworkAclEntry> {
    let mut v = Vec::new();
    for egress in [false, true] {
        for (n, action) in [(100, RuleAction::Allow), (32767, RuleAction::Deny)] {
            v.push(
                NetworkAclEntry::builder()
                    .rule_number(n)
                    .egress(egress)
                    .protocol("-1")
                    .rule_action(action)
                    .cidr_block("0.0.0.0/0")
                    .build(),
            );
        }
    }
    v
}

#[derive(Default)]
struct State {
    /// interface → groups
    enis: BTreeMap<String, Vec<String>>,
    /// interface → private IPv4 address (all in subnet-app)
    ips: BTreeMap<String, String>,
    /// interface → connection-tracking timeouts (tcp established, udp stream, udp), when set
    timeouts: BTreeMap<String, (i32, i32, i32)>,
    hypervisor: &'static str,
    /// network ACL → (associated subnets, entries)
    acls: BTreeMap<String, (Vec<String>, Vec<NetworkAclEntry>)>,
    /// rules per direction and family per ACL, default deny included
    acl_quota: usize,
    /// CreateNetworkAclEntry calls that find their number just taken by another execution
    acl_races: usize,
    /// another account's interfaces in subnet-app: (id, interface type)
    peers: Vec<(String, NetworkInterfaceType)>,
    /// ModifyNetworkInterfaceAttribute (groups) calls to fail: (interface, group, times)
    fail_moves: Vec<(String, String, usize)>,
    /// group name → (id, ingress rules, egress rules)
    groups: BTreeMap<String, (String, Vec<IpPermission>, Vec<IpPermission>)>,
    registered: bool,
    tags: Vec<(String, String)>,
    /// every ModifyNetworkInterfaceAttribute that changed groups: (interface, groups)
    moves: Vec<(String, Vec<String>)>,
    mutations: usize,
}

type World = Arc<Mutex<State>>;

/// Two interfaces in subnet-app, whose ACL it shares with subnet-web; a NAT gateway in
/// subnet-public, which has an ACL of its own; a NAT gateway interface also in subnet-app.
fn world() -> World {
    let mut s = State::default();
    s.enis.insert("eni-a".into(), vec!["sg-web".into()]);
    s.enis
        .insert("eni-b".into(), vec!["sg-web".into(), "sg-db".into()]);
    s.ips.insert("eni-a".into(), "10.0.1.10".into());
    s.ips.insert("eni-b".into(), "10.0.1.11".into());
    s.hypervisor = "nitro";
    s.acls.insert(
        "acl-default".into(),
        (
            vec!["subnet-app".into(), "subnet-web".into()],
            allow_all_entries(),
        ),
    );
    s.acls.insert(
        "acl-public".into(),
        (vec!["subnet-public".into()], allow_all_entries()),
    );
    s.acl_quota = 20;
    s.peers
        .push(("eni-nat".into(), NetworkInterfaceType::NatGateway));
    s.registered = true;
    Arc::new(Mutex::new(s))
}

fn all_v4() -> IpPermission {
    IpPermission::builder()
        .ip_protocol("-1")
        .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
        .build()
}

impl State {
    fn timeouts_of(&self, eni: &str) -> Option<ConnectionTrackingSpecificationResponse> {
        self.timeouts.get(eni).map(|(t, s, u)| {
            ConnectionTrackingSpecificationResponse::builder()
                .tcp_established_timeout(*t)
                .udp_stream_timeout(*s)
                .udp_timeout(*u)
                .build()
        })
    }

    /// The deny rules in an ACL: (number, egress, cidr).
    fn denies(&self, acl: &str) -> Vec<(i32, bool, String)> {
        self.acls[acl]
            .1
            .iter()
            .filter(|e| {
                e.rule_action() == Some(&RuleAction::Deny) && e.rule_number() != Some(32767)
            })
            .map(|e| {
                (
                    e.rule_number().unwrap(),
                    e.egress().unwrap(),
                    e.cidr_block().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

fn rules(w: &World) -> (Vec<Rule>, Vec<Rule>) {
    let w1 = w.clone();
    let describe = mock!(aws_sdk_ec2::Client::describe_instances).then_compute_output(move |_| {
        let s = w1.lock().unwrap();
        let mut i = Instance::builder()
            .instance_id(ID)
            .vpc_id("vpc-1")
            .instance_type(InstanceType::T3Small);
        for (eni, groups) in &s.enis {
            let mut n = InstanceNetworkInterface::builder()
                .network_interface_id(eni)
                .subnet_id("subnet-app")
                .private_ip_address(&s.ips[eni])
                .private_ip_addresses(
                    InstancePrivateIpAddress::builder()
                        .private_ip_address(&s.ips[eni])
                        .primary(true)
                        .build(),
                )
                .set_connection_tracking_configuration(s.timeouts_of(eni));
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
        mock!(aws_sdk_ec2::Client::describe_network_interfaces).then_compute_output(move |r| {
            let s = w2.lock().unwrap();
            let by_subnet = r.filters().iter().any(|f| f.name() == Some("subnet-id"));
            let mut o = DescribeNetworkInterfacesOutput::builder();
            for (eni, groups) in &s.enis {
                let mut n = NetworkInterface::builder()
                    .network_interface_id(eni)
                    .subnet_id("subnet-app")
                    .interface_type(NetworkInterfaceType::Interface);
                if let Some((t, su, u)) = s.timeouts.get(eni) {
                    n = n.connection_tracking_configuration(
                        ConnectionTrackingConfiguration::builder()
                            .tcp_established_timeout(*t)
                            .udp_stream_timeout(*su)
                            .udp_timeout(*u)
                            .build(),
                    );
                }
                for g in groups {
                    n = n.groups(GroupIdentifier::builder().group_id(g).build());
                }
                o = o.network_interfaces(n.build());
            }
            if by_subnet {
                for (id, kind) in &s.peers {
                    o = o.network_interfaces(
                        NetworkInterface::builder()
                            .network_interface_id(id)
                            .subnet_id("subnet-app")
                            .interface_type(kind.clone())
                            .requester_managed(true)
                            .build(),
                    );
                }
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
        .then_compute_response(move |r| {
            let mut s = w8.lock().unwrap();
            let eni = r.network_interface_id().unwrap().to_owned();
            if let Some(spec) = r.connection_tracking_specification() {
                // EC2 takes one attribute per call.
                assert!(r.groups().is_empty(), "groups and timeouts in one call");
                s.mutations += 1;
                s.timeouts.insert(
                    eni,
                    (
                        spec.tcp_established_timeout().unwrap(),
                        spec.udp_stream_timeout().unwrap(),
                        spec.udp_timeout().unwrap(),
                    ),
                );
                return MockResponse::Output(
                    ModifyNetworkInterfaceAttributeOutput::builder().build(),
                );
            }
            let groups = r.groups().to_vec();
            let group_ids: Vec<String> = groups.clone();
            let fault = s
                .fail_moves
                .iter_mut()
                .find(|(e, g, n)| *e == eni && [g.clone()] == group_ids[..] && *n > 0);
            if let Some(fault) = fault {
                fault.2 -= 1;
                return MockResponse::Http(ec2_error(403, "UnauthorizedOperation")());
            }
            s.mutations += 1;
            s.enis.insert(eni.clone(), groups.clone());
            s.moves.push((eni, groups));
            MockResponse::Output(ModifyNetworkInterfaceAttributeOutput::builder().build())
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
    let w12 = w.clone();
    let types = mock!(aws_sdk_ec2::Client::describe_instance_types).then_compute_output(move |r| {
        assert_eq!(r.instance_types(), [InstanceType::T3Small]);
        let s = w12.lock().unwrap();
        DescribeInstanceTypesOutput::builder()
            .instance_types(
                InstanceTypeInfo::builder()
                    .instance_type(InstanceType::T3Small)
                    .hypervisor(InstanceTypeHypervisor::from(s.hypervisor))
                    .network_info(
                        NetworkInfo::builder()
                            .connection_tracking_configuration(
                                DefaultConnectionTrackingConfiguration::builder()
                                    .default_tcp_established_timeout(432000)
                                    .default_udp_stream_timeout(180)
                                    .default_udp_timeout(30)
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    let w13 = w.clone();
    let acls = mock!(aws_sdk_ec2::Client::describe_network_acls).then_compute_output(move |r| {
        let s = w13.lock().unwrap();
        let mut o = DescribeNetworkAclsOutput::builder();
        for (id, (subnets, entries)) in &s.acls {
            if !r.network_acl_ids().is_empty() && !r.network_acl_ids().contains(id) {
                continue;
            }
            let mut acl = NetworkAcl::builder()
                .network_acl_id(id)
                .vpc_id("vpc-1")
                .set_entries(Some(entries.clone()));
            for subnet in subnets {
                acl = acl.associations(
                    NetworkAclAssociation::builder()
                        .network_acl_id(id)
                        .subnet_id(subnet)
                        .build(),
                );
            }
            o = o.network_acls(acl.build());
        }
        o.build()
    });
    let w14 = w.clone();
    let acl_entry =
        mock!(aws_sdk_ec2::Client::create_network_acl_entry).then_compute_response(move |r| {
            let mut s = w14.lock().unwrap();
            let quota = s.acl_quota;
            let race = s.acl_races > 0;
            s.acl_races = s.acl_races.saturating_sub(1);
            let (_, entries) = s.acls.get_mut(r.network_acl_id().unwrap()).unwrap();
            let egress = r.egress().unwrap();
            if race {
                // Another execution took this number a moment ago, for another address.
                entries.push(
                    NetworkAclEntry::builder()
                        .rule_number(r.rule_number().unwrap())
                        .egress(egress)
                        .protocol("-1")
                        .rule_action(RuleAction::Deny)
                        .cidr_block("10.0.9.9/32")
                        .build(),
                );
            }
            if entries
                .iter()
                .any(|e| e.egress() == Some(egress) && e.rule_number() == r.rule_number())
            {
                return MockResponse::Http(ec2_error(400, "NetworkAclEntryAlreadyExists")());
            }
            let v6 = r.ipv6_cidr_block().is_some();
            let used = entries
                .iter()
                .filter(|e| e.egress() == Some(egress) && e.ipv6_cidr_block().is_some() == v6)
                .count();
            if used >= quota {
                return MockResponse::Http(ec2_error(400, "NetworkAclEntryLimitExceeded")());
            }
            entries.push(
                NetworkAclEntry::builder()
                    .rule_number(r.rule_number().unwrap())
                    .egress(egress)
                    .protocol(r.protocol().unwrap())
                    .rule_action(r.rule_action().unwrap().clone())
                    .set_cidr_block(r.cidr_block().map(str::to_owned))
                    .set_ipv6_cidr_block(r.ipv6_cidr_block().map(str::to_owned))
                    .build(),
            );
            s.mutations += 1;
            MockResponse::Output(CreateNetworkAclEntryOutput::builder().build())
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
            describe, enis, groups, create, revoke, ingress, egress, modify, tag, types, acls,
            acl_entry,
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

// ------------------------------------------------------------------ never left in the flush group

fn isolation() -> Vec<String> {
    vec!["sg-cordon-isolation".to_owned()]
}

fn flush() -> Vec<String> {
    vec!["sg-cordon-flush".to_owned()]
}

#[tokio::test]
async fn a_fault_on_the_second_interface_move_leaves_no_interface_in_the_flush_group() {
    let w = world();
    // eni-b's move from the flush group into isolation fails once.
    w.lock()
        .unwrap()
        .fail_moves
        .push(("eni-b".into(), "sg-cordon-isolation".into(), 1));
    let (ec2, elb) = rules(&w);
    let err = quarantine(&clients(&ec2, &elb), &incident())
        .await
        .unwrap_err();

    let s = w.lock().unwrap();
    for (eni, groups) in &s.enis {
        assert_eq!(groups, &isolation(), "{eni} left outside isolation");
    }
    assert_eq!(
        s.moves,
        vec![
            ("eni-a".into(), flush()),
            ("eni-a".into(), isolation()),
            ("eni-b".into(), flush()),
            ("eni-b".into(), isolation()), // the second attempt
        ]
    );
    assert_eq!(err.name(), "AccessDenied");
    assert!(
        err.to_string().contains("eni-b: into the isolation group"),
        "{err}"
    );
    // The other measures still ran: timeouts on both (both were flushed), the ACL rules, the tag.
    assert_eq!(s.timeouts.len(), 2);
    assert_eq!(s.denies("acl-public").len(), 4);
    assert!(s.tags.contains(&(TAG_STATUS.into(), "quarantined".into())));
}

#[tokio::test]
async fn an_interface_that_cannot_be_isolated_is_reported_after_every_other_is() {
    let w = world();
    w.lock()
        .unwrap()
        .fail_moves
        .push(("eni-a".into(), "sg-cordon-isolation".into(), 2));
    let (ec2, elb) = rules(&w);
    let err = quarantine(&clients(&ec2, &elb), &incident())
        .await
        .unwrap_err();
    let s = w.lock().unwrap();
    assert_eq!(
        s.enis["eni-b"],
        isolation(),
        "eni-b processed after eni-a failed"
    );
    assert!(
        err.to_string().contains(
            "eni-a: into the isolation group, second attempt (it is in its own groups again)"
        ),
        "{err}"
    );
    // Never left open to all traffic: back on its own groups, not in the flush group.
    assert_eq!(s.enis["eni-a"], vec!["sg-web".to_owned()]);
}

#[tokio::test]
async fn a_failed_flush_still_isolates_and_the_rerun_flushes() {
    let w = world();
    w.lock()
        .unwrap()
        .fail_moves
        .push(("eni-a".into(), "sg-cordon-flush".into(), 1));
    let (ec2, elb) = rules(&w);
    let err = quarantine(&clients(&ec2, &elb), &incident())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("eni-a: into the flush group"),
        "{err}"
    );
    {
        let s = w.lock().unwrap();
        assert_eq!(s.enis["eni-a"], isolation(), "isolated without its flush");
        assert!(
            !s.timeouts.contains_key("eni-a"),
            "timeouts left for the rerun to recognise"
        );
        assert!(s.timeouts.contains_key("eni-b"));
    }
    w.lock().unwrap().moves.clear();

    let (ec2, elb) = rules(&w);
    let out = quarantine(&clients(&ec2, &elb), &incident()).await.unwrap();
    assert!(out.verified);
    let s = w.lock().unwrap();
    assert_eq!(
        s.moves,
        vec![("eni-a".into(), flush()), ("eni-a".into(), isolation())],
        "only the unflushed interface goes through the flush group again"
    );
    assert_eq!(s.timeouts["eni-a"], (60, 60, 30));
}

// ------------------------------------------------------------------ connection tracking

#[tokio::test]
async fn timeouts_are_lowered_to_their_minimums_and_read_back() {
    let w = world();
    let (ec2, elb) = rules(&w);
    let out = quarantine(&clients(&ec2, &elb), &incident()).await.unwrap();
    let s = w.lock().unwrap();
    for eni in ["eni-a", "eni-b"] {
        assert_eq!(s.timeouts[eni], (60, 60, 30), "{eni}");
    }
    assert_eq!(
        out.connection_tracking.timeouts,
        Some(conntrack::Timeouts::MINIMUMS)
    );
    let lowered: Vec<&Action> = out
        .actions
        .iter()
        .filter(|a| a.action == "lower connection-tracking timeouts")
        .collect();
    assert_eq!(lowered.len(), 2);
    assert_eq!(
        lowered[0].before,
        json!({"timeouts": {"tcp_established": 432000, "udp_stream": 180, "udp": 30}, "source": "instance type default"})
    );
    assert_eq!(
        lowered[0].after,
        json!({"timeouts": {"tcp_established": 60, "udp_stream": 60, "udp": 30}, "source": "interface"})
    );
}

#[tokio::test]
async fn timeouts_that_did_not_take_fail_verification() {
    let w = world();
    let (mut ec2, elb) = rules(&w);
    // Groups change, timeouts "succeed" but nothing is stored.
    let w2 = w.clone();
    ec2[7] = mock!(aws_sdk_ec2::Client::modify_network_interface_attribute).then_compute_output(
        move |r| {
            if r.connection_tracking_specification().is_none() {
                let mut s = w2.lock().unwrap();
                s.enis.insert(
                    r.network_interface_id().unwrap().into(),
                    r.groups().to_vec(),
                );
            }
            ModifyNetworkInterfaceAttributeOutput::builder().build()
        },
    );
    let err = quarantine(&clients(&ec2, &elb), &incident())
        .await
        .unwrap_err();
    assert_eq!(err.name(), "ContainmentNotVerified");
    assert!(
        err.to_string().contains("connection-tracking timeouts"),
        "{err}"
    );
}

#[tokio::test]
async fn a_xen_instance_keeps_its_timeouts_and_says_so() {
    let w = world();
    w.lock().unwrap().hypervisor = "xen";
    let (ec2, elb) = rules(&w);
    let out = quarantine(&clients(&ec2, &elb), &incident()).await.unwrap();
    assert!(out.verified);
    assert!(w.lock().unwrap().timeouts.is_empty());
    assert!(!out.connection_tracking.configurable);
    let gap = out
        .gaps
        .iter()
        .find(|g| g.what == "connection-tracking timeouts")
        .expect("gap");
    assert!(gap.reason.contains("Nitro"), "{}", gap.reason);

    // A rerun: the interfaces are done (isolated; no timeouts to wait for).
    let before = w.lock().unwrap().mutations;
    let (ec2, elb) = rules(&w);
    quarantine(&clients(&ec2, &elb), &incident()).await.unwrap();
    assert_eq!(w.lock().unwrap().mutations, before);
}

// ------------------------------------------------------------------ network ACLs

#[tokio::test]
async fn deny_rules_go_into_every_acl_that_guards_another_subnet() {
    let w = world();
    let (ec2, elb) = rules(&w);
    let out = quarantine(&clients(&ec2, &elb), &incident()).await.unwrap();
    let s = w.lock().unwrap();
    // acl-default also guards subnet-web; acl-public guards the NAT gateway's subnet.
    for acl in ["acl-default", "acl-public"] {
        let mut denies = s.denies(acl);
        denies.sort();
        assert_eq!(
            denies,
            vec![
                (98, false, "10.0.1.11/32".to_owned()),
                (98, true, "10.0.1.11/32".to_owned()),
                (99, false, "10.0.1.10/32".to_owned()),
                (99, true, "10.0.1.10/32".to_owned()),
            ],
            "{acl}"
        );
    }
    assert_eq!(out.network_acl.mode, "sg+nacl");
    assert_eq!(out.network_acl.rules.len(), 8);
    let public = out
        .network_acl
        .rules
        .iter()
        .find(|r| r.network_acl_id == "acl-public")
        .unwrap();
    assert_eq!(public.subnet_ids, ["subnet-public"]);
    assert!(public.created);
    let recorded = out
        .actions
        .iter()
        .filter(|a| a.action == "deny instance address in network ACL")
        .count();
    assert_eq!(recorded, 8);
    // What no ACL can reach is said, naming the NAT gateway that shares the subnet.
    let within = out
        .gaps
        .iter()
        .find(|g| g.what == "network ACL: traffic within subnet-app")
        .expect("same-subnet gap");
    assert!(
        within.reason.contains("eni-nat (natGateway)"),
        "{}",
        within.reason
    );
    assert!(out
        .gaps
        .iter()
        .any(|g| g.what == "network ACL: paths leaving the VPC from subnet-app"));
}

#[tokio::test]
async fn an_acl_of_the_instance_subnet_alone_gets_no_rule() {
    let w = world();
    {
        let mut s = w.lock().unwrap();
        s.acls.get_mut("acl-default").unwrap().0 = vec!["subnet-web".into()];
        s.acls.insert(
            "acl-app".into(),
            (vec!["subnet-app".into()], allow_all_entries()),
        );
    }
    let (ec2, elb) = rules(&w);
    quarantine(&clients(&ec2, &elb), &incident()).await.unwrap();
    let s = w.lock().unwrap();
    assert!(
        s.denies("acl-app").is_empty(),
        "its rules could never match"
    );
    assert_eq!(s.denies("acl-default").len(), 4);
}

#[tokio::test]
async fn option_sg_adds_no_acl_rule_and_says_so() {
    let w = world();
    let (ec2, elb) = rules(&w);
    let incident = Incident::from_value(
        json!({"incident_id": "IR-7", "instance_id": ID, "options": {"network": "sg"}}),
    )
    .unwrap();
    let out = quarantine(&clients(&ec2, &elb), &incident).await.unwrap();
    assert_eq!(ec2[11].num_calls(), 0, "no CreateNetworkAclEntry");
    assert_eq!(out.network_acl.mode, "sg");
    assert!(out.network_acl.rules.is_empty());
    assert!(out.gaps.iter().any(|g| g.what == "network ACL deny rules"));
    // The timeouts are lowered either way.
    assert_eq!(w.lock().unwrap().timeouts.len(), 2);
}

#[tokio::test]
async fn an_existing_deny_below_the_allow_rules_is_reused() {
    let w = world();
    w.lock()
        .unwrap()
        .acls
        .get_mut("acl-public")
        .unwrap()
        .1
        .push(
            NetworkAclEntry::builder()
                .rule_number(7)
                .egress(false)
                .protocol("-1")
                .rule_action(RuleAction::Deny)
                .cidr_block("10.0.1.10/32")
                .build(),
        );
    let (ec2, elb) = rules(&w);
    let out = quarantine(&clients(&ec2, &elb), &incident()).await.unwrap();
    let found = out
        .network_acl
        .rules
        .iter()
        .find(|r| r.network_acl_id == "acl-public" && !r.egress && r.cidr == "10.0.1.10/32")
        .unwrap();
    assert_eq!((found.rule_number, found.created), (7, false));
    assert_eq!(
        w.lock().unwrap().denies("acl-public").len(),
        4,
        "no duplicate"
    );
}

#[tokio::test]
async fn a_rule_number_taken_meanwhile_is_planned_again() {
    let w = world();
    w.lock().unwrap().acl_races = 1;
    let (ec2, elb) = rules(&w);
    let out = quarantine(&clients(&ec2, &elb), &incident()).await.unwrap();
    assert!(out.verified);
    let first = &out.network_acl.rules[0];
    assert_eq!(first.rule_number, 98, "99 was taken by the other execution");
}

#[tokio::test]
async fn a_full_acl_is_a_gap_not_a_failure() {
    let w = world();
    w.lock().unwrap().acl_quota = 2; // allow 100 and the default deny fill it
    let (ec2, elb) = rules(&w);
    let out = quarantine(&clients(&ec2, &elb), &incident()).await.unwrap();
    assert!(out.verified);
    assert!(out.network_acl.rules.is_empty());
    let full = out
        .gaps
        .iter()
        .filter(|g| g.reason.contains("NetworkAclEntryLimitExceeded"))
        .count();
    assert_eq!(full, 8, "each ACL, direction and address");
}

#[tokio::test]
async fn a_matching_allow_rule_at_the_top_leaves_no_room() {
    let w = world();
    w.lock()
        .unwrap()
        .acls
        .get_mut("acl-public")
        .unwrap()
        .1
        .push(
            NetworkAclEntry::builder()
                .rule_number(1)
                .egress(true)
                .protocol("-1")
                .rule_action(RuleAction::Allow)
                .cidr_block("10.0.0.0/16")
                .build(),
        );
    let (ec2, elb) = rules(&w);
    let out = quarantine(&clients(&ec2, &elb), &incident()).await.unwrap();
    assert!(out.gaps.iter().any(|g| g.what
        == "network ACL acl-public: no outbound deny rule for 10.0.1.10/32"
        && g.reason.contains("below 1")));
    let s = w.lock().unwrap();
    assert!(s.denies("acl-public").iter().all(|(_, egress, _)| !egress));
}

#[tokio::test]
async fn a_deny_rule_removed_behind_our_back_fails_verification() {
    let w = world();
    let (mut ec2, elb) = rules(&w);
    // CreateNetworkAclEntry "succeeds" but nothing is stored.
    ec2[11] = mock!(aws_sdk_ec2::Client::create_network_acl_entry)
        .then_output(|| CreateNetworkAclEntryOutput::builder().build());
    let err = quarantine(&clients(&ec2, &elb), &incident())
        .await
        .unwrap_err();
    assert_eq!(err.name(), "ContainmentNotVerified");
    assert!(
        err.to_string()
            .contains("deny rule 99 for 10.0.1.10/32 is missing"),
        "{err}"
    );
}

#[test]
fn network_facts_too_large_for_the_state_are_left_out() {
    let mut facts = cordon_common::network::NetworkFacts {
        vpc_id: "vpc-1".into(),
        ..Default::default()
    };
    assert!(facts_fit_in_state(&facts));
    for i in 0..3000 {
        facts
            .network_acls
            .insert(format!("subnet-{i:017x}"), format!("acl-{i:017x}"));
    }
    assert!(!facts_fit_in_state(&facts), "about 150 KB of facts");
}
