"""The SSM Agent model of the local stack (``local_aws.ssm_agent``, ``ssm_run_command``) and its
presigned-URL check (``principals.verify_presigned``): as strict as AWS for collection inside
containment.

The first tests are pure (IAM evaluation, SigV4 query signatures). The others run against the
local stack without the step binaries: each builds a small network of its own (a VPC, an instance
subnet and an endpoint subnet with network ACLs of their own, interface endpoints for ssm,
ssmmessages and ec2messages, an S3 gateway endpoint), an instance with a profile of its own, and
drives the agent through IAM policies, security groups, ACLs and the control hooks.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
import uuid
from urllib.parse import urlsplit

import boto3
from pathlib import Path

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from local_aws.principals import credentials_for, verify_presigned
from local_aws.seed import add_nat_layout
from local_aws.ssm_agent import Policy, Request, condition_matches, evaluate

REGION = "us-east-1"
ACCOUNT = "123456789012"
# The SSM agent's channel actions that Cordon's revocation leaves open during a collection, read
# from their one definition (revoke::CHANNEL_ACTIONS), as the CDK tests read it for the forensic role.
CHANNEL = re.findall(
    r'"([a-z0-9]+:[A-Za-z]+)"',
    re.search(
        r"pub const CHANNEL_ACTIONS: \[&str; \d+\] = \[(.*?)\];",
        (Path(__file__).resolve().parents[1] / "steps/detach-profile/src/revoke.rs").read_text(),
        re.S,
    ).group(1),
)
CORE = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
TERMINAL = ("Success", "Failed", "TimedOut", "Cancelled")


def instance_arn(instance_id: str) -> str:
    return f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance_id}"


def exempting_revoke(instance_ids: list[str]) -> dict:
    """The contract's revocation for instances under collection: everything but the channel."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "CordonRevokeExceptCollectionChannel",
                "Effect": "Deny",
                "NotAction": CHANNEL,
                "Resource": "*",
                "Condition": {"StringEquals": {"ec2:SourceInstanceARN": [instance_arn(i) for i in instance_ids]}},
            }
        ],
    }


def full_revoke(instance_ids: list[str]) -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "CordonRevokeInstanceCredentials",
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": {"StringEquals": {"ec2:SourceInstanceARN": [instance_arn(i) for i in instance_ids]}},
            }
        ],
    }


# =========================================================================== IAM evaluation (pure)


def core_policy() -> Policy:
    from local_aws.iam_policies import aws_managed_document

    return Policy("managed:core", "identity", aws_managed_document(CORE))


def session(action: str, instance_id: str = "i-0aaaaaaaaaaaaaaaa", resource: str = "*", **keys) -> Request:
    return Request(
        action=action,
        resource=resource,
        role_arn=f"arn:aws:iam::{ACCOUNT}:role/app-server",
        session_arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/app-server/{instance_id}",
        account=ACCOUNT,
        keys={"ec2:SourceInstanceARN": instance_arn(instance_id), "aws:TokenIssueTime": "2026-01-01T00:00:00Z", **keys},
    )


def test_the_exemption_leaves_only_the_channel_to_the_instance_under_collection():
    s3 = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    policies = [
        core_policy(),
        Policy("inline:s3", "identity", s3),
        Policy("inline:cordon-revoke", "identity", exempting_revoke(["i-0aaaaaaaaaaaaaaaa"])),
    ]
    for action in ("ec2messages:GetMessages", "ssmmessages:OpenControlChannel"):
        assert evaluate(policies, session(action)).allowed, action
    d = evaluate(policies, session("ssm:UpdateInstanceInformation", resource=instance_arn("i-0aaaaaaaaaaaaaaaa")))
    assert d.allowed
    denied = evaluate(policies, session("s3:PutObject", resource="arn:aws:s3:::b/k"))
    assert not denied.allowed and "CordonRevokeExceptCollectionChannel" in denied.reason
    assert not evaluate(policies, session("ssm:GetParameter", resource="arn:aws:ssm:us-east-1:1:parameter/x")).allowed
    # Another instance sharing the role keeps working.
    assert evaluate(policies, session("s3:PutObject", "i-0bbbbbbbbbbbbbbbb", "arn:aws:s3:::b/k")).allowed


