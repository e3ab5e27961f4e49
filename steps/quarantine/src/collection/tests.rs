//! The collection path against a small stateful EC2 world: an instance quarantined in subnet-app,
//! the SSM endpoints in subnet-endpoints (whose ACL holds Cordon's deny rules for the instance),
//! a NAT gateway's subnet-public with deny rules of its own, an S3 gateway endpoint on the
//! instance's route table. Security group rules and ACL entries are kept as EC2 keeps them, so the
//! read-backs see what the calls changed and a rerun sees the first run's result.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::group::{atoms, Peer, Rule};
use super::*;
use crate::{FLUSH_GROUP, ISOLATION_GROUP, TAG_ROLE};
use aws_sdk_ec2::operation::authorize_security_group_egress::AuthorizeSecurityGroupEgressOutput;
use aws_sdk_ec2::operation::create_network_acl_entry::CreateNetworkAclEntryOutput;
use aws_sdk_ec2::operation::create_security_group::CreateSecurityGroupOutput;
use aws_sdk_ec2::operation::delete_network_acl_entry::DeleteNetworkAclEntryOutput;
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::describe_network_acls::DescribeNetworkAclsOutput;
use aws_sdk_ec2::operation::describe_network_interfaces::DescribeNetworkInterfacesOutput;
use aws_sdk_ec2::operation::describe_prefix_lists::DescribePrefixListsOutput;
use aws_sdk_ec2::operation::describe_route_tables::DescribeRouteTablesOutput;
use aws_sdk_ec2::operation::describe_security_groups::DescribeSecurityGroupsOutput;
use aws_sdk_ec2::operation::describe_vpc_endpoints::DescribeVpcEndpointsOutput;
use aws_sdk_ec2::operation::modify_network_interface_attribute::ModifyNetworkInterfaceAttributeOutput;
use aws_sdk_ec2::operation::revoke_security_group_egress::RevokeSecurityGroupEgressOutput;
use aws_sdk_ec2::operation::revoke_security_group_ingress::RevokeSecurityGroupIngressOutput;
use aws_sdk_ec2::types::{
    GroupIdentifier, InstanceNetworkInterface, InstancePrivateIpAddress, NetworkAcl,
    NetworkAclAssociation, NetworkAclEntry, NetworkInterface, PortRange, PrefixList, Reservation,
    RouteTable, RouteTableAssociation, RuleAction, SecurityGroup, SecurityGroupIdentifier,
    VpcEndpoint, VpcEndpointType,
};
use aws_smithy_mocks::{mock, mock_client, MockResponse, Rule as MockRule, RuleMode};
use cordon_common::testing::ec2_error;
use cordon_common::timeline::Outcome;
use serde_json::json;

const ID: &str = "i-0123456789abcdef0";
const IP: &str = "10.0.1.10/32";
const S3: &str = "com.amazonaws.us-east-1.s3";

#[derive(Default)]
struct State {
    /// the instance's interfaces → groups (all in subnet-app)
    enis: BTreeMap<String, Vec<String>>,
    ips: BTreeMap<String, String>,
    /// other interfaces of the VPC → groups
    foreign: BTreeMap<String, Vec<String>>,
    /// group name → (id, ingress, egress)
    groups: BTreeMap<String, (String, BTreeSet<Rule>, BTreeSet<Rule>)>,
    /// group name → its cordon:role tag
    roles: BTreeMap<String, String>,
    endpoints: Vec<VpcEndpoint>,
    /// network ACL → (associated subnets, entries)
    acls: BTreeMap<String, (Vec<String>, Vec<NetworkAclEntry>)>,
    /// ModifyNetworkInterfaceAttribute calls that fail: (interface, group)
    fail_moves: Vec<(String, String)>,
    /// every group change: (interface, groups)
    moves: Vec<(String, Vec<String>)>,
    mutations: usize,
}

