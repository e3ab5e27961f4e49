//! The facts of an instance's network that decide which paths to and from it exist: its
//! interfaces and addresses, the route tables of their subnets and where those routes lead, the
//! VPC's endpoints, transit gateway attachments and AWS-managed interfaces, the load balancers the
//! instance is registered with, and the network ACL of every subnet. "Quarantine network" gathers
//! them (read-only) and returns them as `network`; "Announce" computes the containment table from
//! them. Nothing here calls AWS.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkFacts {
    pub vpc_id: String,
    pub interfaces: Vec<InterfaceFacts>,
    /// The route tables the interfaces' subnets use (explicitly associated, or the VPC's main one).
    pub route_tables: Vec<RouteTableFacts>,
    /// NAT gateways a route of those tables leads to, with the subnet each lives in.
    pub nat_gateways: Vec<Component>,
    /// Every VPC endpoint of the VPC (interface, Gateway Load Balancer, gateway, ...).
    pub vpc_endpoints: Vec<Endpoint>,
    pub transit_gateway_attachments: Vec<Component>,
    /// Load balancers with a target group in which the instance (or one of its addresses) is
    /// registered.
    pub load_balancers: Vec<LoadBalancer>,
    /// AWS-managed network interfaces in the VPC whose flows are tracked automatically:
    /// Lambda (Hyperplane) and Global Accelerator interfaces.
    pub managed_interfaces: Vec<ManagedInterface>,
    /// The network ACL of every subnet in the VPC (subnet ID → network ACL ID).
    pub network_acls: BTreeMap<String, String>,
    /// What could not be looked up, and why: paths the table cannot rule out.
    pub unknown: Vec<Unknown>,
}

/// A look-up that failed; the facts it would have given are missing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Unknown {
    /// One of the `LOOKUP_*` names.
    pub lookup: String,
    pub reason: String,
}

