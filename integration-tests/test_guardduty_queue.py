"""A storm of GuardDuty findings: at most N responses run at once, the rest wait in the queue, none
is dropped, and a repeated finding starts nothing new.

The path is the synthesized template's: the GuardDuty rule sends each finding to the findings queue
(FIFO, one message group), the event source mapping hands batches to the dispatcher
(``steps/dispatch``), which starts executions while fewer than ``MAX_RUNNING_RESPONSES`` run and
returns the rest as ``batchItemFailures``. The mapping runs as Lambda runs it
(``local_aws/sqs_event_source.py``). The bound is lowered to 2 for these scenarios the way an
operator would change it on AWS: ``UpdateFunctionConfiguration`` of the dispatcher's environment
(``RETRY_DELAY_SECONDS`` too, so that a deferred finding comes back within a second or two).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from contextlib import contextmanager

import pytest

from test_event_rules import c2_finding, put_aws_event, settled_deliveries
from test_incident_response import attribute, isolation_group_id

TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}
DISPATCHER = "cordon-dispatch"


def mapping(stack) -> dict:
    (m,) = [m for m in stack.control("/sqs/event-source-mappings")["mappings"] if m["function_name"] == DISPATCHER]
    return m


def running(stack) -> list[str]:
    pages = stack.sfn.get_paginator("list_executions").paginate(
        stateMachineArn=stack.state_machine_arn, statusFilter="RUNNING"
    )
    return [e["name"] for page in pages for e in page["executions"]]


def wait_until_idle(stack, timeout: float = 300) -> None:
    """Earlier scenarios' executions count against the bound too: wait until none runs."""
    deadline = time.monotonic() + timeout
    while running(stack):
        if time.monotonic() > deadline:
            pytest.fail(f"executions still running before the scenario: {running(stack)}")
        time.sleep(1)


@contextmanager
def dispatcher_settings(stack, **env: str):
    """The dispatcher's environment with ``env`` set, restored afterwards (UpdateFunctionConfiguration
    retires the warm environments, as on AWS)."""
    lam = stack.client("lambda")
    before = lam.get_function_configuration(FunctionName=DISPATCHER)["Environment"]["Variables"]
    lam.update_function_configuration(FunctionName=DISPATCHER, Environment={"Variables": {**before, **env}})
    try:
        yield
    finally:
        lam.update_function_configuration(FunctionName=DISPATCHER, Environment={"Variables": before})


def queue_depth(stack, url: str) -> int:
    attrs = stack.sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def dead_letter_url(stack, queue_url: str) -> str:
    policy = json.loads(
        stack.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])["Attributes"][
            "RedrivePolicy"
        ]
    )
    return stack.sqs.get_queue_url(QueueName=policy["deadLetterTargetArn"].rsplit(":", 1)[-1])["QueueUrl"]


def execution_arn(stack, name: str) -> str:
    return stack.state_machine_arn.replace(":stateMachine:", ":execution:") + ":" + name


def wait_for_executions(stack, names: list[str], timeout: float = 600) -> dict[str, dict]:
    done: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(names):
        for name in names:
            if name in done:
                continue
            try:
                desc = stack.sfn.describe_execution(executionArn=execution_arn(stack, name))
            except stack.sfn.exceptions.ExecutionDoesNotExist:
                continue
            if desc["status"] in TERMINAL:
                done[name] = desc
        if time.monotonic() > deadline:
            missing = sorted(set(names) - set(done))
            raise AssertionError(f"{len(missing)} of {len(names)} findings not answered after {timeout}s: {missing}")
        time.sleep(0.5)
    return done