type World = Arc<Mutex<State>>;
/// An ACL entry as the tests compare them: (number, egress, action, cidr, TCP ports).
type AclRow = (i32, bool, &'static str, String, Option<(i32, i32)>);

fn acl_entry(number: i32, egress: bool, action: RuleAction, cidr: &str) -> NetworkAclEntry {
    NetworkAclEntry::builder()
        .rule_number(number)
        .egress(egress)
        .protocol("-1")
        .rule_action(action)
        .cidr_block(cidr)
        .build()
}

fn default_entries() -> Vec<NetworkAclEntry> {
    let mut v = Vec::new();
    for egress in [false, true] {
        v.push(acl_entry(100, egress, RuleAction::Allow, "0.0.0.0/0"));
        v.push(acl_entry(32767, egress, RuleAction::Deny, "0.0.0.0/0"));
    }
    v
}

/// The default rules plus quarantine's deny rules for the instance at 99, both directions.
fn denied_entries() -> Vec<NetworkAclEntry> {
    let mut v = default_entries();
    for egress in [false, true] {
        v.push(acl_entry(99, egress, RuleAction::Deny, IP));
    }
    v
}

fn interface_endpoint(id: &str, svc: &str) -> VpcEndpoint {
    VpcEndpoint::builder()
        .vpc_endpoint_id(id)
        .vpc_endpoint_type(VpcEndpointType::Interface)
        .vpc_id("vpc-1")
        .service_name(format!("com.amazonaws.us-east-1.{svc}"))
        // As the API spells it (the SDK enum says "Available").
        .state(aws_sdk_ec2::types::State::from("available"))
        .private_dns_enabled(true)
        .groups(
            SecurityGroupIdentifier::builder()
                .group_id("sg-endpoints")
                .build(),
        )
        .subnet_ids("subnet-endpoints")
        .network_interface_ids(format!("eni-{id}"))
        .build()
}

fn all_traffic() -> BTreeSet<Rule> {
    ["0.0.0.0/0", "::/0"]
        .into_iter()
        .map(|c| Rule {
            protocol: "-1".into(),
            from: None,
            to: None,
            peer: if c.contains(':') {
                Peer::V6(c.into())
            } else {
                Peer::V4(c.into())
            },
        })
        .collect()
}

fn world() -> World {
    let mut s = State::default();
    s.enis.insert("eni-a".into(), vec!["sg-iso".into()]);
    s.ips.insert("eni-a".into(), "10.0.1.10".into());
    for (id, svc) in [
        ("vpce-ssm", "ssm"),
        ("vpce-ssmmessages", "ssmmessages"),
        ("vpce-ec2messages", "ec2messages"),
    ] {
        s.endpoints.push(interface_endpoint(id, svc));
        s.foreign
            .insert(format!("eni-{id}"), vec!["sg-endpoints".into()]);
    }
    s.endpoints.push(
        VpcEndpoint::builder()
            .vpc_endpoint_id("vpce-s3")
            .vpc_endpoint_type(VpcEndpointType::Gateway)
            .vpc_id("vpc-1")
            .service_name(S3)
            .state(aws_sdk_ec2::types::State::from("available"))
            .route_table_ids("rtb-app")
            .build(),
    );
    s.groups.insert(
        ISOLATION_GROUP.into(),
        ("sg-iso".into(), BTreeSet::new(), BTreeSet::new()),
    );
    s.groups.insert(
        FLUSH_GROUP.into(),
        ("sg-flush".into(), all_traffic(), all_traffic()),
    );
    s.acls.insert(
        "acl-app".into(),
        (vec!["subnet-app".into()], default_entries()),
    );
    s.acls.insert(
        "acl-endpoints".into(),
        (vec!["subnet-endpoints".into()], denied_entries()),
    );
    s.acls.insert(
        "acl-public".into(),
        (vec!["subnet-public".into()], denied_entries()),
    );
    Arc::new(Mutex::new(s))
}

impl State {
    fn group(&self, name: &str) -> (BTreeSet<Rule>, BTreeSet<Rule>) {
        let (_, i, e) = &self.groups[name];
        (i.clone(), e.clone())
    }

    /// The ACL's entries other than AWS's defaults: (number, egress, action, cidr, ports).
    fn rules(&self, acl: &str) -> Vec<AclRow> {
        let mut v: Vec<_> = self.acls[acl]
            .1
            .iter()
            .filter(|e| !matches!(e.rule_number(), Some(100 | 32767)))
            .map(|e| {
                (
                    e.rule_number().unwrap(),
                    e.egress().unwrap(),
                    if e.rule_action() == Some(&RuleAction::Allow) {
                        "allow"
                    } else {
                        "deny"
                    },
                    e.cidr_block().unwrap().to_owned(),
                    e.port_range().map(|p| (p.from().unwrap(), p.to().unwrap())),
                )
            })
            .collect();
        v.sort();
        v
    }
}

fn https(peer: Peer) -> Rule {
    Rule::https(peer)
}

fn rules(w: &World) -> Vec<MockRule> {
    let mut out = Vec::new();
    let w1 = w.clone();
    out.push(
        mock!(aws_sdk_ec2::Client::describe_instances).then_compute_output(move |r| {
            assert_eq!(r.instance_ids(), [ID]);
            let s = w1.lock().unwrap();
            let mut i = aws_sdk_ec2::types::Instance::builder()
                .instance_id(ID)
                .vpc_id("vpc-1")
                .subnet_id("subnet-app");
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
                    );
                for g in groups {
                    n = n.groups(GroupIdentifier::builder().group_id(g).build());
                }
                i = i.network_interfaces(n.build());
            }
            DescribeInstancesOutput::builder()
                .reservations(Reservation::builder().instances(i.build()).build())
                .build()
        }),
    );
    let w2 = w.clone();
    out.push(
        mock!(aws_sdk_ec2::Client::describe_network_interfaces).then_compute_output(move |r| {
            let s = w2.lock().unwrap();
            let mut o = DescribeNetworkInterfacesOutput::builder();
            let eni = |id: &str, groups: &[String]| {
                let mut n = NetworkInterface::builder().network_interface_id(id);
                for g in groups {
                    n = n.groups(GroupIdentifier::builder().group_id(g).build());
                }
                n.build()
            };
            let f = &r.filters()[0];
            match f.name() {
                Some("attachment.instance-id") => {
                    assert_eq!(f.values(), [ID]);
                    for (id, groups) in &s.enis {
                        o = o.network_interfaces(eni(id, groups));
                    }
                }
                Some("group-id") => {
                    for (id, groups) in s.enis.iter().chain(&s.foreign) {
                        if groups.iter().any(|g| f.values().contains(g)) {
                            o = o.network_interfaces(eni(id, groups));
                        }
                    }
                }
                other => panic!("unexpected filter {other:?}"),
            }
            o.build()
        }),
    );
    let w3 = w.clone();
    out.push(
        mock!(aws_sdk_ec2::Client::describe_security_groups).then_compute_output(move |r| {
            let s = w3.lock().unwrap();
            assert!(r
                .filters()
                .iter()
                .any(|f| f.name() == Some("vpc-id") && f.values() == ["vpc-1"]));
            let name = r
                .filters()
                .iter()
                .find(|f| f.name() == Some("group-name"))
                .map(|f| f.values()[0].clone())
                .unwrap();
            let mut o = DescribeSecurityGroupsOutput::builder();
            if let Some((id, ingress, egress)) = s.groups.get(&name) {
                o = o.security_groups(
                    SecurityGroup::builder()
                        .group_id(id)
                        .group_name(&name)
                        .set_ip_permissions(Some(ingress.iter().map(Rule::permission).collect()))
                        .set_ip_permissions_egress(Some(
                            egress.iter().map(Rule::permission).collect(),
                        ))
                        .build(),
                );
            }
            o.build()
        }),
    );
    let w4 = w.clone();
    out.push(
        mock!(aws_sdk_ec2::Client::create_security_group).then_compute_output(move |r| {
            let mut s = w4.lock().unwrap();
            assert_eq!(r.vpc_id(), Some("vpc-1"));
            let name = r.group_name().unwrap().to_owned();
            let tag = &r.tag_specifications()[0].tags()[0];
            assert_eq!(tag.key(), Some(TAG_ROLE));
            s.roles.insert(name.clone(), tag.value().unwrap().into());
            let id = format!("sg-{name}");
            // A new group allows all outbound IPv4 traffic.
            let default = all_traffic()
                .into_iter()
                .filter(|r| matches!(r.peer, Peer::V4(_)))
                .collect();
            s.groups
                .insert(name, (id.clone(), BTreeSet::new(), default));
            s.mutations += 1;
            CreateSecurityGroupOutput::builder().group_id(id).build()
        }),
    );
    // Security group rules change one at a time, and fail as a whole as EC2's do.
    fn change(
        w: &World,
        group_id: Option<&str>,
        perms: &[aws_sdk_ec2::types::IpPermission],
        egress: bool,
        add: bool,
    ) -> Result<(), &'static str> {
        let mut s = w.lock().unwrap();
        let wanted = atoms(perms);
        assert_eq!(wanted.len(), 1, "one rule per call");
        let (_, ingress, out) = s
            .groups
            .values_mut()
            .find(|(id, _, _)| Some(id.as_str()) == group_id)
            .unwrap();
        let set = if egress { out } else { ingress };
        if add && !set.is_disjoint(&wanted) {
            return Err("InvalidPermission.Duplicate");
        }
        if !add && !wanted.is_subset(set) {
            return Err("InvalidPermission.NotFound");
        }
        for r in wanted {
            if add {
                set.insert(r);
            } else {
                set.remove(&r);
            }
        }
        s.mutations += 1;
        Ok(())
    }
    let w5 = w.clone();
    out.push(
        mock!(aws_sdk_ec2::Client::revoke_security_group_egress).then_compute_response(move |r| {
            match change(&w5, r.group_id(), r.ip_permissions(), true, false) {
                Ok(()) => MockResponse::Output(RevokeSecurityGroupEgressOutput::builder().build()),
                Err(code) => MockResponse::Http(ec2_error(400, code)()),
            }
        }),
    );
    let w6 = w.clone();
    out.push(
        mock!(aws_sdk_ec2::Client::revoke_security_group_ingress).then_compute_response(move |r| {
            match change(&w6, r.group_id(), r.ip_permissions(), false, false) {
                Ok(()) => MockResponse::Output(RevokeSecurityGroupIngressOutput::builder().build()),
                Err(code) => MockResponse::Http(ec2_error(400, code)()),
            }
        }),
    );
    let w7 = w.clone();
    out.push(
        mock!(aws_sdk_ec2::Client::authorize_security_group_egress).then_compute_response(
            move |r| match change(&w7, r.group_id(), r.ip_permissions(), true, true) {
                Ok(()) => {
                    MockResponse::Output(AuthorizeSecurityGroupEgressOutput::builder().build())
                }
                Err(code) => MockResponse::Http(ec2_error(400, code)()),
            },
        ),
    );
    let w8 = w.clone();
    out.push(
        mock!(aws_sdk_ec2::Client::modify_network_interface_attribute).then_compute_response(
            move |r| {
                let mut s = w8.lock().unwrap();
                let eni = r.network_interface_id().unwrap().to_owned();
                assert!(r.connection_tracking_specification().is_none());
                let groups = r.groups().to_vec();
                if s.fail_moves
                    .iter()
                    .any(|(e, g)| *e == eni && groups == [g.clone()])
                {
                    return MockResponse::Http(ec2_error(403, "UnauthorizedOperation")());
                }
                s.mutations += 1;
                s.enis.insert(eni.clone(), groups.clone());
                s.moves.push((eni, groups));
                MockResponse::Output(ModifyNetworkInterfaceAttributeOutput::builder().build())
            },
        ),
    );
    let w9 = w.clone();
    out.push(
        mock!(aws_sdk_ec2::Client::describe_vpc_endpoints).then_compute_output(move |r| {
            let names: Vec<_> = r.filters().iter().filter_map(|f| f.name()).collect();
            assert_eq!(names, ["vpc-id", "vpc-endpoint-state"]);
            assert_eq!(r.filters()[1].values(), ["available"]);
            let s = w9.lock().unwrap();
            DescribeVpcEndpointsOutput::builder()
                .set_vpc_endpoints(Some(s.endpoints.clone()))
                .build()
        }),
    );
    out.push(
        mock!(aws_sdk_ec2::Client::describe_prefix_lists).then_compute_output(|r| {
            let f = &r.filters()[0];
            assert_eq!(f.name(), Some("prefix-list-name"));
            let mut o = DescribePrefixListsOutput::builder();
            if f.values() == [S3] {
                o = o.prefix_lists(
                    PrefixList::builder()
                        .prefix_list_id("pl-s3")
                        .prefix_list_name(S3)
                        .build(),
                );
            }
            o.build()
        }),
    );
    out.push(
        mock!(aws_sdk_ec2::Client::describe_route_tables).then_output(|| {
            DescribeRouteTablesOutput::builder()
                .route_tables(
                    RouteTable::builder()
                        .route_table_id("rtb-app")
                        .associations(
                            RouteTableAssociation::builder()
                                .subnet_id("subnet-app")
                                .build(),
                        )
                        .build(),
                )
                .route_tables(
                    RouteTable::builder()
                        .route_table_id("rtb-main")
                        .associations(RouteTableAssociation::builder().main(true).build())
                        .build(),
                )
                .build()
        }),
    );
    let w10 = w.clone();
    out.push(
        mock!(aws_sdk_ec2::Client::describe_network_acls).then_compute_output(move |r| {
            let s = w10.lock().unwrap();
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
        }),
    );
    let w11 = w.clone();
    out.push(
        mock!(aws_sdk_ec2::Client::create_network_acl_entry).then_compute_response(move |r| {
            let mut s = w11.lock().unwrap();
            let (_, entries) = s.acls.get_mut(r.network_acl_id().unwrap()).unwrap();
            let egress = r.egress().unwrap();
            if entries
                .iter()
                .any(|e| e.egress() == Some(egress) && e.rule_number() == r.rule_number())
            {
                return MockResponse::Http(ec2_error(400, "NetworkAclEntryAlreadyExists")());
            }
            assert_eq!(r.protocol(), Some("6"));
            entries.push(
                NetworkAclEntry::builder()
                    .rule_number(r.rule_number().unwrap())
                    .egress(egress)
                    .protocol("6")
                    .rule_action(r.rule_action().unwrap().clone())
                    .set_port_range(r.port_range().cloned())
                    .set_cidr_block(r.cidr_block().map(str::to_owned))
                    .build(),
            );
            s.mutations += 1;
            MockResponse::Output(CreateNetworkAclEntryOutput::builder().build())
        }),
    );
    let w12 = w.clone();
    out.push(
        mock!(aws_sdk_ec2::Client::delete_network_acl_entry).then_compute_response(move |r| {
            let mut s = w12.lock().unwrap();
            let (_, entries) = s.acls.get_mut(r.network_acl_id().unwrap()).unwrap();
            let before = entries.len();
            entries.retain(|e| !(e.egress() == r.egress() && e.rule_number() == r.rule_number()));
            if entries.len() == before {
                return MockResponse::Http(ec2_error(400, "InvalidNetworkAclEntry.NotFound")());
            }
            s.mutations += 1;
            MockResponse::Output(DeleteNetworkAclEntryOutput::builder().build())
        }),
    );
    out
}