def test_the_full_revocation_and_the_older_sessions_cut_off_deny_the_channel():
    policies = [core_policy(), Policy("inline:cordon-revoke", "identity", full_revoke(["i-0aaaaaaaaaaaaaaaa"]))]
    d = evaluate(policies, session("ec2messages:GetMessages"))
    assert not d.allowed and d.denied_by == ["inline:cordon-revoke#CordonRevokeInstanceCredentials"]
    older = {
        "Statement": {
            "Sid": "CordonRevokeOlderSessions",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {"DateLessThan": {"aws:TokenIssueTime": "2026-06-01T00:00:00Z"}},
        }
    }
    policies = [core_policy(), Policy("inline:cordon-revoke", "identity", older)]
    assert not evaluate(policies, session("ec2messages:GetMessages", "i-0bbbbbbbbbbbbbbbb")).allowed
    fresh = session("ec2messages:GetMessages", "i-0bbbbbbbbbbbbbbbb", **{"aws:TokenIssueTime": "2026-07-01T00:00:00Z"})
    assert evaluate(policies, fresh).allowed


def test_no_allow_is_a_deny_and_actions_without_resource_types_need_resource_star():
    assert not evaluate([], session("ec2messages:GetMessages")).allowed
    scoped = {"Statement": [{"Effect": "Allow", "Action": "ec2messages:*", "Resource": "arn:aws:ec2:*:*:instance/*"}]}
    assert not evaluate([Policy("p", "identity", scoped)], session("ec2messages:GetMessages")).allowed
    boundary = Policy("b", "boundary", {"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})
    d = evaluate([core_policy(), boundary], session("ec2messages:GetMessages"))
    assert not d.allowed and "boundary" in d.reason


@pytest.mark.parametrize(
    "condition, keys, expected",
    [
        ({"StringNotEquals": {"ec2:SourceInstanceARN": "x"}}, {}, True),  # negated, key missing: true
        ({"StringEquals": {"ec2:SourceInstanceARN": "x"}}, {}, False),
        ({"StringEqualsIfExists": {"aws:SourceVpce": "vpce-1"}}, {}, True),
        ({"StringEquals": {"aws:SourceVpce": ["vpce-1", "vpce-2"]}}, {"aws:sourcevpce": "vpce-2"}, True),
        (
            {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/app-*"}},
            {"aws:PrincipalArn": "arn:aws:iam::1:role/app-server"},
            True,
        ),
        (
            {"ArnNotEquals": {"aws:PrincipalArn": "arn:aws:iam::1:role/a"}},
            {"aws:PrincipalArn": "arn:aws:iam::1:role/a"},
            False,
        ),
        ({"Null": {"aws:SourceVpce": "true"}}, {}, True),
        ({"Bool": {"aws:SecureTransport": "false"}}, {"aws:SecureTransport": "true"}, False),
        ({"IpAddress": {"aws:VpcSourceIp": "10.9.0.0/16"}}, {"aws:VpcSourceIp": "10.9.1.5"}, True),
        ({"ForAllValues:StringLike": {"aws:TagKeys": "cordon:*"}}, {"aws:TagKeys": ["cordon:a", "other"]}, False),
        ({"ForAnyValue:StringLike": {"aws:TagKeys": "cordon:*"}}, {"aws:TagKeys": ["cordon:a", "other"]}, True),
        (
            {"DateGreaterThan": {"aws:TokenIssueTime": "2025-01-01T00:00:00Z"}},
            {"aws:TokenIssueTime": "2026-01-01T00:00:00Z"},
            True,
        ),
    ],
)
def test_condition_operators(condition, keys, expected):
    assert condition_matches(condition, keys) is expected


def test_an_operator_the_model_does_not_know_fails_closed():
    allow = {
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"BinaryEquals": {"k": "AA=="}}}]
    }
    d = evaluate([Policy("p", "identity", allow)], session("ec2messages:GetMessages"))
    assert not d.allowed and d.notes


# =========================================================================== presigned URLs (pure)


