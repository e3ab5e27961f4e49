"""The template's SQS queues, its queue-fed functions and their event source mappings, with a
poller that invokes the function as Lambda's SQS poller does (``SqsEventSourcePoller``).

moto 5.2.5 keeps event source mappings but runs an SQS mapping unlike Lambda
(``moto/sqs/models.py`` ``Queue.add_message``): inside the ``SendMessage`` request itself it
receives the message, invokes the function once per message and deletes it unless the function
failed; it ignores ``FunctionResponseTypes`` (a ``batchItemFailures`` answer deletes every message),
``ScalingConfig.MaximumConcurrency`` and ``BatchSize``, and makes a failed message visible again at
once. So the mapping is created in moto (``CreateEventSourceMapping``: ``List``/``Get`` answer as
usual) and taken off moto's queue, and the poller here does Lambda's part, as the Lambda developer
guide describes it:

- **Polling** (https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html): ``ReceiveMessage`` with
  the queue's visibility timeout, at most ``BatchSize`` messages (FIFO and standard queues up to 10;
  a larger ``BatchSize`` needs a batching window and is refused here as not emulated), with the
  function's execution role: "Lambda uses the execution role to read messages", so the request log
  holds the function's role to ``sqs:ReceiveMessage``/``DeleteMessage``
  (https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-configure.html). Long polls of 1 s
  instead of Lambda's 20 s, so that the stack stops promptly (timing only).
- **Concurrency** (https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-scaling.html): at most
  ``ScalingConfig.MaximumConcurrency`` invocations at once (without it, five: "Lambda starts
  processing five batches at a time"; the scale-up beyond that is not modelled). "For FIFO queues,
  concurrent invocations are capped at the number of message group IDs or the maximum concurrency
  setting, whichever is lower": that cap is SQS's own (moto returns no message of a group that has
  messages in flight).
- **The event**: ``{"Records": [...]}``, one record per message with ``messageId``,
  ``receiptHandle``, ``body``, ``attributes`` (``ApproximateReceiveCount``, ``SentTimestamp``,
  ``SenderId``, ``ApproximateFirstReceiveTimestamp``; FIFO: ``SequenceNumber``, ``MessageGroupId``,
  ``MessageDeduplicationId``), ``messageAttributes``, ``md5OfBody``, ``eventSource`` ``aws:sqs``,
  ``eventSourceARN``, ``awsRegion`` (the sample event of with-sqs.html), invoked synchronously.
- **The answer** (https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html): a
  function error or a throttled invocation leaves the whole batch in the queue, visible again after
  the visibility timeout. Without ``ReportBatchItemFailures`` a successful invocation deletes the
  batch. With it, an empty or null answer or ``batchItemFailures`` list deletes the batch; an
  ``itemIdentifier`` that is null, empty or not a message ID of the batch makes the whole batch a
  failure; otherwise every message not named is deleted and the named ones stay.
- **Validation** at creation (services-sqs-configure.html): "Your function's timeout must be less
  than or equal to the queue's visibility timeout. Lambda validates this requirement when you create
  ... an event source mapping"; a FIFO queue takes no batching window.

Queues: every ``AWS::SQS::Queue`` of the template not yet created, with its properties as queue
attributes (FIFO, content-based deduplication, retention, visibility timeout, SSE-SQS, a
``RedrivePolicy`` naming another template queue, created first). A queue without ``QueueName`` is
named ``<stack>-<LogicalId>`` (CloudFormation generates a unique name, with the ``.fifo`` suffix
for a FIFO queue: https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-sqs-queue.html;
the local stack leaves the random part out, as ``eventbridge`` does).

Functions: every ``AWS::Lambda::Function`` that a mapping targets and ``deploy`` did not create
(the GuardDuty dispatcher), created as ``deploy`` creates the step functions: name
``cordon-<construct id stem>`` (``DispatchFunction`` -> ``cordon-dispatch``, the binary the runtime
runs), template role, timeout, memory, resolved environment (plus ``--extra-env``),
``ReservedConcurrentExecutions`` (``PutFunctionConcurrency``; recorded, not enforced by the
runtime), and credentials of its own (``principals``).

Control: ``GET /_cordon/sqs/event-source-mappings``: each mapping's settings and counters
(invocations, messages received, deleted, left in the queue, function errors, throttles, the most
invocations in flight at once) and its last batches.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from . import ACCESS_KEY, REGION, SECRET_KEY
from .principals import REGISTRY
from .template import Template

LOG = logging.getLogger("local_aws.sqs_event_source")

# "When messages are available, Lambda starts processing five batches at a time with five
# concurrent invocations of your function" (services-sqs-scaling.html).
DEFAULT_CONCURRENCY = 5
POLL_WAIT_SECONDS = 1
MAX_BATCH_WITHOUT_WINDOW = 10

# CloudFormation property -> SQS queue attribute (the properties share the attribute names;
# https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-sqs-queue.html).
QUEUE_ATTRIBUTES = (
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "DelaySeconds",
    "FifoQueue",
    "FifoThroughputLimit",
    "KmsDataKeyReusePeriodSeconds",
    "KmsMasterKeyId",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "SqsManagedSseEnabled",
    "VisibilityTimeout",
)


class EventSourceError(ValueError):
    """What CreateEventSourceMapping refuses (InvalidParameterValueException)."""


def _client(service: str, endpoint: str, creds: dict[str, str] | None = None, read_timeout: int = 60):
    kwargs: dict[str, Any] = (
        {
            "aws_access_key_id": creds["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": creds["AWS_SECRET_ACCESS_KEY"],
            "aws_session_token": creds["AWS_SESSION_TOKEN"],
        }
        if creds
        else {"aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY}
    )
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=read_timeout),
        **kwargs,
    )


# =============================================================================== queues


def _queue_name(template: Template, logical_id: str, props: dict) -> str:
    name = props.get("QueueName")
    if isinstance(name, str):
        return name
    fifo = str(props.get("FifoQueue", "")).lower() == "true"
    base = f"{template.stack_name}-{logical_id}"[: 80 - (5 if fifo else 0)]
    return base + (".fifo" if fifo else "")


def create_queues(endpoint: str, template: Template) -> list[str]:
    """Creates every template queue not created yet, a dead-letter queue before the queue whose
    ``RedrivePolicy`` names it; records Ref (URL), Arn, QueueName, QueueUrl. Returns their ids."""
    sqs = _client("sqs", endpoint)
    pending = {lid: res for lid, res in template.of_type("AWS::SQS::Queue") if lid not in template.physical}
    created: list[str] = []
    while pending:
        ready = [
            lid
            for lid, res in pending.items()
            if _redrive_target(res) is None or _redrive_target(res) not in pending
        ]
        if not ready:
            raise ValueError(f"queues whose redrive policies name each other: {sorted(pending)}")
        for lid in ready:
            props = pending.pop(lid).get("Properties", {})
            name = _queue_name(template, lid, props)
            attrs = {k: _attr(template.resolve(props[k])) for k in QUEUE_ATTRIBUTES if k in props}
            if "RedrivePolicy" in props:
                attrs["RedrivePolicy"] = json.dumps(template.resolve(props["RedrivePolicy"]))
            url = sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            template.set_physical(lid, url, Arn=arn, QueueName=name, QueueUrl=url)
            created.append(lid)
            LOG.info("queue %s (%s)", name, lid)
    return created


def _redrive_target(res: dict) -> str | None:
    target = (res.get("Properties", {}).get("RedrivePolicy") or {}).get("deadLetterTargetArn")
    if isinstance(target, dict) and "Fn::GetAtt" in target:
        return target["Fn::GetAtt"][0]
    return None


def _attr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# =============================================================================== functions


def function_name_of(template: Template, logical_id: str) -> str:
    """``cordon-<stem>`` for the construct ``<Stem>Function`` (``DispatchFunction`` -> ``cordon-dispatch``)."""
    path = template.cdk_path(logical_id).split("/")
    construct = path[-2] if path[-1] == "Resource" else path[-1]
    stem = construct.removesuffix("Function")
    return "cordon-" + re.sub(r"(?<!^)(?=[A-Z])", "-", stem).lower()


def create_function(
    endpoint: str, template: Template, logical_id: str, extra_env: dict[str, str] | None = None
) -> str:
    """Creates a template function as ``deploy`` creates the step functions; returns its ARN."""
    from .deploy import _placeholder_zip

    lam = _client("lambda", endpoint)
    props = template.resources[logical_id]["Properties"]
    name = function_name_of(template, logical_id)
    role = props["Role"]
    role_id = role["Fn::GetAtt"][0] if isinstance(role, dict) and "Fn::GetAtt" in role else None
    REGISTRY.register_function(name, role_id)
    fn = lam.create_function(
        FunctionName=name,
        Runtime=props["Runtime"],
        Handler=props["Handler"],
        Role=template.resolve(role),
        Code={"ZipFile": _placeholder_zip()},
        Timeout=int(props.get("Timeout", 3)),
        MemorySize=int(props.get("MemorySize", 128)),
        Environment={
            "Variables": {**template.resolve(props.get("Environment", {}).get("Variables", {})), **(extra_env or {})}
        },
    )
    if "ReservedConcurrentExecutions" in props:
        lam.put_function_concurrency(
            FunctionName=name, ReservedConcurrentExecutions=int(props["ReservedConcurrentExecutions"])
        )
    template.set_physical(logical_id, name, Arn=fn["FunctionArn"])
    LOG.info("function %s (%s)", name, logical_id)
    return fn["FunctionArn"]


# =============================================================================== mappings


@dataclass
class Mapping:
    uuid: str
    logical_id: str
    function_name: str
    function_arn: str
    queue_arn: str
    queue_url: str
    fifo: bool
    batch_size: int
    report_batch_item_failures: bool
    concurrency: int
    maximum_concurrency: int | None
    enabled: bool = True
    stats: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            (
                "invocations",
                "received",
                "deleted",
                "left",
                "function_errors",
                "throttles",
                "in_flight",
                "max_in_flight",
            ),
            0,
        )
    )
    batches: deque = field(default_factory=lambda: deque(maxlen=200))

    def describe(self) -> dict:
        return {
            "uuid": self.uuid,
            "logical_id": self.logical_id,
            "function_name": self.function_name,
            "event_source_arn": self.queue_arn,
            "queue_url": self.queue_url,
            "fifo": self.fifo,
            "batch_size": self.batch_size,
            "report_batch_item_failures": self.report_batch_item_failures,
            "maximum_concurrency": self.maximum_concurrency,
            "pollers": self.concurrency,
            "stats": dict(self.stats),
            "batches": list(self.batches),
        }


class SqsEventSourcePoller:
    """Runs the template's SQS event source mappings as Lambda's SQS poller does (module docstring)."""

    name = "SqsEventSourcePoller"

    def __init__(self, endpoint: str, template: Template) -> None:
        self.endpoint = endpoint
        self.template = template
        self.mappings: list[Mapping] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ install

    def install(self, extra_env: dict[str, str] | None = None) -> list[Mapping]:
        """Creates the template's queues, the functions its mappings target (those not deployed
        yet) and the mappings; starts polling."""
        t = self.template
        create_queues(self.endpoint, t)
        lam = _client("lambda", self.endpoint)
        sqs = _client("sqs", self.endpoint)
        for lid, res in t.of_type("AWS::Lambda::EventSourceMapping"):
            props = res["Properties"]
            fn_id = _ref_id(props["FunctionName"])
            if fn_id and fn_id not in t.physical:
                create_function(self.endpoint, t, fn_id, extra_env)
            p = t.resolve(props)
            source = p["EventSourceArn"]
            if source.split(":")[2] != "sqs":
                raise EventSourceError(f"{lid}: only SQS event sources are run by the local stack, not {source}")
            queue_name = source.rsplit(":", 1)[-1]
            url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
            visibility = int(
                sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"][
                    "VisibilityTimeout"
                ]
            )
            fn = lam.get_function_configuration(FunctionName=p["FunctionName"])
            self._validate(lid, p, fn, visibility, queue_name.endswith(".fifo"))
            spec = {
                k: p[k]
                for k in ("BatchSize", "Enabled", "FunctionResponseTypes", "ScalingConfig")
                if k in p
            }
            created = lam.create_event_source_mapping(EventSourceArn=source, FunctionName=p["FunctionName"], **spec)
            _detach_moto_trigger(source, created["FunctionArn"])
            t.set_physical(lid, created["UUID"], Id=created["UUID"])
            maximum = (p.get("ScalingConfig") or {}).get("MaximumConcurrency")
            mapping = Mapping(
                uuid=created["UUID"],
                logical_id=lid,
                function_name=fn["FunctionName"],
                function_arn=fn["FunctionArn"],
                queue_arn=source,
                queue_url=url,
                fifo=queue_name.endswith(".fifo"),
                batch_size=int(p.get("BatchSize", 10)),
                report_batch_item_failures="ReportBatchItemFailures" in (p.get("FunctionResponseTypes") or []),
                concurrency=int(maximum) if maximum else DEFAULT_CONCURRENCY,
                maximum_concurrency=int(maximum) if maximum else None,
                enabled=str(p.get("Enabled", True)).lower() != "false",
            )
            self.mappings.append(mapping)
            LOG.info(
                "event source mapping %s: %s -> %s (batch %d, %d pollers)",
                lid,
                queue_name,
                mapping.function_name,
                mapping.batch_size,
                mapping.concurrency,
            )
        for m in self.mappings:
            if not m.enabled:
                continue
            for i in range(m.concurrency):
                th = threading.Thread(target=self._poll, args=(m,), name=f"sqs-esm-{m.function_name}-{i}", daemon=True)
                th.start()
                self._threads.append(th)
        return self.mappings

    @staticmethod
    def _validate(lid: str, p: dict, fn: dict, visibility: int, fifo: bool) -> None:
        if int(fn.get("Timeout", 3)) > visibility:
            raise EventSourceError(
                f"{lid}: Queue visibility timeout: {visibility} seconds is less than Function timeout: "
                f"{fn.get('Timeout')} seconds"
            )
        batch = int(p.get("BatchSize", 10))
        window = int(p.get("MaximumBatchingWindowInSeconds", 0) or 0)
        if fifo and window:
            raise EventSourceError(f"{lid}: Batching window is not supported for FIFO queues")
        if batch > MAX_BATCH_WITHOUT_WINDOW:
            raise EventSourceError(
                f"{lid}: a BatchSize above 10 (with a batching window) is not emulated by the local stack"
            )
        maximum = (p.get("ScalingConfig") or {}).get("MaximumConcurrency")
        if maximum is not None and not 2 <= int(maximum) <= 1000:
            raise EventSourceError(f"{lid}: ScalingConfig.MaximumConcurrency must be from 2 to 1000")

    def stop(self) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(POLL_WAIT_SECONDS + 5)

    # ------------------------------------------------------------------ polling

    def _poll(self, m: Mapping) -> None:
        creds = REGISTRY.register_function(m.function_name)  # the execution role's credentials
        sqs = _client("sqs", self.endpoint, creds)
        lam = _client("lambda", self.endpoint, read_timeout=900)
        while not self._stop.is_set():
            try:
                got = sqs.receive_message(
                    QueueUrl=m.queue_url,
                    MaxNumberOfMessages=min(m.batch_size, MAX_BATCH_WITHOUT_WINDOW),
                    WaitTimeSeconds=POLL_WAIT_SECONDS,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
            except (ClientError, BotoCoreError) as e:
                if self._stop.is_set():
                    return
                LOG.warning("%s: ReceiveMessage failed: %s", m.function_name, e)
                time.sleep(1)
                continue
            if not got:
                continue
            try:
                self._process(m, sqs, lam, got)
            except Exception:  # noqa: BLE001 - a poller never dies; the batch comes back after the visibility timeout
                LOG.exception("%s: batch not processed; it stays in the queue", m.function_name)
                time.sleep(1)

    def _process(self, m: Mapping, sqs: Any, lam: Any, messages: list[dict]) -> None:
        event = {"Records": [self._record(m, msg) for msg in messages]}
        ids = [msg["MessageId"] for msg in messages]
        entry: dict[str, Any] = {"time": time.time(), "message_ids": ids}
        with self._lock:
            m.stats["received"] += len(messages)
            m.stats["invocations"] += 1
            m.stats["in_flight"] += 1
            m.stats["max_in_flight"] = max(m.stats["max_in_flight"], m.stats["in_flight"])
        try:
            try:
                out = lam.invoke(
                    FunctionName=m.function_arn, InvocationType="RequestResponse", Payload=json.dumps(event).encode()
                )
            except (ClientError, BotoCoreError) as e:
                code = e.response.get("Error", {}).get("Code", "") if isinstance(e, ClientError) else type(e).__name__
                # Throttled or failed to invoke: the batch stays and comes back after the
                # visibility timeout (services-sqs-errorhandling.html, backoff strategy).
                with self._lock:
                    m.stats["throttles" if code == "TooManyRequestsException" else "function_errors"] += 1
                entry.update(outcome="invoke-error", error=code)
                self._left(m, entry, ids)
                time.sleep(1)
                return
            payload = out["Payload"].read()
            if out.get("FunctionError"):
                with self._lock:
                    m.stats["function_errors"] += 1
                entry.update(outcome="function-error", error=payload[:500].decode("utf-8", "replace"))
                self._left(m, entry, ids)
                return
            failed = self._failures(m, payload, ids)
            if failed is None:
                entry.update(outcome="invalid-response", response=payload[:500].decode("utf-8", "replace"))
                self._left(m, entry, ids)
                return
            done = [msg for msg in messages if msg["MessageId"] not in failed]
            self._delete(m, sqs, done)
            entry.update(outcome="ok", deleted=[msg["MessageId"] for msg in done], left=sorted(failed))
            with self._lock:
                m.stats["deleted"] += len(done)
                m.stats["left"] += len(failed)
                m.batches.append(entry)
        finally:
            with self._lock:
                m.stats["in_flight"] -= 1

    def _left(self, m: Mapping, entry: dict, ids: list[str]) -> None:
        entry["left"] = ids
        with self._lock:
            m.stats["left"] += len(ids)
            m.batches.append(entry)

    @staticmethod
    def _failures(m: Mapping, payload: bytes, ids: list[str]) -> set[str] | None:
        """The message IDs to leave in the queue, or None for "the whole batch failed"."""
        if not m.report_batch_item_failures:
            return set()
        try:
            answer = json.loads(payload or b"null")
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            return set()  # a null or empty response: complete success
        items = answer.get("batchItemFailures")
        if not items:
            return set()  # a null or empty list: complete success
        failed: set[str] = set()
        for item in items:
            identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
            if not isinstance(identifier, str) or not identifier or identifier not in ids:
                return None
            failed.add(identifier)
        return failed

    @staticmethod
    def _delete(m: Mapping, sqs: Any, messages: list[dict]) -> None:
        for i in range(0, len(messages), 10):
            chunk = messages[i : i + 10]
            out = sqs.delete_message_batch(
                QueueUrl=m.queue_url,
                Entries=[{"Id": str(n), "ReceiptHandle": msg["ReceiptHandle"]} for n, msg in enumerate(chunk)],
            )
            for f in out.get("Failed", []):
                LOG.warning("%s: message not deleted: %s", m.function_name, f)

    def _record(self, m: Mapping, msg: dict) -> dict:
        a = msg.get("Attributes", {})
        attributes = {
            k: a[k]
            for k in (
                "ApproximateReceiveCount",
                "SentTimestamp",
                "SenderId",
                "ApproximateFirstReceiveTimestamp",
                "SequenceNumber",
                "MessageGroupId",
                "MessageDeduplicationId",
            )
            if k in a
        }
        return {
            "messageId": msg["MessageId"],
            "receiptHandle": msg["ReceiptHandle"],
            "body": msg["Body"],
            "attributes": attributes,
            "messageAttributes": {
                name: {
                    "stringValue": v.get("StringValue"),
                    "binaryValue": v.get("BinaryValue"),
                    "stringListValues": [],
                    "binaryListValues": [],
                    "dataType": v.get("DataType"),
                }
                for name, v in (msg.get("MessageAttributes") or {}).items()
            },
            "md5OfBody": msg.get("MD5OfBody"),
            "eventSource": "aws:sqs",
            "eventSourceARN": m.queue_arn,
            "awsRegion": m.queue_arn.split(":")[3],
        }

    # ------------------------------------------------------------------ control

    def control_routes(self) -> dict:
        def mappings(body: Any, q: dict) -> tuple[int, Any]:
            with self._lock:
                return 200, {"mappings": [m.describe() for m in self.mappings]}

        return {("GET", "/_cordon/sqs/event-source-mappings"): mappings}


def _ref_id(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        ((k, v),) = value.items()
        if k == "Ref":
            return v
        if k == "Fn::GetAtt":
            return v[0] if isinstance(v, list) else v.split(".", 1)[0]
    return None


def _detach_moto_trigger(queue_arn: str, function_arn: str) -> None:
    """Takes the mapping off moto's queue, so that SendMessage no longer invokes the function
    itself (moto 5.2.5 ``Queue.add_message``); the poller runs the mapping instead."""
    from moto.sqs.models import sqs_backends

    _, _, _, region, account, name = queue_arn.split(":", 5)
    queue = sqs_backends[account][region].queues[name]
    queue.lambda_event_source_mappings.pop(function_arn, None)