fn client(rules: &[MockRule]) -> aws_sdk_ec2::Client {
    mock_client!(
        aws_sdk_ec2,
        RuleMode::MatchAny,
        rules.iter().collect::<Vec<_>>().as_slice(),
        |c| c.retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled())
    )
}

fn incident(network: &str) -> Incident {
    Incident::from_value(json!({
        "incident_id": "IR-11",
        "instance_id": ID,
        "options": {"collection_network": network},
    }))
    .unwrap()
}

async fn open_in(w: &World, network: &str) -> Result<Opened, StepError> {
    open(&client(&rules(w)), &incident(network)).await
}

async fn close_in(w: &World) -> Result<Closed, StepError> {
    close(&client(&rules(w)), &incident("endpoints")).await
}

fn allow_rule(number: i32, egress: bool) -> AclRow {
    let ports = if egress { (1024, 65535) } else { (443, 443) };
    (number, egress, "allow", IP.to_owned(), Some(ports))
}

fn deny_rule(number: i32, egress: bool) -> AclRow {
    (number, egress, "deny", IP.to_owned(), None)
}

// ------------------------------------------------------------------ open, endpoints

#[tokio::test]
async fn missing_endpoints_are_a_gap_and_nothing_changes() {
    let w = world();
    w.lock()
        .unwrap()
        .endpoints
        .retain(|e| e.vpc_endpoint_id() == Some("vpce-ssm"));
    let out = open_in(&w, "endpoints").await.unwrap();

    assert!(!out.opened);
    assert_eq!(out.missing_endpoints, ["ec2messages", "s3", "ssmmessages"]);
    let gap = out
        .gaps
        .iter()
        .find(|g| g.what == "OS-level collection")
        .expect("gap");
    assert!(
        gap.reason
            .contains("no usable endpoint for ec2messages, s3, ssmmessages"),
        "{}",
        gap.reason
    );
    assert!(gap.reason.contains("com.amazonaws.us-east-1.ssmmessages"));
    let s = w.lock().unwrap();
    assert_eq!(s.mutations, 0, "nothing changed");
    assert_eq!(s.enis["eni-a"], ["sg-iso"]);
    assert!(out.actions.is_empty());
    assert!(out.collection_group_id.is_none());
}

