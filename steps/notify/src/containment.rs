//! The containment table: for each way the instance could still reach or be reached, or act with
//! its credentials, what Cordon did and whether that path is `cut`, `bounded` (ends by a timeout,
//! named in `bound`), `still possible`, or `not applicable` to this instance's network. Computed
//! from what the steps returned: quarantine's network facts (`network`) and every action taken.
//! Each rule carries the AWS documentation page it rests on (`source`), and no row claims more
//! than its rule: "configuration verified" means a setting was read back from AWS after the
//! change, not that traffic was observed to stop.
//!
//! The rules (<https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/security-group-connection-tracking.html>
//! unless said otherwise):
//! - a security group without rules admits no new connection in either direction, but security
//!   groups do not filter DNS to the Route 53 Resolver, DHCP, instance metadata or the Amazon Time
//!   Sync Service (<https://docs.aws.amazon.com/vpc/latest/userguide/vpc-security-groups.html>);
//! - an untracked flow ends as soon as the rule that allowed it goes; a tracked one continues until
//!   it has been idle for the interface's connection-tracking timeout (TCP established: 432,000 s
//!   by default, 60 s at the lowest; UDP stream 60 s; UDP 30 s);
//! - connections through NAT gateways, Network and Gateway Load Balancers, interface endpoints
//!   (PrivateLink), transit gateway attachments, egress-only internet gateways, Network Firewall
//!   endpoints, Global Accelerator, Lambda's Hyperplane interfaces and DynamoDB gateway endpoints
//!   are tracked whatever the rules, and ICMP always is; other IP protocols are tracked by address
//!   and protocol for 600 s;
//! - a network ACL is stateless, so a deny rule ends existing flows too, but it is evaluated only
//!   when traffic enters or leaves its subnet, never within one, and it cannot block the Route 53
//!   Resolver or instance metadata (<https://docs.aws.amazon.com/vpc/latest/userguide/vpc-network-acls.html>;
//!   for transit gateway attachments <https://docs.aws.amazon.com/vpc/latest/tgw/tgw-nacls.html>);
//! - removing an instance profile does not invalidate credentials already issued; a deny policy
//!   does, for requests signed with them
//!   (<https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_use_revoke-sessions.html>).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use cordon_common::incident::{NetworkIsolation, RevokeSessions};
use cordon_common::network::{
    cidr_contains, NetworkFacts, RouteTarget, LOOKUP_LOAD_BALANCERS, LOOKUP_MANAGED_INTERFACES,
    LOOKUP_NAT_GATEWAYS, LOOKUP_NETWORK_ACLS, LOOKUP_ROUTE_TABLES,
    LOOKUP_TRANSIT_GATEWAY_ATTACHMENTS, LOOKUP_VPC_ENDPOINTS,
};
use cordon_common::{Action, Incident};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The action names this table reads, as the steps record them.
pub use cordon_common::timeline::actions;

pub mod source {
    pub const SECURITY_GROUPS: &str =
        "https://docs.aws.amazon.com/vpc/latest/userguide/vpc-security-groups.html";
    pub const CONNTRACK: &str =
        "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/security-group-connection-tracking.html";
    pub const UNTRACKED: &str = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/security-group-connection-tracking.html#untracked-connections";
    pub const AUTOMATIC: &str = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/security-group-connection-tracking.html#automatic-tracking";
    pub const NACL: &str = "https://docs.aws.amazon.com/vpc/latest/userguide/vpc-network-acls.html";
    pub const TGW_NACL: &str = "https://docs.aws.amazon.com/vpc/latest/tgw/tgw-nacls.html";
    pub const METADATA: &str = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/configuring-instance-metadata-options.html";
    pub const REVOKE: &str =
        "https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_use_revoke-sessions.html";
    pub const ROLE_CHAINING: &str = "https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_terms-and-concepts.html#iam-term-role-chaining";
    pub const ROLE_CREDENTIALS: &str = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/iam-roles-for-amazon-ec2.html#instance-metadata-security-credentials";
    pub const STOP: &str = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Stop_Start.html";
}

/// The lowest connection-tracking timeouts an interface accepts, and EC2's defaults
/// (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ConnectionTrackingSpecificationRequest.html>).
pub const DEFAULT_TCP_ESTABLISHED: i64 = 432_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    #[serde(rename = "cut")]
    Cut,
    #[serde(rename = "bounded")]
    Bounded,
    #[serde(rename = "still possible")]
    StillPossible,
    #[serde(rename = "not applicable")]
    NotApplicable,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Cut => "CUT",
            Status::Bounded => "BOUNDED",
            Status::StillPossible => "STILL POSSIBLE",
            Status::NotApplicable => "NOT APPLICABLE",
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub path: String,
    /// What Cordon did about it (or did not, and why).
    pub done: String,
    pub status: Status,
    /// For `bounded`: what ends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<String>,
    /// The AWS documentation the status rests on.
    pub source: String,
}

fn row(path: &str, done: impl Into<String>, status: Status, source: &str) -> Row {
    Row {
        path: path.to_owned(),
        done: done.into(),
        status,
        bound: None,
        source: source.to_owned(),
    }
}

/// Connection-tracking timeouts set on an interface, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timeouts {
    tcp_established: i64,
    udp_stream: i64,
    udp: i64,
}

