//! The VPC endpoints the SSM agent and the upload can use from the instance, read-only.
//!
//! Systems Manager's private path needs interface endpoints for `ssm`, `ssmmessages` and
//! `ec2messages` (service names `com.amazonaws.<region>.<service>`) and, for Amazon S3, a gateway
//! endpoint or an interface endpoint
//! (<https://docs.aws.amazon.com/systems-manager/latest/userguide/setup-create-vpc.html>). An
//! endpoint counts only when the instance's packets actually go to it:
//!
//! - an interface endpoint must be `available` and have private DNS on. The agent and `curl` call
//!   the services' default names (`ssmmessages.<region>.amazonaws.com`, the presigned URL's
//!   bucket host); private DNS is what makes those names "resolve to the private IP addresses of
//!   the endpoint network interfaces in the VPC" (CreateVpcEndpoint `PrivateDnsEnabled`,
//!   <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateVpcEndpoint.html>);
//!   without it they resolve to public addresses, which the collection group does not allow. An
//!   S3 interface endpoint whose private DNS serves only inbound Resolver endpoints
//!   (`PrivateDnsOnlyForInboundResolverEndpoint`) is not used by traffic from the VPC
//!   (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DnsOptions.html>);
//! - an S3 gateway endpoint must be a target of the route table of the instance's primary subnet
//!   (its explicit association, else the VPC's main table,
//!   <https://docs.aws.amazon.com/vpc/latest/userguide/RouteTables.html>): "after you create the
//!   gateway endpoint, you can add it as a target in your route table for traffic destined from
//!   your VPC to Amazon S3", and security group rules reach it through "the ID of the prefix list
//!   for Amazon S3" (<https://docs.aws.amazon.com/vpc/latest/privatelink/vpc-endpoints-s3.html>),
//!   which `DescribePrefixLists` names after the service
//!   (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribePrefixLists.html>).
//!
//! Endpoints are listed by VPC and state (`DescribeVpcEndpoints` filters `vpc-id` and
//! `vpc-endpoint-state`,
//! <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeVpcEndpoints.html>) and
//! matched on the service name's `.<region>.<service>` ending, the region being the client's: the
//! prefix is `com.amazonaws` in most partitions, not in all.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{VpcEndpoint, VpcEndpointType};
use cordon_common::lookup::filter;
use cordon_common::{Gap, StepError};
use serde::Serialize;

use crate::facts::{self, MAX_PAGES};
use crate::STEP;

/// The services the agent's command channel needs, then S3 for the upload.
pub const SERVICES: [&str; 4] = ["ssm", "ssmmessages", "ec2messages", "s3"];

/// One endpoint the collection path uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Used {
    pub vpc_endpoint_id: String,
    pub service_name: String,
    /// `"Interface"` or `"Gateway"`.
    pub endpoint_type: String,
    /// The endpoint's security groups (interface endpoints): the collection group's destinations.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_group_ids: Vec<String>,
    /// Where its network interfaces are (interface endpoints).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subnet_ids: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub network_interface_ids: Vec<String>,
    /// The service's prefix list (gateway endpoints): the collection group's destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_list_id: Option<String>,
}

/// The endpoints found for each service, and why each missing service has none usable.
#[derive(Debug, Default)]
pub struct Found {
    pub used: BTreeMap<String, Vec<Used>>,
    pub missing: BTreeMap<String, String>,
}

impl Found {
    pub fn security_groups(&self) -> BTreeSet<String> {
        self.all()
            .flat_map(|u| u.security_group_ids.clone())
            .collect()
    }

    pub fn prefix_lists(&self) -> BTreeSet<String> {
        self.all()
            .filter_map(|u| u.prefix_list_id.clone())
            .collect()
    }

    /// The subnets that hold the interface endpoints' network interfaces.
    pub fn subnets(&self) -> BTreeSet<String> {
        self.all().flat_map(|u| u.subnet_ids.clone()).collect()
    }

    fn interfaces(&self) -> BTreeSet<String> {
        self.all()
            .flat_map(|u| u.network_interface_ids.clone())
            .collect()
    }

    fn all(&self) -> impl Iterator<Item = &Used> {
        self.used.values().flatten()
    }