#[tokio::test]
async fn an_endpoint_that_the_instance_cannot_use_counts_as_missing() {
    let w = world();
    {
        let mut s = w.lock().unwrap();
        for e in s.endpoints.iter_mut() {
            if e.vpc_endpoint_id() == Some("vpce-ssmmessages") {
                e.private_dns_enabled = Some(false);
            }
            if e.vpc_endpoint_id() == Some("vpce-s3") {
                e.route_table_ids = Some(vec!["rtb-other".into()]);
            }
        }
    }
    let out = open_in(&w, "endpoints").await.unwrap();
    assert!(!out.opened);
    assert_eq!(out.missing_endpoints, ["s3", "ssmmessages"]);
    let reason = &out.gaps[0].reason;
    assert!(
        reason.contains("vpce-ssmmessages has private DNS off"),
        "{reason}"
    );
    assert!(
        reason.contains("vpce-s3 is not a target of the instance's route table (rtb-app)"),
        "{reason}"
    );
    assert_eq!(w.lock().unwrap().mutations, 0);
}

#[tokio::test]
async fn endpoints_open_the_collection_group_exactly_as_designed() {
    let w = world();
    let out = open_in(&w, "endpoints").await.unwrap();

    assert!(out.opened && out.verified, "{:?}", out.gaps);
    assert!(out.gaps.is_empty(), "{:?}", out.gaps);
    let s = w.lock().unwrap();
    let group = "sg-cordon-collection";
    assert_eq!(out.collection_group_id.as_deref(), Some(group));
    assert_eq!(s.roles[COLLECTION_GROUP], "collection");
    let (ingress, egress) = s.group(COLLECTION_GROUP);
    assert!(ingress.is_empty(), "no inbound rule");
    assert_eq!(
        egress,
        BTreeSet::from([
            https(Peer::Group("sg-endpoints".into())),
            https(Peer::PrefixList("pl-s3".into())),
        ]),
        "TCP 443 to the endpoints' group and S3's prefix list, the default allow-all revoked"
    );
    // Straight from isolation into the collection group: no flush on the way in.
    assert_eq!(s.moves, [("eni-a".to_owned(), vec![group.to_owned()])]);
    // The endpoints' subnet lets the path through, before Cordon's deny rules; the NAT gateway's
    // subnet (no endpoint) and the instance's own subnet are left alone.
    assert_eq!(
        s.rules("acl-endpoints"),
        [
            allow_rule(98, false),
            allow_rule(98, true),
            deny_rule(99, false),
            deny_rule(99, true)
        ]
    );
    assert_eq!(
        s.rules("acl-public"),
        [deny_rule(99, false), deny_rule(99, true)]
    );
    assert!(s.rules("acl-app").is_empty());
    assert_eq!(out.network_acl_allow_rules.len(), 2);
    assert!(out.network_acl_allow_rules.iter().all(|r| r.created
        && r.network_acl_id == "acl-endpoints"
        && r.network_interface_id == "eni-a"));
    assert_eq!(
        out.endpoints.keys().collect::<Vec<_>>(),
        ["ec2messages", "s3", "ssm", "ssmmessages"]
    );
    assert_eq!(
        out.endpoints["s3"][0].prefix_list_id.as_deref(),
        Some("pl-s3")
    );
    // Recorded: the group, its rules, the ACL rules, the move.
    let names: BTreeSet<&str> = out.actions.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "create collection security group",
            group::SET_RULES,
            acl::ALLOW,
            MOVE
        ])
    );
    let set = out
        .actions
        .iter()
        .find(|a| a.action == group::SET_RULES)
        .unwrap();
    assert_eq!(
        set.after,
        json!({"ingress": [], "egress": ["tcp 443 sg-endpoints", "tcp 443 pl-s3"]})
    );
    assert_eq!(
        set.before,
        json!({"ingress": [], "egress": ["all 0.0.0.0/0"]})
    );
    let json = serde_json::to_value(&out).unwrap();
    assert_eq!(json["collection_network"], "endpoints");
    assert_eq!(json["network_acl_allow_rules"][0]["protocol"], "6");
}