/// A network ACL deny rule Cordon added.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AclRule {
    network_acl_id: String,
    egress: bool,
    cidr: String,
}

/// What the steps did, read from their results and actions.
#[derive(Debug, Default)]
struct Done {
    quarantined: bool,
    verified: bool,
    isolation_group: Option<String>,
    interfaces: Vec<String>,
    deregistered: Vec<String>,
    facts: Option<NetworkFacts>,
    conntrack: BTreeMap<String, Timeouts>,
    acl_rules: Vec<AclRule>,
    profile_removed: bool,
    profile: Option<String>,
    revoked: Option<(String, RevokeSessions)>,
    metadata_disabled: bool,
    /// The metadata options' `State` at the read-back: `pending` until EC2 has applied the change.
    metadata_state: Option<String>,
    forensic_attached: bool,
    /// The `aws:TokenIssueTime` cut-off of the forensic sessions' revocation on this instance.
    forensic_revoked: Option<String>,
    /// The revocation left the SSM agent's channel open for the collection...
    channel_opened: bool,
    /// ...and it was closed again.
    channel_closed: bool,
    /// When an interface was last moved into the collection group (the path was opened)...
    collection_opened_at: Option<String>,
    /// ...and when an interface was last isolated.
    last_isolated_at: Option<String>,
    stopped: Option<String>,
    /// The stop was recorded as complete (`stopped`), not only begun (`stopping`).
    stop_complete: bool,
}

fn int(v: &Value, keys: &[&str]) -> Option<i64> {
    keys.iter().find_map(|k| v.get(*k).and_then(Value::as_i64))
}

fn text<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| v.get(*k).and_then(Value::as_str))
}

/// The first object anywhere in `v` for which `pick` holds.
fn find<'a>(
    v: &'a Value,
    pick: &dyn Fn(&serde_json::Map<String, Value>) -> bool,
) -> Vec<&'a Value> {
    let mut out = Vec::new();
    fn walk<'a>(
        v: &'a Value,
        pick: &dyn Fn(&serde_json::Map<String, Value>) -> bool,
        out: &mut Vec<&'a Value>,
    ) {
        match v {
            Value::Object(m) => {
                if pick(m) {
                    out.push(v);
                }
                m.values().for_each(|x| walk(x, pick, out));
            }
            Value::Array(items) => items.iter().for_each(|x| walk(x, pick, out)),
            _ => {}
        }
    }
    walk(v, pick, &mut out);
    out
}

