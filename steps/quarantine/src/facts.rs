//! The facts of the instance's real network that say which paths to and from it exist, for the
//! containment table that "Announce" writes (see `cordon_common::network`). Read-only: every call
//! here is a Describe. A look-up that fails does not fail the step (containment must not wait on
//! a report): it is recorded in `NetworkFacts::unknown`, and the table then cannot rule that path
//! out.
//!
//! What is read, and why:
//! - each interface's subnet, private IPv4 and IPv6 addresses and prefixes, public IPv4 and
//!   Elastic IP (`DescribeAddresses`): the addresses network ACL rules must match, and the
//!   instance's reachability from the internet;
//! - the route table of each interface's subnet (its explicit association, else the VPC's main
//!   table: <https://docs.aws.amazon.com/vpc/latest/userguide/RouteTables.html>) and its routes:
//!   NAT gateways, internet and egress-only internet gateways, transit gateways, peering, virtual
//!   private gateways, gateway endpoints (prefix lists), Gateway Load Balancer and firewall endpoints;
//! - the subnets of the NAT gateways those routes use, of the VPC's endpoints (interface, Gateway
//!   Load Balancer), of its transit gateway attachments, and of the AWS-managed interfaces of
//!   Lambda and Global Accelerator: connections through all of these are tracked automatically,
//!   whatever the security group rules
//!   (<https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/security-group-connection-tracking.html#automatic-tracking>),
//!   and a network ACL can cut them only where they cross a subnet boundary
//!   (<https://docs.aws.amazon.com/vpc/latest/userguide/vpc-network-acls.html>);
//! - the load balancers (and their subnets) of every target group in which the instance, or one of
//!   its private addresses, is registered (`DescribeTargetHealth`, the only way ELBv2 answers
//!   "where is this target registered":
//!   <https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_DescribeTargetHealth.html>);
//! - the network ACL of every subnet in the VPC.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Instance;
use aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum;
use cordon_common::lookup::filter;
use cordon_common::network::{
    Component, Endpoint, InterfaceFacts, LoadBalancer, ManagedInterface, NetworkFacts, Route,
    RouteTableFacts, RouteTarget, Unknown, LOOKUP_ELASTIC_IPS, LOOKUP_LOAD_BALANCERS,
    LOOKUP_MANAGED_INTERFACES, LOOKUP_NAT_GATEWAYS, LOOKUP_NETWORK_ACLS, LOOKUP_ROUTE_TABLES,
    LOOKUP_TRANSIT_GATEWAY_ATTACHMENTS, LOOKUP_VPC_ENDPOINTS,
};
use cordon_common::StepError;

/// Pages read at most per paginated Describe; a VPC with more is reported as not fully known.
pub const MAX_PAGES: usize = 20;
/// DescribeLoadBalancers and DescribeTargetGroups take at most 20 ARNs per call
/// (<https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_DescribeLoadBalancers.html>).
const ELB_ARNS_PER_CALL: usize = 20;
/// AWS-managed interface types whose flows are tracked automatically (the EC2 `InterfaceType`s of
/// Lambda's Hyperplane interfaces and of Global Accelerator,
/// <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_NetworkInterface.html>).
pub const TRACKED_INTERFACE_TYPES: [&str; 2] = ["lambda", "global_accelerator_managed"];

fn more_pages(lookup: &str) -> StepError {
    StepError::invalid(format!(
        "{lookup}: more than {MAX_PAGES} pages; not every entry was read"
    ))
}

