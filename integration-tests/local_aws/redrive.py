"""Step Functions redrive and execution status-change events on the local stack.

moto 5.2.5 runs executions with LocalStack's ASL interpreter (``moto/stepfunctions/parser``) but has
no ``RedriveExecution`` and emits no EventBridge events. This module adds both, by hooking the
interpreter in this process (exact hooks, no polling):

**RedriveExecution** (``StepFunctionsRedriveShim``), as the API reference documents it
(https://docs.aws.amazon.com/step-functions/latest/apireference/API_RedriveExecution.html) and the
developer guide's "Restarting state machine executions with redrive in Step Functions"
(https://docs.aws.amazon.com/step-functions/latest/dg/redrive-executions.html):

- Only executions that are FAILED, ABORTED or TIMED_OUT, of STANDARD state machines ("This API
  action is not supported by EXPRESS state machines"), within the redrivable period of 14 days
  from the stop, open for less than a year, with fewer than 24,999 history events. Otherwise
  ``ExecutionNotRedrivable`` with the documented ``redriveStatusReason`` text;
  ``ExecutionDoesNotExist`` / ``InvalidArn`` for an unknown or malformed ARN.
- ``clientToken`` (1-64 characters of ``[!-~]``): "The API will return idempotent responses for the
  last 10 client tokens used to successfully redrive the execution. These client tokens are valid
  for up to 15 minutes after they are first used."
- Same execution ARN, same definition (the parsed copy the execution started with, so the version
  it started with), same input. "Step Functions preserves the results and execution history of the
  successful steps, and doesn't rerun these steps": the execution resumes at its unsuccessful
  state, the top-level state with a ``...StateEntered`` event and no ``...StateExited`` event (the
  rule the guide's "Redriving Map Runs" page states), with that state's original input, read from
  that ``StateEntered`` event. A Fail state that was the unsuccessful step is entered again and
  fails again: that is AWS's semantics.
- "For workflows that include an Inline Map or Parallel state, RedriveExecution API action
  reschedules and redrives only the iterations and branches that failed or aborted": branches and
  iterations that succeeded are not run again and keep their recorded output; a failed or aborted
  one resumes at its own unsuccessful state with that state's input (recursively, for nested
  Parallel/Map states). History events carry no branch identity, so these per-branch cursors are
  recorded in memory while the execution runs (``_Journal``).
- "When you redrive an execution, the state machine level timeout, if defined, is reset to 0"
  (the timer restarts); the context object gets ``$$.Execution.RedriveCount`` (0 before any
  redrive) and ``$$.Execution.RedriveTime`` (after one)
  (https://docs.aws.amazon.com/step-functions/latest/dg/input-output-contextobject.html).
- The history continues: an ``ExecutionRedriven`` event with
  ``executionRedrivenEventDetails.redriveCount``, then the new events, ids increasing
  (https://docs.aws.amazon.com/step-functions/latest/apireference/API_ExecutionRedrivenEventDetails.html).
- ``DescribeExecution`` answers ``redriveCount``, ``redriveDate``, ``redriveStatus``
  (``REDRIVABLE`` / ``NOT_REDRIVABLE``) and ``redriveStatusReason``
  (https://docs.aws.amazon.com/step-functions/latest/apireference/API_DescribeExecution.html), status
  ``RUNNING`` during the redrive and the final status after; ``ListExecutions`` items carry
  ``redriveCount``/``redriveDate`` and the request's ``redriveFilter`` (``REDRIVEN`` /
  ``NOT_REDRIVEN``) is applied
  (https://docs.aws.amazon.com/step-functions/latest/apireference/API_ListExecutions.html).

Limits of this shim (documented, not hidden): Distributed Map runs are not redriven item by item
(a Distributed Map state is rerun whole); ``ExecutionLimitExceeded`` is never answered (moto models
no open-execution quota); a redrive that started from a StopExecution between two states resumes at
the next state (what the history says), which is what AWS's Entered/Exited rule gives as well.

**Status-change events**: "Step Functions Execution Status Change", source ``aws.states``, emitted
for every transition of every STANDARD execution ("Only standard workflows emit events to
EventBridge", https://docs.aws.amazon.com/step-functions/latest/dg/eventbridge-integration.html):
RUNNING at start, SUCCEEDED / FAILED / TIMED_OUT / ABORTED at the end, RUNNING again on each
redrive. "The detail section in the event data provides the same information as the
DescribeExecution API" (https://docs.aws.amazon.com/step-functions/latest/dg/cw-events.html), with
``startDate``/``stopDate`` as epoch milliseconds and ``null`` for what is not set yet (``stopDate``,
``output``), as the guide's examples show. Each event is kept in memory
(``GET /_cordon/sfn/status-events``) and handed, in order and from a dispatcher thread (delivery is
asynchronous on AWS), to every callable in ``STATUS_LISTENERS`` (the local EventBridge:
``eventbridge.EventBridge.put``).

Control endpoints:

- ``GET /_cordon/sfn/status-events[?execution_arn=&status=]``, ``DELETE /_cordon/sfn/status-events``
- ``POST /_cordon/sfn/execution-age {"executionArn", "stopped_days_ago"}``: moves a stopped
  execution's stop date into the past, to test the 14-day redrivable period.
"""