impl Done {
    fn read(results: &Value, actions: &[Action]) -> Self {
        let mut d = Done::default();
        // Quarantine's output: it returns only after every interface is isolated and the
        // configuration read back.
        if let Some(q) = find(results, &|m| {
            m.contains_key("isolation_group_id") && m.contains_key("network_interface_ids")
        })
        .into_iter()
        .next()
        {
            d.quarantined = true;
            d.verified = q["verified"].as_bool().unwrap_or(false);
            d.isolation_group = q["isolation_group_id"].as_str().map(str::to_owned);
            d.interfaces = q["network_interface_ids"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            d.facts = serde_json::from_value(q["network"].clone()).ok();
        }
        for a in actions {
            match (a.step.as_str(), a.action.as_str()) {
                ("quarantine", actions::DEREGISTER) => d.deregistered.push(a.target.clone()),
                ("quarantine", actions::ISOLATE)
                    if d.last_isolated_at.as_deref() < Some(a.at.as_str()) =>
                {
                    d.last_isolated_at = Some(a.at.clone());
                }
                ("quarantine", actions::CONNTRACK) => {
                    // `{"timeouts": {"tcp_established", "udp_stream", "udp"}, ...}`
                    let t = &a.after["timeouts"];
                    if let (Some(tcp), Some(stream), Some(udp)) = (
                        int(t, &["tcp_established"]),
                        int(t, &["udp_stream"]),
                        int(t, &["udp"]),
                    ) {
                        d.conntrack.insert(
                            a.target.clone(),
                            Timeouts {
                                tcp_established: tcp,
                                udp_stream: stream,
                                udp,
                            },
                        );
                    }
                }
                ("quarantine", actions::NACL_DENY) => {
                    // target: the ACL; `{"rule_number", "egress", "cidr", "rule_action", ...}`
                    let r = &a.after;
                    let denies = text(r, &["rule_action"]) == Some("deny");
                    let cidr = text(r, &["cidr"]);
                    let egress = r.get("egress").and_then(Value::as_bool);
                    if let (true, Some(cidr), Some(egress)) = (denies, cidr, egress) {
                        d.acl_rules.push(AclRule {
                            network_acl_id: a.target.clone(),
                            egress,
                            cidr: cidr.to_owned(),
                        });
                    }
                }
                ("detach-profile", actions::REMOVE_PROFILE) => {
                    d.profile_removed = true;
                    if let Some(arn) = a.before.as_str() {
                        d.profile = Some(arn.to_owned());
                    }
                }
                ("detach-profile", actions::REVOKE) => {
                    // `{"this_instance_denied", "sessions_issued_before", ...}`; the step's
                    // `revoked.scope` (read below) says it directly when present.
                    if a.after["this_instance_collecting"] == Value::Bool(true) {
                        d.channel_opened = true;
                    }
                    let scope = if a.after["this_instance_denied"] == Value::Bool(true)
                        || a.after["this_instance_collecting"] == Value::Bool(true)
                    {
                        RevokeSessions::Instance
                    } else {
                        RevokeSessions::Role
                    };
                    d.revoked = Some((a.target.clone(), scope));
                }
                ("detach-profile", actions::DISABLE_METADATA) => {
                    d.metadata_disabled = true;
                    d.metadata_state = a.after["state"].as_str().map(str::to_owned);
                }
                ("detach-profile", actions::ATTACH_FORENSIC) => d.forensic_attached = true,
                ("quarantine", actions::COLLECTION_MOVE) => {
                    d.collection_opened_at = Some(a.at.clone());
                }
                ("detach-profile", actions::CLOSE_CHANNEL) => {
                    d.channel_opened = true;
                    d.channel_closed = a.after["this_instance_collecting"] == Value::Bool(false);
                }
                ("detach-profile", actions::REVOKE_FORENSIC) => {
                    d.forensic_revoked = a.after["sessions_issued_before"]
                        .as_str()
                        .map(str::to_owned);
                }
                ("termprotect", actions::STOP | actions::HIBERNATE) => {
                    d.stopped = Some(format!(
                        "{} ({})",
                        a.action,
                        a.after.as_str().unwrap_or("?")
                    ));
                    d.stop_complete = a.after.as_str() == Some("stopped");
                }
                _ => {}
            }
        }
        if let Some(r) = find(results, &|m| {
            m.get("revoked")
                .is_some_and(|r| r.get("role_name").is_some() && r.get("scope").is_some())
        })
        .into_iter()
        .next()
        {
            let r = &r["revoked"];
            let scope = serde_json::from_value(r["scope"].clone()).unwrap_or(RevokeSessions::Role);
            d.revoked = Some((
                format!("role/{}", r["role_name"].as_str().unwrap_or("?")),
                scope,
            ));
        }
        if d.profile.is_none() {
            d.profile = find(results, &|m| m.contains_key("removed_profile_arn"))
                .into_iter()
                .find_map(|v| v["removed_profile_arn"].as_str().map(str::to_owned));
        }
        d
    }

    /// The timeouts that hold on every interface, if they were lowered on all of them.
    fn lowered(&self) -> Option<Timeouts> {
        if self.interfaces.is_empty() || self.conntrack.is_empty() {
            return None;
        }
        let mut worst: Option<Timeouts> = None;
        for eni in &self.interfaces {
            let t = self.conntrack.get(eni)?;
            worst = Some(match worst {
                None => *t,
                Some(w) => Timeouts {
                    tcp_established: w.tcp_established.max(t.tcp_established),
                    udp_stream: w.udp_stream.max(t.udp_stream),
                    udp: w.udp.max(t.udp),
                },
            });
        }
        worst
    }

    fn verified(&self) -> &'static str {
        if self.verified {
            " (configuration verified)"
        } else {
            ""
        }
    }
}

/// Families of addresses a path carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Family {
    v4: bool,
    v6: bool,
}

const BOTH: Family = Family { v4: true, v6: true };

fn family_of(destination: &str) -> Family {
    if destination.contains(':') {
        Family {
            v4: false,
            v6: true,
        }
    } else if destination.starts_with("pl-") {
        BOTH
    } else {
        Family {
            v4: true,
            v6: false,
        }
    }
}

/// Something on a path whose connections are tracked automatically.
#[derive(Debug, Clone)]
struct Via {
    label: String,
    /// The subnets it has interfaces in; empty when it has none or they are not known.
    subnets: Vec<String>,
    family: Family,
    /// A network ACL can see this traffic at all (false for egress-only internet gateways and
    /// gateway endpoints, which have no subnet: only the instance's own subnet ACL sees the
    /// traffic, and there it is matched on the remote address).
    nacl_reachable: bool,
}

/// One kind of automatically tracked path, and the parts of this network it goes through.
struct Kind {
    path: &'static str,
    vias: Vec<Via>,
    /// Look-ups it depends on that failed.
    unknown: Vec<String>,
    /// Why it does not apply, when it does not.
    absent: String,
    nacl_source: &'static str,
}

