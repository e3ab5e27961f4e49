"""The local stack's RedriveExecution and status-change events (``local_aws.redrive``), through boto3.

Each test creates a small state machine of its own. Its Task states call a Cordon function with
``arn:aws:states:::lambda:invoke`` (a call the state machine's role may make), and the fault injector
answers those calls, picked out by a marker in the payload: a scripted 200 answer for a step that
succeeds, an error (once) for a step that fails until its cause is fixed. The fault rules' ``fired``
counters are the server-side proof of how often each step called out. No step binary runs.

What is asserted is what the RedriveExecution API reference and the developer guide's redrive page
say (see the module docstring of ``local_aws.redrive`` for the quotes and links).
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from botocore.exceptions import ClientError

# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def sfn(stack):
    return stack.sfn


@pytest.fixture
def faults(stack):
    """``ok(marker, result)`` answers the marker's invocations with ``result``; ``broken(marker)``
    answers its next one with a Lambda ServiceException; ``fired(rule_id)`` counts answers."""

    class Faults:
        def ok(self, marker: str, result=None) -> int:
            rule = {
                "service": "lambda",
                "action": "Invoke",
                "instance_id": marker,
                "status": 200,
                "count": -1,
                "body": json.dumps(result if result is not None else {"done": marker}),
            }
            return stack.control("/faults", rule)["rules"][0]

        def broken(self, marker: str) -> int:
            rule = {"service": "lambda", "action": "Invoke", "instance_id": marker, "code": "ServiceException",
                    "status": 500, "count": 1, "message": f"injected failure of {marker}"}
            return stack.control("/faults", rule)["rules"][0]

        def fired(self, rule_id: int) -> int:
            return next(r["fired"] for r in stack.control("/faults")["rules"] if r["id"] == rule_id)

    yield Faults()
    stack.control("/faults", method="DELETE")


@pytest.fixture(scope="module")
def function_arn(stack) -> str:
    """A Cordon function (the state machine's role may invoke it; the fault rules answer for it)."""
    definition = json.loads(stack.sfn.describe_state_machine(stateMachineArn=stack.state_machine_arn)["definition"])

    def find(states: dict):
        for s in states.values():
            name = (s.get("Parameters") or {}).get("FunctionName")
            if isinstance(name, str) and name.startswith("arn:"):
                return name
            for branch in s.get("Branches", []):
                found = find(branch["States"])
                if found:
                    return found
        return None

    arn = find(definition["States"])
    assert arn, "the Cordon state machine invokes no function by ARN"
    return arn


def invoke(function_arn: str, marker: str, result_path: str, with_input: bool = True, **extra) -> dict:
    """A lambda:invoke Task whose payload carries ``marker`` (and the state input, unless
    ``with_input`` is false: an input that names another step's marker would match its rules)."""
    payload = {"marker": marker, "input.$": "$"} if with_input else {"marker": marker}
    state = {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": function_arn, "Payload": payload},
        "ResultSelector": {"out.$": "$.Payload"},
        "ResultPath": result_path,
    }
    state.update(extra)
    return state


def create(stack, definition: dict, kind: str = "STANDARD") -> str:
    role = stack.sfn.describe_state_machine(stateMachineArn=stack.state_machine_arn)["roleArn"]
    return stack.sfn.create_state_machine(
        name=f"redrive-test-{uuid.uuid4().hex[:10]}", definition=json.dumps(definition), roleArn=role, type=kind
    )["stateMachineArn"]


def start(sfn, sm_arn: str, payload=None) -> str:
    return sfn.start_execution(
        stateMachineArn=sm_arn, name=f"x-{uuid.uuid4().hex[:10]}", input=json.dumps(payload or {"incident": "i-1"})
    )["executionArn"]


def wait_end(sfn, arn: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        desc = sfn.describe_execution(executionArn=arn)
        if desc["status"] != "RUNNING":
            return desc
        assert time.monotonic() < deadline, f"{arn} still RUNNING after {timeout}s"
        time.sleep(0.1)


def history(sfn, arn: str) -> list[dict]:
    return sorted(sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"], key=lambda e: e["id"])


def entered(events: list[dict], name: str) -> list[dict]:
    return [e for e in events if (e.get("stateEnteredEventDetails") or {}).get("name") == name]


def scheduled_per_state(events: list[dict]) -> dict[str, int]:
    """TaskScheduled events per state name (following previousEventId back to the state's
    ...StateEntered: branches and iterations interleave in the history)."""
    by_id = {e["id"]: e for e in events}
    counts: dict[str, int] = {}
    for e in events:
        if e["type"] != "TaskScheduled":
            continue
        prev = by_id.get(e["previousEventId"])
        while prev is not None and not prev["type"].endswith("StateEntered"):
            prev = by_id.get(prev["previousEventId"])
        name = prev["stateEnteredEventDetails"]["name"] if prev else "?"
        counts[name] = counts.get(name, 0) + 1
    return counts


def redriven_event(events: list[dict]) -> list[dict]:
    return [e for e in events if e["type"] == "ExecutionRedriven"]


def status_events(stack, arn: str, expect: int, timeout: float = 10) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        got = stack.control(f"/sfn/status-events?execution_arn={arn}")["events"]
        if len(got) >= expect or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def error_code(call) -> tuple[str, str]:
    with pytest.raises(ClientError) as info:
        call()
    return info.value.response["Error"]["Code"], info.value.response["Error"].get("Message", "")


# ----------------------------------------------------------------------------- a failed Task


def test_redrive_resumes_at_the_failed_task_and_keeps_what_succeeded(stack, sfn, faults, function_arn):
    tag = uuid.uuid4().hex[:8]
    first_rule = faults.ok(f"first-{tag}", {"first": "done"})
    broken_rule = faults.broken(f"second-{tag}")
    second_rule = faults.ok(f"second-{tag}", {"second": "done"})
    sm = create(
        stack,
        {
            "StartAt": "Prepare",
            "States": {
                "Prepare": {
                    "Type": "Pass",
                    "Parameters": {"redriveCount.$": "$$.Execution.RedriveCount"},
                    "ResultPath": "$.prepare",
                    "Next": "First",
                },
                "First": invoke(function_arn, f"first-{tag}", "$.first", Next="Second"),
                "Second": invoke(function_arn, f"second-{tag}", "$.second", Next="Done"),
                "Done": {
                    "Type": "Pass",
                    "Parameters": {"redriveCount.$": "$$.Execution.RedriveCount", "redriveTime.$": "$$.Execution.RedriveTime"},
                    "ResultPath": "$.done",
                    "End": True,
                },
            },
        },
    )
    arn = start(sfn, sm)
    failed = wait_end(sfn, arn)
    assert failed["status"] == "FAILED"
    assert failed["error"] == "Lambda.ServiceException"
    assert failed["redriveCount"] == 0 and failed["redriveStatus"] == "REDRIVABLE" and "redriveDate" not in failed
    before = history(sfn, arn)
    assert before[-1]["type"] == "ExecutionFailed"
    assert [e["stateEnteredEventDetails"]["name"] for e in before if "stateEnteredEventDetails" in e][-1] == "Second"

    answer = sfn.redrive_execution(executionArn=arn)
    assert "redriveDate" in answer
    running = sfn.describe_execution(executionArn=arn)
    assert running["status"] in ("RUNNING", "SUCCEEDED")
    assert running["redriveCount"] == 1 and running["redriveDate"] == answer["redriveDate"]

    done = wait_end(sfn, arn)
    assert done["status"] == "SUCCEEDED", done
    assert done["executionArn"] == arn and done["input"] == failed["input"]
    assert done["redriveCount"] == 1 and done["redriveDate"] == answer["redriveDate"]
    assert done["redriveStatus"] == "NOT_REDRIVABLE"
    assert done["redriveStatusReason"] == "Execution is SUCCEEDED and cannot be redriven"
    assert "error" not in done and "cause" not in done
    output = json.loads(done["output"])
    # The outputs of the steps that succeeded before the failure are kept; the context object
    # counts the redrive.
    assert output["prepare"] == {"redriveCount": 0}
    assert output["first"] == {"out": {"first": "done"}} and output["second"] == {"out": {"second": "done"}}
    assert output["done"]["redriveCount"] == 1 and output["done"]["redriveTime"]

    events = history(sfn, arn)
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert events[: len(before)] == before, "the first attempt's history is kept as it was"
    (redriven,) = redriven_event(events)
    assert redriven["id"] == len(before) + 1
    assert redriven["executionRedrivenEventDetails"] == {"redriveCount": 1}
    after = events[len(before):]
    assert after[1]["type"] == "TaskStateEntered" and after[1]["stateEnteredEventDetails"]["name"] == "Second"
    # The failed step reruns with its original input; nothing before it runs again.
    assert entered(events, "Second")[1]["stateEnteredEventDetails"]["input"] == entered(before, "Second")[0][
        "stateEnteredEventDetails"]["input"]
    assert len(entered(events, "Prepare")) == 1 and len(entered(events, "First")) == 1
    assert scheduled_per_state(events) == {"First": 1, "Second": 2}
    assert faults.fired(first_rule) == 1 and faults.fired(broken_rule) == 1 and faults.fired(second_rule) == 1

    listed = sfn.list_executions(stateMachineArn=sm)["executions"]
    assert [(e["executionArn"], e["redriveCount"]) for e in listed] == [(arn, 1)]
    assert [e["executionArn"] for e in sfn.list_executions(stateMachineArn=sm, redriveFilter="REDRIVEN")["executions"]] == [arn]
    assert sfn.list_executions(stateMachineArn=sm, redriveFilter="NOT_REDRIVEN")["executions"] == []

    changes = status_events(stack, arn, 4)
    assert [(c["detail"]["status"], c["detail"]["redriveCount"]) for c in changes] == [
        ("RUNNING", 0), ("FAILED", 0), ("RUNNING", 1), ("SUCCEEDED", 1)]
    for c in changes:
        assert c["source"] == "aws.states" and c["detail-type"] == "Step Functions Execution Status Change"
        assert c["resources"] == [arn] and c["detail"]["executionArn"] == arn and c["detail"]["stateMachineArn"] == sm
    failed_change = changes[1]["detail"]
    assert failed_change["error"] == "Lambda.ServiceException" and f"second-{tag}" in failed_change["cause"]
    assert failed_change["redriveStatus"] == "REDRIVABLE" and failed_change["stopDate"] >= failed_change["startDate"]
    assert changes[0]["detail"]["stopDate"] is None and changes[2]["detail"]["stopDate"] is None
    assert json.loads(changes[3]["detail"]["output"]) == output

    code, _ = error_code(lambda: sfn.redrive_execution(executionArn=arn))
    assert code == "ExecutionNotRedrivable"


def test_a_fail_state_that_was_the_unsuccessful_step_fails_again(stack, sfn, faults, function_arn):
    """A Task caught into a Fail state: redrive re-enters the Fail state, not the Task, even once
    the Task's cause is fixed. A design that wants a redrive to retry the work must fail at the Task."""
    tag = uuid.uuid4().hex[:8]
    broken_rule = faults.broken(f"work-{tag}")
    ok_rule = faults.ok(f"work-{tag}")
    sm = create(
        stack,
        {
            "StartAt": "Work",
            "States": {
                "Work": invoke(function_arn, f"work-{tag}", "$.work", End=True,
                               Catch=[{"ErrorEquals": ["States.ALL"], "Next": "Give up"}]),
                "Give up": {"Type": "Fail", "Error": "WorkFailed", "Cause": "the work step failed"},
            },
        },
    )
    arn = start(sfn, sm)
    assert wait_end(sfn, arn)["error"] == "WorkFailed"
    sfn.redrive_execution(executionArn=arn)
    again = wait_end(sfn, arn)
    assert again["status"] == "FAILED" and again["error"] == "WorkFailed" and again["redriveCount"] == 1
    assert again["redriveStatus"] == "REDRIVABLE"
    events = history(sfn, arn)
    after = events[events.index(redriven_event(events)[0]):]
    assert [e["type"] for e in after] == ["ExecutionRedriven", "FailStateEntered", "ExecutionFailed"]
    assert scheduled_per_state(events) == {"Work": 1}
    assert faults.fired(broken_rule) == 1 and faults.fired(ok_rule) == 0
    changes = status_events(stack, arn, 4)
    assert [c["detail"]["status"] for c in changes] == ["RUNNING", "FAILED", "RUNNING", "FAILED"]


def test_a_final_attempt_task_with_retries_is_rerun_with_fresh_retries(stack, sfn, faults, function_arn):
    """The shape Cordon's containment measures take: a first attempt caught into a "final attempt"
    Task (with its own Retry) that fails the execution. The redrive reruns only the final attempt,
    with its retry budget whole again, then carries on."""
    tag = uuid.uuid4().hex[:8]
    first_try = faults.broken(f"measure-{tag}")
    retries = [faults.broken(f"measure-{tag}") for _ in range(2)]
    fixed = faults.ok(f"measure-{tag}", {"applied": True})
    after = faults.ok(f"announce-{tag}")
    retry = [{"ErrorEquals": ["Lambda.ServiceException"], "IntervalSeconds": 1, "MaxAttempts": 1, "BackoffRate": 1}]
    sm = create(
        stack,
        {
            "StartAt": "Measure",
            "States": {
                "Measure": invoke(function_arn, f"measure-{tag}", "$.measure", Next="Announce",
                                  Catch=[{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Measure: final attempt"}]),
                "Measure: final attempt": invoke(function_arn, f"measure-{tag}", "$.measure", Next="Announce", Retry=retry),
                "Announce": invoke(function_arn, f"announce-{tag}", "$.announce", with_input=False, End=True),
            },
        },
    )
    arn = start(sfn, sm)
    failed = wait_end(sfn, arn)
    assert failed["status"] == "FAILED" and failed["error"] == "Lambda.ServiceException"
    sfn.redrive_execution(executionArn=arn)
    done = wait_end(sfn, arn)
    assert done["status"] == "SUCCEEDED", done
    events = history(sfn, arn)
    assert scheduled_per_state(events) == {"Measure": 1, "Measure: final attempt": 3, "Announce": 1}
    after_redrive = events[events.index(redriven_event(events)[0]):]
    assert after_redrive[1]["stateEnteredEventDetails"]["name"] == "Measure: final attempt"
    assert [faults.fired(r) for r in (first_try, *retries, fixed, after)] == [1, 1, 1, 1, 1]


# ----------------------------------------------------------------------------- Parallel and Map


def test_parallel_redrives_only_the_failed_branch(stack, sfn, faults, function_arn):
    tag = uuid.uuid4().hex[:8]
    a_rule = faults.ok(f"a-{tag}", {"a": 1})
    broken_rule = faults.broken(f"b-{tag}")
    b_rule = faults.ok(f"b-{tag}", {"b": 1})
    sm = create(
        stack,
        {
            "StartAt": "Both",
            "States": {
                "Both": {
                    "Type": "Parallel",
                    "End": True,
                    "Branches": [
                        {"StartAt": "A", "States": {"A": invoke(function_arn, f"a-{tag}", "$.a", End=True)}},
                        {
                            "StartAt": "B prepare",
                            "States": {
                                "B prepare": {"Type": "Pass", "Result": "prepared", "ResultPath": "$.b0", "Next": "B wait"},
                                # Lets branch A finish first, so that only B is unsuccessful.
                                "B wait": {"Type": "Wait", "Seconds": 1, "Next": "B"},
                                "B": invoke(function_arn, f"b-{tag}", "$.b", End=True),
                            },
                        },
                    ],
                }
            },
        },
    )
    arn = start(sfn, sm, {"n": 1})
    assert wait_end(sfn, arn)["status"] == "FAILED"
    sfn.redrive_execution(executionArn=arn)
    done = wait_end(sfn, arn)
    assert done["status"] == "SUCCEEDED", done
    assert json.loads(done["output"]) == [
        {"n": 1, "a": {"out": {"a": 1}}},
        {"n": 1, "b0": "prepared", "b": {"out": {"b": 1}}},
    ]
    events = history(sfn, arn)
    assert scheduled_per_state(events) == {"A": 1, "B": 2}
    assert len(entered(events, "B prepare")) == 1 and len(entered(events, "B wait")) == 1
    assert len(entered(events, "Both")) == 2  # the Parallel state itself is rescheduled
    assert faults.fired(a_rule) == 1 and faults.fired(broken_rule) == 1 and faults.fired(b_rule) == 1


def test_map_redrives_only_the_failed_iteration(stack, sfn, faults, function_arn):
    tag = uuid.uuid4().hex[:8]
    rules = {i: faults.ok(f"m-{tag}-{i}", {"item": i}) for i in (0, 2)}
    broken_rule = faults.broken(f"m-{tag}-1")
    rules[1] = faults.ok(f"m-{tag}-1", {"item": 1})
    item_task = invoke(function_arn, "unused", "$.r", End=True)
    item_task["Parameters"]["Payload"] = {"marker.$": f"States.Format('m-{tag}-{{}}', $.i)"}
    sm = create(
        stack,
        {
            "StartAt": "Each",
            "States": {
                "Each": {
                    "Type": "Map",
                    "ItemsPath": "$.items",
                    "End": True,
                    "ItemProcessor": {
                        "ProcessorConfig": {"Mode": "INLINE"},
                        "StartAt": "Slow for one",
                        "States": {
                            "Slow for one": {
                                "Type": "Choice",
                                "Choices": [{"Variable": "$.i", "NumericEquals": 1, "Next": "Wait for the others"}],
                                "Default": "Item",
                            },
                            "Wait for the others": {"Type": "Wait", "Seconds": 1, "Next": "Item"},
                            "Item": item_task,
                        },
                    },
                }
            },
        },
    )
    arn = start(sfn, sm, {"items": [{"i": 0}, {"i": 1}, {"i": 2}]})
    assert wait_end(sfn, arn)["status"] == "FAILED"
    sfn.redrive_execution(executionArn=arn)
    done = wait_end(sfn, arn)
    assert done["status"] == "SUCCEEDED", done
    assert [o["r"]["out"] for o in json.loads(done["output"])] == [{"item": 0}, {"item": 1}, {"item": 2}]
    events = history(sfn, arn)
    started = [e["mapIterationStartedEventDetails"]["index"] for e in events if e["type"] == "MapIterationStarted"]
    assert sorted(started) == [0, 1, 1, 2]
    assert scheduled_per_state(events) == {"Item": 4}
    assert len(entered(events, "Wait for the others")) == 1, "iteration 1 resumes at its failed state"
    assert {i: faults.fired(r) for i, r in rules.items()} == {0: 1, 1: 1, 2: 1} and faults.fired(broken_rule) == 1


def test_a_parallel_inside_a_map_iteration_resumes_inside_the_branch(stack, sfn, faults, function_arn):
    tag = uuid.uuid4().hex[:8]
    broken_rule = faults.broken(f"deep-{tag}")
    deep_rule = faults.ok(f"deep-{tag}", {"deep": True})
    side_rule = faults.ok(f"side-{tag}", {"side": True})
    sm = create(
        stack,
        {
            "StartAt": "Each",
            "States": {
                "Each": {
                    "Type": "Map",
                    "ItemsPath": "$.items",
                    "End": True,
                    "ItemProcessor": {
                        "ProcessorConfig": {"Mode": "INLINE"},
                        "StartAt": "Fork",
                        "States": {
                            "Fork": {
                                "Type": "Parallel",
                                "End": True,
                                "Branches": [
                                    {"StartAt": "Side", "States": {"Side": invoke(function_arn, f"side-{tag}", "$.s", End=True)}},
                                    {"StartAt": "Pause", "States": {
                                        "Pause": {"Type": "Wait", "Seconds": 1, "Next": "Deep"},
                                        "Deep": invoke(function_arn, f"deep-{tag}", "$.d", End=True)}},
                                ],
                            }
                        },
                    },
                }
            },
        },
    )
    arn = start(sfn, sm, {"items": [{"i": 0}]})
    assert wait_end(sfn, arn)["status"] == "FAILED"
    sfn.redrive_execution(executionArn=arn)
    done = wait_end(sfn, arn)
    assert done["status"] == "SUCCEEDED", done
    assert json.loads(done["output"]) == [[{"i": 0, "s": {"out": {"side": True}}}, {"i": 0, "d": {"out": {"deep": True}}}]]
    events = history(sfn, arn)
    assert scheduled_per_state(events) == {"Side": 1, "Deep": 2}
    assert len(entered(events, "Pause")) == 1
    assert faults.fired(side_rule) == 1 and faults.fired(broken_rule) == 1 and faults.fired(deep_rule) == 1


# ----------------------------------------------------------------------------- which executions


def test_running_and_succeeded_executions_are_not_redrivable(stack, sfn):
    sm = create(stack, {"StartAt": "Pause", "States": {"Pause": {"Type": "Wait", "Seconds": 2, "End": True}}})
    arn = start(sfn, sm)
    running = sfn.describe_execution(executionArn=arn)
    assert running["status"] == "RUNNING"
    assert (running["redriveStatus"], running["redriveStatusReason"]) == (
        "NOT_REDRIVABLE", "Execution is RUNNING and cannot be redriven")
    code, message = error_code(lambda: sfn.redrive_execution(executionArn=arn))
    assert code == "ExecutionNotRedrivable" and "RUNNING" in message
    assert wait_end(sfn, arn)["status"] == "SUCCEEDED"
    code, message = error_code(lambda: sfn.redrive_execution(executionArn=arn))
    assert code == "ExecutionNotRedrivable" and "SUCCEEDED" in message
    assert redriven_event(history(sfn, arn)) == []
    assert [c["detail"]["status"] for c in status_events(stack, arn, 2)] == ["RUNNING", "SUCCEEDED"]

    unknown = arn.rsplit(":", 1)[0] + ":no-such-execution"
    assert error_code(lambda: sfn.redrive_execution(executionArn=unknown))[0] == "ExecutionDoesNotExist"
    assert error_code(lambda: sfn.redrive_execution(executionArn="not-an-arn"))[0] == "InvalidArn"
    bad_token = "with space"
    assert error_code(lambda: sfn.redrive_execution(executionArn=arn, clientToken=bad_token))[0] == "ValidationException"


def test_an_aborted_execution_resumes_where_it_was_stopped(stack, sfn, faults, function_arn):
    tag = uuid.uuid4().hex[:8]
    rule = faults.ok(f"after-{tag}")
    sm = create(
        stack,
        {
            "StartAt": "Before",
            "States": {
                "Before": {"Type": "Pass", "Result": 1, "ResultPath": "$.before", "Next": "Pause"},
                "Pause": {"Type": "Wait", "Seconds": 2, "Next": "After"},
                "After": invoke(function_arn, f"after-{tag}", "$.after", End=True),
            },
        },
    )
    arn = start(sfn, sm)
    deadline = time.monotonic() + 10
    while not entered(history(sfn, arn), "Pause"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    sfn.stop_execution(executionArn=arn, error="Operator", cause="stopped by the test")
    aborted = wait_end(sfn, arn)
    assert aborted["status"] == "ABORTED" and aborted["redriveStatus"] == "REDRIVABLE"
    sfn.redrive_execution(executionArn=arn)
    done = wait_end(sfn, arn)
    assert done["status"] == "SUCCEEDED" and json.loads(done["output"])["before"] == 1
    events = history(sfn, arn)
    assert len(entered(events, "Before")) == 1 and len(entered(events, "Pause")) == 2
    assert faults.fired(rule) == 1
    assert [c["detail"]["status"] for c in status_events(stack, arn, 4)] == ["RUNNING", "ABORTED", "RUNNING", "SUCCEEDED"]


def test_a_timed_out_execution_is_redrivable_and_its_timer_restarts(stack, sfn):
    sm = create(
        stack,
        {"TimeoutSeconds": 1, "StartAt": "Too long", "States": {"Too long": {"Type": "Wait", "Seconds": 30, "End": True}}},
    )
    arn = start(sfn, sm)
    timed_out = wait_end(sfn, arn)
    assert timed_out["status"] == "TIMED_OUT" and timed_out["redriveStatus"] == "REDRIVABLE"
    assert "stopDate" in timed_out
    sfn.redrive_execution(executionArn=arn)
    # "the state machine level timeout, if defined, is reset to 0": one more second, not none.
    assert sfn.describe_execution(executionArn=arn)["status"] == "RUNNING"
    again = wait_end(sfn, arn)
    assert again["status"] == "TIMED_OUT" and again["redriveCount"] == 1
    assert [c["detail"]["status"] for c in status_events(stack, arn, 4)] == ["RUNNING", "TIMED_OUT", "RUNNING", "TIMED_OUT"]


def test_the_redrivable_period_is_14_days_from_the_stop(stack, sfn):
    sm = create(stack, {"StartAt": "Broken", "States": {"Broken": {"Type": "Fail", "Error": "E"}}})
    arn = start(sfn, sm)
    assert wait_end(sfn, arn)["status"] == "FAILED"
    stack.control("/sfn/execution-age", {"executionArn": arn, "stopped_days_ago": 15})
    old = sfn.describe_execution(executionArn=arn)
    assert (old["redriveStatus"], old["redriveStatusReason"]) == ("NOT_REDRIVABLE", "Execution redrivable period exceeded")
    assert error_code(lambda: sfn.redrive_execution(executionArn=arn))[0] == "ExecutionNotRedrivable"
    stack.control("/sfn/execution-age", {"executionArn": arn, "stopped_days_ago": 13})
    assert sfn.describe_execution(executionArn=arn)["redriveStatus"] == "REDRIVABLE"
    sfn.redrive_execution(executionArn=arn)
    assert wait_end(sfn, arn)["redriveCount"] == 1


def test_a_client_token_makes_the_redrive_idempotent(stack, sfn):
    sm = create(stack, {"StartAt": "Broken", "States": {"Broken": {"Type": "Fail", "Error": "E"}}})
    arn = start(sfn, sm)
    wait_end(sfn, arn)
    first = sfn.redrive_execution(executionArn=arn, clientToken="token-1")
    assert sfn.redrive_execution(executionArn=arn, clientToken="token-1")["redriveDate"] == first["redriveDate"]
    wait_end(sfn, arn)
    assert sfn.redrive_execution(executionArn=arn, clientToken="token-1")["redriveDate"] == first["redriveDate"]
    assert sfn.describe_execution(executionArn=arn)["redriveCount"] == 1
    assert len(redriven_event(history(sfn, arn))) == 1
    second = sfn.redrive_execution(executionArn=arn, clientToken="token-2")
    assert second["redriveDate"] > first["redriveDate"]
    assert wait_end(sfn, arn)["redriveCount"] == 2


def test_express_executions_are_not_redriven_and_emit_no_status_events(stack, sfn):
    sm = create(stack, {"StartAt": "Broken", "States": {"Broken": {"Type": "Fail", "Error": "E"}}}, kind="EXPRESS")
    arn = start(sfn, sm)
    assert wait_end(sfn, arn)["status"] == "FAILED"
    code, message = error_code(lambda: sfn.redrive_execution(executionArn=arn))
    assert code == "ExecutionNotRedrivable" and "EXPRESS" in message
    time.sleep(0.3)
    assert stack.control(f"/sfn/status-events?execution_arn={arn}")["events"] == []


# ----------------------------------------------------------------------------- Cordon's own state machine


def _step_binaries_missing() -> list[str]:
    import os
    from pathlib import Path

    from local_aws.deploy import STEPS

    bin_dir = Path(os.environ.get("CORDON_BIN_DIR", "/nonexistent"))
    return [s for s in STEPS if not (bin_dir / f"cordon-{s}").is_file()]


def test_a_failed_cordon_response_is_redriven_from_its_unsuccessful_state(stack, sfn):
    """The deployed state machine, quarantine failing for good: the redrive resumes at the state
    where the execution stopped and reruns none of the steps that had succeeded. Whether it then
    succeeds depends on that state: a Task (the measure itself) runs again and completes the
    response; a Fail state fails again."""
    missing = _step_binaries_missing()
    if missing:
        pytest.skip(f"step binaries not built: {', '.join(missing)}")
    inst = stack.seed_instance(name="redrive-quarantine", ssm=False)
    stack.control("/faults", {"service": "ec2", "action": "ModifyNetworkInterfaceAttribute", "code": "UnauthorizedOperation",
                              "status": 403, "count": -1, "instance_id": inst.network_interface_ids[0]})
    incident = f"IR-{uuid.uuid4().hex[:10]}"
    try:
        arn = sfn.start_execution(stateMachineArn=stack.state_machine_arn, name=incident,
                                  input=json.dumps({"instance_id": inst.instance_id, "incident_id": incident}))["executionArn"]
        failed = wait_end(sfn, arn, timeout=180)
    finally:
        stack.control("/faults", method="DELETE")
    assert failed["status"] == "FAILED" and failed["redriveStatus"] == "REDRIVABLE"
    before = history(sfn, arn)
    top = json.loads(sfn.describe_state_machine(stateMachineArn=stack.state_machine_arn)["definition"])["States"]
    unsuccessful = [e["stateEnteredEventDetails"]["name"] for e in before
                    if e["type"].endswith("StateEntered") and e["stateEnteredEventDetails"]["name"] in top][-1]
    snapshots_before = len(stack.requests(service="ec2", action="CreateSnapshots")) + len(
        stack.requests(service="ec2", action="CreateSnapshot"))

    seq = stack.last_request_seq()
    sfn.redrive_execution(executionArn=arn)
    done = wait_end(sfn, arn, timeout=180)
    events = history(sfn, arn)
    after = events[len(before):]
    assert after[0]["type"] == "ExecutionRedriven"
    assert after[1]["stateEnteredEventDetails"]["name"] == unsuccessful
    rerun = {e["stateEnteredEventDetails"]["name"] for e in after if e["type"].endswith("StateEntered")}
    succeeded_before = {e["stateExitedEventDetails"]["name"] for e in before if e["type"] == "TaskStateExited"}
    assert not rerun & succeeded_before - {unsuccessful}, "a step that had succeeded ran again"
    snapshots_after = len(stack.requests(service="ec2", action="CreateSnapshots")) + len(
        stack.requests(service="ec2", action="CreateSnapshot"))
    assert snapshots_after == snapshots_before, "no snapshot taken again"
    if top[unsuccessful]["Type"] == "Fail":
        assert done["status"] == "FAILED" and done["error"] == failed["error"]
    else:
        assert done["status"] == "SUCCEEDED", done
        quarantined = [r for r in stack.requests(service="ec2", action="ModifyNetworkInterfaceAttribute", since=seq)
                       if inst.network_interface_ids[0] in json.dumps(r["params"]) and r["status"] == 200]
        assert quarantined, "the measure that had failed was applied by the redrive"