    /// The gap that replaces the collection when a service has no usable endpoint.
    pub fn gap(&self, vpc_id: &str) -> Gap {
        let names = self.missing.keys().cloned().collect::<Vec<_>>().join(", ");
        let why = self
            .missing
            .iter()
            .map(|(svc, why)| format!("{svc}: {why}"))
            .collect::<Vec<_>>()
            .join("; ");
        Gap::new(
            STEP,
            "OS-level collection",
            format!(
                "no network path for the SSM agent: VPC {vpc_id} has no usable endpoint for {names} ({why}). options.collection_network is \"endpoints\", so nothing was opened and nothing is collected; the instance stays isolated (\"internet-443\" would open TCP 443 to any address for the collection instead)"
            ),
        )
    }
}

/// `com.amazonaws.us-east-1.ssm` → `ssm` when the region is `us-east-1`.
fn service_of<'a>(name: &'a str, region: &str) -> Option<&'a str> {
    let (prefix, svc) = name.rsplit_once('.')?;
    let partition = prefix.strip_suffix(&format!(".{region}"))?;
    let amazon = partition == "com.amazonaws" || partition.ends_with(".com.amazonaws");
    (amazon && SERVICES.contains(&svc)).then_some(svc)
}

fn is_available(e: &VpcEndpoint) -> bool {
    // The API reference spells the states in lower case (`available`), the SDK's enum in
    // title case: compare without case.
    e.state()
        .is_some_and(|s| s.as_str().eq_ignore_ascii_case("available"))
}

fn interface_use(e: &VpcEndpoint, svc: &str) -> Result<Used, String> {
    let id = e.vpc_endpoint_id().unwrap_or("?");
    if !is_available(e) {
        return Err(format!("interface endpoint {id} is not available"));
    }
    if e.private_dns_enabled() != Some(true) {
        return Err(format!(
            "interface endpoint {id} has private DNS off, so the service's default name resolves to public addresses"
        ));
    }
    if svc == "s3"
        && e.dns_options()
            .and_then(|d| d.private_dns_only_for_inbound_resolver_endpoint())
            == Some(true)
    {
        return Err(format!(
            "interface endpoint {id} serves private DNS to inbound Resolver endpoints only; traffic from the VPC goes to the gateway endpoint"
        ));
    }
    let groups: Vec<String> = e
        .groups()
        .iter()
        .filter_map(|g| g.group_id())
        .map(str::to_owned)
        .collect();
    if groups.is_empty() || e.subnet_ids().is_empty() {
        return Err(format!(
            "interface endpoint {id} has no security group or no subnet"
        ));
    }
    Ok(Used {
        vpc_endpoint_id: id.to_owned(),
        service_name: e.service_name().unwrap_or_default().to_owned(),
        endpoint_type: "Interface".into(),
        security_group_ids: groups,
        subnet_ids: e.subnet_ids().to_vec(),
        network_interface_ids: e.network_interface_ids().to_vec(),
        prefix_list_id: None,
    })
}