#[tokio::test]
async fn an_endpoint_group_on_other_interfaces_is_said() {
    let w = world();
    w.lock().unwrap().foreign.insert(
        "eni-web".into(),
        vec!["sg-endpoints".into(), "sg-web".into()],
    );
    let out = open_in(&w, "endpoints").await.unwrap();
    assert!(out.opened);
    let gap = out
        .gaps
        .iter()
        .find(|g| g.what == "collection path: endpoint security groups shared")
        .expect("gap");
    assert!(
        gap.reason.contains("1 other interface(s) (eni-web)"),
        "{}",
        gap.reason
    );
}

#[tokio::test]
async fn a_tampered_collection_group_is_reconciled() {
    let w = world();
    {
        let mut s = w.lock().unwrap();
        let ssh = Rule {
            protocol: "tcp".into(),
            from: Some(22),
            to: Some(22),
            peer: Peer::V4("0.0.0.0/0".into()),
        };
        s.groups.insert(
            COLLECTION_GROUP.into(),
            (
                "sg-coll".into(),
                BTreeSet::from([ssh.clone()]),
                BTreeSet::from([
                    ssh,
                    https(Peer::Group("sg-old-endpoints".into())),
                    https(Peer::PrefixList("pl-s3".into())),
                ]),
            ),
        );
    }
    let out = open_in(&w, "endpoints").await.unwrap();
    assert!(out.opened, "{:?}", out.gaps);
    let s = w.lock().unwrap();
    let (ingress, egress) = s.group(COLLECTION_GROUP);
    assert!(ingress.is_empty(), "the inbound rule revoked");
    assert_eq!(
        egress,
        BTreeSet::from([
            https(Peer::Group("sg-endpoints".into())),
            https(Peer::PrefixList("pl-s3".into())),
        ])
    );
    let set = out
        .actions
        .iter()
        .find(|a| a.action == group::SET_RULES)
        .unwrap();
    assert_eq!(set.outcome, Outcome::Changed);
    assert_eq!(
        set.before,
        json!({"ingress": ["tcp 22 0.0.0.0/0"], "egress": ["tcp 22 0.0.0.0/0", "tcp 443 sg-old-endpoints", "tcp 443 pl-s3"]})
    );
    assert!(
        !s.roles.contains_key(COLLECTION_GROUP),
        "found, not created"
    );
}

