"""pytest fixtures: the local AWS stack, started once per session.

``stack`` runs ``python -m local_aws up`` into a temporary state directory (binaries from
``CORDON_BIN_DIR``, required) and ``down`` at the end. Set ``CORDON_STACK_STATE_DIR`` to the state
directory of a stack you already started to reuse it instead (it is then left running).

Every test that uses the stack runs under its test id as the stack's current scenario
(``POST /_cordon/scenario``), so each AWS call in the stack's journal names the test that caused it.
When the session ends, the action-coverage check (``local_aws.coverage``) reads the journal of the
calls made during the session: a call that the caller's role in the synthesized template does not
allow fails the session (exit status 1), with the function, the action and the scenario.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from local_aws import envfile  # noqa: E402
from local_aws import seed as seed_module  # noqa: E402
from local_aws.journal import FILE_NAME as JOURNAL_FILE  # noqa: E402

TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}


def read_env(state_dir: Path) -> dict[str, str]:
    """The stack's ``env`` file (``export NAME=value`` lines, see ``local_aws.envfile``)."""
    return envfile.read_env(state_dir)


class Stack:
    """The running stack: its settings, boto3 clients and helpers."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.env = read_env(state_dir)
        self.endpoint = self.env["AWS_ENDPOINT_URL"]
        self.region = self.env["AWS_REGION"]
        self.control_url = self.env["CORDON_CONTROL_URL"]
        self.state_machine_arn = self.env["CORDON_STATE_MACHINE_ARN"]
        self.bucket = self.env["CORDON_EVIDENCE_BUCKET"]
        self.topic_arn = self.env["CORDON_TOPIC_ARN"]
        self.queue_url = self.env["CORDON_QUEUE_URL"]
        self.demo_instance_id = self.env["CORDON_DEMO_INSTANCE_ID"]
        self.unmanaged_instance_id = self.env["CORDON_UNMANAGED_INSTANCE_ID"]
        self.seed = json.loads((state_dir / "seed.json").read_text())
        self.context = seed_module.SeedContext.from_dict(self.seed["context"])
        self.sfn = self.client("stepfunctions")
        self.s3 = self.client("s3")
        self.ec2 = self.client("ec2")
        self.sqs = self.client("sqs")
        self.ssm = self.client("ssm")
        self.iam = self.client("iam")

    def client(self, service: str, retries: int | None = None):
        """A boto3 client for the stack; ``retries=0`` turns the SDK's own retries off."""
        config = (
            Config(retries={"total_max_attempts": retries + 1, "mode": "standard"}) if retries is not None else None
        )
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=config,
        )

    # -------------------------------------------------------------- executions

    def run_execution(self, input, name: str | None = None, timeout: float = 120, raw: bool = False):
        """Starts an execution (``input`` JSON-encoded unless ``raw``), waits for it to end and
        returns ``(describe_execution, history_events)``."""
        name = name or f"t-{uuid.uuid4().hex[:12]}"
        arn = self.sfn.start_execution(
            stateMachineArn=self.state_machine_arn, name=name, input=input if raw else json.dumps(input)
        )["executionArn"]
        deadline = time.monotonic() + timeout
        while True:
            desc = self.sfn.describe_execution(executionArn=arn)
            if desc["status"] in TERMINAL:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"execution {name} still {desc['status']} after {timeout}s")
            time.sleep(0.25)
        events, token = [], None
        while True:
            page = self.sfn.get_execution_history(
                executionArn=arn, maxResults=1000, **({"nextToken": token} if token else {})
            )
            events += page["events"]
            token = page.get("nextToken")
            if not token:
                break
        return desc, events

    # -------------------------------------------------------------- evidence and notifications

    def objects_under(self, prefix: str, bucket: str | None = None) -> list[dict]:
        out = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket or self.bucket, Prefix=prefix):
            out += page.get("Contents", [])
        return out

    def get_object(self, key: str, bucket: str | None = None) -> tuple[bytes, dict]:
        obj = self.s3.get_object(Bucket=bucket or self.bucket, Key=key)
        return obj["Body"].read(), obj

    def notifications(self, wait_seconds: float = 2) -> list[dict]:
        """Drains the topic's tap queue: the SNS envelopes (Subject, Message, MessageAttributes...)."""
        messages, deadline = [], time.monotonic() + wait_seconds
        while True:
            got = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
                "Messages", []
            )
            for m in got:
                messages.append(json.loads(m["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
            if not got and (messages or time.monotonic() > deadline):
                return messages
            if not got:
                time.sleep(0.2)

    # -------------------------------------------------------------- control endpoints

    def control(self, path: str, json_body=None, method: str | None = None) -> dict:
        """Calls ``<control_url><path>``: POST with a body, else GET (or ``method``)."""
        method = method or ("POST" if json_body is not None else "GET")
        data = json.dumps(json_body).encode() if json_body is not None else None
        req = urllib.request.Request(
            self.control_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} {path}: {e.code} {e.read().decode()}") from e

    def requests(self, service: str | None = None, action: str | None = None, since: int = 0) -> list[dict]:
        q = "&".join(f"{k}={v}" for k, v in (("service", service), ("action", action), ("since", since)) if v)
        return self.control(f"/requests?{q}")["requests"]

    def last_request_seq(self) -> int:
        reqs = self.control("/requests")["requests"]
        return reqs[-1]["seq"] if reqs else 0

    def seed_instance(self, **kwargs) -> seed_module.SeededInstance:
        """A fresh instance of its own (see ``local_aws.seed.seed_instance`` for the options)."""
        kwargs.setdefault("name", f"test-{uuid.uuid4().hex[:6]}")
        return seed_module.seed_instance(self.context, control_url=self.control_url, **kwargs)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Stack:
    reuse = os.environ.get("CORDON_STACK_STATE_DIR")
    if reuse:
        stack = Stack(Path(reuse))
        _COVERAGE.update(journal=stack.state_dir / JOURNAL_FILE, since=stack.last_request_seq())
        yield stack
        return
    bin_dir = os.environ.get("CORDON_BIN_DIR")
    if not bin_dir:
        pytest.fail(
            "CORDON_BIN_DIR must name the directory of the cordon-<step> binaries (e.g. $CARGO_TARGET_DIR/debug)"
        )
    state_dir = tmp_path_factory.mktemp("local-aws")
    up = subprocess.run(
        [sys.executable, "-m", "local_aws", "up", "--bin-dir", bin_dir, "--state-dir", str(state_dir)],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if up.returncode != 0:
        pytest.fail(f"local AWS stack did not start:\n{up.stdout}\n{up.stderr}")
    _COVERAGE.update(journal=state_dir / JOURNAL_FILE, since=0)
    try:
        yield Stack(state_dir)
    finally:
        subprocess.run(
            [sys.executable, "-m", "local_aws", "down", "--state-dir", str(state_dir)],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=60,
        )


# ------------------------------------------------------------------ scenarios and action coverage

_COVERAGE: dict = {}  # journal: Path, since: int (seq), basetemp: Path, result: coverage.Result


@pytest.fixture(scope="session", autouse=True)
def _session_basetemp(tmp_path_factory):
    """Stacks that tests start for themselves (the README walkthrough) keep their journals under the
    session's base temporary directory: the check reads those too."""
    _COVERAGE["basetemp"] = tmp_path_factory.getbasetemp()


@pytest.fixture(autouse=True)
def _scenario(request):
    """Tells the stack which test is running, for the tests that use it."""
    if "stack" not in request.fixturenames:
        yield
        return
    stack = request.getfixturevalue("stack")
    stack.control("/scenario", {"scenario": request.node.nodeid})
    yield
    stack.control("/scenario", {"scenario": None})


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes minutes (test_burst.py); still part of `make test`")


def pytest_sessionfinish(session, exitstatus):
    """Runs the action-coverage check over the session's calls (every stack the session started,
    and the calls a reused stack answered during the session); a finding fails the session."""
    from local_aws.coverage import check
    from local_aws.journal import read
    from local_aws.template import Template

    journal = _COVERAGE.get("journal")
    basetemp = _COVERAGE.get("basetemp")
    journals = sorted(basetemp.rglob(JOURNAL_FILE)) if basetemp and basetemp.is_dir() else []
    if journal is not None and journal.is_file() and journal not in journals:
        journals.append(journal)
    if not journals:
        return
    entries = []
    for path in journals:
        since = _COVERAGE.get("since", 0) if path == journal else 0
        for e in read(path):
            if (e.get("seq") or 0) > since:
                e["scenario"] = e.get("scenario") or f"(stack {path.parent.name}, no scenario set)"
                entries.append(e)
    result = check(entries, Template.load())
    _COVERAGE["result"] = result
    _COVERAGE["journals"] = journals
    (journal if journal in journals else journals[0]).parent.joinpath("coverage.txt").write_text(result.render())
    if not result.ok and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    result = _COVERAGE.get("result")
    if result is None:
        return
    terminalreporter.section("action coverage (local_aws.coverage)", red=not result.ok, green=result.ok)
    terminalreporter.write(result.render())
    terminalreporter.write("".join(f"journal: {j}\n" for j in _COVERAGE["journals"]))