def presigner(kind: str = "function", name: str = "cordon-ssm-collect", endpoint: str = "http://127.0.0.1:4566"):
    creds = credentials_for(kind, name)
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=creds["AWS_SESSION_TOKEN"],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def test_a_presigned_put_is_valid_only_for_its_method_key_and_lifetime():
    url = presigner().generate_presigned_url(
        "put_object", Params={"Bucket": "evidence", "Key": "IR-1/i-0abc/ssm/collection.txt.gz"}, ExpiresIn=60
    )
    u = urlsplit(url)
    headers = {"host": u.netloc}
    assert verify_presigned("PUT", u.path, u.query, headers) is None
    assert verify_presigned("GET", u.path, u.query, headers).code == "SignatureDoesNotMatch"
    other = u.path.replace("collection.txt.gz", "memory.lime")
    assert verify_presigned("PUT", other, u.query, headers).code == "SignatureDoesNotMatch"
    assert verify_presigned("PUT", u.path, u.query, {"host": "127.0.0.1:1"}).code == "SignatureDoesNotMatch"
    unsigned = verify_presigned("PUT", u.path, u.query, {**headers, "x-amz-checksum-crc32": "AAAAAA=="})
    assert (unsigned.status, unsigned.message) == (403, "There were headers present in the request which were not signed")
    expired = verify_presigned("PUT", u.path, u.query, headers, now=time.time() + 61)
    assert (expired.status, expired.code, expired.message) == (403, "AccessDenied", "Request has expired")
    forged = u.query.replace(
        credentials_for("function", "cordon-ssm-collect")["AWS_ACCESS_KEY_ID"], "AKIAUNKNOWNKEY000000"
    )
    assert verify_presigned("PUT", u.path, forged, headers).code == "InvalidAccessKeyId"


@pytest.mark.xfail(
    strict=True,
    reason="KNOWN LENIENCY (README, Not verified): S3 is reported to refuse an unsigned Content-MD5 on a "
    "presigned request (HeadersNotSigned, aws/aws-sdk-ruby#543); the local check still accepts it, "
    "because the collection script sends one and the staging-bucket fix is not built yet",
)
def test_an_unsigned_content_md5_on_a_presigned_put_is_refused_as_s3_does():
    url = presigner().generate_presigned_url(
        "put_object", Params={"Bucket": "evidence", "Key": "IR-1/i-0abc/ssm/collection.txt.gz"}, ExpiresIn=60
    )
    u = urlsplit(url)
    headers = {"host": u.netloc, "content-md5": "1B2M2Y8AsgTpgAmY7PhCfg=="}
    refused = verify_presigned("PUT", u.path, u.query, headers)
    assert refused is not None and refused.status == 403


# =========================================================================== on the local stack