class Sampler:
    """Samples ListExecutions(statusFilter=RUNNING) while a scenario runs."""

    def __init__(self, stack, interval: float = 0.2) -> None:
        self.stack, self.interval = stack, interval
        self.samples: list[list[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        sfn = self.stack.client("stepfunctions")
        while not self._stop.is_set():
            page = sfn.list_executions(stateMachineArn=self.stack.state_machine_arn, statusFilter="RUNNING")
            self.samples.append([e["name"] for e in page["executions"]])
            time.sleep(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    @property
    def most(self) -> int:
        return max((len(s) for s in self.samples), default=0)


def assert_isolated(stack, instance_id: str, incident: str) -> None:
    desc = stack.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    iso = isolation_group_id(stack, desc["VpcId"])
    for eni in desc["NetworkInterfaces"]:
        assert [g["GroupId"] for g in eni["Groups"]] == [iso], (instance_id, eni["NetworkInterfaceId"])
    tags = {t["Key"]: t["Value"] for t in desc.get("Tags", [])}
    assert tags.get("cordon:incident-id") == incident, tags
    assert attribute(stack, instance_id, "disableApiTermination") is True


# ------------------------------------------------------------------------------------ scenarios


def test_six_findings_run_at_most_two_at_a_time_and_every_one_is_contained(stack):
    wait_until_idle(stack)
    instances = [
        stack.seed_instance(name=f"gdq-{i}", ssm=False, extra_volumes=0, second_interface=False) for i in range(6)
    ]
    events = [c2_finding(stack, inst.instance_id) for inst in instances]
    findings = [e["detail"]["id"] for e in events]
    queue = mapping(stack)
    before = queue["stats"]

    with dispatcher_settings(stack, MAX_RUNNING_RESPONSES="2", RETRY_DELAY_SECONDS="1"), Sampler(stack) as sampler:
        put = stack.control("/events", events)["events"]
        assert all(p["rules"] for p in put), put
        for p in put:
            (delivery,) = settled_deliveries(stack, p["id"])
            assert delivery["status"] == "delivered", delivery
        done = wait_for_executions(stack, findings)

    # Never more than the bound, and the bound was used.
    assert sampler.most == 2, [s for s in sampler.samples if len(s) > 2][:3] or sampler.most
    # Every finding answered by its own execution, named after it, with the rule's input.
    assert sorted(done) == sorted(findings)
    for event, inst in zip(events, instances):
        desc = done[event["detail"]["id"]]
        assert desc["status"] == "SUCCEEDED", desc
        assert json.loads(desc["input"]) == {
            "instance_id": inst.instance_id,
            "reason": event["detail"]["type"],
            "requested_by": "guardduty",
        }
        assert_isolated(stack, inst.instance_id, event["detail"]["id"])
    # Queued, not dropped: some findings waited (returned to the queue at least once), the
    # queue and its dead-letter queue are empty now, and the mapping never ran more than its
    # MaximumConcurrency.
    after = mapping(stack)
    assert after["stats"]["left"] > before["left"], after["stats"]
    assert after["stats"]["max_in_flight"] <= after["maximum_concurrency"] == 2
    assert queue_depth(stack, queue["queue_url"]) == 0
    assert queue_depth(stack, dead_letter_url(stack, queue["queue_url"])) == 0


def test_a_repeated_finding_starts_no_second_execution(stack):
    wait_until_idle(stack)
    inst = stack.seed_instance(name="gdq-repeat", ssm=False, extra_volumes=0, second_interface=False)
    event = c2_finding(stack, inst.instance_id)
    finding = event["detail"]["id"]
    queue_url = mapping(stack)["queue_url"]

    with dispatcher_settings(stack, RETRY_DELAY_SECONDS="1"):
        first = put_aws_event(stack, event)
        (delivery,) = settled_deliveries(stack, first["id"])
        # While the first response runs, GuardDuty sends the finding again (an update of the same
        # finding: same id, same body).
        deadline = time.monotonic() + 60
        while finding not in running(stack):
            assert time.monotonic() < deadline, "the first finding never started"
            time.sleep(0.2)
        again = put_aws_event(stack, {**event, "id": str(uuid.uuid4())})
        (redelivery,) = settled_deliveries(stack, again["id"])
        # SQS drops that one (content-based deduplication within five minutes). Past the window a
        # repeat reaches the dispatcher: a new deduplication id stands for the later send, and
        # StartExecution with the running execution's name and input returns that execution.
        repeat = {
            "QueueUrl": queue_url,
            "MessageBody": delivery["input"],
            "MessageGroupId": "guardduty",
        }
        stack.sqs.send_message(**repeat, MessageDeduplicationId=uuid.uuid4().hex)
        (desc,) = wait_for_executions(stack, [finding]).values()
        # After the first response ended, once more: the name is taken (ExecutionAlreadyExists),
        # which the dispatcher takes as "answered".
        stack.sqs.send_message(**repeat, MessageDeduplicationId=uuid.uuid4().hex)
        deadline = time.monotonic() + 60
        while queue_depth(stack, queue_url):
            assert time.monotonic() < deadline, "the repeated finding was never taken from the queue"
            time.sleep(0.5)

    assert delivery["status"] == redelivery["status"] == "delivered"
    assert redelivery["input"] == delivery["input"], "the repeat is the same message body"
    assert desc["status"] == "SUCCEEDED"
    same = [
        e
        for page in stack.sfn.get_paginator("list_executions").paginate(stateMachineArn=stack.state_machine_arn)
        for e in page["executions"]
        if e["name"] == finding or json.loads(
            stack.sfn.describe_execution(executionArn=e["executionArn"])["input"] or "{}"
        ).get("instance_id")
        == inst.instance_id
    ]
    assert [e["name"] for e in same] == [finding], same
    assert queue_depth(stack, dead_letter_url(stack, queue_url)) == 0