fn vias(facts: &NetworkFacts) -> Vec<Kind> {
    let unknown = |lookups: &[&str]| -> Vec<String> {
        lookups
            .iter()
            .filter_map(|l| facts.unknown(l).map(|r| format!("{l}: {r}")))
            .collect()
    };
    let routes: Vec<_> = facts.routes().collect();
    let component_subnets = |list: &[cordon_common::network::Component], id: &str| {
        list.iter()
            .filter(|c| c.id == id)
            .flat_map(|c| c.subnet_ids.clone())
            .collect::<Vec<_>>()
    };

    // NAT gateways the instance's routes lead to.
    let mut nat: BTreeMap<String, Family> = BTreeMap::new();
    for r in routes.iter().filter(|r| r.kind == RouteTarget::NatGateway) {
        let f = family_of(&r.destination);
        let e = nat.entry(r.target.clone()).or_insert(Family {
            v4: false,
            v6: false,
        });
        e.v4 |= f.v4;
        e.v6 |= f.v6;
    }
    let nat = nat
        .into_iter()
        .map(|(id, family)| Via {
            label: format!("NAT gateway {id}"),
            subnets: component_subnets(&facts.nat_gateways, &id),
            family,
            nacl_reachable: true,
        })
        .collect();

    let balancers = |kind: &str| -> Vec<Via> {
        facts
            .load_balancers
            .iter()
            .filter(|lb| lb.load_balancer_type == kind)
            .map(|lb| Via {
                label: format!(
                    "{} {}",
                    if kind == "network" {
                        "Network Load Balancer"
                    } else {
                        "Gateway Load Balancer"
                    },
                    lb.load_balancer_arn
                ),
                subnets: lb.subnet_ids.clone(),
                family: BOTH,
                nacl_reachable: true,
            })
            .collect()
    };

    // Routes to VPC endpoints: Gateway Load Balancer endpoints, gateway endpoints, and endpoints
    // not among the VPC's own (AWS Network Firewall endpoints).
    let mut gwlb = balancers("gateway");
    let mut firewall = Vec::new();
    let mut dynamodb = Vec::new();
    let mut seen = Vec::new();
    for r in routes.iter().filter(|r| r.kind == RouteTarget::VpcEndpoint) {
        if seen.contains(&r.target) {
            continue;
        }
        seen.push(r.target.clone());
        match facts.endpoint(&r.target) {
            Some(e) if e.endpoint_type == "GatewayLoadBalancer" => gwlb.push(Via {
                label: format!("Gateway Load Balancer endpoint {}", r.target),
                subnets: e.subnet_ids.clone(),
                family: family_of(&r.destination),
                nacl_reachable: true,
            }),
            Some(e) if e.endpoint_type == "Gateway" && e.service_name.ends_with(".dynamodb") => {
                dynamodb.push(Via {
                    label: format!("DynamoDB gateway endpoint {}", r.target),
                    subnets: Vec::new(),
                    family: BOTH,
                    nacl_reachable: false,
                })
            }
            Some(_) => {}
            None if facts.unknown(LOOKUP_VPC_ENDPOINTS).is_none() => firewall.push(Via {
                label: format!(
                    "endpoint {} (not one of the VPC's endpoints: an AWS Network Firewall endpoint)",
                    r.target
                ),
                subnets: Vec::new(),
                family: family_of(&r.destination),
                nacl_reachable: true,
            }),
            None => {}
        }
    }

    let privatelink = facts
        .vpc_endpoints
        .iter()
        .filter(|e| {
            matches!(
                e.endpoint_type.as_str(),
                "Interface" | "Resource" | "ServiceNetwork"
            )
        })
        .map(|e| Via {
            label: format!(
                "interface endpoint {} ({})",
                e.vpc_endpoint_id, e.service_name
            ),
            subnets: e.subnet_ids.clone(),
            family: BOTH,
            nacl_reachable: true,
        })
        .collect();

    let mut tgw_ids: Vec<&str> = routes
        .iter()
        .filter(|r| r.kind == RouteTarget::TransitGateway)
        .map(|r| r.target.as_str())
        .collect();
    tgw_ids.sort_unstable();
    tgw_ids.dedup();
    let tgw = tgw_ids
        .into_iter()
        .map(|tgw| Via {
            label: format!("transit gateway {tgw}"),
            subnets: facts
                .transit_gateway_attachments
                .iter()
                .filter(|a| a.of.as_deref() == Some(tgw))
                .flat_map(|a| a.subnet_ids.clone())
                .collect(),
            family: BOTH,
            nacl_reachable: true,
        })
        .collect();

    let has_v6 = facts.has_ipv6();
    let eigw = if has_v6 {
        let mut ids: Vec<&str> = routes
            .iter()
            .filter(|r| r.kind == RouteTarget::EgressOnlyInternetGateway)
            .map(|r| r.target.as_str())
            .collect();
        ids.dedup();
        ids.into_iter()
            .map(|id| Via {
                label: format!("egress-only internet gateway {id}"),
                subnets: Vec::new(),
                family: Family {
                    v4: false,
                    v6: true,
                },
                nacl_reachable: false,
            })
            .collect()
    } else {
        Vec::new()
    };

    let managed = |kind: &str, name: &str| -> Vec<Via> {
        facts
            .managed_interfaces
            .iter()
            .filter(|m| m.interface_type == kind)
            .map(|m| Via {
                label: format!("{name} {} in {}", m.network_interface_id, m.subnet_id),
                subnets: vec![m.subnet_id.clone()],
                family: BOTH,
                nacl_reachable: true,
            })
            .collect()
    };

    vec![
        Kind {
            path: "existing flows through NAT gateways (tracked automatically)",
            vias: nat,
            unknown: unknown(&[LOOKUP_ROUTE_TABLES, LOOKUP_NAT_GATEWAYS]),
            absent: "no route of the instance's subnets leads to a NAT gateway".into(),
            nacl_source: source::NACL,
        },
        Kind {
            path: "existing flows through Network Load Balancers (tracked automatically)",
            vias: balancers("network"),
            unknown: unknown(&[LOOKUP_LOAD_BALANCERS]),
            absent: "the instance is registered with no Network Load Balancer".into(),
            nacl_source: source::NACL,
        },
        Kind {
            path: "existing flows through Gateway Load Balancers and their endpoints (tracked automatically)",
            vias: gwlb,
            unknown: unknown(&[LOOKUP_LOAD_BALANCERS, LOOKUP_ROUTE_TABLES, LOOKUP_VPC_ENDPOINTS]),
            absent: "no Gateway Load Balancer registration and no route to a Gateway Load Balancer endpoint".into(),
            nacl_source: source::NACL,
        },
        Kind {
            path: "existing flows through interface VPC endpoints, AWS PrivateLink (tracked automatically)",
            vias: privatelink,
            unknown: unknown(&[LOOKUP_VPC_ENDPOINTS]),
            absent: "the VPC has no interface endpoint".into(),
            nacl_source: source::NACL,
        },
        Kind {
            path: "existing flows through transit gateway attachments (tracked automatically)",
            vias: tgw,
            unknown: unknown(&[LOOKUP_ROUTE_TABLES, LOOKUP_TRANSIT_GATEWAY_ATTACHMENTS]),
            absent: "no route of the instance's subnets leads to a transit gateway".into(),
            nacl_source: source::TGW_NACL,
        },
        Kind {
            path: "existing IPv6 flows through egress-only internet gateways (tracked automatically)",
            vias: eigw,
            unknown: if has_v6 { unknown(&[LOOKUP_ROUTE_TABLES]) } else { Vec::new() },
            absent: if has_v6 {
                "no route of the instance's subnets leads to an egress-only internet gateway".into()
            } else {
                "the instance has no IPv6 address".into()
            },
            nacl_source: source::NACL,
        },
        Kind {
            path: "existing flows through AWS Network Firewall endpoints (tracked automatically)",
            vias: firewall,
            unknown: unknown(&[LOOKUP_ROUTE_TABLES, LOOKUP_VPC_ENDPOINTS]),
            absent: "no route of the instance's subnets leads to a firewall endpoint".into(),
            nacl_source: source::NACL,
        },
        Kind {
            path: "existing flows through Global Accelerator (tracked automatically)",
            vias: managed("global_accelerator_managed", "Global Accelerator interface"),
            unknown: unknown(&[LOOKUP_MANAGED_INTERFACES]),
            absent: "the VPC has no Global Accelerator interface".into(),
            nacl_source: source::NACL,
        },
        Kind {
            path: "existing flows with Lambda functions' interfaces in the VPC (tracked automatically)",
            vias: managed("lambda", "Lambda interface"),
            unknown: unknown(&[LOOKUP_MANAGED_INTERFACES]),
            absent: "the VPC has no Lambda interface".into(),
            nacl_source: source::NACL,
        },
        Kind {
            path: "existing flows through DynamoDB gateway endpoints (tracked automatically)",
            vias: dynamodb,
            unknown: unknown(&[LOOKUP_ROUTE_TABLES, LOOKUP_VPC_ENDPOINTS]),
            absent: "no route of the instance's subnets leads to a DynamoDB gateway endpoint".into(),
            nacl_source: source::NACL,
        },
    ]
}

