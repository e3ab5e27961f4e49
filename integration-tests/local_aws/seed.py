"""Seeds a realistic "compromised web server" environment, and more instances on demand.

The shape mirrors a typical production web tier, so every Cordon step has something real to act on:
a VPC with two subnets in two AZs and a private subnet behind a NAT gateway (``add_nat_layout``), a
security group ``web`` with ingress rules, an instance profile
``app-server``, and ``web-01``: running, three EBS volumes, two network interfaces, the profile
associated, tags ``Name``/``env``, in an Auto Scaling group and an ELBv2 target group, and an
SSM managed node. ``web-02`` is a second running instance that is not SSM-managed.

moto quirk bridged here: when RunInstances is given ``BlockDeviceMappings`` only those volumes are
listed, not the root volume. So instances are launched without mappings (moto creates the root
volume) and the extra volumes are created and attached with CreateVolume / AttachVolume, which
DescribeInstances and DescribeVolumes then both report.

Everything goes through boto3 and the control endpoints, so ``seed_instance`` works from any
process (the tests call it through the ``stack`` fixture).
"""

from __future__ import annotations

import json
import time
import urllib.request
import ipaddress
from dataclasses import asdict, dataclass, field, replace

from botocore.exceptions import ClientError

from .deploy import client

LINUX_AMI_NAME = "amzn2-ami-hvm-*"


@dataclass
class SeedContext:
    """The shared network and IAM pieces new instances are placed into."""

    endpoint: str
    vpc_id: str
    subnet_ids: list[str]
    availability_zones: list[str]
    security_group_id: str
    ami_id: str
    instance_profile_arn: str
    instance_profile_name: str
    launch_template_id: str
    auto_scaling_group: str
    target_group_arn: str
    key_name: str
    # The Application Load Balancer whose listener forwards to ``target_group_arn``.
    load_balancer_arn: str = ""
    # A private subnet (first zone) whose default route leads to a NAT gateway in a public subnet
    # (first zone, routed to an internet gateway, with a network ACL of its own): see
    # ``add_nat_layout``; ``seed_instance(private=True)`` launches into it.
    public_subnet_id: str = ""
    private_subnet_id: str = ""
    nat_gateway_id: str = ""
    # Interface endpoints for ssm, ssmmessages and ec2messages (in the second subnet, behind
    # their own security group) and the S3 gateway endpoint: the SSM agent's path during
    # collection inside containment (``add_ssm_endpoints``). Service short name -> endpoint ID.
    ssm_endpoints: dict = field(default_factory=dict)
    endpoint_security_group_id: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SeedContext:
        return cls(**d)


@dataclass
class SeededInstance:
    instance_id: str
    name: str
    volume_ids: list[str] = field(default_factory=list)
    network_interface_ids: list[str] = field(default_factory=list)
    association_id: str | None = None
    ssm_managed: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def control(control_url: str, method: str, path: str, body: dict | list | None = None) -> dict:
    """Calls a ``/_cordon`` control endpoint; raises on an error status."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"{control_url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


def _allow_all_acl(ec2, vpc_id: str, subnet_id: str, name: str, ipv6: bool) -> str:
    """A network ACL of its own for ``subnet_id`` that allows all traffic (rule 100, and 101 for
    IPv6), as a public subnet's ACL commonly does; returns its ID."""
    acl_id = ec2.create_network_acl(
        VpcId=vpc_id, TagSpecifications=[{"ResourceType": "network-acl", "Tags": [{"Key": "Name", "Value": name}]}]
    )["NetworkAcl"]["NetworkAclId"]
    for egress in (False, True):
        ec2.create_network_acl_entry(
            NetworkAclId=acl_id, RuleNumber=100, Protocol="-1", RuleAction="allow", Egress=egress, CidrBlock="0.0.0.0/0"
        )
        if ipv6:
            ec2.create_network_acl_entry(
                NetworkAclId=acl_id, RuleNumber=101, Protocol="-1", RuleAction="allow", Egress=egress, Ipv6CidrBlock="::/0"
            )
    # A subnet is always associated with exactly one ACL: replace its current association.
    current = ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}])
    association = next(
        a["NetworkAclAssociationId"] for acl in current["NetworkAcls"] for a in acl["Associations"] if a["SubnetId"] == subnet_id
    )
    ec2.replace_network_acl_association(AssociationId=association, NetworkAclId=acl_id)
    return acl_id


