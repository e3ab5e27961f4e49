"""Physical names and ARNs shaped as CloudFormation would return them, for resources the local stack
does not create (log groups, KMS keys, the API, ...), so that a policy from the synthesized template
can be resolved into a document that IAM (and moto's policy validation, and parliament) accepts.

A resource without an explicit name gets a generated one from CloudFormation
(https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-properties-name.html); here it
is ``<stack>-<LogicalId>`` (lower case where the service requires it), deterministic. The
``Ref``/``Fn::GetAtt`` values per type are the ones each resource type's reference page lists
under "Return values"; the ARN formats are the Service Authorization Reference's
(https://docs.aws.amazon.com/service-authorization/latest/reference/reference_policies_actions-resources-contextkeys.html).
"""

from __future__ import annotations

import uuid

from .template import Template


def generated_name(template: Template, logical_id: str, limit: int = 64, lower: bool = False) -> str:
    name = f"{template.stack_name}-{logical_id}"[:limit]
    return name.lower() if lower else name


def cfn_like(template: Template, logical_id: str) -> dict[str, str]:
    """``{"Ref": ..., "<Attr>": ...}`` of ``logical_id`` as a deployment of the template would have it."""
    res = template.resources[logical_id]
    props = res.get("Properties", {})
    t, region, account = res["Type"], template.region, template.account
    name = generated_name(template, logical_id)
    if t == "AWS::S3::Bucket":
        bucket = props.get("BucketName") if isinstance(props.get("BucketName"), str) else None
        bucket = bucket or generated_name(template, logical_id, 63, lower=True)
        return {"Ref": bucket, "Arn": f"arn:aws:s3:::{bucket}", "DomainName": f"{bucket}.s3.amazonaws.com"}
    if t == "AWS::SNS::Topic":
        arn = f"arn:aws:sns:{region}:{account}:{name}"
        return {"Ref": arn, "TopicArn": arn, "TopicName": name}
    if t == "AWS::SQS::Queue":
        return {
            "Ref": f"https://sqs.{region}.amazonaws.com/{account}/{name}",
            "Arn": f"arn:aws:sqs:{region}:{account}:{name}",
            "QueueName": name,
        }
    if t == "AWS::KMS::Key":
        key_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{template.stack_name}/{logical_id}"))
        return {"Ref": key_id, "Arn": f"arn:aws:kms:{region}:{account}:key/{key_id}", "KeyId": key_id}
    if t == "AWS::Logs::LogGroup":
        group = props.get("LogGroupName") if isinstance(props.get("LogGroupName"), str) else name
        return {"Ref": group, "Arn": f"arn:aws:logs:{region}:{account}:log-group:{group}:*"}
    if t == "AWS::IAM::Role":
        path = props.get("Path", "/")
        return {"Ref": name, "Arn": f"arn:aws:iam::{account}:role{path}{name}", "RoleId": f"AROA{logical_id[:17].upper()}"}
    if t == "AWS::IAM::InstanceProfile":
        path = props.get("Path", "/")
        return {"Ref": name, "Arn": f"arn:aws:iam::{account}:instance-profile{path}{name}"}
    if t == "AWS::Lambda::Function":
        return {"Ref": name, "Arn": f"arn:aws:lambda:{region}:{account}:function:{name}"}
    if t == "AWS::StepFunctions::StateMachine":
        arn = f"arn:aws:states:{region}:{account}:stateMachine:{name}"
        return {"Ref": arn, "Arn": arn, "Name": name}
    if t == "AWS::Events::Rule":
        return {"Ref": name, "Arn": f"arn:aws:events:{region}:{account}:rule/{name}"}
    if t == "AWS::ApiGateway::RestApi":
        api_id = logical_id[:10].lower()
        return {"Ref": api_id, "RootResourceId": f"{api_id}root"}
    return {"Ref": name, "Arn": f"arn:aws:cloudformation:{region}:{account}:resource/{name}"}


def with_fallback(template: Template) -> Template:
    """A copy of ``template`` whose references resolve to the local stack's physical values where
    it created the resource, else to CloudFormation-shaped values (never to ``local:...``)."""
    physical = {lid: {**cfn_like(template, lid), **template.physical.get(lid, {})} for lid in template.resources}
    return Template(
        body=template.body,
        path=template.path,
        physical=physical,
        region=template.region,
        account=template.account,
        stack_name=template.stack_name,
    )