from __future__ import annotations

import copy
import datetime
import itertools
import json
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .server import ControlError
from .wire import AwsRequest, Response, aws_error, epoch, json_response

LOG = logging.getLogger("local_aws.redrive")

STATUS_CHANGE = "Step Functions Execution Status Change"
TERMINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
REDRIVABLE_STATUSES = ("FAILED", "ABORTED", "TIMED_OUT")
# RedriveExecution's conditions (API reference).
REDRIVABLE_PERIOD = datetime.timedelta(days=14)
MAX_OPEN_TIME = datetime.timedelta(days=365)
MAX_HISTORY_EVENTS = 24_999
# clientToken: "the last 10 client tokens ... valid for up to 15 minutes after they are first used";
# shape ClientToken: length 1-64, pattern [!-~]+ (the service model).
CLIENT_TOKENS_KEPT = 10
CLIENT_TOKEN_TTL = datetime.timedelta(minutes=15)
CLIENT_TOKEN = re.compile(r"^[!-~]{1,64}$")
# How long the end of a timed-out execution waits for its ExecutionTimedOut history event.
TIMED_OUT_HISTORY_WAIT = 2.0

# The redriveStatusReason texts, as DescribeExecution documents them.
REASON_RUNNING = "Execution is RUNNING and cannot be redriven"
REASON_SUCCEEDED = "Execution is SUCCEEDED and cannot be redriven"
REASON_PERIOD = "Execution redrivable period exceeded"
REASON_OPEN_TIME = "Execution has exceeded the max execution time"
REASON_HISTORY = "Execution history event limit exceeded"
REASON_EXPRESS = "This API action is not supported by EXPRESS state machines"

# Callables that receive each status-change event (the full EventBridge envelope).
STATUS_LISTENERS: list[Callable[[dict], Any]] = []


def _now() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


# =============================================================================== journal
#
# Where each running scope of an execution is: the root program, a Parallel branch or a Map
# iteration. A scope is a tuple of (Parallel/Map state name, branch or iteration index) steps from
# the root, e.g. (("Preserve evidence", 1),). The cursor is the state to run next in that scope and
# its raw input (the state's input before InputPath), updated on entering and on leaving a state.


@dataclass
class _Scope:
    state: str | None = None
    input: Any = None
    status: str = "running"  # running | succeeded | failed
    output: Any = None


@dataclass
class _Step:
    kind: str  # resume | skip
    state: str | None = None
    input: Any = None
    output: Any = None


Scope = tuple[tuple[str, int], ...]


class _Journal:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._scopes: dict[str, dict[Scope, _Scope]] = {}
        self._plans: dict[str, dict[Scope, _Step]] = {}

    def cursor(self, arn: str, scope: Scope, state: str, value: Any) -> None:
        with self._lock:
            rec = self._scopes.setdefault(arn, {}).setdefault(scope, _Scope())
            rec.state, rec.input, rec.status = state, value, "running"

    def finish(self, arn: str, scope: Scope, succeeded: bool, output: Any) -> None:
        with self._lock:
            rec = self._scopes.setdefault(arn, {}).setdefault(scope, _Scope())
            rec.status = "succeeded" if succeeded else "failed"
            rec.output = output if succeeded else None

    def clear_children(self, arn: str, scope: Scope, state: str) -> None:
        """A Parallel/Map state is entered: what its branches or iterations did before (an earlier
        visit in a loop) no longer describes it."""
        n = len(scope)
        with self._lock:
            scopes = self._scopes.get(arn, {})
            for s in [s for s in scopes if len(s) > n and s[:n] == scope and s[n][0] == state]:
                del scopes[s]

    def children(self, arn: str, scope: Scope, state: str) -> dict[Scope, _Scope]:
        n = len(scope)
        with self._lock:
            return {
                s: copy.deepcopy(r)
                for s, r in self._scopes.get(arn, {}).items()
                if len(s) == n + 1 and s[:n] == scope and s[n][0] == state
            }

    def root(self, arn: str) -> _Scope | None:
        with self._lock:
            rec = self._scopes.get(arn, {}).get(())
            return copy.deepcopy(rec) if rec else None

    def set_plan(self, arn: str, plan: dict[Scope, _Step]) -> None:
        with self._lock:
            self._plans[arn] = plan

    def peek(self, arn: str, scope: Scope) -> _Step | None:
        with self._lock:
            return self._plans.get(arn, {}).get(scope)

    def take(self, arn: str, scope: Scope) -> _Step | None:
        """The redrive step for ``scope`` (used once: a later visit of the same scope, in a loop or a
        retry, runs normally)."""
        with self._lock:
            return self._plans.get(arn, {}).pop(scope, None)

    def forget(self, arn: str) -> None:
        with self._lock:
            self._scopes.pop(arn, None)
            self._plans.pop(arn, None)