def add_nat_layout(
    ec2, vpc_id: str, zone: str, public_cidr: str, private_cidr: str, private_acl: bool = False, ipv6: bool = False
) -> dict[str, str]:
    """The most common layout for a server that must not be reachable from the internet: an internet
    gateway; a public subnet routed to it, holding a NAT gateway (with an Elastic IP) and a network
    ACL of its own; a private subnet whose default route is the NAT gateway. ``private_acl`` gives
    the private subnet an ACL of its own too (else it keeps the VPC's default ACL); ``ipv6`` gives
    it a /64 of the VPC's IPv6 block. Returns the ``SeedContext`` fields."""
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc_id)
    public = ec2.create_subnet(VpcId=vpc_id, CidrBlock=public_cidr, AvailabilityZone=zone)["Subnet"]["SubnetId"]
    public_rt = ec2.create_route_table(VpcId=vpc_id)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=public_rt, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    ec2.associate_route_table(RouteTableId=public_rt, SubnetId=public)
    vpc_v6 = ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0].get("Ipv6CidrBlockAssociationSet") or []
    _allow_all_acl(ec2, vpc_id, public, "public", ipv6=bool(vpc_v6))
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
    nat = ec2.create_nat_gateway(SubnetId=public, AllocationId=allocation)["NatGateway"]["NatGatewayId"]
    subnet = dict(VpcId=vpc_id, CidrBlock=private_cidr, AvailabilityZone=zone)
    if ipv6:
        block = ipaddress.ip_network(vpc_v6[0]["Ipv6CidrBlock"])
        subnet["Ipv6CidrBlock"] = str(list(block.subnets(new_prefix=64))[20])
    private = ec2.create_subnet(**subnet)["Subnet"]["SubnetId"]
    private_rt = ec2.create_route_table(VpcId=vpc_id)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=private_rt, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    ec2.associate_route_table(RouteTableId=private_rt, SubnetId=private)
    if private_acl:
        _allow_all_acl(ec2, vpc_id, private, "private", ipv6=bool(vpc_v6))
    return {"public_subnet_id": public, "private_subnet_id": private, "nat_gateway_id": nat}


SSM_ENDPOINT_SERVICES = ("ssm", "ssmmessages", "ec2messages")


def _patiently(call, **kwargs):
    """One EC2 call of the seeding, retried while the local stack's EC2 token buckets
    (``ec2_throttling.py``) answer RequestLimitExceeded, as a patient client would."""
    for attempt in range(30):
        try:
            return call(**kwargs)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") != "RequestLimitExceeded" or attempt == 29:
                raise
            time.sleep(min(2.0, 0.2 * (attempt + 1)))


def add_ssm_endpoints(ec2, vpc_id: str, cidr: str, subnet_id: str, region: str = "us-east-1") -> dict:
    """The VPC endpoints a private instance's SSM agent needs without internet access: interface
    endpoints for ``ssm``, ``ssmmessages`` and ``ec2messages`` with private DNS, whose security
    group allows HTTPS from the VPC, and an S3 gateway endpoint on every route table of the VPC
    (https://docs.aws.amazon.com/systems-manager/latest/userguide/setup-create-vpc.html)."""
    sg = _patiently(
        ec2.create_security_group,
        GroupName="ssm-endpoints", Description="HTTPS from the VPC to the SSM endpoints", VpcId=vpc_id,
    )["GroupId"]
    _patiently(
        ec2.authorize_security_group_ingress,
        GroupId=sg,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": cidr}]}],
    )
    endpoints = {}
    for service in SSM_ENDPOINT_SERVICES:
        endpoints[service] = _patiently(
            ec2.create_vpc_endpoint,
            VpcId=vpc_id,
            ServiceName=f"com.amazonaws.{region}.{service}",
            VpcEndpointType="Interface",
            SubnetIds=[subnet_id],
            SecurityGroupIds=[sg],
            PrivateDnsEnabled=True,
        )["VpcEndpoint"]["VpcEndpointId"]
    tables = [
        t["RouteTableId"]
        for t in ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["RouteTables"]
    ]
    endpoints["s3"] = _patiently(
        ec2.create_vpc_endpoint,
        VpcId=vpc_id,
        ServiceName=f"com.amazonaws.{region}.s3",
        VpcEndpointType="Gateway",
        RouteTableIds=tables,
    )["VpcEndpoint"]["VpcEndpointId"]
    return {"ssm_endpoints": endpoints, "endpoint_security_group_id": sg}


