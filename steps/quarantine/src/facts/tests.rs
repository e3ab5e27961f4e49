//! The network facts of a private instance behind a NAT gateway, registered with a Network Load
//! Balancer, in a VPC with an interface endpoint and a Lambda interface.

use super::*;
use aws_sdk_ec2::operation::describe_addresses::DescribeAddressesOutput;
use aws_sdk_ec2::operation::describe_nat_gateways::DescribeNatGatewaysOutput;
use aws_sdk_ec2::operation::describe_network_acls::DescribeNetworkAclsOutput;
use aws_sdk_ec2::operation::describe_network_interfaces::DescribeNetworkInterfacesOutput;
use aws_sdk_ec2::operation::describe_route_tables::DescribeRouteTablesOutput;
use aws_sdk_ec2::operation::describe_transit_gateway_vpc_attachments::DescribeTransitGatewayVpcAttachmentsOutput;
use aws_sdk_ec2::operation::describe_vpc_endpoints::DescribeVpcEndpointsOutput;
use aws_sdk_ec2::types::{
    Address, Filter, InstanceIpv6Address, InstanceNetworkInterface,
    InstanceNetworkInterfaceAssociation, InstancePrivateIpAddress, NatGateway, NetworkAcl,
    NetworkAclAssociation, NetworkInterface, NetworkInterfaceType, RouteTable,
    RouteTableAssociation, TransitGatewayVpcAttachment, VpcEndpoint, VpcEndpointType,
};
use aws_sdk_elasticloadbalancingv2::operation::describe_load_balancers::DescribeLoadBalancersOutput;
use aws_sdk_elasticloadbalancingv2::operation::describe_target_groups::DescribeTargetGroupsOutput;
use aws_sdk_elasticloadbalancingv2::operation::describe_target_health::DescribeTargetHealthOutput;
use aws_sdk_elasticloadbalancingv2::types::{
    AvailabilityZone, LoadBalancerTypeEnum, TargetDescription, TargetGroup, TargetHealthDescription,
};
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use cordon_common::testing::ec2_error;

const ID: &str = "i-0123456789abcdef0";

fn has(filters: &[Filter], name: &str, value: &str) -> bool {
    filters
        .iter()
        .any(|f| f.name() == Some(name) && f.values().iter().any(|v| v == value))
}

fn instance(ipv6: bool) -> Instance {
    let mut eni = InstanceNetworkInterface::builder()
        .network_interface_id("eni-a")
        .subnet_id("subnet-private")
        .private_ip_address("10.0.3.17")
        .private_ip_addresses(
            InstancePrivateIpAddress::builder()
                .private_ip_address("10.0.3.17")
                .primary(true)
                .build(),
        )
        .private_ip_addresses(
            InstancePrivateIpAddress::builder()
                .private_ip_address("10.0.3.18")
                .association(
                    InstanceNetworkInterfaceAssociation::builder()
                        .public_ip("203.0.113.7")
                        .build(),
                )
                .build(),
        );
    if ipv6 {
        eni = eni.ipv6_addresses(
            InstanceIpv6Address::builder()
                .ipv6_address("2600:1f18:1::5")
                .build(),
        );
    }
    Instance::builder()
        .instance_id(ID)
        .vpc_id("vpc-1")
        .network_interfaces(eni.build())
        .build()
}