class Net:
    """A network of one test's own: see the module docstring."""

    def __init__(self, stack, endpoints: bool = True, nat: bool = False) -> None:
        self.stack = stack
        # EC2's request token buckets are on in the local stack: a network is many calls.
        ec2 = self.ec2 = stack.client("ec2", retries=12)
        self.cidr = "10.9.0.0/16"
        self.vpc = ec2.create_vpc(CidrBlock=self.cidr)["Vpc"]["VpcId"]
        self.host_subnet = ec2.create_subnet(VpcId=self.vpc, CidrBlock="10.9.1.0/24", AvailabilityZone="us-east-1a")[
            "Subnet"
        ]["SubnetId"]
        self.endpoint_subnet = ec2.create_subnet(
            VpcId=self.vpc, CidrBlock="10.9.2.0/24", AvailabilityZone="us-east-1b"
        )["Subnet"]["SubnetId"]
        self.host_acl = self._own_acl(self.host_subnet)
        self.endpoint_acl = self._own_acl(self.endpoint_subnet)
        self.host_sg = ec2.create_security_group(
            GroupName=f"host-{uuid.uuid4().hex[:6]}", Description="host", VpcId=self.vpc
        )["GroupId"]
        self.endpoint_sg = ec2.create_security_group(GroupName="endpoints", Description="endpoints", VpcId=self.vpc)[
            "GroupId"
        ]
        ec2.authorize_security_group_ingress(
            GroupId=self.endpoint_sg,
            IpPermissions=[{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": self.cidr}]}],
        )
        self.table = ec2.create_route_table(VpcId=self.vpc)["RouteTable"]["RouteTableId"]
        ec2.associate_route_table(RouteTableId=self.table, SubnetId=self.host_subnet)
        self.endpoints = {}
        if endpoints:
            for service in ("ssm", "ssmmessages", "ec2messages"):
                self.endpoints[service] = ec2.create_vpc_endpoint(
                    VpcId=self.vpc,
                    ServiceName=f"com.amazonaws.{REGION}.{service}",
                    VpcEndpointType="Interface",
                    SubnetIds=[self.endpoint_subnet],
                    SecurityGroupIds=[self.endpoint_sg],
                    PrivateDnsEnabled=True,
                )["VpcEndpoint"]["VpcEndpointId"]
            self.endpoints["s3"] = ec2.create_vpc_endpoint(
                VpcId=self.vpc,
                ServiceName=f"com.amazonaws.{REGION}.s3",
                VpcEndpointType="Gateway",
                RouteTableIds=[self.table],
            )["VpcEndpoint"]["VpcEndpointId"]
        self.nat = None
        if nat:
            self.nat = add_nat_layout(ec2, self.vpc, "us-east-1a", "10.9.10.0/24", "10.9.20.0/24", private_acl=True)
            self.host_subnet = self.nat["private_subnet_id"]
            self.host_acl = self._acl_of(self.host_subnet)

    def _acl_of(self, subnet: str) -> str:
        acls = self.ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [subnet]}])[
            "NetworkAcls"
        ]
        return acls[0]["NetworkAclId"]

    def _own_acl(self, subnet: str) -> str:
        acl = self.ec2.create_network_acl(VpcId=self.vpc)["NetworkAcl"]["NetworkAclId"]
        for egress in (False, True):
            self.ec2.create_network_acl_entry(
                NetworkAclId=acl,
                RuleNumber=100,
                Protocol="-1",
                RuleAction="allow",
                Egress=egress,
                CidrBlock="0.0.0.0/0",
            )
        current = self.ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [subnet]}])[
            "NetworkAcls"
        ]
        assoc = next(a["NetworkAclAssociationId"] for a in current[0]["Associations"] if a["SubnetId"] == subnet)
        self.ec2.replace_network_acl_association(AssociationId=assoc, NetworkAclId=acl)
        return acl

    def endpoint_ip(self, service: str) -> str:
        ep = self.ec2.describe_vpc_endpoints(VpcEndpointIds=[self.endpoints[service]])["VpcEndpoints"][0]
        eni = self.ec2.describe_network_interfaces(NetworkInterfaceIds=ep["NetworkInterfaceIds"])["NetworkInterfaces"][
            0
        ]
        return eni["PrivateIpAddress"]


@pytest.fixture(scope="module")
def shared_net(stack) -> Net:
    """A network for the tests that change only their own instance's groups and role."""
    return Net(stack)


def make_role(stack, policies: dict[str, dict] | None = None, managed: list[str] = (CORE,)) -> tuple[str, str]:
    """A role (and a profile of the same name) of the test's own; returns (name, profile ARN)."""
    iam = stack.iam
    name = f"ssm-agent-{uuid.uuid4().hex[:8]}"
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    for arn in managed:
        iam.attach_role_policy(RoleName=name, PolicyArn=arn)
    for pname, doc in (policies or {}).items():
        iam.put_role_policy(RoleName=name, PolicyName=pname, PolicyDocument=json.dumps(doc))
    profile = iam.create_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return name, profile


def launch(stack, net: Net, profile: str | None, register: bool = True) -> str:
    ec2 = net.ec2
    iid = ec2.run_instances(
        ImageId=stack.context.ami_id,
        InstanceType="t3.small",
        MinCount=1,
        MaxCount=1,
        SubnetId=net.host_subnet,
        SecurityGroupIds=[net.host_sg],
    )["Instances"][0]["InstanceId"]
    if profile:
        ec2.associate_iam_instance_profile(InstanceId=iid, IamInstanceProfile={"Arn": profile})
    if register:
        stack.control("/ssm/managed-instances", {"instance_id": iid, "platform": "Linux"})
    return iid


def agent(stack, iid: str, **body) -> dict:
    if body:
        return stack.control("/ssm/agent", {"instance_id": iid, **body})
    return stack.control(f"/ssm/agent?instance_id={iid}")


def send(stack, iid: str, commands: list[str], timeout: int = 60, execution: int = 30, **kw) -> str:
    return stack.ssm.send_command(
        InstanceIds=[iid],
        DocumentName="AWS-RunShellScript",
        Parameters={"commands": commands, "executionTimeout": [str(execution)]},
        TimeoutSeconds=timeout,
        **kw,
    )["Command"]["CommandId"]