def seed_vpc(
    ctx: SeedContext, name: str, ipv6: bool = True, private_acl: bool = True, ssm_endpoints: bool = True
) -> SeedContext:
    """Another VPC shaped like the seeded one (two subnets in two zones, the NAT layout, a ``web``
    group, a target group), for scenarios whose network ACLs must not be shared with the others;
    returns ``ctx`` with this VPC's pieces (IAM, AMI, key and Auto Scaling group stay shared)."""
    ec2, elbv2 = client("ec2", ctx.endpoint), client("elbv2", ctx.endpoint)
    vpc_id = ec2.create_vpc(
        CidrBlock="10.1.0.0/16",
        AmazonProvidedIpv6CidrBlock=ipv6,
        TagSpecifications=[{"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": name}]}],
    )["Vpc"]["VpcId"]
    zones = ctx.availability_zones
    subnet_ids = [
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.1.{i + 1}.0/24", AvailabilityZone=az)["Subnet"]["SubnetId"]
        for i, az in enumerate(zones)
    ]
    nat = add_nat_layout(ec2, vpc_id, zones[0], "10.1.10.0/24", "10.1.20.0/24", private_acl=private_acl, ipv6=ipv6)
    sg_id = ec2.create_security_group(GroupName="web", Description="web tier", VpcId=vpc_id)["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=sg_id,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )
    tg_arn = elbv2.create_target_group(
        Name=f"{name}-tg"[:32], Protocol="HTTP", Port=80, VpcId=vpc_id, TargetType="instance"
    )["TargetGroups"][0]["TargetGroupArn"]
    endpoints = (
        add_ssm_endpoints(ec2, vpc_id, "10.1.0.0/16", subnet_ids[1])
        if ssm_endpoints
        else {"ssm_endpoints": {}, "endpoint_security_group_id": ""}
    )
    return replace(
        ctx,
        vpc_id=vpc_id,
        subnet_ids=subnet_ids,
        security_group_id=sg_id,
        target_group_arn=tg_arn,
        load_balancer_arn="",
        **nat,
        **endpoints,
    )


def seed_environment(endpoint: str) -> tuple[SeedContext, SeededInstance, SeededInstance]:
    """The shared VPC/IAM/ASG/TG pieces, ``web-01`` (the demo instance) and ``web-02``."""
    ec2, iam, asg, elbv2 = (client(s, endpoint) for s in ("ec2", "iam", "autoscaling", "elbv2"))

    vpc_id = ec2.create_vpc(
        CidrBlock="10.0.0.0/16",
        TagSpecifications=[{"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": "prod-web"}]}],
    )["Vpc"]["VpcId"]
    zones = ["us-east-1a", "us-east-1b"]
    subnet_ids = [
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.0.{i + 1}.0/24", AvailabilityZone=az)["Subnet"]["SubnetId"]
        for i, az in enumerate(zones)
    ]
    nat = add_nat_layout(ec2, vpc_id, zones[0], "10.0.10.0/24", "10.0.20.0/24")
    sg_id = ec2.create_security_group(GroupName="web", Description="web tier", VpcId=vpc_id)["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=sg_id,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 443,
                "ToPort": 443,
                "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "HTTPS"}],
            },
            {
                "IpProtocol": "tcp",
                "FromPort": 80,
                "ToPort": 80,
                "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "HTTP"}],
            },
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "IpRanges": [{"CidrIp": "10.0.0.0/16", "Description": "SSH from the VPC"}],
            },
        ],
    )

    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ],
        }
    )
    iam.create_role(RoleName="app-server", AssumeRolePolicyDocument=trust)
    iam.put_role_policy(
        RoleName="app-server",
        PolicyName="app-data",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": ["s3:GetObject", "s3:PutObject"],
                        "Resource": "arn:aws:s3:::app-data/*",
                    }
                ],
            }
        ),
    )
    # What made web-01 a managed node in the first place: the agent needs ssm:UpdateInstanceInformation
    # and the ec2messages/ssmmessages channel actions for its own session; AWS's managed policy for
    # that is AmazonSSMManagedInstanceCore
    # (https://docs.aws.amazon.com/systems-manager/latest/userguide/setup-instance-profile.html).
    # Without it the local agent model (ssm_agent) never registers the node, as on AWS.
    iam.attach_role_policy(RoleName="app-server", PolicyArn="arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore")
    profile = iam.create_instance_profile(InstanceProfileName="app-server")["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName="app-server", RoleName="app-server")

    images = ec2.describe_images(Filters=[{"Name": "name", "Values": [LINUX_AMI_NAME]}])["Images"]
    ami_id = (images or ec2.describe_images()["Images"])[0]["ImageId"]
    ec2.create_key_pair(KeyName="web-key")

    lt_id = ec2.create_launch_template(
        LaunchTemplateName="web",
        LaunchTemplateData={"ImageId": ami_id, "InstanceType": "t3.small", "SecurityGroupIds": [sg_id]},
    )["LaunchTemplate"]["LaunchTemplateId"]
    asg.create_auto_scaling_group(
        AutoScalingGroupName="web-asg",
        LaunchTemplate={"LaunchTemplateId": lt_id, "Version": "$Latest"},
        MinSize=0,
        MaxSize=4,
        DesiredCapacity=0,
        VPCZoneIdentifier=",".join(subnet_ids),
    )
    tg_arn = elbv2.create_target_group(Name="web-tg", Protocol="HTTP", Port=80, VpcId=vpc_id, TargetType="instance")[
        "TargetGroups"
    ][0]["TargetGroupArn"]
    # The web tier's load balancer: a target group that no load balancer uses reports its targets
    # `unused` (Target.NotInUse) and deregisters them at once (strict.ElbTargetDrainingShim).
    alb_arn = elbv2.create_load_balancer(
        Name="web-alb", Subnets=subnet_ids, SecurityGroups=[sg_id], Scheme="internet-facing", Type="application"
    )["LoadBalancers"][0]["LoadBalancerArn"]
    elbv2.create_listener(
        LoadBalancerArn=alb_arn,
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}],
    )

    ctx = SeedContext(
        endpoint=endpoint,
        vpc_id=vpc_id,
        subnet_ids=subnet_ids,
        availability_zones=zones,
        security_group_id=sg_id,
        ami_id=ami_id,
        instance_profile_arn=profile["Arn"],
        instance_profile_name="app-server",
        launch_template_id=lt_id,
        auto_scaling_group="web-asg",
        target_group_arn=tg_arn,
        key_name="web-key",
        load_balancer_arn=alb_arn,
        **nat,
        **add_ssm_endpoints(ec2, vpc_id, "10.0.0.0/16", subnet_ids[1]),
    )
    web01 = seed_instance(
        ctx,
        name="web-01",
        tags={"env": "prod", "app": "storefront"},
        ssm=True,
        auto_scaling_group=True,
        target_group=True,
    )
    web02 = seed_instance(ctx, name="web-02", tags={"env": "prod", "app": "storefront"}, ssm=False, subnet_index=1)
    return ctx, web01, web02


