"""The action-coverage check's parts on their own (no stack): IAM action matching, the API operation
to IAM action mapping, principals, the check over a journal, and the policy lint's triage."""

from __future__ import annotations

import json

import pytest

from local_aws.coverage import check
from local_aws.iam_actions import iam_actions
from local_aws.iam_policies import action_matches, aws_managed_document, decide, role_statements, statements_of
from local_aws.policy_lint import Acknowledgement, LintFinding, lint_document, triage
from local_aws.principals import Registry, access_key_for, access_key_of, credentials_for
from local_aws.template import Template


# ------------------------------------------------------------------ matching


@pytest.mark.parametrize(
    "pattern, action, expected",
    [
        ("ec2:DescribeInstances", "ec2:DescribeInstances", True),
        ("EC2:describeinstances", "ec2:DescribeInstances", True),  # case-insensitive
        ("ec2:Describe*", "ec2:DescribeInstances", True),
        ("ec2:Describe*", "ec2:ModifyInstanceAttribute", False),
        ("ec2:Describe", "ec2:DescribeInstances", False),  # whole name, not a prefix
        ("ec2:*SecurityGroupIngress", "ec2:RevokeSecurityGroupIngress", True),
        ("ec2:*SecurityGroupEgress", "ec2:RevokeSecurityGroupIngress", False),
        ("ec2:Get?onsoleOutput", "ec2:GetConsoleOutput", True),
        ("ec2:Get?onsoleOutput", "ec2:GetCConsoleOutput", False),  # ? is one character
        ("*", "iam:PassRole", True),
        ("s3:*", "s3:GetObject", True),
        ("s3:*", "s3express:CreateSession", False),  # the prefix is matched too
        ("s3:Get.*", "s3:GetObject", False),  # no regular expressions in IAM
    ],
)
def test_actions_match_as_iam_matches_them(pattern, action, expected):
    assert action_matches(pattern, action) is expected


def policy(*statements) -> dict:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def test_an_allow_grants_and_a_missing_grant_does_not():
    st = statements_of(policy({"Sid": "A", "Effect": "Allow", "Action": ["ec2:Describe*"], "Resource": "*"}), "p")
    assert decide(st, "ec2:DescribeSecurityGroups").allowed_by == ["p#A"]
    assert not decide(st, "ec2:RevokeSecurityGroupIngress").allowed


def test_not_action_allows_everything_it_does_not_name():
    st = statements_of(policy({"Effect": "Allow", "NotAction": ["iam:*", "organizations:*"], "Resource": "*"}), "p")
    assert decide(st, "s3:GetObject").allowed
    assert not decide(st, "iam:PassRole").allowed
    assert not decide(st, "IAM:passrole").allowed


def test_a_deny_without_condition_on_every_resource_overrides_an_allow():
    st = statements_of(
        policy(
            {"Sid": "All", "Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Sid": "NoDelete", "Effect": "Deny", "Action": "s3:Delete*", "Resource": "*"},
        ),
        "p",
    )
    d = decide(st, "s3:DeleteObject")
    assert d.allowed_by == ["p#All"] and d.denied_by == ["p#NoDelete"] and not d.allowed
    assert decide(st, "s3:PutObject").allowed