/// Whether deny rules Cordon added cut every packet of the instance through `via`: in the ACL of
/// every subnet `via` has interfaces in, none of them the instance's own, rules in both
/// directions that cover each of the instance's addresses of the families `via` carries.
fn nacl_cut(via: &Via, facts: &NetworkFacts, rules: &[AclRule]) -> Result<Vec<String>, String> {
    if !via.nacl_reachable {
        return Err(format!(
            "{}: no network ACL but the instance's own sees this traffic, and there it is matched on the remote address",
            via.label
        ));
    }
    if via.subnets.is_empty() {
        return Err(format!("{}: its subnets are not known", via.label));
    }
    if let Some(reason) = facts.unknown(LOOKUP_NETWORK_ACLS) {
        return Err(format!(
            "the subnets' network ACLs are not known ({reason})"
        ));
    }
    let own = facts.instance_subnets();
    let mut addresses = Vec::new();
    if via.family.v4 {
        addresses.extend(facts.ipv4_cidrs());
    }
    if via.family.v6 {
        addresses.extend(facts.ipv6_cidrs());
    }
    if addresses.is_empty() {
        return Err(format!(
            "{}: the instance's addresses are not known",
            via.label
        ));
    }
    let mut used = Vec::new();
    for subnet in &via.subnets {
        if own.contains(&subnet.as_str()) {
            return Err(format!(
                "{} is in the instance's own subnet {subnet}: a network ACL does not see traffic within a subnet",
                via.label
            ));
        }
        let Some(acl) = facts.network_acls.get(subnet) else {
            return Err(format!("{}: no network ACL known for {subnet}", via.label));
        };
        for a in &addresses {
            for egress in [false, true] {
                if !rules.iter().any(|r| {
                    &r.network_acl_id == acl && r.egress == egress && cidr_contains(&r.cidr, a)
                }) {
                    return Err(format!(
                        "{}: no {} deny rule for {a} in {acl} ({subnet})",
                        via.label,
                        if egress { "outbound" } else { "inbound" }
                    ));
                }
            }
        }
        used.push(format!("{acl} ({subnet})"));
    }
    Ok(used)
}