JOURNAL = _Journal()


def _env_arn(env: Any) -> str | None:
    try:
        return env.states.context_object.context_object_data["Execution"]["Id"]
    except (AttributeError, KeyError, TypeError):
        return None


def _scope_of(env: Any) -> Scope:
    return getattr(env, "_cordon_scope", ())


# =============================================================================== redrive bookkeeping


@dataclass
class RedriveState:
    count: int = 0
    date: datetime.datetime | None = None
    tokens: dict[str, tuple[datetime.datetime, datetime.datetime]] = field(default_factory=dict)  # token -> (first use, redriveDate)


_REDRIVES: dict[str, RedriveState] = {}
_REDRIVES_LOCK = threading.RLock()


def redrive_state(arn: str) -> RedriveState:
    with _REDRIVES_LOCK:
        return _REDRIVES.setdefault(arn, RedriveState())


def _is_standard(execution: Any) -> bool:
    sm = getattr(execution, "state_machine", None)
    return (getattr(sm, "type", None) or "STANDARD") == "STANDARD"


def _history(execution: Any) -> list[dict]:
    worker = getattr(execution, "exec_worker", None)
    env = getattr(worker, "env", None) if worker else None
    if env is None:
        return []
    return sorted(env.event_manager.get_event_history(), key=lambda e: e["id"])


def redrive_status(execution: Any, now: datetime.datetime | None = None) -> tuple[str, str | None]:
    """``(redriveStatus, redriveStatusReason)`` as DescribeExecution documents them: NOT_REDRIVABLE
    exactly when RedriveExecution would answer ExecutionNotRedrivable."""
    now = now or _now()
    if not _is_standard(execution):
        return "NOT_REDRIVABLE", REASON_EXPRESS
    status = execution.status
    if status == "RUNNING":
        return "NOT_REDRIVABLE", REASON_RUNNING
    if status == "SUCCEEDED":
        return "NOT_REDRIVABLE", REASON_SUCCEEDED
    if execution.stop_date and now - execution.stop_date > REDRIVABLE_PERIOD:
        return "NOT_REDRIVABLE", REASON_PERIOD
    if execution.start_date and now - execution.start_date > MAX_OPEN_TIME:
        return "NOT_REDRIVABLE", REASON_OPEN_TIME
    if len(_history(execution)) >= MAX_HISTORY_EVENTS:
        return "NOT_REDRIVABLE", REASON_HISTORY
    return "REDRIVABLE", None


# =============================================================================== status-change events