/// Gathers the facts; see the module documentation. Fails only when the instance is not in a VPC.
#[tracing::instrument(skip_all, fields(instance_id = instance.instance_id().unwrap_or_default()))]
pub async fn gather(
    ec2: &aws_sdk_ec2::Client,
    elbv2: &aws_sdk_elasticloadbalancingv2::Client,
    instance: &Instance,
) -> Result<NetworkFacts, StepError> {
    let instance_id = instance.instance_id().unwrap_or_default();
    let vpc_id = instance.vpc_id().ok_or_else(|| {
        StepError::invalid(format!("{instance_id} is not in a VPC: no network facts"))
    })?;
    let mut interfaces = interfaces(instance);
    let private: Vec<String> = interfaces
        .iter()
        .flat_map(|i| i.private_ipv4.iter().cloned())
        .collect();

    // Independent look-ups, at the same time: this runs while the response is under way.
    let (tables, acls, endpoints, attachments, addresses, managed, balancers) = tokio::join!(
        route_tables(ec2, vpc_id),
        network_acls(ec2, vpc_id),
        vpc_endpoints(ec2, vpc_id),
        transit_gateway_attachments(ec2, vpc_id),
        elastic_ips(ec2, instance_id),
        managed_interfaces(ec2, vpc_id),
        load_balancers(elbv2, vpc_id, instance_id, &private),
    );
    let mut unknown = Vec::new();
    let mut known = |lookup: &str, e: StepError| {
        tracing::warn!(lookup, error = %e, "network fact not known");
        unknown.push(Unknown {
            lookup: lookup.to_owned(),
            reason: e.to_string(),
        });
    };

    let tables = tables.unwrap_or_else(|e| {
        known(LOOKUP_ROUTE_TABLES, e);
        Vec::new()
    });
    for i in &mut interfaces {
        i.route_table_id = table_of(&tables, &i.subnet_id).map(|t| t.0.route_table_id.clone());
    }
    let used: Vec<String> = interfaces
        .iter()
        .filter_map(|i| i.route_table_id.clone())
        .collect();
    let route_tables: Vec<RouteTableFacts> = tables
        .into_iter()
        .map(|(t, _)| t)
        .filter(|t| used.contains(&t.route_table_id))
        .collect();

    let mut nat_ids: Vec<String> = route_tables
        .iter()
        .flat_map(|t| &t.routes)
        .filter(|r| r.kind == RouteTarget::NatGateway)
        .map(|r| r.target.clone())
        .collect();
    nat_ids.sort();
    nat_ids.dedup();
    let nat_gateways = if nat_ids.is_empty() {
        Vec::new()
    } else {
        nat_gateways(ec2, nat_ids).await.unwrap_or_else(|e| {
            known(LOOKUP_NAT_GATEWAYS, e);
            Vec::new()
        })
    };
    match addresses {
        Ok(eips) => {
            for i in &mut interfaces {
                i.elastic_ip_allocation_ids = eips
                    .iter()
                    .filter(|(eni, _)| eni == &i.network_interface_id)
                    .map(|(_, alloc)| alloc.clone())
                    .collect();
            }
        }
        Err(e) => known(LOOKUP_ELASTIC_IPS, e),
    }
    let facts = NetworkFacts {
        vpc_id: vpc_id.to_owned(),
        interfaces,
        route_tables,
        nat_gateways,
        vpc_endpoints: endpoints.unwrap_or_else(|e| {
            known(LOOKUP_VPC_ENDPOINTS, e);
            Vec::new()
        }),
        transit_gateway_attachments: attachments.unwrap_or_else(|e| {
            known(LOOKUP_TRANSIT_GATEWAY_ATTACHMENTS, e);
            Vec::new()
        }),
        load_balancers: balancers.unwrap_or_else(|e| {
            known(LOOKUP_LOAD_BALANCERS, e);
            Vec::new()
        }),
        managed_interfaces: managed.unwrap_or_else(|e| {
            known(LOOKUP_MANAGED_INTERFACES, e);
            Vec::new()
        }),
        network_acls: acls.unwrap_or_else(|e| {
            known(LOOKUP_NETWORK_ACLS, e);
            BTreeMap::new()
        }),
        unknown,
    };
    Ok(facts)
}

/// The instance's interfaces and addresses, as DescribeInstances reported them.
fn interfaces(instance: &Instance) -> Vec<InterfaceFacts> {
    let mut out: Vec<InterfaceFacts> = instance
        .network_interfaces()
        .iter()
        .map(|n| {
            let mut public: Vec<String> = n
                .private_ip_addresses()
                .iter()
                .filter_map(|p| p.association()?.public_ip().map(str::to_owned))
                .chain(
                    n.association()
                        .and_then(|a| a.public_ip())
                        .map(str::to_owned),
                )
                .collect();
            public.sort();
            public.dedup();
            let mut private: Vec<String> = n
                .private_ip_addresses()
                .iter()
                .filter_map(|p| p.private_ip_address().map(str::to_owned))
                .chain(n.private_ip_address().map(str::to_owned))
                .collect();
            private.sort();
            private.dedup();
            InterfaceFacts {
                network_interface_id: n.network_interface_id().unwrap_or_default().to_owned(),
                subnet_id: n.subnet_id().unwrap_or_default().to_owned(),
                private_ipv4: private,
                ipv4_prefixes: n
                    .ipv4_prefixes()
                    .iter()
                    .filter_map(|p| p.ipv4_prefix().map(str::to_owned))
                    .collect(),
                ipv6: n
                    .ipv6_addresses()
                    .iter()
                    .filter_map(|a| a.ipv6_address().map(str::to_owned))
                    .collect(),
                ipv6_prefixes: n
                    .ipv6_prefixes()
                    .iter()
                    .filter_map(|p| p.ipv6_prefix().map(str::to_owned))
                    .collect(),
                public_ipv4: public,
                elastic_ip_allocation_ids: Vec::new(),
                route_table_id: None,
            }
        })
        .collect();
    out.sort_by(|a, b| a.network_interface_id.cmp(&b.network_interface_id));
    out
}