pub const LOOKUP_ROUTE_TABLES: &str = "route-tables";
pub const LOOKUP_NETWORK_ACLS: &str = "network-acls";
pub const LOOKUP_NAT_GATEWAYS: &str = "nat-gateways";
pub const LOOKUP_VPC_ENDPOINTS: &str = "vpc-endpoints";
pub const LOOKUP_TRANSIT_GATEWAY_ATTACHMENTS: &str = "transit-gateway-attachments";
pub const LOOKUP_ELASTIC_IPS: &str = "elastic-ips";
pub const LOOKUP_MANAGED_INTERFACES: &str = "managed-interfaces";
pub const LOOKUP_LOAD_BALANCERS: &str = "load-balancers";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InterfaceFacts {
    pub network_interface_id: String,
    pub subnet_id: String,
    pub private_ipv4: Vec<String>,
    pub ipv4_prefixes: Vec<String>,
    pub ipv6: Vec<String>,
    pub ipv6_prefixes: Vec<String>,
    /// Public IPv4 addresses associated with the interface's private addresses.
    pub public_ipv4: Vec<String>,
    /// The Elastic IP allocations among them.
    pub elastic_ip_allocation_ids: Vec<String>,
    /// The route table the interface's subnet uses.
    pub route_table_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteTableFacts {
    pub route_table_id: String,
    /// The VPC's main route table, used by every subnet without an explicit association.
    pub main: bool,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Route {
    /// An IPv4 or IPv6 CIDR, or a prefix list ID (`pl-...`).
    pub destination: String,
    /// The target's ID (`local`, `igw-...`, `nat-...`, `vpce-...`, ...).
    pub target: String,
    pub kind: RouteTarget,
    /// `active` or `blackhole`.
    pub state: Option<String>,
}

/// Where a route leads (<https://docs.aws.amazon.com/vpc/latest/userguide/route-table-options.html>).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteTarget {
    Local,
    InternetGateway,
    NatGateway,
    EgressOnlyInternetGateway,
    TransitGateway,
    VpcPeering,
    VirtualPrivateGateway,
    /// A VPC endpoint as a target: a gateway endpoint (S3, DynamoDB) or a Gateway Load Balancer
    /// or AWS Network Firewall endpoint; [`NetworkFacts::vpc_endpoints`] tells which.
    VpcEndpoint,
    NetworkInterface,
    Instance,
    LocalGateway,
    CarrierGateway,
    CoreNetwork,
    #[default]
    Other,
}

/// A component with network interfaces in subnets of the VPC (a NAT gateway, a transit gateway
/// attachment).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Component {
    pub id: String,
    /// What it belongs to: the transit gateway of an attachment.
    pub of: Option<String>,
    /// Empty when it has no subnet (a regional NAT gateway).
    pub subnet_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Endpoint {
    pub vpc_endpoint_id: String,
    /// `Interface`, `Gateway`, `GatewayLoadBalancer`, `Resource`, `ServiceNetwork`.
    pub endpoint_type: String,
    pub service_name: String,
    pub state: Option<String>,
    pub subnet_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoadBalancer {
    pub load_balancer_arn: String,
    /// `application`, `network` or `gateway`.
    pub load_balancer_type: String,
    pub subnet_ids: Vec<String>,
    pub target_group_arns: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ManagedInterface {
    pub network_interface_id: String,
    /// EC2's `InterfaceType`: `lambda`, `global_accelerator_managed`.
    pub interface_type: String,
    pub subnet_id: String,
}

impl NetworkFacts {
    /// The subnets the instance's interfaces are in.
    pub fn instance_subnets(&self) -> Vec<&str> {
        let mut s: Vec<&str> = self
            .interfaces
            .iter()
            .map(|i| i.subnet_id.as_str())
            .collect();
        s.sort_unstable();
        s.dedup();
        s
    }

    /// The instance's private IPv4 addresses and delegated prefixes, as CIDRs.
    pub fn ipv4_cidrs(&self) -> Vec<String> {
        self.interfaces
            .iter()
            .flat_map(|i| {
                i.private_ipv4
                    .iter()
                    .map(|a| format!("{a}/32"))
                    .chain(i.ipv4_prefixes.iter().cloned())
            })
            .collect()
    }

    /// The instance's IPv6 addresses and delegated prefixes, as CIDRs.
    pub fn ipv6_cidrs(&self) -> Vec<String> {
        self.interfaces
            .iter()
            .flat_map(|i| {
                i.ipv6
                    .iter()
                    .map(|a| format!("{a}/128"))
                    .chain(i.ipv6_prefixes.iter().cloned())
            })
            .collect()
    }

    pub fn has_ipv6(&self) -> bool {
        !self.ipv6_cidrs().is_empty()
    }

    /// Every active route of the tables the instance's subnets use.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        let used: Vec<&str> = self
            .interfaces
            .iter()
            .filter_map(|i| i.route_table_id.as_deref())
            .collect();
        self.route_tables
            .iter()
            .filter(move |t| used.contains(&t.route_table_id.as_str()))
            .flat_map(|t| t.routes.iter())
            .filter(|r| r.state.as_deref() != Some("blackhole"))
    }

    pub fn endpoint(&self, id: &str) -> Option<&Endpoint> {
        self.vpc_endpoints.iter().find(|e| e.vpc_endpoint_id == id)
    }

    /// Why `lookup` failed, if it did.
    pub fn unknown(&self, lookup: &str) -> Option<&str> {
        self.unknown
            .iter()
            .find(|u| u.lookup == lookup)
            .map(|u| u.reason.as_str())
    }
}

/// Whether `cidr` (an IPv4 or IPv6 CIDR) contains every address of `inner` (a CIDR of the same
/// family). Malformed input contains nothing.
pub fn cidr_contains(cidr: &str, inner: &str) -> bool {
    let (Some((net, len)), Some((addr, inner_len))) = (parse_cidr(cidr), parse_cidr(inner)) else {
        return false;
    };
    if inner_len < len {
        return false;
    }
    match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a.parse::<IpAddr>().ok()?, l.parse::<u8>().ok()?),
        None => {
            let a = s.parse::<IpAddr>().ok()?;
            (a, if a.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_contain_their_addresses_and_nothing_else() {
        assert!(cidr_contains("10.0.3.17/32", "10.0.3.17/32"));
        assert!(cidr_contains("10.0.0.0/16", "10.0.3.17/32"));
        assert!(cidr_contains("0.0.0.0/0", "10.0.3.17"));
        assert!(!cidr_contains("10.0.3.16/32", "10.0.3.17/32"));
        assert!(!cidr_contains("10.0.3.17/32", "10.0.3.0/24"));
        assert!(cidr_contains("2600:1f18:1::/64", "2600:1f18:1::5/128"));
        assert!(!cidr_contains("2600:1f18:2::/64", "2600:1f18:1::5/128"));
        assert!(!cidr_contains("10.0.0.0/8", "2600:1f18:1::5/128"));
        assert!(!cidr_contains("nonsense", "10.0.0.1/32"));
    }

    #[test]
    fn routes_are_those_of_the_instance_subnets_tables_and_active() {
        let f = NetworkFacts {
            interfaces: vec![InterfaceFacts {
                subnet_id: "subnet-a".into(),
                route_table_id: Some("rtb-a".into()),
                private_ipv4: vec!["10.0.3.17".into()],
                ..Default::default()
            }],
            route_tables: vec![
                RouteTableFacts {
                    route_table_id: "rtb-a".into(),
                    main: false,
                    routes: vec![
                        Route {
                            destination: "0.0.0.0/0".into(),
                            target: "nat-1".into(),
                            kind: RouteTarget::NatGateway,
                            state: Some("active".into()),
                        },
                        Route {
                            destination: "10.9.0.0/16".into(),
                            target: "tgw-1".into(),
                            kind: RouteTarget::TransitGateway,
                            state: Some("blackhole".into()),
                        },
                    ],
                },
                RouteTableFacts {
                    route_table_id: "rtb-main".into(),
                    main: true,
                    routes: vec![Route {
                        destination: "0.0.0.0/0".into(),
                        target: "igw-1".into(),
                        kind: RouteTarget::InternetGateway,
                        state: None,
                    }],
                },
            ],
            ..Default::default()
        };
        let targets: Vec<&str> = f.routes().map(|r| r.target.as_str()).collect();
        assert_eq!(targets, ["nat-1"]);
        assert_eq!(f.ipv4_cidrs(), ["10.0.3.17/32"]);
        assert!(!f.has_ipv6());
    }
}