def wait(stack, cid: str, iid: str, until=TERMINAL, limit: float = 20) -> tuple[dict, list[str]]:
    seen: list[str] = []
    deadline = time.monotonic() + limit
    while True:
        inv = stack.ssm.get_command_invocation(CommandId=cid, InstanceId=iid)
        if not seen or seen[-1] != inv["Status"]:
            seen.append(inv["Status"])
        if inv["Status"] in until or time.monotonic() > deadline:
            return inv, seen
        time.sleep(0.1)


def stays(stack, cid: str, iid: str, status: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert stack.ssm.get_command_invocation(CommandId=cid, InstanceId=iid)["Status"] == status
        time.sleep(0.2)


def managed(stack, iid: str) -> list[dict]:
    return stack.ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [iid]}])[
        "InstanceInformationList"
    ]


def test_a_node_whose_role_has_no_ssm_permission_never_registers(stack, shared_net):
    net = shared_net
    _, profile = make_role(stack, managed=[])
    iid = launch(stack, net, profile)
    assert managed(stack, iid) == []
    seen = agent(stack, iid)
    assert not seen["registered"] and "ssm:UpdateInstanceInformation" in seen["health"]["reason"]
    with pytest.raises(ClientError) as e:
        send(stack, iid, ["true"])
    assert e.value.response["Error"]["Code"] == "InvalidInstanceId"


def test_a_command_goes_through_the_interface_endpoints(stack, shared_net):
    net = shared_net
    role, profile = make_role(stack)
    iid = launch(stack, net, profile)
    [info] = managed(stack, iid)
    assert info["PingStatus"] == "Online"
    seen = agent(stack, iid)
    assert seen["identity"]["role_arn"].endswith(f"/{role}")
    assert seen["can_take_commands"] and seen["channel"]["reason"] == "MDS (ec2messages)"
    assert seen["network"]["ec2messages"]["path"] == "interface-endpoint"
    assert net.endpoint_ip("ec2messages").startswith("10.9.2."), "endpoint interfaces get addresses of their subnet"
    cid = send(stack, iid, ["echo hello from $AWS_SSM_INSTANCE_ID"])
    inv, statuses = wait(stack, cid, iid)
    assert statuses == ["Pending", "InProgress", "Success"]
    assert inv["StandardOutputContent"] == f"hello from {iid}\n"


def test_the_full_revocation_leaves_a_command_pending_until_it_expires(stack, shared_net):
    net = shared_net
    role, profile = make_role(stack)
    iid = launch(stack, net, profile)
    stack.iam.put_role_policy(RoleName=role, PolicyName="cordon-revoke", PolicyDocument=json.dumps(full_revoke([iid])))
    # The node still shows Online until its next health ping, as on AWS: SendCommand is accepted.
    assert managed(stack, iid)[0]["PingStatus"] == "Online"
    started = time.monotonic()
    cid = send(stack, iid, ["touch /tmp/never"], timeout=30, execution=2)
    stays(stack, cid, iid, "Pending", 5)
    assert "CordonRevokeInstanceCredentials" in agent(stack, iid)["channel"]["reason"]
    inv, _ = wait(stack, cid, iid, limit=40)
    assert (inv["Status"], inv["StatusDetails"]) == ("TimedOut", "DeliveryTimedOut")
    assert time.monotonic() - started >= 31, "expiry is TimeoutSeconds + executionTimeout"
    [cmd] = stack.ssm.list_commands(CommandId=cid)["Commands"]
    assert (cmd["Status"], cmd["DeliveryTimedOutCount"]) == ("TimedOut", 1)
    assert agent(stack, iid, ping=True)["health"]["ok"] is False
    assert managed(stack, iid)[0]["PingStatus"] == "ConnectionLost"