/// The table a subnet uses: its explicit association, else the main table. Each table comes with
/// the subnets explicitly associated with it.
pub(crate) fn table_of<'a>(
    tables: &'a [(RouteTableFacts, Vec<String>)],
    subnet: &str,
) -> Option<&'a (RouteTableFacts, Vec<String>)> {
    tables
        .iter()
        .find(|(_, subnets)| subnets.iter().any(|s| s == subnet))
        .or_else(|| tables.iter().find(|(t, _)| t.main))
}

fn route(r: &aws_sdk_ec2::types::Route) -> Route {
    let destination = r
        .destination_cidr_block()
        .or(r.destination_ipv6_cidr_block())
        .or(r.destination_prefix_list_id())
        .unwrap_or_default()
        .to_owned();
    let (kind, target) = if let Some(id) = r.nat_gateway_id() {
        (RouteTarget::NatGateway, id)
    } else if let Some(id) = r.egress_only_internet_gateway_id() {
        (RouteTarget::EgressOnlyInternetGateway, id)
    } else if let Some(id) = r.transit_gateway_id() {
        (RouteTarget::TransitGateway, id)
    } else if let Some(id) = r.vpc_peering_connection_id() {
        (RouteTarget::VpcPeering, id)
    } else if let Some(id) = r.instance_id() {
        (RouteTarget::Instance, id)
    } else if let Some(id) = r.network_interface_id() {
        (RouteTarget::NetworkInterface, id)
    } else if let Some(id) = r.local_gateway_id() {
        (RouteTarget::LocalGateway, id)
    } else if let Some(id) = r.carrier_gateway_id() {
        (RouteTarget::CarrierGateway, id)
    } else if let Some(id) = r.core_network_arn() {
        (RouteTarget::CoreNetwork, id)
    } else if let Some(id) = r.gateway_id() {
        // GatewayId holds `local`, an internet gateway, a virtual private gateway, or a VPC
        // endpoint (gateway, Gateway Load Balancer or firewall endpoint)
        // (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_Route.html>).
        let kind = match id.split('-').next() {
            Some("local") => RouteTarget::Local,
            Some("igw") => RouteTarget::InternetGateway,
            Some("vgw") => RouteTarget::VirtualPrivateGateway,
            Some("vpce") => RouteTarget::VpcEndpoint,
            _ => RouteTarget::Other,
        };
        (kind, id)
    } else {
        (RouteTarget::Other, "")
    };
    Route {
        destination,
        target: target.to_owned(),
        kind,
        state: r.state().map(|s| s.as_str().to_owned()),
    }
}

/// Every route table of the VPC, each with the subnets explicitly associated with it.
pub(crate) async fn route_tables(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
) -> Result<Vec<(RouteTableFacts, Vec<String>)>, StepError> {
    let mut out = Vec::new();
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let page = ec2
            .describe_route_tables()
            .filters(filter("vpc-id", vpc_id))
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| StepError::aws("DescribeRouteTables", e))?;
        for t in page.route_tables() {
            let main = t.associations().iter().any(|a| a.main() == Some(true));
            let subnets = t
                .associations()
                .iter()
                .filter_map(|a| a.subnet_id().map(str::to_owned))
                .collect();
            out.push((
                RouteTableFacts {
                    route_table_id: t.route_table_id().unwrap_or_default().to_owned(),
                    main,
                    routes: t.routes().iter().map(route).collect(),
                },
                subnets,
            ));
        }
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            return Ok(out);
        }
    }
    Err(more_pages("DescribeRouteTables"))
}