#[tokio::test]
async fn allow_rules_go_below_the_deny_rule_and_skip_other_instances_rules() {
    let w = world();
    w.lock()
        .unwrap()
        .acls
        .get_mut("acl-endpoints")
        .unwrap()
        .1
        .push(acl_entry(98, false, RuleAction::Deny, "10.0.9.9/32"));
    let out = open_in(&w, "endpoints").await.unwrap();
    assert!(out.opened);
    let s = w.lock().unwrap();
    let rules = s.rules("acl-endpoints");
    assert!(rules.contains(&allow_rule(97, false)), "{rules:?}");
    assert!(rules.contains(&allow_rule(98, true)), "{rules:?}");
}

#[tokio::test]
async fn a_deny_rule_without_room_below_it_leaves_the_instance_isolated() {
    let w = world();
    {
        // An inbound deny rule numbered 1 (an older Cordon): no allow rule can precede it.
        let mut s = w.lock().unwrap();
        let entries = &mut s.acls.get_mut("acl-endpoints").unwrap().1;
        entries.retain(|e| !(e.rule_number() == Some(99) && e.egress() == Some(false)));
        entries.push(acl_entry(1, false, RuleAction::Deny, IP));
    }
    let before = w.lock().unwrap().acls["acl-endpoints"].1.len();
    let out = open_in(&w, "endpoints").await.unwrap();

    assert!(!out.opened);
    assert!(out.network_acl_allow_rules.is_empty());
    assert!(out.gaps.iter().any(|g| g.what
        == "network ACL acl-endpoints: no inbound collection allow rule for 10.0.1.10/32"
        && g.reason.contains("deny rule 1")));
    assert!(out
        .gaps
        .iter()
        .any(|g| g.what == "OS-level collection" && g.reason.contains("undone")));
    let s = w.lock().unwrap();
    assert_eq!(s.enis["eni-a"], ["sg-iso"], "never left isolation");
    assert_eq!(
        s.acls["acl-endpoints"].1.len(),
        before,
        "the outbound allow rule made meanwhile was removed again"
    );
    assert!(s.moves.is_empty());
}