def test_the_exemption_lets_the_agent_run_the_command_but_its_output_upload_is_denied(stack, shared_net):
    net = shared_net
    s3 = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:PutObject", "s3:PutObjectAcl"], "Resource": "*"}],
    }
    role, profile = make_role(stack, {"output": s3})
    iid = launch(stack, net, profile)
    bucket = f"ssm-out-{uuid.uuid4().hex[:8]}"
    stack.s3.create_bucket(Bucket=bucket)
    cid = send(stack, iid, ["echo before"], OutputS3BucketName=bucket)
    assert wait(stack, cid, iid)[0]["Status"] == "Success"
    assert len(stack.objects_under(cid, bucket=bucket)) == 1, "allowed: the agent uploads stdout"
    stack.iam.put_role_policy(
        RoleName=role, PolicyName="cordon-revoke", PolicyDocument=json.dumps(exempting_revoke([iid]))
    )
    cid = send(stack, iid, ["echo during"], OutputS3BucketName=bucket)
    inv, _ = wait(stack, cid, iid)
    assert (inv["Status"], inv["StandardOutputContent"]) == ("Success", "during\n"), "the status arrives anyway"
    assert stack.objects_under(cid, bucket=bucket) == []
    log = "\n".join(agent(stack, iid)["log"])
    assert "Failed to upload the output to s3" in log and "CordonRevokeExceptCollectionChannel" in log
    uploads = next(c for c in stack.control("/ssm/commands")["commands"] if c["command_id"] == cid)
    assert uploads["invocations"][iid]["uploads"]["stdout"].startswith("not uploaded: AccessDenied")


def test_the_agent_keeps_its_credentials_until_it_refreshes_them(stack, shared_net):
    net = shared_net
    old, old_profile = make_role(stack)
    new, new_profile = make_role(stack)
    iid = launch(stack, net, old_profile)
    stack.iam.put_role_policy(RoleName=old, PolicyName="cordon-revoke", PolicyDocument=json.dumps(full_revoke([iid])))
    [assoc] = net.ec2.describe_iam_instance_profile_associations(Filters=[{"Name": "instance-id", "Values": [iid]}])[
        "IamInstanceProfileAssociations"
    ]
    net.ec2.replace_iam_instance_profile_association(
        AssociationId=assoc["AssociationId"], IamInstanceProfile={"Arn": new_profile}
    )
    seen = agent(stack, iid)
    assert seen["identity"]["role_arn"].endswith(f"/{old}") and seen["identity"]["associated_role_arn"].endswith(
        f"/{new}"
    )
    cid = send(stack, iid, ["echo collected"], timeout=60)
    stays(stack, cid, iid, "Pending", 2)
    seen = agent(stack, iid, refresh=True)
    assert seen["identity"]["role_arn"].endswith(f"/{new}")
    assert wait(stack, cid, iid)[0]["Status"] == "Success"
    # No profile at the next refresh: no credentials, offline.
    [assoc] = net.ec2.describe_iam_instance_profile_associations(Filters=[{"Name": "instance-id", "Values": [iid]}])[
        "IamInstanceProfileAssociations"
    ]
    net.ec2.disassociate_iam_instance_profile(AssociationId=assoc["AssociationId"])
    seen = agent(stack, iid, refresh=True, ping=True)
    assert seen["identity"]["role_arn"] is None and not seen["can_take_commands"]
    assert managed(stack, iid)[0]["PingStatus"] == "ConnectionLost"