def test_a_deny_with_a_condition_or_a_scope_does_not_cover_every_call():
    st = statements_of(
        policy(
            {"Sid": "Put", "Effect": "Allow", "Action": "iam:PutRolePolicy", "Resource": "*"},
            {"Sid": "Own", "Effect": "Deny", "Action": "iam:PutRolePolicy", "Resource": "arn:aws:iam::1:role/cordon/*"},
            {"Sid": "Tls", "Effect": "Deny", "Action": "*", "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
        ),
        "p",
    )
    d = decide(st, "iam:PutRolePolicy")
    assert d.allowed and d.denied_by == [] and d.scoped_denies == ["p#Own", "p#Tls"]


def test_a_single_statement_object_is_read_like_a_list():
    st = statements_of({"Statement": {"Effect": "Allow", "Action": "sns:Publish", "Resource": "*"}}, "p")
    assert decide(st, "sns:Publish").allowed


def test_aws_managed_policies_come_from_motos_copy():
    doc = aws_managed_document("arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore")
    assert decide(statements_of(doc, "m"), "ssm:UpdateInstanceInformation").allowed
    assert not decide(statements_of(doc, "m"), "s3:PutObject").allowed
    assert aws_managed_document("arn:aws:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs")
    with pytest.raises(Exception):
        aws_managed_document("arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCoreX")
    with pytest.raises(Exception):  # right name, wrong path
        aws_managed_document("arn:aws:iam::aws:policy/service-role/AmazonSSMManagedInstanceCore")


# ------------------------------------------------------------------ operation -> IAM action


@pytest.mark.parametrize(
    "service, operation, headers, query, expected",
    [
        ("ec2", "RevokeSecurityGroupIngress", {}, "", ["ec2:RevokeSecurityGroupIngress"]),
        ("ec2", "AssociateIamInstanceProfile", {}, "", ["ec2:AssociateIamInstanceProfile", "iam:PassRole"]),
        ("s3", "HeadObject", {}, "", ["s3:GetObject"]),
        ("s3", "HeadObject", {}, "versionId=abc", ["s3:GetObjectVersion"]),
        ("s3", "GetObject", {}, "", ["s3:GetObject"]),
        ("s3", "ListObjectsV2", {}, "list-type=2&prefix=x", ["s3:ListBucket"]),
        ("s3", "CreateMultipartUpload", {}, "uploads", ["s3:PutObject"]),
        ("s3", "UploadPart", {}, "partNumber=1&uploadId=u", ["s3:PutObject"]),
        ("s3", "CompleteMultipartUpload", {}, "uploadId=u", ["s3:PutObject"]),
        ("s3", "GetObjectAttributes", {}, "attributes", ["s3:GetObject", "s3:GetObjectAttributes"]),
        ("s3", "GetObjectAttributes", {}, "attributes&versionId=v", ["s3:GetObjectVersion", "s3:GetObjectVersionAttributes"]),
        ("s3", "CopyObject", {"x-amz-copy-source": "/b/k"}, "", ["s3:PutObject", "s3:GetObject"]),
        ("s3", "CopyObject", {"x-amz-copy-source": "/b/k?versionId=v"}, "", ["s3:PutObject", "s3:GetObjectVersion"]),
        ("s3", "PutObject", {"x-amz-tagging": "a=b"}, "", ["s3:PutObject", "s3:PutObjectTagging"]),
        ("lambda", "Invoke", {}, "", ["lambda:InvokeFunction"]),
        ("states", "StartExecution", {}, "", ["states:StartExecution"]),
        ("s3", "GET /odd", {}, "", []),  # an operation the stack could not name
    ],
)
def test_operations_map_to_the_iam_actions_they_need(service, operation, headers, query, expected):
    assert iam_actions(service, operation, headers, query) == expected


# ------------------------------------------------------------------ principals


def test_each_function_gets_its_own_key_and_is_identified_by_it():
    reg = Registry()
    a = reg.register_function("cordon-quarantine", "QuarantineRole0A8ECC44")
    b = reg.register_function("cordon-notify")
    assert a["AWS_ACCESS_KEY_ID"] != b["AWS_ACCESS_KEY_ID"]
    assert a["AWS_ACCESS_KEY_ID"].startswith("ASIA") and len(a["AWS_ACCESS_KEY_ID"]) == 20
    p = reg.identify(a["AWS_ACCESS_KEY_ID"])
    assert (p.label, p.role) == ("function:cordon-quarantine", "QuarantineRole0A8ECC44")
    # The runtime registering the function again (role unknown to it) keeps the role deploy gave.
    reg.register_function("cordon-quarantine")
    assert reg.identify(a["AWS_ACCESS_KEY_ID"]).role == "QuarantineRole0A8ECC44"
    assert reg.identify("test") is None and reg.identify(None) is None


def test_a_role_is_found_by_its_arn_and_an_unknown_role_names_no_principal():
    reg = Registry()
    reg.register_role("ForensicRoleD42D9A03", "arn:aws:iam::123456789012:role/cordon/Cordon-ForensicRoleD42D9A03")
    creds = reg.credentials_of_role_arn("arn:aws:iam::123456789012:role/cordon/Cordon-ForensicRoleD42D9A03")
    assert reg.identify(creds["AWS_ACCESS_KEY_ID"]).role == "ForensicRoleD42D9A03"
    other = reg.credentials_of_role_arn("arn:aws:iam::123456789012:role/app-server")
    assert reg.identify(other["AWS_ACCESS_KEY_ID"]) is None


def test_the_access_key_is_read_from_sigv4_header_or_presigned_query():
    key = access_key_for("function", "f")
    auth = f"AWS4-HMAC-SHA256 Credential={key}/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=x"
    assert access_key_of({"authorization": auth}, "") == key
    assert access_key_of({}, f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={key}%2F20260101%2Fus-east-1%2Fs3%2Faws4_request") == key
    assert access_key_of({}, "") is None
    assert credentials_for("function", "f")["AWS_ACCESS_KEY_ID"] == key


# ------------------------------------------------------------------ the check over a journal


def small_template() -> Template:
    role = lambda policies, **extra: {  # noqa: E731
        "Type": "AWS::IAM::Role",
        "Properties": {"AssumeRolePolicyDocument": policy(), "Policies": policies, **extra},
    }
    return Template(
        body={
            "Resources": {
                "QRole": role(
                    [{"PolicyName": "q", "PolicyDocument": policy(
                        {"Sid": "Edit", "Effect": "Allow", "Action": ["ec2:AuthorizeSecurityGroupEgress", "ec2:RevokeSecurityGroupEgress"], "Resource": "*"},
                        {"Sid": "NoTags", "Effect": "Deny", "Action": "ec2:CreateTags", "Resource": "*"},
                        {"Sid": "Tags", "Effect": "Allow", "Action": "ec2:*Tags", "Resource": "*"},
                    )}]
                ),
                "FRole": role([], ManagedPolicyArns=[{"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":iam::aws:policy/AmazonSSMManagedInstanceCore"]]}]),
                "SmRole": role([]),
                "SmPolicy": {
                    "Type": "AWS::IAM::Policy",
                    "Properties": {"PolicyName": "d", "Roles": [{"Ref": "SmRole"}], "PolicyDocument": policy(
                        {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": "*"})},
                },
            }
        }
    )


def entry(principal, role, actions, scenario="t.py::test_x", service="ec2", action="X"):
    return {"principal": principal, "role": role, "iam_actions": actions, "scenario": scenario, "service": service, "action": action}


def test_the_check_reports_a_call_without_a_grant_with_function_action_and_scenario():
    result = check(
        [
            entry("function:cordon-quarantine", "QRole", ["ec2:RevokeSecurityGroupEgress"]),
            entry("function:cordon-quarantine", "QRole", ["ec2:RevokeSecurityGroupIngress"], "t.py::test_opened_group"),
            entry("function:cordon-quarantine", "QRole", ["ec2:RevokeSecurityGroupIngress"], "t.py::test_other"),
            entry(None, None, ["iam:CreateRole"]),  # the tests' own calls: out of scope
        ],
        small_template(),
    )
    assert not result.ok and result.out_of_scope == 1
    [f] = result.findings
    assert (f.principal, f.role, f.action, f.calls) == ("function:cordon-quarantine", "QRole", "ec2:RevokeSecurityGroupIngress", 2)
    assert f.scenarios == ["t.py::test_opened_group", "t.py::test_other"]
    assert "no Allow statement of QRole grants it" in result.render()
    assert "made in t.py::test_opened_group" in result.render()


def test_the_check_honours_deny_policy_resources_and_managed_policies():
    t = small_template()
    assert set(role_statements(t)) == {"QRole", "FRole", "SmRole"}
    result = check(
        [
            entry("function:cordon-quarantine", "QRole", ["ec2:CreateTags"]),  # allowed by Tags, denied by NoTags
            entry("function:cordon-quarantine", "QRole", ["ec2:DeleteTags"]),  # allowed by Tags
            entry("role:FRole", "FRole", ["ssm:UpdateInstanceInformation"]),  # from the AWS managed policy
            entry("role:FRole", "FRole", ["s3:PutObject"]),  # not granted
            entry("state-machine:sm", "SmRole", ["lambda:InvokeFunction"]),  # from the AWS::IAM::Policy
            entry("function:cordon-x", "Gone", ["sns:Publish"]),
            entry("function:cordon-y", "QRole", [], service="s3", action="GET /odd"),
        ],
        t,
    )
    got = {(f.principal, f.action): f.reason for f in result.findings}
    assert set(got) == {
        ("function:cordon-quarantine", "ec2:CreateTags"),
        ("role:FRole", "s3:PutObject"),
        ("function:cordon-x", "sns:Publish"),
        ("function:cordon-y", "s3:GET /odd"),
    }
    assert "denied by QRole/q#NoTags" in got[("function:cordon-quarantine", "ec2:CreateTags")]
    assert "not in the synthesized template" in got[("function:cordon-x", "sns:Publish")]
    assert "cannot tell which IAM action" in got[("function:cordon-y", "s3:GET /odd")]


def test_a_journal_of_allowed_calls_passes():
    result = check([entry("function:cordon-quarantine", "QRole", ["ec2:RevokeSecurityGroupEgress"])], small_template())
    assert result.ok and result.findings == []


# ------------------------------------------------------------------ policy lint


def test_parliament_finds_a_malformed_policy():
    bad = policy({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bucket"})  # a bucket, not an object
    issues = {f.issue for f in lint_document("Bad", bad)}
    assert "RESOURCE_MISMATCH" in issues
    good = policy({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bucket/*"})
    assert lint_document("Good", good) == []


def test_findings_need_an_acknowledgement_and_acknowledgements_need_a_finding():
    f1 = LintFinding("QuarantineRole/cordon-quarantine", "RESOURCE_MISMATCH", "MEDIUM", '[{"action": "ec2:CreateSecurityGroup"}]')
    f2 = LintFinding("NotifyRole/cordon-notify", "RESOURCE_MISMATCH", "MEDIUM", '[{"action": "sns:Publish"}]')
    acks = [
        Acknowledgement("Quarantine*", "RESOURCE_MISMATCH", "ec2:CreateSecurityGroup", "split on purpose, see steps.ts"),
        Acknowledgement("Gone/*", "RESOURCE_STAR", "x", "a finding that no longer exists"),
    ]
    open_, done, stale = triage([f1, f2], acks)
    assert open_ == [f2]
    assert done == [(f1, acks[0])]
    assert stale == [acks[1]]


def test_the_acknowledgements_file_is_valid_and_every_entry_has_a_reason():
    from local_aws.policy_lint import ACKNOWLEDGEMENTS, load_acknowledgements

    acks = load_acknowledgements()
    assert acks and all(a.reason and a.issue and a.match for a in acks)
    assert json.loads(ACKNOWLEDGEMENTS.read_text())["acknowledgements"]
