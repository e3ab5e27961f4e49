"""One incident response on the local stack, narrated for the person watching.

Starts the response as a responder would, through the ``SecurityResponse`` API: ``POST /incidents``
(incident ``demo-<timestamp>``), signed with SigV4 (botocore's signer, the stack's credentials, as
with IAM authorization on AWS). Then it follows the execution state by state from
GetExecutionHistory (name, duration, outcome: succeeded, failed with error and cause, retried),
then shows the result, the evidence written under the incident prefix (key, size, SHA-256 recorded
in the object's ``sha256`` metadata, checked against the body), and the SNS notification(s) as the
subscribed queue received them, and what ``GET /incidents/{id}`` answers. Exits non-zero unless
the API accepted the request and the execution succeeded.

With ``--fail-at STATE`` (``make demo FAIL_AT="Quarantine network"``) it first injects the final
failure of that containment state (``failures``: a denied call for this instance), shows the
execution failing there step by step and the CONTAINMENT FAILED message that the status-change
rule has notify publish, then removes the fault ("the cause is fixed"), calls RedriveExecution
and shows the states that run again and the CONTAINED message. It then exits non-zero unless the
execution failed at that state and the redrive succeeded.

History event types: https://docs.aws.amazon.com/step-functions/latest/apireference/API_HistoryEvent.html
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from datetime import datetime, UTC
from pathlib import Path

import boto3

from . import failures
from .apigateway import call_api
from .envfile import read_env

WIDTH = 34


def load_env(state_dir: Path) -> dict[str, str]:
    env_file = state_dir / "env"
    if not env_file.exists():
        raise SystemExit(f"{env_file} not found: start the stack first (python -m local_aws up ...)")
    return read_env(state_dir)


def clients(env: dict[str, str]) -> dict:
    kw = dict(
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    return {s: boto3.client(s, **kw) for s in ("stepfunctions", "s3", "sqs", "ec2")}


def history(sfn, execution_arn: str) -> list[dict]:
    events, token = [], None
    while True:
        page = sfn.get_execution_history(
            executionArn=execution_arn, maxResults=1000, **({"nextToken": token} if token else {})
        )
        events += page["events"]
        token = page.get("nextToken")
        if not token:
            return events


class StateRun:
    """One visit of one state, built from its history events."""

    def __init__(self, name: str, kind: str, entered: datetime, depth: int) -> None:
        self.name, self.kind, self.entered, self.depth = name, kind, entered, depth
        self.exited: datetime | None = None
        self.exit_event: int | None = None
        self.attempts = 0
        self.failures: list[tuple[str, str]] = []
        self.next: str | None = None

    def outcome(self) -> str:
        if self.kind == "Fail":
            return "execution fails here"
        if self.kind == "Succeed":
            return "execution succeeds here"
        if self.failures and (self.exited is None or len(self.failures) == self.attempts):
            error, cause = self.failures[-1]
            prefix = f"retried {len(self.failures) - 1}x, then " if len(self.failures) > 1 else ""
            caught = f" -> caught, next: {self.next}" if self.exited and self.next else ""
            return f"{prefix}FAILED {error}: {_short(cause)}{caught}"
        if self.exited is None:
            return "running..."
        retried = ""
        if self.failures:
            errors = ", ".join(sorted({e for e, _ in self.failures}))
            retried = f"retried {len(self.failures)}x ({errors}), then "
        if self.kind == "Choice":
            return f"chose: {self.next}"
        if self.kind == "Wait":
            return "waited"
        if self.kind in ("Parallel", "Map"):
            return retried + "all branches done"
        return retried + "succeeded"

    def line(self, n: int) -> str:
        took = f"{(self.exited - self.entered).total_seconds():6.2f}s" if self.exited else "       "
        name = ("  " * self.depth + ("|- " if self.depth else "") + self.name)[: WIDTH + 6]
        return f"{n:3d}. {name:<{WIDTH}} {took}  {self.outcome()}"


class LoopFolding:
    """Prints state visits, folding a polling loop: a state seen twice already whose outcome is
    the same as last time is counted, not printed, until something else happens."""

    def __init__(self) -> None:
        self.visits: dict[str, int] = {}
        self.last: dict[str, str] = {}
        self.folded: dict[str, int] = {}
        self.folded_seconds = 0.0

    def show(self, run: StateRun, n: int) -> None:
        outcome = run.outcome()
        seen = self.visits.get(run.name, 0)
        self.visits[run.name] = seen + 1
        repeat = seen >= 2 and self.last.get(run.name) == outcome and not run.failures
        self.last[run.name] = outcome
        if repeat:
            self.folded[run.name] = self.folded.get(run.name, 0) + 1
            if run.exited:
                self.folded_seconds += (run.exited - run.entered).total_seconds()
            return
        self.flush()
        print(run.line(n), flush=True)

    def flush(self) -> None:
        if self.folded:
            counts = ", ".join(f"{name} x{k}" for name, k in self.folded.items())
            print(f"       ... the same again: {counts} ({self.folded_seconds:.1f}s)", flush=True)
        self.folded, self.folded_seconds = {}, 0.0


def parse_states(events: list[dict]) -> tuple[list[StateRun], dict | None]:
    """State visits in the order entered. Task events are tied to their state through
    ``previousEventId``; a state entered while a Parallel/Map state is open is one of its branches."""
    runs: list[StateRun] = []
    run_of: dict[int, StateRun] = {}
    end = None
    for e in events:
        t, prev = e["type"], e.get("previousEventId")
        if t.endswith("StateEntered"):
            open_containers = [r for r in runs if r.kind in ("Parallel", "Map") and r.exited is None]
            run = StateRun(
                e["stateEnteredEventDetails"]["name"],
                t.removesuffix("StateEntered"),
                e["timestamp"],
                len(open_containers),
            )
            for r in runs:
                if r.exit_event is not None and r.exit_event == prev:
                    r.next = run.name
            runs.append(run)
            run_of[e["id"]] = run
        elif t.endswith("StateExited"):
            name = e["stateExitedEventDetails"]["name"]
            run = next((r for r in reversed(runs) if r.name == name and r.exited is None), None)
            if run:
                run.exited, run.exit_event = e["timestamp"], e["id"]
                run_of[e["id"]] = run
        elif prev in run_of:
            run = run_of[prev]
            run_of[e["id"]] = run
            if t in ("TaskScheduled", "LambdaFunctionScheduled"):
                run.attempts += 1
            elif t in ("TaskFailed", "LambdaFunctionFailed", "TaskTimedOut", "LambdaFunctionTimedOut"):
                d = next(v for k, v in e.items() if k.endswith("EventDetails"))
                run.failures.append((d.get("error", "?"), d.get("cause", "")))
        if t in ("ExecutionSucceeded", "ExecutionFailed", "ExecutionTimedOut", "ExecutionAborted"):
            end = e
            for r in runs:
                if r.exited is None and r.kind in ("Fail", "Succeed"):
                    r.exited = e["timestamp"]
    return runs, end


def _short(text: str, limit: int = 160) -> str:
    try:
        obj = json.loads(text)
        if isinstance(obj, dict) and "errorMessage" in obj:
            text = obj["errorMessage"]
    except (TypeError, ValueError):
        pass
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def print_output(output: dict) -> None:
    for key, value in output.items():
        if isinstance(value, list):
            print(f"  {key}:" + ("" if value else " (none)"))
            for item in value:
                print(f"    - {item if not isinstance(item, (dict, list)) else json.dumps(item)}")
        elif isinstance(value, dict):
            print(f"  {key}: {json.dumps(value)[:300]}")
        else:
            print(f"  {key}: {value}")


def print_evidence(s3, bucket: str, prefix: str) -> None:
    objects = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        objects += page.get("Contents", [])
    print(f"\nEvidence in s3://{bucket}/{prefix}  ({len(objects)} objects)")
    for obj in objects:
        body = s3.get_object(Bucket=bucket, Key=obj["Key"])
        actual = hashlib.sha256(body["Body"].read()).hexdigest()
        recorded = body.get("Metadata", {}).get("sha256")
        if recorded is None:
            check = "computed"  # e.g. SSM output, written by the agent without our metadata
        else:
            check = "recorded, matches" if recorded == actual else "recorded, MISMATCH"
        print(f"  {obj['Size']:>9} B  {recorded or actual}  {check:<17}  {obj['Key'][len(prefix) :]}")
    if not objects:
        print("  (nothing written)")


def drain(sqs, queue_url: str) -> None:
    """Deletes what is waiting on the queue (PurgeQueue is limited to once a minute)."""
    while msgs := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages"):
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)],
        )


def print_notifications(
    sqs, queue_url: str, incident_id: str, until: str | None = None, timeout: float = 60, max_lines: int = 40
) -> None:
    """The notifications of this incident (``incident_id`` message attribute); others are dropped.
    With ``until``, waits (up to ``timeout`` seconds) for one whose subject ends with it: a
    failure is announced asynchronously, by the status-change rule."""
    messages = []
    polls = 0
    deadline = time.monotonic() + timeout
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        polls += 1
        for m in got:
            envelope = json.loads(m["Body"])
            attr = (envelope.get("MessageAttributes") or {}).get("incident_id", {}).get("Value")
            if attr in (None, incident_id):
                messages.append(envelope)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
        if until is None:
            if (not got and messages) or polls >= 5:  # as before --fail-at existed
                break
        elif got:
            continue
        elif any(str(n.get("Subject", "")).endswith(until) for n in messages) or time.monotonic() > deadline:
            break
    print(f"\nNotifications received on the team's topic ({len(messages)})")
    for n in messages:
        print(f"  Subject: {n.get('Subject')}")
        attrs = {k: v.get("Value") for k, v in (n.get("MessageAttributes") or {}).items()}
        if attrs:
            print(f"  Attributes: {attrs}")
        for line in str(n.get("Message", "")).splitlines()[:max_lines]:
            print(f"  | {line}")
        print()


def redrive(args, env: dict, sfn, sqs, injection: failures.Injection, desc: dict, follow) -> dict | None:
    """After the injected failure: its announcement, the fault removed, RedriveExecution, the
    states that run again. Returns the execution as the redrive left it (None: not as expected)."""
    failure, arn = injection.failure, desc["executionArn"]
    injection.remove()
    runs, _ = parse_states(history(sfn, arn))
    failed_at = runs[-1].name if runs else None
    if desc["status"] != "FAILED" or failed_at != failure.state or desc.get("error") != failure.error:
        print(f"\nExpected FAILED at {failure.state!r} with {failure.error}; got {desc['status']} at {failed_at!r}.")
        return None
    print(f"\nIt failed at its own state, {failed_at!r}: no Catch, no Fail state, so a redrive reruns exactly it.")
    print("The failure is announced from outside the execution: the status-change event (FAILED) goes")
    print("through the EventBridge rule to notify, which reads the history and publishes:")
    print_notifications(
        sqs, env["CORDON_QUEUE_URL"], injection.target.incident_id, until="CONTAINMENT FAILED", max_lines=200
    )
    print("The cause is fixed: the fault rules are removed.")
    print("Redriving the same execution, as the message says:")
    print(f"  aws stepfunctions redrive-execution --execution-arn {arn}")
    answer = sfn.redrive_execution(executionArn=arn)
    print(f"  -> redriveDate {answer['redriveDate'].isoformat()}\n")
    print("States run by the redrive (what succeeded before is not run again):")
    desc = follow()
    if desc is None:
        return None
    took = (desc["stopDate"] - desc["redriveDate"]).total_seconds() if desc.get("redriveDate") else 0.0
    print(f"\nExecution {desc['status']} {took:.1f}s after the redrive (redrive count {desc.get('redriveCount')})")
    if desc.get("error"):
        print(f"  error: {desc['error']}\n  cause: {_short(desc.get('cause', ''), 400)}")
    return desc


def demo(args) -> int:
    env = load_env(args.state_dir.resolve())
    c = clients(env)
    sfn, s3, sqs, ec2 = c["stepfunctions"], c["s3"], c["sqs"], c["ec2"]
    instance_id = args.instance_id or env["CORDON_DEMO_INSTANCE_ID"]
    drain(sqs, env["CORDON_QUEUE_URL"])  # only this run's notifications below

    try:
        inst = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        name = next((t["Value"] for t in inst.get("Tags", []) if t["Key"] == "Name"), "")
        print(
            f"Suspected compromise: {instance_id} ({name}, {inst['State']['Name']}, {inst.get('PrivateIpAddress')}, {inst.get('VpcId')})"
        )
    except Exception as e:  # a nonexistent instance is a legitimate demo too
        print(f"Suspected compromise: {instance_id} (not describable: {e})")

    execution_name = "demo-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    request = {
        "instance_id": instance_id,
        "reason": "GuardDuty: CryptoCurrency:EC2/BitcoinTool.B!DNS from this instance (local demo)",
        "requested_by": "arn:aws:iam::123456789012:user/on-call",
    }
    request["incident_id"] = execution_name
    injection = None
    if args.fail_at:
        try:
            failure = failures.find(args.fail_at)
        except KeyError as e:
            print(e.args[0])
            return 2
        if failure.options:
            request["options"] = dict(failure.options)
        target = failures.Target.read(ec2, instance_id, execution_name)
        injection = failures.Injection(env["CORDON_CONTROL_URL"], failure, target, ec2)
        injection.inject()
        print(f"\nInjected a final failure at {failure.state!r}: {failure.cause}.")
        for rule in injection.rules:
            print(
                f"  fault rule: {rule['service']}:{rule['action']} naming {rule['instance_id']} -> "
                f"{rule['code']} (HTTP {rule['status']}), every time"
            )
        if failure.reassociate:
            print(f"  then, while the console capture waits, {target.profile_arn} is associated again")
        print(f"The execution should fail at that state with {failure.error}; every other measure applied first.\n")
    api = env["CORDON_API_URL"]
    signer = dict(access_key=env["AWS_ACCESS_KEY_ID"], secret_key=env["AWS_SECRET_ACCESS_KEY"], region=env["AWS_REGION"])
    print(
        f"Starting the response through the API, as a responder would:\n"
        f"  POST {api}incidents   (SigV4-signed for execute-api with {env['AWS_ACCESS_KEY_ID']!r}: IAM authorization)\n"
        f"  body: {json.dumps(request)}"
    )
    status, _, answer = call_api(api, "POST", "incidents", request, **signer)
    print(f"  -> {status} {answer}\n")
    if status != 202:
        print("The API did not start the response.")
        return 1
    arn = json.loads(answer)["execution_arn"]
    print(f"Following execution {arn.rsplit(':', 1)[-1]} of {env['CORDON_STATE_MACHINE_ARN'].rsplit(':', 1)[-1]}\n")

    printed = 0
    loop = LoopFolding()

    def follow() -> dict | None:
        """Prints the states as they finish until the execution stops; None if it does not."""
        nonlocal printed
        deadline = time.monotonic() + args.timeout
        while True:
            desc = sfn.describe_execution(executionArn=arn)
            runs, _ = parse_states(history(sfn, arn))
            done = desc["status"] != "RUNNING"
            # In order of entry; a state is printed once it has finished (or the execution has).
            while printed < len(runs) and (done or runs[printed].exited is not None):
                loop.show(runs[printed], printed + 1)
                printed += 1
            if done:
                loop.flush()
            if done:
                return desc
            if time.monotonic() > deadline:
                print(f"\nstill RUNNING after {args.timeout:.0f}s; giving up watching")
                return None
            time.sleep(0.5)

    desc = None
    try:
        desc = follow()
    finally:
        if injection is not None and desc is None:
            injection.remove()
    if desc is None:
        return 1

    took = (desc["stopDate"] - desc["startDate"]).total_seconds()
    print(f"\nExecution {desc['status']} in {took:.1f}s")
    if desc.get("error"):
        print(f"  error: {desc['error']}\n  cause: {_short(desc.get('cause', ''), 400)}")
    if injection is not None:
        desc = redrive(args, env, sfn, sqs, injection, desc, follow)
        if desc is None:
            return 1
    output = json.loads(desc.get("output") or "null")
    if isinstance(output, dict):
        print_output(output)
    incident_id = (output or {}).get("incident_id") if isinstance(output, dict) else None
    incident_id = incident_id or execution_name
    print_evidence(s3, env["CORDON_EVIDENCE_BUCKET"], f"{incident_id}/{instance_id}/")
    print_notifications(sqs, env["CORDON_QUEUE_URL"], incident_id)
    status, _, answer = call_api(api, "GET", f"incidents/{execution_name}", **signer)
    shown = json.loads(answer) if status == 200 else answer
    if isinstance(shown, dict):
        shown = {k: shown.get(k) for k in ("incident_id", "status", "start_date", "stop_date", "error")}
    print(f"GET {api}incidents/{execution_name}\n  -> {status} {json.dumps(shown) if isinstance(shown, dict) else shown}")
    return 0 if desc["status"] == "SUCCEEDED" else 1


if __name__ == "__main__":
    sys.exit("run as: python -m local_aws demo --state-dir DIR")