def collection_group(stack, net: Net, s3: bool) -> str:
    """A group like the contract's ``cordon-collection``: no inbound, egress 443 to the endpoints'
    group (and S3's prefix list)."""
    ec2 = net.ec2
    sg = ec2.create_security_group(GroupName=f"collection-{uuid.uuid4().hex[:6]}", Description="c", VpcId=net.vpc)[
        "GroupId"
    ]
    ec2.revoke_security_group_egress(
        GroupId=sg, IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    )
    perms = [{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "UserIdGroupPairs": [{"GroupId": net.endpoint_sg}]}]
    if s3:
        pl = ec2.describe_managed_prefix_lists(
            Filters=[{"Name": "prefix-list-name", "Values": [f"com.amazonaws.{REGION}.s3"]}]
        )["PrefixLists"][0]["PrefixListId"]
        perms.append({"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "PrefixListIds": [{"PrefixListId": pl}]})
    ec2.authorize_security_group_egress(GroupId=sg, IpPermissions=perms)
    return sg


def move_to(stack, iid: str, group: str) -> None:
    ec2 = stack.client("ec2", retries=12)
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    for eni in inst["NetworkInterfaces"]:
        ec2.modify_network_interface_attribute(NetworkInterfaceId=eni["NetworkInterfaceId"], Groups=[group])


def test_the_collection_group_is_the_only_path_and_isolation_cuts_it(stack):
    net = Net(stack)
    _, profile = make_role(stack)
    iid = launch(stack, net, profile)
    isolation = net.ec2.create_security_group(
        GroupName=f"isolation-{uuid.uuid4().hex[:6]}", Description="i", VpcId=net.vpc
    )["GroupId"]
    net.ec2.revoke_security_group_egress(
        GroupId=isolation, IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    )
    move_to(stack, iid, isolation)
    cid = send(stack, iid, ["echo inside"], timeout=60)
    stays(stack, cid, iid, "Pending", 2)
    assert "allow no egress TCP 443" in agent(stack, iid)["channel"]["reason"]
    move_to(stack, iid, collection_group(stack, net, s3=False))
    assert wait(stack, cid, iid)[0]["Status"] == "Success"
    # An ACL deny for the instance in the endpoint subnet cuts it again; an allow numbered before it opens it.
    ip = net.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["PrivateIpAddress"]
    net.ec2.create_network_acl_entry(
        NetworkAclId=net.endpoint_acl,
        RuleNumber=50,
        Protocol="-1",
        RuleAction="deny",
        Egress=False,
        CidrBlock=f"{ip}/32",
    )
    seen = agent(stack, iid)
    assert (
        not seen["can_take_commands"]
        and f"{net.endpoint_acl} inbound TCP 443 from {ip}" in seen["network"]["ec2messages"]["reason"]
    )
    for egress, ports in ((False, (443, 443)), (True, (1024, 65535))):
        net.ec2.create_network_acl_entry(
            NetworkAclId=net.endpoint_acl,
            RuleNumber=40,
            Protocol="6",
            RuleAction="allow",
            Egress=egress,
            CidrBlock=f"{ip}/32",
            PortRange={"From": ports[0], "To": ports[1]},
        )
    assert agent(stack, iid)["can_take_commands"]


def test_without_a_path_to_s3_the_script_uploads_fail_and_with_one_they_arrive(stack, shared_net):
    net = shared_net
    _, profile = make_role(stack)
    iid = launch(stack, net, profile)
    bucket = f"evidence-{uuid.uuid4().hex[:8]}"
    stack.s3.create_bucket(Bucket=bucket)
    url = presigner(endpoint=stack.endpoint).generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "IR-9/i/ssm/collection.txt.gz"}, ExpiresIn=300
    )
    script = ["echo evidence > e.txt", f"curl -sS -f -T e.txt '{url}' && echo uploaded || echo upload-failed"]
    move_to(stack, iid, collection_group(stack, net, s3=False))
    inv, _ = wait(stack, send(stack, iid, script), iid)
    assert inv["StandardOutputContent"] == "upload-failed\n"
    assert stack.objects_under("IR-9/", bucket=bucket) == []
    move_to(stack, iid, collection_group(stack, net, s3=True))
    since = stack.last_request_seq()
    inv, _ = wait(stack, send(stack, iid, script), iid)
    assert inv["StandardOutputContent"] == "uploaded\n"
    assert stack.get_object("IR-9/i/ssm/collection.txt.gz", bucket=bucket)[0] == b"evidence\n"
    [put] = [r for r in stack.requests("s3", "PutObject", since) if r["path"].endswith("collection.txt.gz")]
    assert (put["principal"], put["auth"], put["status"]) == ("function:cordon-ssm-collect", "presigned", 200)


def test_cancel_a_pending_command_at_once_and_a_running_one_through_the_agent(stack, shared_net):
    net = shared_net
    role, profile = make_role(stack)
    iid = launch(stack, net, profile)
    # Running: the agent kills the process group at once.
    marker = f"/tmp/ssm-cancel-{uuid.uuid4().hex}"
    cid = send(stack, iid, ["sleep 3", f"touch {marker}"])
    wait(stack, cid, iid, until=("InProgress",))
    stack.ssm.cancel_command(CommandId=cid)
    assert stack.ssm.get_command_invocation(CommandId=cid, InstanceId=iid)["Status"] == "Cancelled"
    # Running, but the channel closed meanwhile: Cancelling until the agent can take the cancel.
    cid = send(stack, iid, ["sleep 3", f"touch {marker}"])
    wait(stack, cid, iid, until=("InProgress",))
    stack.iam.put_role_policy(RoleName=role, PolicyName="cordon-revoke", PolicyDocument=json.dumps(full_revoke([iid])))
    stack.ssm.cancel_command(CommandId=cid)
    stays(stack, cid, iid, "Cancelling", 1)
    stack.iam.delete_role_policy(RoleName=role, PolicyName="cordon-revoke")
    inv, _ = wait(stack, cid, iid)
    assert inv["Status"] == "Cancelled"
    time.sleep(3)
    assert not __import__("os").path.exists(marker), "the script was killed"
    # Pending (never delivered): Cancelled at once, without the agent.
    stack.iam.put_role_policy(RoleName=role, PolicyName="cordon-revoke", PolicyDocument=json.dumps(full_revoke([iid])))
    cid = send(stack, iid, ["true"])
    stays(stack, cid, iid, "Pending", 1)
    stack.ssm.cancel_command(CommandId=cid)
    assert stack.ssm.get_command_invocation(CommandId=cid, InstanceId=iid)["Status"] == "Cancelled"