/// Finds the usable endpoints of every service in [`SERVICES`]. `primary_subnet` is the subnet of
/// the instance's primary interface, whose route table decides whether S3 traffic reaches a
/// gateway endpoint.
pub async fn find(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    primary_subnet: Option<&str>,
) -> Result<Found, StepError> {
    let region = ec2
        .config()
        .region()
        .map(|r| r.as_ref().to_owned())
        .ok_or_else(|| {
            StepError::Config(
                "the EC2 client has no region: the endpoint service names com.amazonaws.<region>.<service> cannot be matched".into(),
            )
        })?;
    let endpoints = facts::describe_vpc_endpoints(ec2, vpc_id, Some("available")).await?;

    let mut found = Found::default();
    let mut why: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut gateways = Vec::new();
    for e in &endpoints {
        let Some(svc) = e.service_name().and_then(|n| service_of(n, &region)) else {
            continue;
        };
        match e.vpc_endpoint_type() {
            Some(VpcEndpointType::Interface) => match interface_use(e, svc) {
                Ok(u) => found.used.entry(svc.to_owned()).or_default().push(u),
                Err(reason) => why.entry(svc).or_default().push(reason),
            },
            Some(VpcEndpointType::Gateway) if svc == "s3" => gateways.push(e),
            _ => {}
        }
    }

    if !gateways.is_empty() {
        let table = match primary_subnet {
            Some(subnet) => {
                let tables = facts::route_tables(ec2, vpc_id).await?;
                facts::table_of(&tables, subnet).map(|(t, _)| t.route_table_id.clone())
            }
            None => None,
        };
        for e in gateways {
            let id = e.vpc_endpoint_id().unwrap_or("?");
            let reason = if !is_available(e) {
                Some(format!("gateway endpoint {id} is not available"))
            } else if !table
                .as_deref()
                .is_some_and(|t| e.route_table_ids().iter().any(|r| r == t))
            {
                Some(format!(
                    "gateway endpoint {id} is not a target of the instance's route table ({})",
                    table.as_deref().unwrap_or("not found")
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                why.entry("s3").or_default().push(reason);
                continue;
            }
            let name = e.service_name().unwrap_or_default();
            match prefix_list(ec2, name).await? {
                Some(pl) => found.used.entry("s3".into()).or_default().push(Used {
                    vpc_endpoint_id: id.to_owned(),
                    service_name: name.to_owned(),
                    endpoint_type: "Gateway".into(),
                    security_group_ids: Vec::new(),
                    subnet_ids: Vec::new(),
                    network_interface_ids: Vec::new(),
                    prefix_list_id: Some(pl),
                }),
                None => why
                    .entry("s3")
                    .or_default()
                    .push(format!("no prefix list named {name}")),
            }
        }
    }

    for svc in SERVICES {
        if found.used.get(svc).is_some_and(|u| !u.is_empty()) {
            continue;
        }
        let reasons = why.remove(svc).unwrap_or_default();
        let reason = if reasons.is_empty() {
            format!("no endpoint for com.amazonaws.{region}.{svc}")
        } else {
            reasons.join(", ")
        };
        found.missing.insert(svc.to_owned(), reason);
    }
    Ok(found)
}

async fn prefix_list(ec2: &aws_sdk_ec2::Client, name: &str) -> Result<Option<String>, StepError> {
    let out = ec2
        .describe_prefix_lists()
        .filters(filter("prefix-list-name", name))
        .send()
        .await
        .map_err(|e| StepError::aws("DescribePrefixLists", e))?;
    Ok(out
        .prefix_lists()
        .iter()
        .find(|p| p.prefix_list_name() == Some(name))
        .and_then(|p| p.prefix_list_id())
        .map(str::to_owned))
}

/// A security group names its members, not addresses: when an endpoint's group is also on other
/// interfaces (the VPC's default group, a shared "endpoints" group), the collection group lets the
/// instance open TCP 443 to those too. Said as a gap, with the interfaces; `own` are the
/// instance's interfaces (in the isolation group, not counted).
pub async fn shared_groups(
    ec2: &aws_sdk_ec2::Client,
    found: &Found,
    own: &BTreeSet<String>,
) -> Result<Option<Gap>, StepError> {
    let groups = found.security_groups();
    if groups.is_empty() {
        return Ok(None);
    }
    let endpoints = found.interfaces();
    let mut others = BTreeSet::new();
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let page = ec2
            .describe_network_interfaces()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("group-id")
                    .set_values(Some(groups.iter().cloned().collect()))
                    .build(),
            )
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| StepError::aws("DescribeNetworkInterfaces", e))?;
        for eni in page.network_interfaces() {
            if let Some(id) = eni.network_interface_id() {
                if !endpoints.contains(id) && !own.contains(id) {
                    others.insert(id.to_owned());
                }
            }
        }
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    if others.is_empty() {
        return Ok(None);
    }
    const LISTED: usize = 10;
    let mut listed: Vec<String> = others.iter().take(LISTED).cloned().collect();
    if others.len() > LISTED {
        listed.push(format!("and {} more", others.len() - LISTED));
    }
    Ok(Some(Gap::new(
        STEP,
        "collection path: endpoint security groups shared",
        format!(
            "the endpoints' security groups {} are also on {} other interface(s) ({}): while the collection runs, the instance can open TCP 443 connections to them as well (a security group rule names the group's members, not the endpoints alone)",
            groups.iter().cloned().collect::<Vec<_>>().join(", "),
            others.len(),
            listed.join(", ")
        ),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_matched_on_region_and_service() {
        assert_eq!(
            service_of("com.amazonaws.us-east-1.ssm", "us-east-1"),
            Some("ssm")
        );
        assert_eq!(
            service_of("cn.com.amazonaws.cn-north-1.ssmmessages", "cn-north-1"),
            Some("ssmmessages")
        );
        assert_eq!(service_of("com.amazonaws.us-west-2.ssm", "us-east-1"), None);
        assert_eq!(service_of("com.amazonaws.us-east-1.kms", "us-east-1"), None);
        assert_eq!(
            service_of(
                "com.amazonaws.vpce.us-east-1.vpce-svc-0123.ssm",
                "us-east-1"
            ),
            None
        );
    }
}