def seed_instance(
    ctx: SeedContext,
    name: str,
    tags: dict[str, str] | None = None,
    ssm: bool = True,
    platform: str = "Linux",
    extra_volumes: int = 2,
    second_interface: bool = True,
    instance_profile: bool = True,
    auto_scaling_group: bool | str = False,
    target_group: bool = False,
    subnet_index: int = 0,
    control_url: str | None = None,
    shutdown_behavior: str | None = None,
    termination_protection: bool = False,
    delete_on_termination: bool | None = None,
    spot: bool = False,
    lifecycle_state: str | None = None,
    private: bool = False,
    ipv6: bool = False,
) -> SeededInstance:
    """A running instance of its own, shaped like ``web-01``; returns its IDs.

    ``ssm`` registers it as an SSM managed node (``platform`` Linux or Windows);
    ``auto_scaling_group`` / ``target_group`` put it into the seeded ``web-asg`` / ``web-tg``
    (``auto_scaling_group`` may name another group).

    Starting attributes, so that a scenario can start from the opposite of what Cordon sets:
    ``shutdown_behavior`` (``stop`` | ``terminate``; EC2's default is ``stop``),
    ``termination_protection``, ``delete_on_termination`` (set on every attached volume; None
    keeps EC2's defaults: on for the root volume, off for volumes attached later),
    ``spot`` (launched as a one-time Spot Instance: ``InstanceLifecycle`` ``spot``),
    ``lifecycle_state`` (its Auto Scaling lifecycle state, e.g. ``Terminating:Wait``, set through
    ``/_cordon/autoscaling/lifecycle-state``).

    ``private`` launches it into the private subnet behind the NAT gateway (``subnet_index`` is
    then ignored); ``ipv6`` gives its primary interface an IPv6 address (the subnet needs an IPv6
    block: ``seed_vpc(ipv6=True)``).
    """
    ec2, asg, elbv2 = (client(s, ctx.endpoint) for s in ("ec2", "autoscaling", "elbv2"))
    control_url = control_url or f"{ctx.endpoint}/_cordon"
    subnet_id = ctx.private_subnet_id if private else ctx.subnet_ids[subnet_index]
    az = ctx.availability_zones[0 if private else subnet_index]
    all_tags = {"Name": name, **(tags or {})}
    run = dict(
        ImageId=ctx.ami_id,
        InstanceType="t3.small",
        MinCount=1,
        MaxCount=1,
        KeyName=ctx.key_name,
        SubnetId=subnet_id,
        SecurityGroupIds=[ctx.security_group_id],
        MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in all_tags.items()]}],
    )
    if ipv6:
        run["Ipv6AddressCount"] = 1
    if shutdown_behavior is not None:
        run["InstanceInitiatedShutdownBehavior"] = shutdown_behavior
    if termination_protection:
        run["DisableApiTermination"] = True
    if spot:
        run["InstanceMarketOptions"] = {
            "MarketType": "spot",
            "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
        }
    if platform == "Windows":
        # EC2 reports Platform "windows" for instances launched from a Windows AMI.
        windows = ec2.describe_images(Filters=[{"Name": "platform", "Values": ["windows"]}])["Images"]
        if windows:
            run["ImageId"] = windows[0]["ImageId"]
    instance_id = ec2.run_instances(**run)["Instances"][0]["InstanceId"]
    ec2.get_waiter("instance_running").wait(InstanceIds=[instance_id], WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    seeded = SeededInstance(instance_id=instance_id, name=name)

    for n in range(extra_volumes):
        vol = ec2.create_volume(
            AvailabilityZone=az,
            Size=[20, 50][n % 2],
            VolumeType="gp3",
            Encrypted=True,
            TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": f"{name}-data{n + 1}"}]}],
        )
        ec2.attach_volume(VolumeId=vol["VolumeId"], InstanceId=instance_id, Device=f"/dev/sd{chr(ord('f') + n)}")
    vols = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}])["Volumes"]
    seeded.volume_ids = sorted(v["VolumeId"] for v in vols)
    if delete_on_termination is not None:
        devices = [a["Device"] for v in vols for a in v["Attachments"] if a["InstanceId"] == instance_id]
        for device in devices:  # ModifyInstanceAttribute changes one attribute per call
            ec2.modify_instance_attribute(
                InstanceId=instance_id,
                BlockDeviceMappings=[{"DeviceName": device, "Ebs": {"DeleteOnTermination": delete_on_termination}}],
            )

    if second_interface:
        eni = ec2.create_network_interface(
            SubnetId=subnet_id, Groups=[ctx.security_group_id], Description=f"{name} secondary"
        )["NetworkInterface"]["NetworkInterfaceId"]
        ec2.attach_network_interface(NetworkInterfaceId=eni, InstanceId=instance_id, DeviceIndex=1)
    inst = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    seeded.network_interface_ids = [n["NetworkInterfaceId"] for n in inst["NetworkInterfaces"]]

    if instance_profile:
        assoc = ec2.associate_iam_instance_profile(
            InstanceId=instance_id,
            IamInstanceProfile={"Arn": ctx.instance_profile_arn, "Name": ctx.instance_profile_name},
        )
        seeded.association_id = assoc["IamInstanceProfileAssociation"]["AssociationId"]
    if auto_scaling_group:
        group = auto_scaling_group if isinstance(auto_scaling_group, str) else ctx.auto_scaling_group
        asg.attach_instances(AutoScalingGroupName=group, InstanceIds=[instance_id])
        if lifecycle_state:
            state = {"instance_id": instance_id, "state": lifecycle_state}
            control(control_url, "POST", "/autoscaling/lifecycle-state", state)
    if target_group:
        elbv2.register_targets(TargetGroupArn=ctx.target_group_arn, Targets=[{"Id": instance_id, "Port": 80}])
    if ssm:
        control(control_url, "POST", "/ssm/managed-instances", {"instance_id": instance_id, "platform": platform})
        seeded.ssm_managed = True
    return seeded