class StatusEvents:
    """The emitted events (kept for tests) and their in-order delivery to ``STATUS_LISTENERS``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[dict] = []
        self._seq = itertools.count(1)
        self._queue: queue.Queue[dict] = queue.Queue()
        self._thread = threading.Thread(target=self._dispatch, name="sfn-status-events", daemon=True)
        self._thread.start()

    def emit(self, execution: Any, status: str) -> None:
        if not _is_standard(execution):
            return
        event = status_change_event(execution, status)
        with self._lock:
            self._events.append({"seq": next(self._seq), "event": event})
        self._queue.put(event)

    def _dispatch(self) -> None:
        while True:
            event = self._queue.get()
            for listener in list(STATUS_LISTENERS):
                try:
                    listener(copy.deepcopy(event))
                except Exception:
                    LOG.exception("status-change listener %r failed", listener)

    def query(self, execution_arn: str | None = None, status: str | None = None) -> list[dict]:
        with self._lock:
            entries = list(self._events)
        return [
            e
            for e in entries
            if (not execution_arn or e["event"]["detail"]["executionArn"] == execution_arn)
            and (not status or e["event"]["detail"]["status"] == status)
        ]

    def clear(self) -> None:
        with self._lock:
            self._events.clear()


def _millis(t: datetime.datetime | None) -> int | None:
    return int(t.timestamp() * 1000) if t else None


def _output_json(execution: Any) -> str | None:
    if execution.status != "SUCCEEDED":
        return None
    out = execution.output
    return out if isinstance(out, str) else json.dumps(out, separators=(",", ":"))


def _state_machine_arns(execution: Any) -> tuple[str, str | None]:
    """(stateMachineArn, stateMachineVersionArn): an execution started from a version reports the
    unqualified ARN and the version ARN separately (DescribeExecution)."""
    sm = execution.state_machine
    source = getattr(sm, "source_arn", None)
    return (source, sm.arn) if source else (execution.state_machine_arn, None)


def status_change_event(execution: Any, status: str) -> dict:
    """The EventBridge event Step Functions sends for ``execution`` entering ``status``."""
    now = _now()
    sm_arn, version_arn = _state_machine_arns(execution)
    red = redrive_state(execution.execution_arn)
    redrive, reason = redrive_status(execution, now)
    output = _output_json(execution) if status == "SUCCEEDED" else None
    detail = {
        "executionArn": execution.execution_arn,
        "stateMachineArn": sm_arn,
        "name": execution.name,
        "status": status,
        "startDate": _millis(execution.start_date),
        "stopDate": _millis(execution.stop_date) if status in TERMINAL else None,
        "input": execution.execution_input,
        "inputDetails": {"included": True},
        "output": output,
        "outputDetails": {"included": True} if output is not None else None,
        "error": execution.error if status in TERMINAL else None,
        "cause": execution.cause if status in TERMINAL else None,
        "redriveCount": red.count,
        "redriveDate": _millis(red.date),
        "redriveStatus": redrive,
        "redriveStatusReason": reason,
    }
    if version_arn:
        detail["stateMachineVersionArn"] = version_arn
    account, region = _account_region(execution.execution_arn)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": STATUS_CHANGE,
        "source": "aws.states",
        "account": account,
        "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [execution.execution_arn],
        "detail": detail,
    }


def _account_region(arn: str) -> tuple[str, str]:
    parts = arn.split(":")
    return (parts[4], parts[3]) if len(parts) > 5 else ("123456789012", "us-east-1")


EVENTS = StatusEvents()


# =============================================================================== interpreter hooks

_INSTALLED = False
_INSTALL_LOCK = threading.Lock()


def install_hooks() -> None:
    """Hooks moto's ASL interpreter (idempotent). Must run before the first execution starts."""
    global _INSTALLED
    with _INSTALL_LOCK:
        if _INSTALLED:
            return
        _install()
        _INSTALLED = True


