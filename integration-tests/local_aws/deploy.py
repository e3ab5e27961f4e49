"""Deploys the Cordon stack into the emulator, as the CDK stack deploys it into AWS.

Resources (all through boto3 against the local endpoint, so moto validates them as it would a
client's calls):

- evidence bucket ``cordon-evidence-local``: Object Lock, versioning, default retention GOVERNANCE
  1 day (https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lock.html);
- SNS topic ``cordon-notifications`` with the SQS queue ``cordon-notifications-tap`` subscribed
  (the test's window on notifications; envelope delivery, RawMessageDelivery false);
- IAM: every role and instance profile of the synthesized template, with the template's policies
  (``iam_roles``): one role per function, the forensic role and its instance profile (named
  ``cordon-forensic`` here), the state machine's role, the API and rule roles;
- the 8 functions ``cordon-<step>`` (``provided.al2023``, handler ``bootstrap``; the code zip is a
  placeholder, ``runtime_api`` runs ``<bin-dir>/<function name>``), each with its template role,
  timeout, memory and resolved ``Environment`` (plus ``--extra-env``), and credentials of its own
  (``principals``), so the request log names the function behind every call;
- the state machine ``cordon-incident-response`` from ``statemachine.asl.json``, with ``${Name}``
  placeholders replaced by plain text substitution, exactly as CloudFormation's
  ``DefinitionSubstitutions`` does
  (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-stepfunctions-statemachine.html#cfn-stepfunctions-statemachine-definitionsubstitutions).
  A placeholder left over is an error: the state machine would fail at run time in AWS too.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import boto3

from . import ACCESS_KEY, REGION, SECRET_KEY
from .iam_roles import create_instance_profiles, create_roles, put_role_policies
from .principals import REGISTRY, STATES_INTERPRETER_KEY, Principal
from .template import STEP_CONSTRUCTS, Template

BUCKET = "cordon-evidence-local"
TOPIC = "cordon-notifications"
QUEUE = "cordon-notifications-tap"
FORENSIC_PROFILE = "cordon-forensic"
STATE_MACHINE = "cordon-incident-response"
STEPS = ["metadata", "screenshot", "snapshot", "termprotect", "detach-profile", "ssm-collect", "quarantine", "notify"]
# The ASL placeholder of each step's function ARN.
FUNCTION_PLACEHOLDERS = {
    "metadata": "MetadataFunctionArn",
    "screenshot": "ScreenshotFunctionArn",
    "snapshot": "SnapshotFunctionArn",
    "termprotect": "TermprotectFunctionArn",
    "detach-profile": "DetachProfileFunctionArn",
    "ssm-collect": "SsmCollectFunctionArn",
    "quarantine": "QuarantineFunctionArn",
    "notify": "NotifyFunctionArn",
}
DEFAULT_ASL = Path(__file__).resolve().parents[2] / "statemachine.asl.json"


def client(service: str, endpoint: str):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


@dataclass
class Deployment:
    state_machine_arn: str
    bucket: str
    topic_arn: str
    queue_url: str
    forensic_profile_arn: str
    forensic_profile_name: str
    function_arns: dict[str, str]

    def to_dict(self) -> dict:
        return asdict(self)


def _placeholder_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("bootstrap", "#!/bin/sh\n# placeholder: the local stack runs <bin-dir>/<function name>\n")
    return buf.getvalue()


def substitute(definition: str, substitutions: dict[str, str]) -> str:
    """``${Name}`` -> value, plain text, as DefinitionSubstitutions; fails on any leftover."""
    for name, value in substitutions.items():
        definition = definition.replace("${" + name + "}", value)
    leftover = sorted(set(re.findall(r"\$\{([^}]*)\}", definition)))
    if leftover:
        raise ValueError(f"statemachine.asl.json has placeholders with no substitution: {', '.join(leftover)}")
    json.loads(definition)  # and it must still be JSON
    return definition


def deploy(
    endpoint: str, template: Template, asl_path: Path = DEFAULT_ASL, extra_env: dict[str, str] | None = None
) -> Deployment:
    """Creates the stack's resources; records each one's physical values in ``template`` (by
    logical id), so that everything read from the template later (roles, API mapping templates,
    event rules) resolves to the local resources."""
    s3, sns, sqs, iam = (client(s, endpoint) for s in ("s3", "sns", "sqs", "iam"))
    lam, sfn = client("lambda", endpoint), client("stepfunctions", endpoint)

    s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object_lock_configuration(
        Bucket=BUCKET,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
        },
    )

    topic_arn = sns.create_topic(Name=TOPIC)["TopicArn"]
    queue_url = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "false"})

    # The roles, their instance profiles and the functions come from the synthesized template: what
    # they refer to is recorded first, the policies are put once everything exists (as
    # CloudFormation orders creation by reference).
    t = template
    t.set_physical(t.by_path("EvidenceBucket/Resource"), BUCKET, Arn=f"arn:aws:s3:::{BUCKET}")
    t.set_physical(t.by_path("Topic/Resource"), topic_arn, TopicName=topic_arn.rsplit(":", 1)[-1])
    role_arns = create_roles(iam, t)
    for role_id, role_arn in role_arns.items():
        REGISTRY.register_role(role_id, role_arn)
    forensic_id = t.by_path("ForensicInstanceProfile/Resource")
    profile = create_instance_profiles(iam, t, {forensic_id: FORENSIC_PROFILE})[forensic_id]

    code = _placeholder_zip()
    function_arns = {}
    for step in STEPS:
        name = f"cordon-{step}"
        props = t.resources[t.function_id(step)]["Properties"]
        role_id = t.role_of_function(step)
        REGISTRY.register_function(name, role_id)
        fn = lam.create_function(
            FunctionName=name,
            Runtime=props["Runtime"],
            Handler=props["Handler"],
            Role=role_arns[role_id],
            Code={"ZipFile": code},
            Timeout=int(props.get("Timeout", 3)),
            MemorySize=int(props.get("MemorySize", 128)),
            Environment={"Variables": {**t.resolve(props.get("Environment", {}).get("Variables", {})), **(extra_env or {})}},
        )
        function_arns[step] = fn["FunctionArn"]
        t.set_physical(t.function_id(step), name, Arn=fn["FunctionArn"])
    sm_props = t.resources[t.by_path("StateMachine/Resource")]["Properties"]
    sm_role = t.resolve(sm_props["RoleArn"])
    sm_role_id = sm_props["RoleArn"]["Fn::GetAtt"][0]
    # moto's Step Functions interpreter signs its service calls with this key: they are the state
    # machine role's calls (principals.py).
    REGISTRY.register(STATES_INTERPRETER_KEY, Principal("state-machine", STATE_MACHINE, sm_role_id))

    substitutions = {FUNCTION_PLACEHOLDERS[s]: arn for s, arn in function_arns.items()}
    substitutions.update(
        {"ForensicInstanceProfileArn": profile["Arn"], "EvidenceBucket": BUCKET, "TopicArn": topic_arn}
    )
    definition = substitute(asl_path.read_text(), substitutions)
    sm_arn = sfn.create_state_machine(name=STATE_MACHINE, definition=definition, roleArn=sm_role, type="STANDARD")[
        "stateMachineArn"
    ]

    _record_physical(template, BUCKET, topic_arn, profile, function_arns, sm_arn)
    put_role_policies(iam, template)
    return Deployment(
        state_machine_arn=sm_arn,
        bucket=BUCKET,
        topic_arn=topic_arn,
        queue_url=queue_url,
        forensic_profile_arn=profile["Arn"],
        forensic_profile_name=FORENSIC_PROFILE,
        function_arns=function_arns,
    )


def _record_physical(
    template: Template, bucket: str, topic_arn: str, profile: dict, function_arns: dict[str, str], sm_arn: str
) -> None:
    """Logical id -> local physical values, as CloudFormation's Ref and Fn::GetAtt would give them."""
    t = template
    t.set_physical(t.by_path("EvidenceBucket/Resource"), bucket, Arn=f"arn:aws:s3:::{bucket}")
    t.set_physical(t.by_path("Topic/Resource"), topic_arn, TopicName=topic_arn.rsplit(":", 1)[-1])
    t.set_physical(t.by_path("ForensicInstanceProfile/Resource"), profile["InstanceProfileName"], Arn=profile["Arn"])
    for step, arn in function_arns.items():
        t.set_physical(t.function_id(step), arn.rsplit(":", 1)[-1], Arn=arn)
    t.set_physical(t.by_path("StateMachine/Resource"), sm_arn, Name=sm_arn.rsplit(":", 1)[-1], Arn=sm_arn)
    assert set(STEP_CONSTRUCTS) == set(function_arns), "every step's function is deployed"