fn tracked_bound(t: Timeouts) -> String {
    format!(
        "each flow ends once idle for {} s (TCP established), {} s (UDP stream) or {} s (UDP): the connection-tracking timeouts Cordon lowered; a flow that keeps sending within them is not ended",
        t.tcp_established, t.udp_stream, t.udp
    )
}

fn not_lowered() -> String {
    format!(
        "connection-tracking timeouts not lowered: a tracked flow continues until idle for the interface's TCP established timeout ({DEFAULT_TCP_ESTABLISHED} s by default on most instance types)"
    )
}

/// The whole table. `results` is the execution's state (every step's output).
pub fn table(results: &Value, incident: &Incident, actions: &[Action]) -> Vec<Row> {
    let d = Done::read(results, actions);
    let mut rows = Vec::new();
    let stopped = d.stopped.clone();
    // Stopped: nothing runs on it. Only begun (`stopping`): not yet.
    let stop_complete = d.stop_complete;
    let stop_row = |path: &str, _: &str| {
        let mut r = row(
            path,
            format!(
                "{}: a stopped instance runs nothing and sends nothing",
                stopped.clone().unwrap_or_default()
            ),
            Status::Cut,
            source::STOP,
        );
        if !stop_complete {
            r.status = Status::Bounded;
            r.bound = Some("ends when the instance has finished stopping".into());
        }
        r
    };

    // New connections: the isolation group has no rules.
    let isolated = if d.quarantined {
        format!(
            "isolation security group {} (no rules) on {}{}",
            d.isolation_group.as_deref().unwrap_or("?"),
            if d.interfaces.is_empty() {
                "every interface".to_owned()
            } else {
                d.interfaces.join(", ")
            },
            d.verified()
        )
    } else {
        String::new()
    };
    let not_quarantined =
        "the network was not quarantined (the quarantine step did not complete)".to_owned();
    let mut inbound = isolated.clone();
    if let Some(f) = &d.facts {
        let public: Vec<String> = f
            .interfaces
            .iter()
            .flat_map(|i| {
                i.public_ipv4.iter().map(move |p| {
                    if i.elastic_ip_allocation_ids.is_empty() {
                        p.clone()
                    } else {
                        format!(
                            "{p} (Elastic IP {})",
                            i.elastic_ip_allocation_ids.join(", ")
                        )
                    }
                })
            })
            .collect();
        if !public.is_empty() && d.quarantined {
            let _ = write!(
                inbound,
                "; public address {} stays associated, the group drops new connections to it",
                public.join(", ")
            );
        }
    }
    if !d.deregistered.is_empty() {
        let _ = write!(
            inbound,
            "; deregistered from {} target group(s)",
            d.deregistered.len()
        );
    }
    let (new_status, in_done, out_done) = if d.stopped.is_some() {
        (Status::Cut, inbound.clone(), isolated.clone())
    } else if d.quarantined {
        (Status::Cut, inbound, isolated.clone())
    } else {
        (
            Status::StillPossible,
            not_quarantined.clone(),
            not_quarantined.clone(),
        )
    };
    rows.push(row(
        "new inbound connections",
        in_done,
        new_status,
        source::SECURITY_GROUPS,
    ));
    rows.push(row(
        "new outbound connections",
        format!("{out_done}; DNS, DHCP, instance metadata and the Amazon Time Sync Service are not filtered by security groups (rows below)"),
        new_status,
        source::SECURITY_GROUPS,
    ));

    // Existing flows that security groups do not track automatically.
    rows.push(if stopped.is_some() {
        stop_row("existing TCP and UDP flows not tracked automatically (internet gateway, peering, virtual private gateway, within the VPC)", "")
    } else if d.quarantined {
        row(
            "existing TCP and UDP flows not tracked automatically (internet gateway, peering, virtual private gateway, within the VPC)",
            format!("every interface moved through the all-traffic flush group, where such flows are untracked, into the {isolated}: an untracked flow ends as soon as no rule allows it"),
            Status::Cut,
            source::UNTRACKED,
        )
    } else {
        row(
            "existing TCP and UDP flows not tracked automatically (internet gateway, peering, virtual private gateway, within the VPC)",
            not_quarantined.clone(),
            Status::StillPossible,
            source::UNTRACKED,
        )
    });

    // Automatically tracked flows, path by path.
    let lowered = d.lowered();
    let nacl_requested = incident.options.network == NetworkIsolation::SgNacl;
    match &d.facts {
        None => {
            let mut r = row(
                "existing flows tracked automatically (NAT gateways, load balancers, endpoints, transit gateways, egress-only internet gateways, Global Accelerator)",
                "the network facts were not gathered: which of these paths exist is not known",
                Status::StillPossible,
                source::AUTOMATIC,
            );
            if let Some(s) = &stopped {
                r = stop_row(&r.path, &format!(" ({s})"));
            } else if let Some(t) = lowered {
                r.status = Status::Bounded;
                r.bound = Some(tracked_bound(t));
                r.source = source::CONNTRACK.into();
            } else {
                r.done = format!("{}; {}", r.done, not_lowered());
            }
            rows.push(r);
        }
        Some(f) => {
            for kind in vias(f) {
                if kind.vias.is_empty() && kind.unknown.is_empty() {
                    rows.push(row(
                        kind.path,
                        kind.absent,
                        Status::NotApplicable,
                        source::AUTOMATIC,
                    ));
                    continue;
                }
                if stopped.is_some() {
                    rows.push(stop_row(kind.path, ""));
                    continue;
                }
                let mut cut = Vec::new();
                let mut open = Vec::new();
                for via in &kind.vias {
                    match nacl_cut(via, f, &d.acl_rules) {
                        Ok(acls) => cut.push(format!(
                            "{}: network ACL deny rules for the instance's addresses in {}",
                            via.label,
                            acls.join(", ")
                        )),
                        Err(why) => open.push(why),
                    }
                }
                for u in &kind.unknown {
                    open.push(format!("not known ({u})"));
                }
                let mut done = cut.clone();
                if open.is_empty() {
                    let mut r = row(
                        kind.path,
                        format!("cut by network ACL: {}", done.join("; ")),
                        Status::Cut,
                        kind.nacl_source,
                    );
                    if d.verified {
                        r.done.push_str(" (configuration verified)");
                    }
                    rows.push(r);
                    continue;
                }
                if !nacl_requested {
                    done.push("no network ACL rules: options.network is \"sg\"".to_owned());
                }
                done.extend(
                    open.iter()
                        .map(|o| format!("not cut by a network ACL: {o}")),
                );
                let mut r = row(
                    kind.path,
                    done.join("; "),
                    Status::StillPossible,
                    source::AUTOMATIC,
                );
                if let Some(t) = lowered {
                    r.status = Status::Bounded;
                    r.bound = Some(tracked_bound(t));
                    r.source = source::CONNTRACK.into();
                    r.done = format!(
                        "{}; connection-tracking timeouts lowered on every interface{}",
                        r.done,
                        d.verified()
                    );
                } else {
                    r.done = format!("{}; {}", r.done, not_lowered());
                }
                rows.push(r);
            }
        }
    }

    // ICMP and other protocols: tracked whatever the rules, and not covered by the timeouts.
    let acl_note = if d.acl_rules.is_empty() {
        String::new()
    } else {
        "; the network ACL deny rules above cut it where they apply".to_owned()
    };
    rows.push(match &stopped {
        Some(_) => stop_row("existing ICMP flows (always tracked)", ""),
        None => row(
            "existing ICMP flows (always tracked)",
            format!("ICMP is tracked whatever the security group rules; the connection-tracking timeouts cover TCP and UDP only, and AWS documents no ICMP idle timeout{acl_note}"),
            Status::StillPossible,
            source::CONNTRACK,
        ),
    });
    rows.push(match &stopped {
        Some(_) => stop_row("existing flows of other IP protocols (GRE, ESP, ...)", ""),
        None => Row {
            bound: Some(
                "a reply is accepted only within 600 s of the last packet of the flow".into(),
            ),
            ..row(
                "existing flows of other IP protocols (GRE, ESP, ...)",
                format!("tracked by address and protocol number whatever the rules{acl_note}"),
                Status::Bounded,
                source::CONNTRACK,
            )
        },
    });

    // DNS through the Route 53 Resolver.
    rows.push(match &stopped {
        Some(_) => stop_row("DNS queries through the Route 53 Resolver (VPC+2)", ""),
        None => row(
            "DNS queries through the Route 53 Resolver (VPC+2)",
            "nothing Cordon applies filters it: neither security groups nor network ACLs see Resolver traffic, so DNS queries can still carry data out; Route 53 Resolver DNS Firewall can filter them (not applied by Cordon), stopping the instance ends them. DHCP and the Amazon Time Sync Service are not filtered either",
            Status::StillPossible,
            &format!("{}; {}", source::NACL, source::CONNTRACK),
        ),
    });

    // Instance metadata credentials.
    rows.push(if d.metadata_disabled {
        row(
            "credentials from the instance metadata service",
            format!(
                "instance metadata endpoint disabled (HttpEndpoint=disabled){}{}: no profile associated now or later can hand credentials to the host",
                if d.profile_removed { "; instance profile removed" } else { "" },
                // ModifyInstanceMetadataOptions is asynchronous: State stays `pending` until it is
                // `applied` (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_InstanceMetadataOptionsResponse.html).
                if d.metadata_state.as_deref() == Some("pending") {
                    "; the change was still pending at the read-back: cut once EC2 has applied it"
                } else {
                    ""
                }
            ),
            Status::Cut,
            source::METADATA,
        )
    } else if let Some(s) = &stopped {
        stop_row("credentials from the instance metadata service", &format!(" ({s})"))
    } else if d.profile_removed {
        row(
            "credentials from the instance metadata service",
            "instance profile removed, but the metadata endpoint is still on (not disabled in this execution): a profile associated later would hand its credentials to the host; security groups and network ACLs do not filter instance metadata",
            Status::StillPossible,
            source::METADATA,
        )
    } else {
        row(
            "credentials from the instance metadata service",
            "the instance profile was not removed in this execution",
            Status::StillPossible,
            source::METADATA,
        )
    });

    // Credentials already issued.
    let profile = d.profile.clone();
    let issued = "credentials already issued to the instance's role";
    let chained = "sessions obtained with those credentials before revocation (role chaining)";
    match (&d.revoked, &profile, incident.options.revoke_sessions) {
        (Some((role, scope)), _, _) => {
            let how = match scope {
                RevokeSessions::Role => format!("deny-all policy on {role} for every session issued before the revocation"),
                _ => format!("deny-all policy on {role} for requests signed with this instance's credentials (ec2:SourceInstanceARN)"),
            };
            rows.push(row(
                issued,
                format!("{how}; IAM applies it after propagation (eventually consistent)"),
                Status::Cut,
                source::REVOKE,
            ));
            rows.push(row(
                chained,
                "not revoked: a session of another role assumed with the stolen credentials carries neither this role's policy nor ec2:SourceInstanceARN; each lasts at most one hour, but it can assume roles again where trust policies allow",
                Status::StillPossible,
                source::ROLE_CHAINING,
            ));
        }
        (None, None, _) if d.profile_removed => {
            rows.push(row(
                issued,
                "the instance had no instance profile",
                Status::NotApplicable,
                source::REVOKE,
            ));
            rows.push(row(
                chained,
                "the instance had no instance profile",
                Status::NotApplicable,
                source::ROLE_CHAINING,
            ));
        }
        (None, _, RevokeSessions::None) => {
            rows.push(row(issued, "not revoked at the responder's request (revoke_sessions = none): they stay valid until they expire", Status::StillPossible, source::REVOKE));
            rows.push(row(
                chained,
                "not revoked",
                Status::StillPossible,
                source::ROLE_CHAINING,
            ));
        }
        (None, _, _) => {
            rows.push(row(
                issued,
                "not revoked in this execution: they stay valid until they expire",
                Status::StillPossible,
                source::REVOKE,
            ));
            rows.push(row(
                chained,
                "not revoked",
                Status::StillPossible,
                source::ROLE_CHAINING,
            ));
        }
    }
    let path = "outbound TCP 443 to the SSM and S3 endpoints during collection";
    rows.push(match (&d.collection_opened_at, &d.last_isolated_at) {
        (Some(opened), Some(isolated)) if isolated > opened => row(
            path,
            "open for the collection only (the collection group and its network ACL allow rules), then every interface back in the isolation group through the flush group",
            Status::Cut,
            source::SECURITY_GROUPS,
        ),
        (Some(_), _) => row(
            path,
            "the interfaces are in the collection group: TCP 443 out to the endpoints (or to anywhere with collection_network internet-443) until \"Close collection path\" runs",
            Status::StillPossible,
            source::SECURITY_GROUPS,
        ),
        (None, _) => row(
            path,
            "never opened in this execution",
            Status::NotApplicable,
            source::SECURITY_GROUPS,
        ),
    });
    let channel = "the instance's own credentials: the SSM agent's channel during collection";
    rows.push(match (d.channel_opened, d.channel_closed) {
        (true, false) => row(
            channel,
            "the revocation leaves the SSM agent's channel actions (ssm:UpdateInstanceInformation, ssmmessages:*, ec2messages:*) to the instance's credentials until the collection ends, and this execution has not closed it yet",
            Status::StillPossible,
            source::REVOKE,
        ),
        (true, true) => row(
            channel,
            "was open for the collection only (the agent's channel actions, nothing else); now denied like everything else",
            Status::Cut,
            source::REVOKE,
        ),
        _ => row(
            channel,
            "never opened: no collection over SSM in this execution",
            Status::NotApplicable,
            source::REVOKE,
        ),
    });
    let forensic = "credentials of the forensic profile issued during collection";
    rows.push(match (d.forensic_attached, &d.forensic_revoked) {
        (true, Some(cut_off)) => row(
            forensic,
            format!("the forensic role's sessions issued to this instance before {cut_off} are denied; the role never had more than the SSM agent's Run Command actions (no S3, no parameters)"),
            Status::Cut,
            source::REVOKE,
        ),
        (true, None) => row(
            forensic,
            "the forensic profile was attached for the collection and its sessions on this instance are not revoked: they can take Run Command for this instance (nothing else) until they expire",
            Status::StillPossible,
            source::ROLE_CREDENTIALS,
        ),
        (false, _) => row(
            forensic,
            "the forensic profile was not attached in this execution",
            Status::NotApplicable,
            source::ROLE_CREDENTIALS,
        ),
    });
    rows
}

/// The table as a section of the notification: applicable rows one by one, the others in a line.
pub fn render(rows: &[Row]) -> String {
    let mut m = String::new();
    let _ = writeln!(
        m,
        "What containment guarantees, path by path (cut / bounded / still possible; sources in the manifest's \"containment\"):"
    );
    for r in rows.iter().filter(|r| r.status != Status::NotApplicable) {
        let _ = writeln!(m, "  - {}: {}", r.status.label(), r.path);
        let _ = writeln!(m, "      done: {}", r.done);
        if let Some(b) = &r.bound {
            let _ = writeln!(m, "      bound: {b}");
        }
        let _ = writeln!(m, "      source: {}", r.source);
    }
    let na: Vec<String> = rows
        .iter()
        .filter(|r| r.status == Status::NotApplicable)
        .map(|r| format!("{} ({})", r.path, r.done))
        .collect();
    if !na.is_empty() {
        let _ = writeln!(m, "  Not applicable here: {}", na.join("; "));
    }
    m
}

#[cfg(test)]
mod tests;