/// Subnet → network ACL, for every subnet of the VPC (each subnet has exactly one:
/// <https://docs.aws.amazon.com/vpc/latest/userguide/vpc-network-acls.html>).
async fn network_acls(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
) -> Result<BTreeMap<String, String>, StepError> {
    let mut out = BTreeMap::new();
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let page = ec2
            .describe_network_acls()
            .filters(filter("vpc-id", vpc_id))
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| StepError::aws("DescribeNetworkAcls", e))?;
        for acl in page.network_acls() {
            for a in acl.associations() {
                if let (Some(subnet), Some(id)) = (a.subnet_id(), a.network_acl_id()) {
                    out.insert(subnet.to_owned(), id.to_owned());
                }
            }
        }
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            return Ok(out);
        }
    }
    Err(more_pages("DescribeNetworkAcls"))
}

async fn nat_gateways(
    ec2: &aws_sdk_ec2::Client,
    ids: Vec<String>,
) -> Result<Vec<Component>, StepError> {
    let mut out = Vec::new();
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let page = ec2
            .describe_nat_gateways()
            .set_nat_gateway_ids(Some(ids.clone()))
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| StepError::aws("DescribeNatGateways", e))?;
        out.extend(page.nat_gateways().iter().map(|n| Component {
            id: n.nat_gateway_id().unwrap_or_default().to_owned(),
            of: None,
            subnet_ids: n.subnet_id().map(str::to_owned).into_iter().collect(),
        }));
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            return Ok(out);
        }
    }
    Err(more_pages("DescribeNatGateways"))
}

/// The VPC's endpoints as EC2 describes them, every page; only those in `state` when given.
/// Shared by the network facts and the collection path (`collection::endpoints`).
pub(crate) async fn describe_vpc_endpoints(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    state: Option<&str>,
) -> Result<Vec<aws_sdk_ec2::types::VpcEndpoint>, StepError> {
    let mut out = Vec::new();
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let mut req = ec2
            .describe_vpc_endpoints()
            .filters(filter("vpc-id", vpc_id));
        if let Some(state) = state {
            req = req.filters(filter("vpc-endpoint-state", state));
        }
        let page = req
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| StepError::aws("DescribeVpcEndpoints", e))?;
        out.extend(page.vpc_endpoints().iter().cloned());
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            return Ok(out);
        }
    }
    Err(more_pages("DescribeVpcEndpoints"))
}

async fn vpc_endpoints(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
) -> Result<Vec<Endpoint>, StepError> {
    Ok(describe_vpc_endpoints(ec2, vpc_id, None)
        .await?
        .iter()
        .filter(|e| {
            !matches!(
                e.state().map(|s| s.as_str()),
                Some("deleted" | "deleting" | "failed" | "rejected" | "expired")
            )
        })
        .map(|e| Endpoint {
            vpc_endpoint_id: e.vpc_endpoint_id().unwrap_or_default().to_owned(),
            endpoint_type: e
                .vpc_endpoint_type()
                .map(|t| t.as_str().to_owned())
                .unwrap_or_default(),
            service_name: e.service_name().unwrap_or_default().to_owned(),
            state: e.state().map(|s| s.as_str().to_owned()),
            subnet_ids: e.subnet_ids().to_vec(),
        })
        .collect())
}

async fn transit_gateway_attachments(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
) -> Result<Vec<Component>, StepError> {
    let mut out = Vec::new();
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let page = ec2
            .describe_transit_gateway_vpc_attachments()
            .filters(filter("vpc-id", vpc_id))
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| StepError::aws("DescribeTransitGatewayVpcAttachments", e))?;
        out.extend(
            page.transit_gateway_vpc_attachments()
                .iter()
                .filter(|a| {
                    !matches!(
                        a.state().map(|s| s.as_str()),
                        Some("deleted" | "deleting" | "failed" | "rejected")
                    )
                })
                .map(|a| Component {
                    id: a
                        .transit_gateway_attachment_id()
                        .unwrap_or_default()
                        .to_owned(),
                    of: a.transit_gateway_id().map(str::to_owned),
                    subnet_ids: a.subnet_ids().to_vec(),
                }),
        );
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            return Ok(out);
        }
    }
    Err(more_pages("DescribeTransitGatewayVpcAttachments"))
}