#[tokio::test]
async fn a_failed_move_is_undone_and_reported() {
    let w = world();
    w.lock()
        .unwrap()
        .fail_moves
        .push(("eni-a".into(), "sg-cordon-collection".into()));
    let err = open_in(&w, "endpoints").await.unwrap_err();
    assert_eq!(err.name(), "AccessDenied");
    let s = w.lock().unwrap();
    assert_eq!(s.enis["eni-a"], ["sg-iso"]);
    assert_eq!(
        s.rules("acl-endpoints"),
        [deny_rule(99, false), deny_rule(99, true)],
        "the allow rules were removed again"
    );
}

// ------------------------------------------------------------------ open, internet-443

#[tokio::test]
async fn internet_443_opens_tcp_443_anywhere_and_records_it() {
    let w = world();
    w.lock().unwrap().endpoints.clear(); // no endpoints needed
    let out = open_in(&w, "internet-443").await.unwrap();

    assert!(out.opened && out.verified, "{:?}", out.gaps);
    let s = w.lock().unwrap();
    let (ingress, egress) = s.group(COLLECTION_INTERNET_GROUP);
    assert!(ingress.is_empty());
    assert_eq!(
        egress,
        BTreeSet::from([
            https(Peer::V4("0.0.0.0/0".into())),
            https(Peer::V6("::/0".into())),
        ])
    );
    assert_eq!(
        s.roles[COLLECTION_INTERNET_GROUP],
        "collection-internet-443"
    );
    assert!(
        !s.groups.contains_key(COLLECTION_GROUP),
        "a group of its own"
    );
    assert_eq!(s.enis["eni-a"], ["sg-cordon-collection-internet-443"]);
    // Every ACL holding Cordon's deny rules lets the path through (the NAT gateway's too).
    for acl in ["acl-endpoints", "acl-public"] {
        assert_eq!(
            s.rules(acl),
            [
                allow_rule(98, false),
                allow_rule(98, true),
                deny_rule(99, false),
                deny_rule(99, true)
            ],
            "{acl}"
        );
    }
    assert!(out.endpoints.is_empty());
    let gap = out
        .gaps
        .iter()
        .find(|g| g.what == "containment during collection")
        .expect("recorded");
    assert!(gap.reason.contains("internet-443"), "{}", gap.reason);
}

// ------------------------------------------------------------------ close and reruns

