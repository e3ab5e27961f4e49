"""The Python/boto3 baseline of a Cordon step, for the cold-start comparison.

What a Python Lambda written the usual way does at start-up: import boto3 and build, at module
level (once per execution environment), the same clients as the Rust step of the same name
(``CORDON_STEP``, e.g. ``metadata``), each from the one session as the Rust steps build theirs
from one ``SdkConfig``. The handler then rejects an event that is not a step event, as every
step does with ``{}``, before any AWS call: the error type is ``InvalidInput``, as in Rust.

Run by ``awslambdaric`` (``python -m awslambdaric handler.handler``) against the bench's
Runtime API.
"""

import os

import boto3
from botocore.config import Config

# The clients each step's main.rs builds (steps/<step>/src/main.rs).
STEP_CLIENTS = {
    "metadata": ["ec2", "ssm", "autoscaling", "elbv2", "s3"],
    "screenshot": ["ec2", "s3"],
    "snapshot": ["ec2"],
    "termprotect": ["ec2", "autoscaling"],
    "detach-profile": ["ec2", "iam"],
    "ssm-collect": ["ssm", "s3"],
    "quarantine": ["ec2", "elbv2"],
    "notify": ["sns", "s3"],
}

STEP = os.environ["CORDON_STEP"]
_session = boto3.session.Session()
_path_style = Config(s3={"addressing_style": "path"}) if os.environ.get("S3_FORCE_PATH_STYLE") == "true" else None
CLIENTS = [_session.client(name, config=_path_style if name == "s3" else None) for name in STEP_CLIENTS[STEP]]


class InvalidInput(Exception):
    """The step's event is not what the state machine sends (same name as the Rust StepError)."""


def handler(event, context):
    if not isinstance(event, dict) or "incident" not in event:
        raise InvalidInput("event: missing field `incident`")
    return {"step": STEP}
