"""The template's IAM roles and instance profiles, created in moto as CloudFormation creates them.

Every ``AWS::IAM::Role`` of the synthesized template becomes a role in moto with the template's
path, description and trust policy; once every resource the policies refer to has a physical value,
each role gets its inline policies, the ``AWS::IAM::Policy`` resources that name it (CloudFormation
embeds those as inline policies of the role,
https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-iam-policy.html) and its
``ManagedPolicyArns`` (AWS managed policies are loaded into moto's IAM, see
``server.configure_moto``). ``AWS::IAM::InstanceProfile`` resources become instance profiles with
their role.

Names: CloudFormation generates a name for a role or profile without one
(https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-properties-name.html); the
local stack uses ``<stack>-<LogicalId>``, or the name the caller gives (the forensic profile keeps
the name ``cordon-forensic`` that the local tools know). References to resources the local stack
does not create (log groups, KMS keys) resolve to CloudFormation-shaped ARNs
(``physical_ids.with_fallback``): moto, like IAM, rejects a policy whose ``Resource`` is not an ARN.

Nothing here enforces the policies: moto's IAM enforcement stays off (see the README), and the
action-coverage check (``coverage``) reads the same template.
"""

from __future__ import annotations

import json

from .physical_ids import generated_name, with_fallback
from .template import Template


def create_roles(iam, template: Template) -> dict[str, str]:
    """Creates every role of the template (trust policy only); records Ref/Arn; returns id -> ARN."""
    arns = {}
    for lid, res in template.of_type("AWS::IAM::Role"):
        props = res.get("Properties", {})
        name = props.get("RoleName") if isinstance(props.get("RoleName"), str) else generated_name(template, lid)
        kwargs = {
            "RoleName": name,
            "Path": props.get("Path", "/"),
            "AssumeRolePolicyDocument": json.dumps(template.resolve(props["AssumeRolePolicyDocument"])),
        }
        if props.get("Description"):
            kwargs["Description"] = template.resolve(props["Description"])
        role = iam.create_role(**kwargs)["Role"]
        template.set_physical(lid, role["RoleName"], Arn=role["Arn"], RoleId=role["RoleId"])
        arns[lid] = role["Arn"]
    return arns


def create_instance_profiles(iam, template: Template, names: dict[str, str] | None = None) -> dict[str, dict]:
    """Creates every instance profile of the template with its role(s); ``names``: logical id ->
    profile name for those that need a known name. Returns logical id -> the profile."""
    names = names or {}
    out = {}
    for lid, res in template.of_type("AWS::IAM::InstanceProfile"):
        props = res.get("Properties", {})
        name = names.get(lid) or props.get("InstanceProfileName") or generated_name(template, lid)
        profile = iam.create_instance_profile(InstanceProfileName=name, Path=props.get("Path", "/"))["InstanceProfile"]
        for role in template.resolve(props.get("Roles", [])):
            iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=role)
        template.set_physical(lid, name, Arn=profile["Arn"])
        out[lid] = profile
    return out


def put_role_policies(iam, template: Template) -> None:
    """Puts every role's policies as the template defines them (call once all resources exist)."""
    for lid, res in template.of_type("AWS::IAM::ManagedPolicy"):
        # A customer managed policy: its Ref is its ARN.
        props = res["Properties"]
        document = json.dumps(with_fallback(template).resolve(props["PolicyDocument"]))
        name = props.get("ManagedPolicyName") or generated_name(template, lid, 128)
        arn = iam.create_policy(PolicyName=name, Path=props.get("Path", "/"), PolicyDocument=document)["Policy"]["Arn"]
        template.set_physical(lid, arn)
        for role_name in template.resolve(props.get("Roles", [])):
            iam.attach_role_policy(RoleName=role_name, PolicyArn=arn)
    resolved = with_fallback(template)
    for lid, res in template.of_type("AWS::IAM::Role"):
        props = res.get("Properties", {})
        role_name = template.physical[lid]["Ref"]
        for pol in props.get("Policies", []):
            iam.put_role_policy(
                RoleName=role_name,
                PolicyName=resolved.resolve(pol["PolicyName"]),
                PolicyDocument=json.dumps(resolved.resolve(pol["PolicyDocument"])),
            )
        for arn in resolved.resolve(props.get("ManagedPolicyArns", [])):
            iam.attach_role_policy(RoleName=role_name, PolicyArn=arn)
    for lid, res in template.of_type("AWS::IAM::Policy"):
        props = res["Properties"]
        document = json.dumps(resolved.resolve(props["PolicyDocument"]))
        for role_name in resolved.resolve(props.get("Roles", [])):
            iam.put_role_policy(RoleName=role_name, PolicyName=resolved.resolve(props["PolicyName"]), PolicyDocument=document)