#[tokio::test]
async fn close_restores_isolation_and_removes_only_this_instances_allow_rules() {
    let w = world();
    open_in(&w, "endpoints").await.unwrap();
    {
        // Another instance's collection path in the same ACL, and a responder's own rule.
        let mut s = w.lock().unwrap();
        let entries = &mut s.acls.get_mut("acl-endpoints").unwrap().1;
        entries.push(
            NetworkAclEntry::builder()
                .rule_number(90)
                .egress(false)
                .protocol("6")
                .rule_action(RuleAction::Allow)
                .port_range(PortRange::builder().from(443).to(443).build())
                .cidr_block("10.0.2.20/32")
                .build(),
        );
        entries.push(acl_entry(50, false, RuleAction::Allow, IP));
        s.moves.clear();
    }
    let out = close_in(&w).await.unwrap();

    assert!(out.closed && out.verified);
    assert_eq!(out.isolation_group_id, "sg-iso");
    assert_eq!(out.restored_interface_ids, ["eni-a"]);
    let s = w.lock().unwrap();
    assert_eq!(
        s.moves,
        [
            ("eni-a".to_owned(), vec!["sg-flush".to_owned()]),
            ("eni-a".to_owned(), vec!["sg-iso".to_owned()])
        ],
        "out through the flush group, so tracked connections end"
    );
    let left = s.rules("acl-endpoints");
    assert_eq!(
        left,
        [
            (50, false, "allow", IP.to_owned(), None),
            (
                90,
                false,
                "allow",
                "10.0.2.20/32".to_owned(),
                Some((443, 443))
            ),
            deny_rule(99, false),
            deny_rule(99, true),
        ]
    );
    assert_eq!(out.network_acl_allow_rules_removed.len(), 2);
    assert!(
        s.groups.contains_key(COLLECTION_GROUP),
        "the shared collection group stays"
    );
    let isolated = out
        .actions
        .iter()
        .filter(|a| a.action == cordon_common::timeline::actions::ISOLATE)
        .count();
    assert_eq!(isolated, 1);
    assert!(out.actions.iter().any(|a| a.action == acl::REMOVE));
}

#[tokio::test]
async fn a_rerun_of_open_or_close_changes_nothing() {
    let w = world();
    open_in(&w, "endpoints").await.unwrap();
    let before = w.lock().unwrap().mutations;
    let again = open_in(&w, "endpoints").await.unwrap();
    assert!(again.opened && again.verified);
    assert_eq!(w.lock().unwrap().mutations, before, "open: nothing changed");
    assert!(
        again
            .actions
            .iter()
            .all(|a| a.outcome == Outcome::Unchanged),
        "{:?}",
        again.actions
    );
    assert_eq!(again.network_acl_allow_rules.len(), 2);
    assert!(again.network_acl_allow_rules.iter().all(|r| !r.created));

    close_in(&w).await.unwrap();
    let before = w.lock().unwrap().mutations;
    let again = close_in(&w).await.unwrap();
    assert_eq!(
        w.lock().unwrap().mutations,
        before,
        "close: nothing changed"
    );
    assert!(again.restored_interface_ids.is_empty());
    assert!(again.network_acl_allow_rules_removed.is_empty());
    assert!(again
        .actions
        .iter()
        .all(|a| a.outcome == Outcome::Unchanged));
}

#[tokio::test]
async fn close_without_open_is_safe() {
    let w = world();
    let out = close_in(&w).await.unwrap();
    assert!(out.closed && out.verified);
    assert_eq!(w.lock().unwrap().mutations, 0);
    assert!(out.restored_interface_ids.is_empty());
}

#[tokio::test]
async fn close_empties_an_isolation_group_that_gained_rules() {
    let w = world();
    open_in(&w, "endpoints").await.unwrap();
    w.lock()
        .unwrap()
        .groups
        .get_mut(ISOLATION_GROUP)
        .unwrap()
        .2
        .insert(https(Peer::V4("0.0.0.0/0".into())));
    let out = close_in(&w).await.unwrap();
    assert!(out.verified);
    let s = w.lock().unwrap();
    assert_eq!(s.group(ISOLATION_GROUP), (BTreeSet::new(), BTreeSet::new()));
}

// ------------------------------------------------------------------ the event

#[test]
fn the_event_names_the_action() {
    let parse = |v: serde_json::Value| cordon_common::lambda::parse::<crate::Event>(v);
    let e = parse(json!({"incident": {}, "action": "open-collection-path"})).unwrap();
    assert_eq!(e.action, Some(crate::EventAction::OpenCollectionPath));
    let e = parse(json!({"incident": {}, "action": "close-collection-path"})).unwrap();
    assert_eq!(e.action, Some(crate::EventAction::CloseCollectionPath));
    assert_eq!(parse(json!({"incident": {}})).unwrap().action, None);
    assert_eq!(
        parse(json!({"incident": {}, "action": "open"}))
            .unwrap_err()
            .name(),
        "InvalidInput"
    );
    assert_eq!(
        parse(json!({"incident": {}, "actoin": "open-collection-path"}))
            .unwrap_err()
            .name(),
        "InvalidInput"
    );
}