def test_a_finished_command_is_reported_only_when_the_agent_can_reply(stack, shared_net):
    net = shared_net
    role, profile = make_role(stack)
    iid = launch(stack, net, profile)
    cid = send(stack, iid, ["sleep 1", "echo done"])
    wait(stack, cid, iid, until=("InProgress",))
    stack.iam.put_role_policy(RoleName=role, PolicyName="cordon-revoke", PolicyDocument=json.dumps(full_revoke([iid])))
    stays(stack, cid, iid, "InProgress", 2.5)
    stack.iam.delete_role_policy(RoleName=role, PolicyName="cordon-revoke")
    inv, _ = wait(stack, cid, iid)
    assert (inv["Status"], inv["StandardOutputContent"]) == ("Success", "done\n")


def test_without_endpoints_the_agent_goes_through_the_nat_gateway(stack):
    net = Net(stack, endpoints=False, nat=True)
    _, profile = make_role(stack)
    iid = launch(stack, net, profile)
    seen = agent(stack, iid)
    assert seen["registered"] and seen["network"]["ssm"]["path"] == "internet"
    assert "nat-" in seen["network"]["ssm"]["reason"]
    public_acl = net._acl_of(net.nat["public_subnet_id"])
    net.ec2.create_network_acl_entry(
        NetworkAclId=public_acl,
        RuleNumber=10,
        Protocol="6",
        RuleAction="deny",
        Egress=True,
        CidrBlock="0.0.0.0/0",
        PortRange={"From": 443, "To": 443},
    )
    seen = agent(stack, iid)
    assert not seen["can_take_commands"] and "NAT subnet" in seen["network"]["ec2messages"]["reason"]


def test_presigned_urls_on_the_stack(stack):
    bucket = f"presigned-{uuid.uuid4().hex[:8]}"
    stack.s3.create_bucket(Bucket=bucket)
    s3 = presigner(endpoint=stack.endpoint)
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "a/collection.txt.gz"}, ExpiresIn=300
    )

    def call(method: str, target: str, data: bytes | None = b"x") -> tuple[int, str]:
        req = urllib.request.Request(target, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    since = stack.last_request_seq()
    assert call("PUT", url)[0] == 200
    status, body = call("GET", url, None)
    assert status == 403 and "<Code>SignatureDoesNotMatch</Code>" in body
    status, body = call("PUT", url.replace("a/collection.txt.gz", "a/other"))
    assert status == 403 and "SignatureDoesNotMatch" in body
    short = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "a/short"}, ExpiresIn=1)
    time.sleep(2.1)
    status, body = call("PUT", short)
    assert status == 403 and "<Code>AccessDenied</Code><Message>Request has expired</Message>" in body
    assert [o["Key"] for o in stack.objects_under("a/", bucket=bucket)] == ["a/collection.txt.gz"]
    logged = [r for r in stack.requests("s3", None, since) if r["path"].startswith(f"/{bucket}/")]
    key = credentials_for("function", "cordon-ssm-collect")["AWS_ACCESS_KEY_ID"]
    assert [(r["method"], r["status"], r["principal"], r["auth"], r["access_key"]) for r in logged] == [
        ("PUT", 200, "function:cordon-ssm-collect", "presigned", key),
        # Refused before authentication: nobody's call, whose URL it was stays in the key.
        ("GET", 403, None, "presigned-refused", key),
        ("PUT", 403, None, "presigned-refused", key),
        ("PUT", 403, None, "presigned-refused", key),
    ]
    journal = [json.loads(line) for line in (stack.state_dir / "requests.jsonl").read_text().splitlines()]
    assert any(
        e["auth"] == "presigned" and e["principal"] == "function:cordon-ssm-collect" and e["status"] == 200
        for e in journal
    )