def _install() -> None:
    from moto.stepfunctions.parser.asl.component.common.flow.start_at import StartAt
    from moto.stepfunctions.parser.asl.component.program.program import Program
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.iteration_worker import (
        IterationWorker,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.state_map import StateMap
    from moto.stepfunctions.parser.asl.component.state.exec.state_parallel.branch_worker import BranchWorker
    from moto.stepfunctions.parser.asl.component.state.exec.state_parallel.state_parallel import StateParallel
    from moto.stepfunctions.parser.asl.component.state.state import CommonStateField
    from moto.stepfunctions.parser.asl.eval.environment import Environment
    from moto.stepfunctions.parser.asl.eval.program_state import ProgramEnded, ProgramTimedOut
    from moto.stepfunctions.parser.backend.execution import BaseExecutionWorkerCommunication, Execution
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    # --- frames inherit their parent's scope (Parallel branches and Map iterations run in frames).
    orig_frame = Environment.as_inner_frame_of.__func__
    Environment._cordon_scope = ()

    def as_inner_frame_of(cls, env, variable_store, event_history_frame_cache=None):
        frame = orig_frame(cls, env, variable_store, event_history_frame_cache)
        frame._cordon_scope = _scope_of(env)
        return frame

    Environment.as_inner_frame_of = classmethod(as_inner_frame_of)

    # --- a Parallel branch's index: BranchesDecl creates its workers in the order of its branches.
    orig_branch_init = BranchWorker.__init__

    def branch_init(self, branch_worker_comm, program, env):
        orig_branch_init(self, branch_worker_comm, program, env)
        index = getattr(branch_worker_comm, "_cordon_next_branch", 0)
        branch_worker_comm._cordon_next_branch = index + 1
        env._cordon_branch = index

    BranchWorker.__init__ = branch_init

    # --- every state entered/left moves its scope's cursor.
    orig_state_body = CommonStateField._eval_body

    def state_body(self, env):
        arn = _env_arn(env)
        if arn is None:
            return orig_state_body(self, env)
        scope = _scope_of(env)
        if isinstance(self, (StateParallel, StateMap)):
            JOURNAL.clear_children(arn, scope, self.name)
        JOURNAL.cursor(arn, scope, self.name, env.states.get_input())
        orig_state_body(self, env)
        if env.is_running():
            JOURNAL.cursor(arn, scope, env.next_state_name, env.states.get_input())

    CommonStateField._eval_body = state_body

    # --- a program (root, branch or iteration) runs from its redrive step, and its end is recorded.
    orig_program_eval = Program.eval

    def program_eval(self, env):
        arn = _env_arn(env)
        if arn is None:
            return orig_program_eval(self, env)
        scope: Scope = ()
        if env.is_frame():
            ctx = env.states.context_object.context_object_data
            parent = (ctx.get("State") or {}).get("Name")
            index = env.__dict__.get("_cordon_branch")
            if index is None and ctx.get("Map"):
                index = ctx["Map"]["Item"]["Index"]
            if parent is None or index is None:
                return orig_program_eval(self, env)
            scope = _scope_of(env) + ((parent, int(index)),)
            env._cordon_scope = scope
        step = JOURNAL.take(arn, scope)
        program = self
        if step is not None and step.kind == "skip":
            env.states.reset(input_value=step.output)
            env.set_ended()
            JOURNAL.finish(arn, scope, True, step.output)
            return None
        if step is not None and step.kind == "resume":
            env.states.reset(input_value=step.input)
            program = copy.copy(self)
            program.start_at = StartAt(step.state)
        orig_program_eval(program, env)
        ended = isinstance(env.program_state(), ProgramEnded)
        JOURNAL.finish(arn, scope, ended, env.states.get_input() if ended else None)
        return None

    Program.eval = program_eval

    # --- a Map iteration that succeeded before is not run again (no new iteration events).
    orig_eval_job = IterationWorker._eval_job

    def eval_job(self, env, job):
        arn = _env_arn(env)
        if arn is not None:
            parent = (env.states.context_object.context_object_data.get("State") or {}).get("Name")
            if parent is not None:
                scope = _scope_of(env) + ((parent, int(job.job_index)),)
                step = JOURNAL.peek(arn, scope)
                if step is not None and step.kind == "skip":
                    JOURNAL.take(arn, scope)
                    job.job_output = copy.deepcopy(step.output)
                    JOURNAL.finish(arn, scope, True, step.output)
                    return None
        return orig_eval_job(self, env, job)

    IterationWorker._eval_job = eval_job

    # --- $$.Execution.RedriveCount / RedriveTime.
    orig_environment = ExecutionWorker._get_evaluation_environment

    def evaluation_environment(self):
        env = orig_environment(self)
        data = env.states.context_object.context_object_data["Execution"]
        red = redrive_state(data["Id"])
        data["RedriveCount"] = red.count
        if red.date is not None:
            data["RedriveTime"] = red.date.isoformat()
        return env

    ExecutionWorker._get_evaluation_environment = evaluation_environment

    # --- status changes: RUNNING when an execution starts, the final status when it ends.
    orig_start = Execution.start

    def start(self):
        if self.exec_worker is None:
            self.exec_status = _execution_status("RUNNING")
            EVENTS.emit(self, "RUNNING")
        return orig_start(self)

    Execution.start = start

    orig_terminated = BaseExecutionWorkerCommunication.terminated

    def terminated(self):
        env = self.execution.exec_worker.env
        if isinstance(env.program_state(), ProgramTimedOut):
            # moto flips the status when the timeout elapses, while the interpreter thread adds
            # ExecutionTimedOut once the current state returns: wait (bounded) for it, so that the
            # history is complete when the status says the execution ended.
            deadline = time.monotonic() + TIMED_OUT_HISTORY_WAIT
            while time.monotonic() < deadline and not any(
                e["type"] == "ExecutionTimedOut" for e in env.event_manager.get_event_history()
            ):
                time.sleep(0.02)
        orig_terminated(self)
        execution = self.execution
        status = execution.status
        EVENTS.emit(execution, status)
        if status == "SUCCEEDED":
            JOURNAL.forget(execution.execution_arn)

    BaseExecutionWorkerCommunication.terminated = terminated


def _execution_status(value: str) -> Any:
    from moto.stepfunctions.parser.api import ExecutionStatus

    return ExecutionStatus(value)


# =============================================================================== the redrive itself


def resume_point(execution: Any, program: Any) -> tuple[str, Any]:
    """The top-level state a redrive resumes at, and its input: the last top-level state entered
    and not exited; if the last one entered was exited (a stop between two states), the state it
    moved on to, with its output; if none was entered, StartAt with the execution input."""
    top = program.states.states
    pending: tuple[str, Any] | None = None
    exited: tuple[str, Any] | None = None
    for ev in _history(execution):
        entered = ev.get("stateEnteredEventDetails")
        if entered and entered.get("name") in top and ev["type"].endswith("StateEntered"):
            pending, exited = (entered["name"], json.loads(entered.get("input") or "null")), None
            continue
        left = ev.get("stateExitedEventDetails")
        if left and left.get("name") in top and pending and left["name"] == pending[0]:
            exited, pending = (left["name"], json.loads(left.get("output") or "null")), None
    if pending is not None:
        return pending
    if exited is not None:
        nxt = getattr(top[exited[0]].continue_with, "next_state", None)
        if nxt is not None:
            return nxt.name, exited[1]
        return exited
    return program.start_at.start_at_name, copy.deepcopy(execution.input_data)


def redrive_plan(arn: str, root_state: str, root_input: Any) -> dict[Scope, _Step]:
    """The steps of a redrive: resume the root at its unsuccessful state; under a Parallel/Map state
    on the way, skip the branches/iterations that succeeded and resume the others at their own
    unsuccessful state."""
    plan: dict[Scope, _Step] = {(): _Step("resume", root_state, copy.deepcopy(root_input))}

    def descend(scope: Scope, state: str) -> None:
        for child, rec in JOURNAL.children(arn, scope, state).items():
            if rec.status == "succeeded":
                plan[child] = _Step("skip", output=rec.output)
            elif rec.state is not None:
                plan[child] = _Step("resume", rec.state, rec.input)
                descend(child, rec.state)

    descend((), root_state)
    return plan


def _continued(manager: Any) -> Any:
    """A new EventManager holding ``manager``'s events, numbering on from them."""
    from moto.stepfunctions.parser.asl.eval.event.event_manager import EventManager

    events = manager.get_event_history()
    copy_ = EventManager(cloud_watch_logging_session=manager._cloud_watch_logging_session)
    copy_._history_event_list.extend(events)
    copy_._event_id_gen._next_id = max((e["id"] for e in events), default=0) + 1
    return copy_


class RedriveError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


_REDRIVE_LOCK = threading.Lock()


def redrive_execution(execution: Any, client_token: str | None) -> datetime.datetime:
    """Redrives ``execution`` (see the module docstring); returns its redriveDate."""
    from moto.stepfunctions.parser.api import ExecutionRedrivenEventDetails, HistoryEventType
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
    from moto.stepfunctions.parser.backend.execution import BaseExecutionWorkerCommunication
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker
    from moto.stepfunctions.parser.utils import TMP_THREADS

    arn = execution.execution_arn
    with _REDRIVE_LOCK:
        now = _now()
        red = redrive_state(arn)
        if client_token:
            for token, (first, _) in list(red.tokens.items()):
                if now - first > CLIENT_TOKEN_TTL:
                    del red.tokens[token]
            if client_token in red.tokens:
                return red.tokens[client_token][1]
        status, reason = redrive_status(execution, now)
        if status != "REDRIVABLE":
            raise RedriveError("ExecutionNotRedrivable", f"{reason}: '{arn}'")

        old_env = execution.exec_worker.env
        worker: ExecutionWorker = execution._get_start_execution_worker()
        program = worker._get_evaluation_entrypoint()
        root_state, root_input = resume_point(execution, program)
        journal_root = JOURNAL.root(arn)
        if journal_root and journal_root.state not in (None, root_state):
            LOG.warning("redrive of %s: history says %r, the interpreter was at %r", arn, root_state, journal_root.state)
        JOURNAL.set_plan(arn, redrive_plan(arn, root_state, root_input))

        red.count += 1
        red.date = now
        if client_token:
            red.tokens[client_token] = (now, now)
            while len(red.tokens) > CLIENT_TOKENS_KEPT:
                del red.tokens[min(red.tokens, key=lambda t: red.tokens[t][0])]

        # A fresh environment (RedriveCount/RedriveTime in its context object) whose history goes
        # on from the first attempt's: ExecutionRedriven, then the redriven states. It is a copy,
        # so that a thread of the earlier attempt still finishing a state (moto's interpreter does
        # not interrupt a running Task on a timeout) cannot write into the new attempt's history.
        env = worker._get_evaluation_environment()
        env.event_manager = _continued(old_env.event_manager)
        last_id = max((e["id"] for e in env.event_manager.get_event_history()), default=0)
        env.event_history_context.source_event_id = last_id
        env.event_history_context.last_published_event_id = last_id
        env.event_manager.add_event(
            context=env.event_history_context,
            event_type=HistoryEventType.ExecutionRedriven,
            event_details=EventDetails(
                executionRedrivenEventDetails=ExecutionRedrivenEventDetails(redriveCount=red.count)
            ),
            timestamp=now,
        )
        worker.env = env
        execution.exec_worker = worker
        execution.exec_status = _execution_status("RUNNING")
        execution.stop_date = None
        execution.output = None
        execution.error = None
        execution.cause = None
        comm: BaseExecutionWorkerCommunication = worker._execution_communication
        EVENTS.emit(execution, "RUNNING")

        def run() -> None:
            program.eval(env)
            comm.terminated()

        thread = threading.Thread(target=run, name=f"redrive-{execution.name}", daemon=True)
        TMP_THREADS.append(thread)
        thread.start()
        LOG.info("redrive %d of %s resumes at %r", red.count, arn, root_state)
        return now


# =============================================================================== the shim


def _backend(arn: str, region: str) -> Any:
    from moto.stepfunctions.responses import get_backend

    account, arn_region = _account_region(arn)
    return get_backend(account, arn_region or region)


def _find_execution(arn: str, region: str) -> Any:
    from moto.core.exceptions import JsonRESTError

    try:
        return _backend(arn, region).describe_execution(arn)
    except JsonRESTError as e:
        raise RedriveError(e.error_type, e.message, e.code) from e
    except (IndexError, ValueError) as e:
        raise RedriveError("InvalidArn", f"Invalid Arn: '{arn}'") from e


def describe_execution(execution: Any) -> dict:
    """DescribeExecution's answer (moto's fields, the redrive fields, and stopDate for every final
    status: moto omits it for TIMED_OUT)."""
    sm_arn, version_arn = _state_machine_arns(execution)
    out: dict[str, Any] = {
        "executionArn": execution.execution_arn,
        "stateMachineArn": sm_arn,
        "name": execution.name,
        "status": execution.status,
        "startDate": epoch(execution.start_date.timestamp()),
        "input": execution.execution_input,
        "inputDetails": {"included": True},
    }
    if version_arn:
        out["stateMachineVersionArn"] = version_arn
    if execution.status in TERMINAL and execution.stop_date:
        out["stopDate"] = epoch(execution.stop_date.timestamp())
    output = _output_json(execution)
    if output is not None:
        out["output"] = output
        out["outputDetails"] = {"included": True}
    if execution.error is not None:
        out["error"] = execution.error
    if execution.cause is not None:
        out["cause"] = execution.cause
    trace = getattr(execution, "trace_header", None)
    if trace:
        out["traceHeader"] = trace
    red = redrive_state(execution.execution_arn)
    out["redriveCount"] = red.count
    if red.date is not None:
        out["redriveDate"] = epoch(red.date.timestamp())
    status, reason = redrive_status(execution)
    out["redriveStatus"] = status
    if reason:
        out["redriveStatusReason"] = reason
    return out


class StepFunctionsRedriveShim:
    """Step Functions ``RedriveExecution`` (absent from moto 5.2.5), and ``DescribeExecution`` /
    ``ListExecutions`` with the redrive fields (JSON 1.0, ``AWSStepFunctions.<Action>``)."""

    name = "StepFunctionsRedriveShim"
    ACTIONS = ("RedriveExecution", "DescribeExecution", "ListExecutions")

    def __init__(self) -> None:
        install_hooks()

    def handles(self, req: AwsRequest) -> bool:
        return req.service == "states" and req.action in self.ACTIONS

    def handle(self, req: AwsRequest) -> Response | None:
        try:
            if req.action == "RedriveExecution":
                return self._redrive(req)
            if req.action == "DescribeExecution":
                arn = self._arn(req)
                return json_response(describe_execution(_find_execution(arn, req.region)), req)
            return self._list(req)
        except RedriveError as e:
            return aws_error(req, e.code, e.message, e.status)

    @staticmethod
    def _arn(req: AwsRequest) -> str:
        arn = req.params.get("executionArn")
        if not isinstance(arn, str) or not arn:
            raise RedriveError(
                "ValidationException",
                "1 validation error detected: Value null at 'executionArn' failed to satisfy constraint: Member must not be null",
            )
        return arn

    def _redrive(self, req: AwsRequest) -> Response:
        arn = self._arn(req)
        token = req.params.get("clientToken")
        if token is not None and (not isinstance(token, str) or not CLIENT_TOKEN.match(token)):
            raise RedriveError(
                "ValidationException",
                f"1 validation error detected: Value '{token}' at 'clientToken' failed to satisfy constraint: "
                "Member must satisfy regular expression pattern: [!-~]+ and have length between 1 and 64",
            )
        execution = _find_execution(arn, req.region)
        date = redrive_execution(execution, token)
        return json_response({"redriveDate": epoch(date.timestamp())}, req)

    def _list(self, req: AwsRequest) -> Response | None:
        """ListExecutions with ``redriveCount``/``redriveDate`` per item and ``redriveFilter``;
        ``mapRunArn`` listings are left to moto."""
        p = req.params
        sm_arn = p.get("stateMachineArn")
        if not sm_arn or p.get("mapRunArn"):
            return None
        redrive_filter = p.get("redriveFilter")
        if redrive_filter not in (None, "REDRIVEN", "NOT_REDRIVEN"):
            raise RedriveError(
                "ValidationException",
                f"1 validation error detected: Value '{redrive_filter}' at 'redriveFilter' failed to satisfy constraint: "
                "Member must satisfy enum value set: [REDRIVEN, NOT_REDRIVEN]",
            )
        from moto.core.exceptions import JsonRESTError

        backend = _backend(sm_arn, req.region)
        try:
            backend.describe_state_machine(sm_arn)
            results, next_token = backend.list_executions(
                sm_arn, status_filter=p.get("statusFilter"), max_results=p.get("maxResults"), next_token=p.get("nextToken")
            )
        except JsonRESTError as e:
            raise RedriveError(e.error_type, e.message, e.code) from e
        items = []
        for execution in results:
            red = redrive_state(execution.execution_arn)
            if redrive_filter == "REDRIVEN" and red.count == 0 or redrive_filter == "NOT_REDRIVEN" and red.count > 0:
                continue
            arn, version_arn = _state_machine_arns(execution)
            item = {
                "executionArn": execution.execution_arn,
                "stateMachineArn": arn,
                "name": execution.name,
                "status": execution.status,
                "startDate": epoch(execution.start_date.timestamp()),
                "redriveCount": red.count,
            }
            if version_arn:
                item["stateMachineVersionArn"] = version_arn
            if execution.status in TERMINAL and execution.stop_date:
                item["stopDate"] = epoch(execution.stop_date.timestamp())
            if red.date is not None:
                item["redriveDate"] = epoch(red.date.timestamp())
            items.append(item)
        out: dict[str, Any] = {"executions": items}
        if next_token:
            out["nextToken"] = next_token
        return json_response(out, req)

    # ------------------------------------------------------------------ control

    def control_routes(self) -> dict:
        def events(body: Any, q: dict) -> tuple[int, Any]:
            arn = q.get("execution_arn", [None])[0]
            status = q.get("status", [None])[0]
            return 200, {"events": [e["event"] for e in EVENTS.query(arn, status)]}

        def age(body: Any, q: dict) -> tuple[int, Any]:
            if not isinstance(body, dict) or not isinstance(body.get("executionArn"), str):
                raise ControlError(400, "a JSON body with 'executionArn' and 'stopped_days_ago' is required")
            try:
                days = float(body["stopped_days_ago"])
                execution = _find_execution(body["executionArn"], "us-east-1")
            except (KeyError, TypeError, ValueError) as e:
                raise ControlError(400, f"bad request: {e}") from e
            except RedriveError as e:
                raise ControlError(404, e.message) from e
            if execution.status not in TERMINAL or execution.stop_date is None:
                raise ControlError(409, f"execution is {execution.status}: only a stopped execution has a stop date")
            execution.stop_date = _now() - datetime.timedelta(days=days)
            return 200, {"executionArn": execution.execution_arn, "stopDate": execution.stop_date.isoformat()}

        return {
            ("GET", "/_cordon/sfn/status-events"): events,
            ("DELETE", "/_cordon/sfn/status-events"): lambda body, q: (200, EVENTS.clear() or {"cleared": True}),
            ("POST", "/_cordon/sfn/execution-age"): age,
        }


__all__ = [
    "EVENTS",
    "JOURNAL",
    "STATUS_LISTENERS",
    "StepFunctionsRedriveShim",
    "describe_execution",
    "install_hooks",
    "redrive_execution",
    "redrive_status",
    "resume_point",
    "status_change_event",
]