/// `(network interface, allocation ID)` of every Elastic IP associated with the instance.
async fn elastic_ips(
    ec2: &aws_sdk_ec2::Client,
    instance_id: &str,
) -> Result<Vec<(String, String)>, StepError> {
    let out = ec2
        .describe_addresses()
        .filters(filter("instance-id", instance_id))
        .send()
        .await
        .map_err(|e| StepError::aws("DescribeAddresses", e))?;
    Ok(out
        .addresses()
        .iter()
        .filter_map(|a| {
            Some((
                a.network_interface_id()?.to_owned(),
                a.allocation_id()?.to_owned(),
            ))
        })
        .collect())
}

/// The VPC's Lambda and Global Accelerator interfaces. Read from every interface of the VPC
/// (`vpc-id` filter) and selected by `InterfaceType`.
async fn managed_interfaces(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
) -> Result<Vec<ManagedInterface>, StepError> {
    let mut out = Vec::new();
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let page = ec2
            .describe_network_interfaces()
            .filters(filter("vpc-id", vpc_id))
            .max_results(1000)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| StepError::aws("DescribeNetworkInterfaces", e))?;
        out.extend(page.network_interfaces().iter().filter_map(|n| {
            let kind = n.interface_type()?.as_str();
            TRACKED_INTERFACE_TYPES
                .contains(&kind)
                .then(|| ManagedInterface {
                    network_interface_id: n.network_interface_id().unwrap_or_default().to_owned(),
                    interface_type: kind.to_owned(),
                    subnet_id: n.subnet_id().unwrap_or_default().to_owned(),
                })
        }));
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            return Ok(out);
        }
    }
    Err(more_pages("DescribeNetworkInterfaces"))
}

/// The load balancers of every target group of the VPC in which the instance (instance targets)
/// or one of its private IPv4 addresses (IP targets) is registered.
async fn load_balancers(
    elbv2: &aws_sdk_elasticloadbalancingv2::Client,
    vpc_id: &str,
    instance_id: &str,
    private: &[String],
) -> Result<Vec<LoadBalancer>, StepError> {
    let mut groups = Vec::new();
    let mut marker = None;
    let mut complete = false;
    for _ in 0..MAX_PAGES {
        let page = elbv2
            .describe_target_groups()
            .set_marker(marker)
            .send()
            .await
            .map_err(|e| StepError::aws("DescribeTargetGroups", e))?;
        groups.extend(
            page.target_groups()
                .iter()
                .filter(|g| g.vpc_id() == Some(vpc_id))
                .cloned(),
        );
        marker = page.next_marker().map(str::to_owned);
        if marker.is_none() {
            complete = true;
            break;
        }
    }
    if !complete {
        return Err(more_pages("DescribeTargetGroups"));
    }
    // load balancer ARN → target groups with the instance
    let mut by_balancer: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for g in groups {
        let ids: Vec<&str> = match g.target_type() {
            None | Some(TargetTypeEnum::Instance) => vec![instance_id],
            Some(TargetTypeEnum::Ip) => private.iter().map(String::as_str).collect(),
            _ => continue,
        };
        let Some(arn) = g.target_group_arn() else {
            continue;
        };
        let health = elbv2
            .describe_target_health()
            .target_group_arn(arn)
            .send()
            .await
            .map_err(|e| StepError::aws("DescribeTargetHealth", e))?;
        let registered = health.target_health_descriptions().iter().any(|d| {
            d.target()
                .and_then(|t| t.id())
                .is_some_and(|id| ids.contains(&id))
        });
        if registered {
            for lb in g.load_balancer_arns() {
                by_balancer
                    .entry(lb.clone())
                    .or_default()
                    .push(arn.to_owned());
            }
        }
    }
    let arns: Vec<String> = by_balancer.keys().cloned().collect();
    let mut out = Vec::new();
    for chunk in arns.chunks(ELB_ARNS_PER_CALL) {
        let page = elbv2
            .describe_load_balancers()
            .set_load_balancer_arns(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| StepError::aws("DescribeLoadBalancers", e))?;
        out.extend(page.load_balancers().iter().map(|lb| {
            let arn = lb.load_balancer_arn().unwrap_or_default().to_owned();
            LoadBalancer {
                load_balancer_type: lb
                    .r#type()
                    .map(|t| t.as_str().to_owned())
                    .unwrap_or_default(),
                subnet_ids: lb
                    .availability_zones()
                    .iter()
                    .filter_map(|z| z.subnet_id().map(str::to_owned))
                    .collect(),
                target_group_arns: by_balancer.get(&arn).cloned().unwrap_or_default(),
                load_balancer_arn: arn,
            }
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