fn ec2_rules() -> Vec<Rule> {
    let tables = mock!(aws_sdk_ec2::Client::describe_route_tables)
        .match_requests(|r| has(r.filters(), "vpc-id", "vpc-1"))
        .then_output(|| {
            let route =
                |dest: &str| aws_sdk_ec2::types::Route::builder().destination_cidr_block(dest);
            DescribeRouteTablesOutput::builder()
                .route_tables(
                    RouteTable::builder()
                        .route_table_id("rtb-main")
                        .associations(RouteTableAssociation::builder().main(true).build())
                        .routes(route("0.0.0.0/0").gateway_id("igw-1").build())
                        .build(),
                )
                .route_tables(
                    RouteTable::builder()
                        .route_table_id("rtb-private")
                        .associations(
                            RouteTableAssociation::builder()
                                .main(false)
                                .subnet_id("subnet-private")
                                .build(),
                        )
                        .routes(route("10.0.0.0/16").gateway_id("local").build())
                        .routes(route("0.0.0.0/0").nat_gateway_id("nat-1").build())
                        .routes(route("10.9.0.0/16").transit_gateway_id("tgw-1").build())
                        .routes(
                            aws_sdk_ec2::types::Route::builder()
                                .destination_prefix_list_id("pl-63a5400a")
                                .gateway_id("vpce-s3")
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
    let acls = mock!(aws_sdk_ec2::Client::describe_network_acls)
        .match_requests(|r| has(r.filters(), "vpc-id", "vpc-1"))
        .then_output(|| {
            let assoc = |s: &str| {
                NetworkAclAssociation::builder()
                    .network_acl_id("acl-1")
                    .subnet_id(s)
                    .build()
            };
            DescribeNetworkAclsOutput::builder()
                .network_acls(
                    NetworkAcl::builder()
                        .network_acl_id("acl-1")
                        .associations(assoc("subnet-private"))
                        .associations(assoc("subnet-public"))
                        .build(),
                )
                .build()
        });
    let nat = mock!(aws_sdk_ec2::Client::describe_nat_gateways)
        .match_requests(|r| r.nat_gateway_ids() == ["nat-1"])
        .then_output(|| {
            DescribeNatGatewaysOutput::builder()
                .nat_gateways(
                    NatGateway::builder()
                        .nat_gateway_id("nat-1")
                        .subnet_id("subnet-public")
                        .build(),
                )
                .build()
        });
    let endpoints = mock!(aws_sdk_ec2::Client::describe_vpc_endpoints)
        .match_requests(|r| has(r.filters(), "vpc-id", "vpc-1"))
        .then_output(|| {
            DescribeVpcEndpointsOutput::builder()
                .vpc_endpoints(
                    VpcEndpoint::builder()
                        .vpc_endpoint_id("vpce-sts")
                        .vpc_endpoint_type(VpcEndpointType::Interface)
                        .service_name("com.amazonaws.us-east-1.sts")
                        .subnet_ids("subnet-endpoints")
                        .state("available".into())
                        .build(),
                )
                .vpc_endpoints(
                    VpcEndpoint::builder()
                        .vpc_endpoint_id("vpce-s3")
                        .vpc_endpoint_type(VpcEndpointType::Gateway)
                        .service_name("com.amazonaws.us-east-1.s3")
                        .build(),
                )
                .build()
        });
    let attachments = mock!(aws_sdk_ec2::Client::describe_transit_gateway_vpc_attachments)
        .match_requests(|r| has(r.filters(), "vpc-id", "vpc-1"))
        .then_output(|| {
            DescribeTransitGatewayVpcAttachmentsOutput::builder()
                .transit_gateway_vpc_attachments(
                    TransitGatewayVpcAttachment::builder()
                        .transit_gateway_attachment_id("tgw-attach-1")
                        .transit_gateway_id("tgw-1")
                        .subnet_ids("subnet-tgw")
                        .state("available".into())
                        .build(),
                )
                .build()
        });
    let addresses = mock!(aws_sdk_ec2::Client::describe_addresses)
        .match_requests(|r| has(r.filters(), "instance-id", ID))
        .then_output(|| {
            DescribeAddressesOutput::builder()
                .addresses(
                    Address::builder()
                        .allocation_id("eipalloc-1")
                        .public_ip("203.0.113.7")
                        .network_interface_id("eni-a")
                        .build(),
                )
                .build()
        });
    let interfaces = mock!(aws_sdk_ec2::Client::describe_network_interfaces)
        .match_requests(|r| has(r.filters(), "vpc-id", "vpc-1"))
        .then_output(|| {
            let eni = |id: &str, kind: NetworkInterfaceType, subnet: &str| {
                NetworkInterface::builder()
                    .network_interface_id(id)
                    .interface_type(kind)
                    .subnet_id(subnet)
                    .build()
            };
            DescribeNetworkInterfacesOutput::builder()
                .network_interfaces(eni(
                    "eni-a",
                    NetworkInterfaceType::Interface,
                    "subnet-private",
                ))
                .network_interfaces(eni(
                    "eni-fn",
                    NetworkInterfaceType::Lambda,
                    "subnet-functions",
                ))
                .build()
        });
    vec![
        tables,
        acls,
        nat,
        endpoints,
        attachments,
        addresses,
        interfaces,
    ]
}

fn elb_rules() -> Vec<Rule> {
    let groups = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_groups)
        .match_requests(|r| r.load_balancer_arn().is_none())
        .then_output(|| {
            DescribeTargetGroupsOutput::builder()
                .target_groups(
                    TargetGroup::builder()
                        .target_group_arn("arn:tg/nlb")
                        .vpc_id("vpc-1")
                        .load_balancer_arns("arn:lb/net/nlb")
                        .build(),
                )
                .target_groups(
                    TargetGroup::builder()
                        .target_group_arn("arn:tg/other-vpc")
                        .vpc_id("vpc-2")
                        .load_balancer_arns("arn:lb/net/other")
                        .build(),
                )
                .build()
        });
    let health = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
        .match_requests(|r| r.target_group_arn() == Some("arn:tg/nlb"))
        .then_output(|| {
            DescribeTargetHealthOutput::builder()
                .target_health_descriptions(
                    TargetHealthDescription::builder()
                        .target(TargetDescription::builder().id(ID).port(443).build())
                        .build(),
                )
                .build()
        });
    let balancers = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_load_balancers)
        .match_requests(|r| r.load_balancer_arns() == ["arn:lb/net/nlb"])
        .then_output(|| {
            DescribeLoadBalancersOutput::builder()
                .load_balancers(
                    aws_sdk_elasticloadbalancingv2::types::LoadBalancer::builder()
                        .load_balancer_arn("arn:lb/net/nlb")
                        .r#type(LoadBalancerTypeEnum::Network)
                        .availability_zones(
                            AvailabilityZone::builder()
                                .subnet_id("subnet-public")
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
    vec![groups, health, balancers]
}

fn clients(
    ec2: &[Rule],
    elb: &[Rule],
) -> (aws_sdk_ec2::Client, aws_sdk_elasticloadbalancingv2::Client) {
    (
        mock_client!(
            aws_sdk_ec2,
            RuleMode::MatchAny,
            ec2.iter().collect::<Vec<_>>().as_slice(),
            |c| c.retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled())
        ),
        mock_client!(
            aws_sdk_elasticloadbalancingv2,
            RuleMode::MatchAny,
            elb.iter().collect::<Vec<_>>().as_slice()
        ),
    )
}

#[tokio::test]
async fn gathers_the_paths_of_a_private_instance_behind_a_nat_gateway() {
    let (ec2, elb) = (ec2_rules(), elb_rules());
    let (ec2c, elbc) = clients(&ec2, &elb);
    let f = gather(&ec2c, &elbc, &instance(false)).await.unwrap();

    assert!(f.unknown.is_empty(), "{:?}", f.unknown);
    assert_eq!(f.vpc_id, "vpc-1");
    let eni = &f.interfaces[0];
    assert_eq!(eni.private_ipv4, ["10.0.3.17", "10.0.3.18"]);
    assert_eq!(eni.public_ipv4, ["203.0.113.7"]);
    assert_eq!(eni.elastic_ip_allocation_ids, ["eipalloc-1"]);
    // The explicit association wins over the main table; only the used table is kept.
    assert_eq!(eni.route_table_id.as_deref(), Some("rtb-private"));
    assert_eq!(f.route_tables.len(), 1);
    let kinds: Vec<(&str, RouteTarget)> = f.routes().map(|r| (r.target.as_str(), r.kind)).collect();
    assert_eq!(
        kinds,
        [
            ("local", RouteTarget::Local),
            ("nat-1", RouteTarget::NatGateway),
            ("tgw-1", RouteTarget::TransitGateway),
            ("vpce-s3", RouteTarget::VpcEndpoint),
        ]
    );
    assert_eq!(f.routes().nth(3).unwrap().destination, "pl-63a5400a");
    assert_eq!(f.nat_gateways[0].subnet_ids, ["subnet-public"]);
    assert_eq!(
        f.transit_gateway_attachments[0].of.as_deref(),
        Some("tgw-1")
    );
    assert_eq!(f.transit_gateway_attachments[0].subnet_ids, ["subnet-tgw"]);
    assert_eq!(f.vpc_endpoints.len(), 2);
    assert_eq!(
        f.endpoint("vpce-sts").unwrap().subnet_ids,
        ["subnet-endpoints"]
    );
    assert_eq!(f.network_acls["subnet-public"], "acl-1");
    // Only the tracked kinds of managed interface.
    assert_eq!(f.managed_interfaces.len(), 1);
    assert_eq!(f.managed_interfaces[0].interface_type, "lambda");
    // The NLB of the target group in the instance's VPC that has the instance.
    assert_eq!(f.load_balancers.len(), 1);
    assert_eq!(f.load_balancers[0].load_balancer_type, "network");
    assert_eq!(f.load_balancers[0].subnet_ids, ["subnet-public"]);
    assert_eq!(f.load_balancers[0].target_group_arns, ["arn:tg/nlb"]);
    assert!(!f.has_ipv6());
    for r in &ec2 {
        assert_eq!(r.num_calls(), 1);
    }
}

#[tokio::test]
async fn a_failed_lookup_is_recorded_and_the_rest_is_still_gathered() {
    let mut ec2 = ec2_rules();
    ec2[3] = mock!(aws_sdk_ec2::Client::describe_vpc_endpoints)
        .then_http_response(ec2_error(403, "UnauthorizedOperation"));
    let elb = elb_rules();
    let (ec2c, elbc) = clients(&ec2, &elb);
    let f = gather(&ec2c, &elbc, &instance(true)).await.unwrap();
    assert_eq!(f.unknown.len(), 1, "{:?}", f.unknown);
    assert_eq!(f.unknown[0].lookup, "vpc-endpoints");
    assert!(
        f.unknown[0].reason.contains("UnauthorizedOperation"),
        "{}",
        f.unknown[0].reason
    );
    assert!(f.vpc_endpoints.is_empty());
    assert_eq!(f.nat_gateways.len(), 1);
    assert!(f.has_ipv6());
    assert_eq!(f.ipv6_cidrs(), ["2600:1f18:1::5/128"]);
}

#[tokio::test]
async fn an_instance_outside_a_vpc_has_no_facts() {
    let (ec2c, elbc) = clients(&[], &[]);
    let err = gather(&ec2c, &elbc, &Instance::builder().instance_id(ID).build())
        .await
        .unwrap_err();
    assert_eq!(err.name(), "InvalidInput");
}
