"""EventBridge on the local stack: the rules the CDK app deploys, applied to the events it is given.

moto 5.2.5 stores rules and targets but does not deliver events to a Step Functions target the way
EventBridge does (no role, no input transformer, no retry policy, no dead-letter queue), and its
pattern matcher does not descend into arrays of objects. This module is the bridge:

- **Rules** come from the synthesized template: every ``AWS::Events::Rule`` with an
  ``EventPattern``, with its targets as the template declares them (``InputTransformer``,
  ``RoleArn``, ``RetryPolicy``, ``DeadLetterConfig``). ``EventBridge.install`` creates what they
  need in moto (the execution role and the dead-letter queue, unless something else already
  created them), registers them with moto's own EventBridge (``PutRule``/``PutTargets``, so
  ``DescribeRule``/``ListTargetsByRule`` answer) and records each one's physical values in the
  ``Template``.
- **Events** come in through the real API, ``events:PutEvents`` (``PutEventsShim``), answered as
  PutEvents answers, including its refusal of ``aws.*`` sources; or, for events that only an AWS
  service may emit (GuardDuty findings...), through the control endpoint ``POST /_cordon/events``.
- **Matching** follows the event-pattern documentation (``compile_pattern``): exact values, prefix,
  suffix, anything-but, numeric, cidr, exists, wildcard, equals-ignore-case, ``$or``, arrays.
- **Delivery** is asynchronous, as on AWS: the target input is built (``Input``, ``InputPath`` or
  ``InputTransformer``), the target is called with the rule's role (STS AssumeRole, then the call
  with those credentials, so it shows in the request log and fault rules apply to it), failures
  are retried per ``RetryPolicy`` (times scaled down by ``CORDON_EVENTS_TIME_SCALE``, default 0.01)
  and finally sent to the ``DeadLetterConfig`` queue with EventBridge's message attributes.

Also here, because EventBridge's Step Functions target needs it: ``StartExecutionNameShim``.
StartExecution without a ``name`` gets a UUID from Step Functions; moto 5.2.5 names such an
execution ``None`` (and answers a second nameless start with the same input as the first).

Pure functions (``compile_pattern``, ``json_path``, ``render_input_transformer``,
``policy_decision``) have unit tests in ``integration-tests/test_eventbridge_units.py``.
"""

from __future__ import annotations

import copy
import fnmatch
import io
import ipaddress
import json
import logging
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .server import ControlError
from .wire import AwsRequest, Response, aws_error, json_response

LOG = logging.getLogger("local_aws.eventbridge")

# =============================================================================== event patterns
#
# https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-patterns.html
# https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-create-pattern-operators.html
# https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-patterns-arrays.html
# https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-patterns-null-values.html
# and the matching library EventBridge is built on, aws/event-ruler (README: "JSON Array
# Matching", "Caveat: Compiled rules and JSON keys with dots").
#
# moto's own matcher (moto/events/models.py ``EventPattern``) was read and not used: it does not
# descend into arrays of objects (a later Security Hub rule matches ``detail.findings.*``), treats
# ``true`` as a number for ``numeric``, and accepts malformed patterns (unknown operators,
# ``prefix`` lists) that PutRule refuses.


class InvalidEventPattern(ValueError):
    """What PutRule answers as ``InvalidEventPatternException``."""


_MISSING = object()


@dataclass(frozen=True)
class _Matcher:
    """One element of a field's value list: an exact value or an operator object."""

    kind: str  # exact | prefix | suffix | equals-ignore-case | wildcard | anything-but | numeric | cidr | exists
    arg: Any = None
    ignore_case: bool = False

    def accepts(self, value: Any) -> bool:
        """Whether a present leaf value satisfies this matcher (``exists`` is handled by the caller)."""
        k = self.kind
        if k == "exact":
            return _json_equal(self.arg, value)
        if k == "exists":
            return self.arg is True
        if k in ("prefix", "suffix", "equals-ignore-case", "wildcard"):
            return isinstance(value, str) and _string_op(k, self.arg, value, self.ignore_case)
        if k == "anything-but":
            # Matches any present value, null included, that is not excluded (null_value cases:
            # "anything-but" of a string matches a field whose value is null).
            op, values = self.arg
            if op == "exact":
                return not any(_json_equal(v, value) for v in values)
            if not isinstance(value, str):
                return True
            return not any(_string_op(op, v, value, op == "equals-ignore-case") for v in values)
        if k == "numeric":
            if not _is_number(value):
                return False  # "Numeric matching only works with values that are JSON numbers"
            return all(_NUMERIC_OPS[op](float(value), bound) for op, bound in self.arg)
        if k == "cidr":
            if not isinstance(value, str):
                return False
            try:
                return ipaddress.ip_address(value) in self.arg
            except ValueError:
                return False
        raise AssertionError(k)


_NUMERIC_OPS = {
    "<": lambda v, b: v < b,
    "<=": lambda v, b: v <= b,
    "=": lambda v, b: v == b,
    ">=": lambda v, b: v >= b,
    ">": lambda v, b: v > b,
}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value (an event's 300.0 matches a pattern's 300), never a bool
    for a number, a string never equals a number ("300" is not 300)."""
    if _is_number(a) and _is_number(b):
        return float(a) == float(b)
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b
    return type(a) is type(b) and a == b


def _string_op(kind: str, arg: str, value: str, ignore_case: bool) -> bool:
    if ignore_case:
        arg, value = arg.lower(), value.lower()
    if kind == "prefix":
        return value.startswith(arg)
    if kind == "suffix":
        return value.endswith(arg)
    if kind == "equals-ignore-case":
        return value.lower() == arg.lower()
    if kind == "wildcard":
        return _wildcard_regex(arg).fullmatch(value) is not None
    raise AssertionError(kind)


def _wildcard_regex(pattern: str) -> re.Pattern:
    """``*`` matches any run of characters (none included); ``\\*`` is a literal asterisk and
    ``\\\\`` a literal backslash; any other escape, and ``**``, are invalid (event-ruler README,
    "Wildcard matching")."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if i + 1 < len(pattern) and pattern[i + 1] in "*\\":
                out.append(re.escape(pattern[i + 1]))
                i += 2
                continue
            raise InvalidEventPattern(f"Invalid wildcard value {pattern!r}: backslash may only escape '*' or '\\'")
        if c == "*":
            if i + 1 < len(pattern) and pattern[i + 1] == "*":
                raise InvalidEventPattern(f"Consecutive wildcard characters at pos {i + 1}")
            out.append(".*")
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _string_arg(op: str, arg: Any, allow_list: bool = False) -> list[str]:
    if isinstance(arg, str):
        return [arg]
    if allow_list and isinstance(arg, list) and arg and all(isinstance(a, str) for a in arg):
        return list(arg)
    raise InvalidEventPattern(f"{op} match pattern must be a string{' or a list of strings' if allow_list else ''}")


def _compile_matcher(item: Any) -> _Matcher:
    if item is None or isinstance(item, (str, bool, int, float)):
        return _Matcher("exact", item)
    if isinstance(item, list):
        raise InvalidEventPattern("Match value must be String, number, true, false, or null")
    if not isinstance(item, dict) or len(item) != 1:
        raise InvalidEventPattern("An operator object must have exactly one operator")
    ((op, arg),) = item.items()
    if op in ("prefix", "suffix"):
        if isinstance(arg, dict):
            if set(arg) != {"equals-ignore-case"} or not isinstance(arg["equals-ignore-case"], str):
                raise InvalidEventPattern(f"{op} match pattern must be a string or an equals-ignore-case object")
            return _Matcher(op, arg["equals-ignore-case"], ignore_case=True)
        return _Matcher(op, _string_arg(op, arg)[0])
    if op == "equals-ignore-case":
        return _Matcher(op, _string_arg(op, arg)[0])
    if op == "wildcard":
        text = _string_arg(op, arg)[0]
        _wildcard_regex(text)  # validates
        return _Matcher(op, text)
    if op == "exists":
        if not isinstance(arg, bool):
            raise InvalidEventPattern("exists match pattern must be either true or false")
        return _Matcher(op, arg)
    if op == "cidr":
        try:
            return _Matcher(op, ipaddress.ip_network(_string_arg(op, arg)[0], strict=False))
        except ValueError as e:
            raise InvalidEventPattern(f"Malformed CIDR, one '/' required: {arg!r} ({e})") from None
    if op == "numeric":
        return _Matcher(op, _numeric_ranges(arg))
    if op == "anything-but":
        return _Matcher(op, _anything_but(arg))
    raise InvalidEventPattern(f"Unrecognized match type {op}")


def _numeric_ranges(arg: Any) -> tuple[tuple[str, float], ...]:
    """One comparison, or a lower bound (``>``/``>=``) then an upper bound (``<``/``<=``)."""
    if not isinstance(arg, list) or len(arg) not in (2, 4):
        raise InvalidEventPattern("Value of numeric must be an array of one or two comparisons")
    pairs = [(arg[i], arg[i + 1]) for i in range(0, len(arg), 2)]
    for op, bound in pairs:
        if op not in _NUMERIC_OPS or not _is_number(bound):
            raise InvalidEventPattern(f"Bad numeric comparison {op!r} {bound!r}")
    if len(pairs) == 2:
        (lo, _), (hi, _) = pairs
        if lo not in (">", ">=") or hi not in ("<", "<="):
            raise InvalidEventPattern("Bad numeric range: a lower bound then an upper bound are required")
    return tuple((op, float(bound)) for op, bound in pairs)


def _anything_but(arg: Any) -> tuple[str, tuple]:
    if isinstance(arg, dict):
        if len(arg) != 1:
            raise InvalidEventPattern("anything-but takes one nested operator")
        ((op, inner),) = arg.items()
        if op not in ("prefix", "suffix", "equals-ignore-case", "wildcard"):
            raise InvalidEventPattern(f"Unsupported anything-but pattern: {op}")
        values = _string_arg(op, inner, allow_list=True)
        if op in ("prefix", "suffix") and "" in values:
            raise InvalidEventPattern(f"Null {op} not allowed")
        if op == "wildcard":
            for v in values:
                _wildcard_regex(v)
        return op, tuple(values)
    values = arg if isinstance(arg, list) else [arg]
    if not values or any(v is None or isinstance(v, (bool, dict, list)) for v in values):
        raise InvalidEventPattern("Inside anything-but list, start|null|boolean is not supported.")
    if not (all(isinstance(v, str) for v in values) or all(_is_number(v) for v in values)):
        raise InvalidEventPattern("Inside anything-but list, mixed types are not supported.")
    return "exact", tuple(values)


@dataclass(frozen=True)
class EventPattern:
    """A compiled pattern: alternatives (from ``$or``), each a map of dotted field path to the
    matchers of that field's value list."""

    branches: tuple[tuple[tuple[str, tuple[_Matcher, ...]], ...], ...]
    source: dict

    def matches(self, event: Any) -> bool:
        if not isinstance(event, dict):
            return False
        leaves = _leaves(event)
        return any(_branch_matches(branch, leaves) for branch in self.branches)


def compile_pattern(pattern: dict | str) -> EventPattern:
    """Compiles (and validates, as PutRule does) an event pattern given as an object or JSON text
    (CloudFormation accepts both for ``EventPattern``)."""
    if isinstance(pattern, str):
        try:
            pattern = json.loads(pattern)
        except ValueError:
            raise InvalidEventPattern("Event pattern is not valid JSON") from None
    if not isinstance(pattern, dict):
        raise InvalidEventPattern("Event pattern must be a JSON object")
    branches = [tuple(sorted(b.items())) for b in _expand(pattern, "")]
    return EventPattern(branches=tuple(branches), source=copy.deepcopy(pattern))


def _expand(node: dict, prefix: str) -> list[dict[str, tuple[_Matcher, ...]]]:
    """The alternatives of an object of the pattern, with ``$or`` multiplied out."""
    alternatives: list[dict] = [{}]
    for key, value in node.items():
        if key == "$or":
            if not isinstance(value, list) or len(value) < 2 or not all(isinstance(v, dict) for v in value):
                raise InvalidEventPattern("$or must be an array of at least two objects")
            options = [alt for v in value for alt in _expand(v, prefix)]
            alternatives = [{**a, **o} for a in alternatives for o in options]
            continue
        path = f"{prefix}.{key}" if prefix else key  # event-ruler joins keys with "." (dots in keys too)
        if isinstance(value, dict):
            nested = _expand(value, path)
            alternatives = [{**a, **n} for a in alternatives for n in nested]
        elif isinstance(value, list):
            if not value:
                raise InvalidEventPattern("Empty arrays are not allowed")
            matchers = tuple(_compile_matcher(v) for v in value)
            alternatives = [{**a, path: a.get(path, ()) + matchers} for a in alternatives]
        else:
            raise InvalidEventPattern(f"'{key}' must be an object or an array")
    return alternatives


@dataclass(frozen=True)
class _Leaf:
    value: Any
    trail: tuple[tuple[int, int], ...]  # (array id, element index) for every array on the way


def _leaves(event: dict) -> dict[str, list[_Leaf]]:
    """Dotted path -> the leaf values (strings, numbers, booleans, null) found there. Arrays are
    "crushed out": their elements count as values of the parent field. Empty arrays and objects
    have no leaf (``exists`` is false for them)."""
    out: dict[str, list[_Leaf]] = {}
    ids = iter(range(1, 1 << 30))

    def walk(node: Any, path: str, trail: tuple) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}.{k}" if path else k, trail)
        elif isinstance(node, list):
            array_id = next(ids)
            for i, v in enumerate(node):
                walk(v, path, trail + ((array_id, i),))
        else:
            out.setdefault(path, []).append(_Leaf(node, trail))

    walk(event, "", ())
    return out


def _consistent(a: tuple, b: tuple) -> bool:
    """Two leaves may be matched together unless they lie in different elements of one array
    (event-ruler ``rulesForJSONEvent``: "will refuse to recognize any match in which any two
    fields are within JSON objects that are in different elements of the same array")."""
    elements = dict(a)
    return all(elements.get(array_id, index) == index for array_id, index in b)


def _branch_matches(branch: tuple, leaves: dict[str, list[_Leaf]]) -> bool:
    choices: list[list[_Leaf]] = []
    for path, matchers in branch:
        present = leaves.get(path, [])
        if not present and any(m.kind == "exists" and m.arg is False for m in matchers):
            continue  # satisfied by absence ("exists": false); nothing to keep consistent
        candidates = [leaf for leaf in present if any(m.accepts(leaf.value) for m in matchers)]
        if not candidates:
            return False
        choices.append(candidates)
    choices.sort(key=len)

    def pick(i: int, chosen: list[tuple]) -> bool:
        if i == len(choices):
            return True
        return any(
            pick(i + 1, chosen + [leaf.trail]) for leaf in choices[i] if all(_consistent(leaf.trail, t) for t in chosen)
        )

    return pick(0, [])


# =============================================================================== JSON paths
#
# InputPath and InputPathsMap values: "EventBridge does not support all JSON Path syntax ...
# Supported syntax includes: dot notation (for example, $.detail), dashes, underscores,
# alphanumeric characters, array indices, wildcards (*), forward slashes"
# (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-transform-target-input.html).

_PATH_TOKEN = re.compile(r"\.([^.\[\]]+)|\[(\d+|\*)\]")


def json_path(document: Any, path: str) -> tuple[bool, Any]:
    """``(found, value)`` for a path such as ``$.detail.resource.instanceDetails.instanceId``,
    ``$.resources[0]`` or ``$.detail.findings[*].Id`` (a wildcard gives the list of matches)."""
    if not isinstance(path, str) or not path.startswith("$"):
        raise ValueError(f"not a JSON path: {path!r}")
    rest, tokens, pos = path[1:], [], 0
    while pos < len(rest):
        m = _PATH_TOKEN.match(rest, pos)
        if not m:
            raise ValueError(f"unsupported JSON path syntax: {path!r}")
        tokens.append(m.group(1) if m.group(1) is not None else ("[]", m.group(2)))
        pos = m.end()
    current, wild = [document], False
    for tok in tokens:
        nxt = []
        for node in current:
            if isinstance(tok, tuple):
                if not isinstance(node, list):
                    continue
                if tok[1] == "*":
                    nxt.extend(node)
                    wild = True
                elif int(tok[1]) < len(node):
                    nxt.append(node[int(tok[1])])
            elif tok == "*":
                wild = True
                nxt.extend(node.values() if isinstance(node, dict) else node if isinstance(node, list) else [])
            elif isinstance(node, dict) and tok in node:
                nxt.append(node[tok])
        current = nxt
    if wild:
        return (bool(current), current)
    return (True, current[0]) if current else (False, None)


# =============================================================================== input transformer
#
# https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-transform-target-input.html and
# https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_InputTransformer.html:
# - a placeholder outside quotes takes the value as JSON (a string arrives quoted and escaped, an
#   object as an object); inside quotes it takes the value's text: a string as is ("EventBridge
#   doesn't escape values extracted by Input Path"), an object or array with its quotes removed
#   ({acc_id:...,sf_id:...}, [HIGH]);
# - a path that is not in the event gives an empty value ("" outside quotes);
# - a placeholder cannot be an object key; every placeholder must be a key of InputPathsMap or a
#   predefined variable, else PutTargets answers "InputTemplate for target <id> contains invalid
#   placeholder <name>.";
# - an object template whose result is not valid JSON is not delivered;
# - "The JSON that is passed to the target is minified".

PREDEFINED = (
    "aws.events.rule-arn",
    "aws.events.rule-name",
    "aws.events.event.ingestion-time",
    "aws.events.event",
    "aws.events.event.json",
)
_PLACEHOLDER = re.compile(r"<(aws\.events\.[a-z.\-]+|[A-Za-z0-9_\-]+)>")
_PATHS_MAP_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")


class InputTransformerError(ValueError):
    """The transformer is refused (PutTargets ValidationException) or its output is unusable."""


def validate_input_transformer(target_id: str, transformer: dict) -> None:
    """What PutTargets checks of an InputTransformer."""
    template = transformer.get("InputTemplate")
    paths = transformer.get("InputPathsMap") or {}
    if not isinstance(template, str) or not 1 <= len(template) <= 8192:
        raise InputTransformerError(f"InputTemplate for target {target_id} must be a string of 1 to 8192 characters.")
    if len(paths) > 100:
        raise InputTransformerError("InputPathsMap may have at most 100 entries.")
    for key, path in paths.items():
        if not _PATHS_MAP_KEY.match(key) or key.lower().startswith("aws."):
            raise InputTransformerError(f"InputPathsMap key {key!r} is not valid.")
        try:
            json_path({}, path)
        except ValueError as e:
            raise InputTransformerError(str(e)) from None
    for m, in_string in _placeholders(template):
        name = m.group(1)
        if name not in paths and name not in PREDEFINED:
            raise InputTransformerError(f"InputTemplate for target {target_id} contains invalid placeholder {name}.")
        if not in_string and template.lstrip().startswith("{") and template[m.end() :].lstrip().startswith(":"):
            raise InputTransformerError(f"InputTemplate for target {target_id}: a placeholder cannot be an object key.")


def _placeholders(template: str) -> Iterator[tuple[re.Match, bool]]:
    """Each placeholder with whether it stands inside a JSON string of the template."""
    in_string, escaped, i = False, False, 0
    while i < len(template):
        c = template[i]
        if in_string and escaped:
            escaped = False
        elif in_string and c == "\\":
            escaped = True
        elif c == '"':
            in_string = not in_string
        elif c == "<":
            m = _PLACEHOLDER.match(template, i)
            if m:
                yield m, in_string
                i = m.end()
                continue
        i += 1


def _unquoted(value: Any) -> str:
    """An object or array as the text EventBridge puts inside quotes: JSON without its quotes."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_unquoted(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_unquoted(v) for v in value) + "]"
    return _text(value)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def render_input_transformer(
    transformer: dict, event: dict, rule_arn: str, rule_name: str, ingestion_time: str | None = None
) -> str:
    """The target input an InputTransformer makes of ``event``. Raises ``InputTransformerError``
    when an object template does not come out as valid JSON (EventBridge does not deliver it)."""
    template = transformer["InputTemplate"]
    values: dict[str, tuple[bool, Any]] = {}
    for key, path in (transformer.get("InputPathsMap") or {}).items():
        values[key] = json_path(event, path)
    without_detail = {k: v for k, v in event.items() if k != "detail"}
    if "detail-type" in without_detail:
        without_detail["detailType"] = without_detail.pop("detail-type")
    values.update(
        {
            "aws.events.rule-arn": (True, rule_arn),
            "aws.events.rule-name": (True, rule_name),
            "aws.events.event.ingestion-time": (True, ingestion_time or event.get("time")),
            "aws.events.event": (True, without_detail),
            "aws.events.event.json": (True, event),
        }
    )
    # A template that is neither JSON nor a quoted string ("<instance> is in state <status>", the
    # API reference's first example) is text: every placeholder takes the value's text.
    text = not template.lstrip().startswith(("{", "[", '"'))
    out, last = [], 0
    for m, in_string in _placeholders(template):
        in_string = in_string or text
        found, value = values[m.group(1)]
        out.append(template[last : m.start()])
        if in_string:
            out.append(_unquoted(value) if found else "")
        else:
            out.append(json.dumps(value if found else "", ensure_ascii=False, separators=(",", ":")))
        last = m.end()
    out.append(template[last:])
    rendered = "".join(out)
    if template.lstrip().startswith(("{", "[")):
        try:
            return json.dumps(json.loads(rendered), ensure_ascii=False, separators=(",", ":"))
        except ValueError:
            raise InputTransformerError(
                f"the InputTemplate does not give valid JSON for this event: {rendered[:300]}"
            ) from None
    return rendered


def target_input(target: Target, event: dict, rule_arn: str, rule_name: str) -> str:
    """``Input`` (as is), ``InputPath`` (the selected part, as JSON), ``InputTransformer``, or the
    whole event (https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_Target.html)."""
    if target.input is not None:
        return target.input
    if target.input_path is not None:
        found, value = json_path(event, target.input_path)
        if not found:
            raise InputTransformerError(f"InputPath {target.input_path} selects nothing in this event")
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if target.input_transformer is not None:
        return render_input_transformer(target.input_transformer, event, rule_arn, rule_name)
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


# =============================================================================== permissions
#
# EventBridge needs the rule's role to allow the target call (identity policy, and a trust policy
# that lets events.amazonaws.com assume it), and a resource policy on an SQS dead-letter queue, SNS
# topic or Lambda function that lets events.amazonaws.com use it; without them the event "is sent
# directly to the DLQ" with no retry (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-dlq.html,
# https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html).
# Evaluation as IAM does it: an explicit Deny wins, else an Allow is needed
# (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html);
# conditions with the operators below, a key missing from the request context never matches a
# positive operator (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html).

_COND_OPS = {
    "StringEquals": (lambda v, p: v == p, False),
    "StringNotEquals": (lambda v, p: v == p, True),
    "StringEqualsIgnoreCase": (lambda v, p: v.lower() == p.lower(), False),
    "StringLike": (lambda v, p: fnmatch.fnmatchcase(v, p), False),
    "StringNotLike": (lambda v, p: fnmatch.fnmatchcase(v, p), True),
    "ArnEquals": (lambda v, p: fnmatch.fnmatchcase(v, p), False),
    "ArnLike": (lambda v, p: fnmatch.fnmatchcase(v, p), False),
    "ArnNotEquals": (lambda v, p: fnmatch.fnmatchcase(v, p), True),
    "ArnNotLike": (lambda v, p: fnmatch.fnmatchcase(v, p), True),
    "Bool": (lambda v, p: v.lower() == str(p).lower(), False),
}


def _as_list(v: Any) -> list:
    return v if isinstance(v, list) else [v]


def _wild(value: str, patterns: Any, case: bool = True) -> bool:
    for p in _as_list(patterns):
        if case and fnmatch.fnmatchcase(value, p):
            return True
        if not case and fnmatch.fnmatchcase(value.lower(), str(p).lower()):
            return True
    return False


def _condition_holds(condition: dict, context: dict[str, str]) -> bool:
    ctx = {k.lower(): v for k, v in context.items()}
    for operator, tests in condition.items():
        if_exists = operator.endswith("IfExists")
        op = operator.removesuffix("IfExists")
        for key, expected in tests.items():
            actual = ctx.get(key.lower())
            if op == "Null":
                if (actual is None) != (str(expected).lower() == "true"):
                    return False
                continue
            if op not in _COND_OPS:
                LOG.warning(
                    "policy condition operator %s is not evaluated by the local stack: statement ignored", operator
                )
                return False
            if actual is None:
                if not (if_exists or _COND_OPS[op][1]):
                    return False
                continue
            test, negated = _COND_OPS[op]
            hit = any(test(actual, str(p)) for p in _as_list(expected))
            if hit == negated:
                return False
    return True


def policy_decision(
    documents: list[dict],
    action: str,
    resource: str,
    context: dict[str, str] | None = None,
    service_principal: str | None = None,
) -> str:
    """``"allow"``, ``"deny"`` (explicit) or ``"implicit-deny"`` for one request. With
    ``service_principal`` the documents are resource policies and their ``Principal`` must name it."""
    context = context or {}
    allowed = False
    for doc in documents:
        for st in _as_list(doc.get("Statement", [])):
            if service_principal is not None:
                principal = st.get("Principal")
                if principal != "*" and not (
                    isinstance(principal, dict)
                    and (
                        "*" in _as_list(principal.get("AWS", []))
                        or service_principal in _as_list(principal.get("Service", []))
                    )
                ):
                    continue
            if "Action" in st and not _wild(action, st["Action"], case=False):
                continue
            if "NotAction" in st and _wild(action, st["NotAction"], case=False):
                continue
            if "Resource" in st and not _wild(resource, st["Resource"]):
                continue
            if "NotResource" in st and _wild(resource, st["NotResource"]):
                continue
            if "Condition" in st and not _condition_holds(st["Condition"], context):
                continue
            if st.get("Effect") == "Deny":
                return "deny"
            allowed = allowed or st.get("Effect") == "Allow"
    return "allow" if allowed else "implicit-deny"


# =============================================================================== rules and targets


@dataclass
class RetryPolicy:
    # Defaults: "By default, EventBridge retries sending the event for 24 hours and up to 185 times"
    # (https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_RetryPolicy.html).
    maximum_retry_attempts: int = 185
    maximum_event_age_seconds: int = 86400


@dataclass
class Target:
    id: str
    arn: str
    role_arn: str | None = None
    input: str | None = None
    input_path: str | None = None
    input_transformer: dict | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    dead_letter_arn: str | None = None
    sqs_parameters: dict | None = None

    @property
    def service(self) -> str:
        return self.arn.split(":")[2]


@dataclass
class Rule:
    logical_id: str
    name: str
    arn: str
    bus: str
    pattern: EventPattern
    targets: list[Target]
    enabled: bool = True
    description: str = ""

    def describe(self) -> dict:
        return {
            "logical_id": self.logical_id,
            "name": self.name,
            "arn": self.arn,
            "event_bus": self.bus,
            "state": "ENABLED" if self.enabled else "DISABLED",
            "event_pattern": self.pattern.source,
            "targets": [
                {
                    "id": t.id,
                    "arn": t.arn,
                    "role_arn": t.role_arn,
                    "dead_letter_arn": t.dead_letter_arn,
                    "retry_policy": {
                        "MaximumRetryAttempts": t.retry.maximum_retry_attempts,
                        "MaximumEventAgeInSeconds": t.retry.maximum_event_age_seconds,
                    },
                }
                for t in self.targets
            ],
        }


SUPPORTED_TARGETS = ("states", "sns", "lambda", "sqs")


def _cfn_name(stack: str, logical_id: str, limit: int = 64) -> str:
    """The name of a resource the template does not name. CloudFormation generates
    ``<stack>-<logical id>-<random>`` (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-properties-name.html);
    the local stack leaves the random part out, as ``physical_ids.generated_name`` does, so that
    names are the same in every run."""
    return f"{stack}-{logical_id}"[:limit]


# =============================================================================== the event bus


@dataclass
class Delivery:
    event_id: str
    rule: str
    rule_arn: str
    target_id: str
    target_arn: str
    status: str = "pending"  # pending | delivered | failed | dropped
    attempts: int = 0
    input: str | None = None
    result: dict | None = None
    error_code: str | None = None
    error_message: str | None = None
    exhausted_retry_condition: str | None = None
    dead_letter: dict | None = None
    started: float = field(default_factory=time.time)
    ended: float | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class DeliveryError(Exception):
    def __init__(self, code: str, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.code, self.message, self.retryable = code, message, retryable


class EventBridge:
    """The default event bus of the local account: rules from the template, delivery to targets."""

    SERVICE_PRINCIPAL = "events.amazonaws.com"

    def __init__(self, endpoint: str, template: Any, time_scale: float | None = None) -> None:
        self.endpoint = endpoint
        self.template = template
        self.region = template.region
        self.account = template.account
        self.time_scale = (
            float(os.environ.get("CORDON_EVENTS_TIME_SCALE", "0.01")) if time_scale is None else time_scale
        )
        self.rules: list[Rule] = []
        self._deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ install

    def install(self) -> list[Rule]:
        """Creates every rule of the template in moto, with what its targets need: the role and the
        dead-letter queue (unless something already created them), the queue's policy and the
        Lambda permissions that name the rule, in CloudFormation's order (a resource after those it
        refers to)."""
        from .deploy import client

        iam, sqs, events, lam = (client(s, self.endpoint) for s in ("iam", "sqs", "events", "lambda"))
        t = self.template
        rules = []
        for logical_id, res in t.of_type("AWS::Events::Rule"):
            props = res["Properties"]
            if "EventPattern" not in props:
                LOG.warning("rule %s has no EventPattern (schedule rules are not run locally): skipped", logical_id)
                continue
            name = props.get("Name") or _cfn_name(t.stack_name, logical_id)
            bus = props.get("EventBusName", "default")
            arn = (
                f"arn:aws:events:{self.region}:{self.account}:rule/{name}"
                if bus == "default"
                else (f"arn:aws:events:{self.region}:{self.account}:rule/{bus}/{name}")
            )
            # Ref of a rule is its name (on the default bus), GetAtt Arn its ARN
            # (https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-events-rule.html).
            t.set_physical(logical_id, name, Arn=arn)
            for target in props.get("Targets", []):
                role_id = _getatt_id(target.get("RoleArn"))
                if role_id and role_id not in t.physical:
                    self._create_role(iam, role_id)
                dlq_id = _getatt_id((target.get("DeadLetterConfig") or {}).get("Arn"))
                if dlq_id and dlq_id not in t.physical:
                    self._create_queue(sqs, dlq_id)
            rules.append((logical_id, name, arn, bus, props))
        self._queue_policies(sqs)
        self._lambda_permissions(lam)
        for logical_id, name, arn, bus, props in rules:
            resolved = t.resolve(props)
            pattern = compile_pattern(resolved["EventPattern"])
            targets = [self._target(logical_id, raw) for raw in resolved.get("Targets", [])]
            rule = Rule(
                logical_id,
                name,
                arn,
                bus,
                pattern,
                targets,
                resolved.get("State", "ENABLED") == "ENABLED",
                resolved.get("Description", ""),
            )
            events.put_rule(
                Name=name,
                EventPattern=json.dumps(pattern.source),
                State=resolved.get("State", "ENABLED"),
                Description=rule.description,
            )
            events.put_targets(Rule=name, Targets=[_api_target(raw) for raw in resolved.get("Targets", [])])
            self.rules.append(rule)
            LOG.info("event rule %s (%s): %d target(s)", name, logical_id, len(targets))
        return self.rules

    def _lambda_permissions(self, lam: Any) -> None:
        """The template's ``AWS::Lambda::Permission`` resources for event rules (the resource policy
        that lets events.amazonaws.com invoke a function, from this rule only), as AddPermission
        (https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-lambda-permission.html)."""
        t = self.template
        for logical_id, res in t.of_type("AWS::Lambda::Permission"):
            props = t.resolve(res["Properties"])
            if props.get("Principal") != self.SERVICE_PRINCIPAL or "local:" in json.dumps(props):
                continue
            kwargs = {
                "FunctionName": props["FunctionName"],
                "StatementId": logical_id[:100],
                "Action": props["Action"],
                "Principal": props["Principal"],
            }
            for key in ("SourceArn", "SourceAccount"):
                if props.get(key):
                    kwargs[key] = props[key]
            lam.add_permission(**kwargs)
            t.set_physical(logical_id, logical_id)

    def _target(self, rule_id: str, raw: dict) -> Target:
        given = [k for k in ("Input", "InputPath", "InputTransformer") if k in raw]
        if len(given) > 1:
            # PutTargets: "Only one of Input, InputPath, or InputTransformer must be provided for target <id>."
            raise InputTransformerError(
                f"Only one of Input, InputPath, or InputTransformer must be provided for target {raw['Id']}."
            )
        if "InputTransformer" in raw:
            validate_input_transformer(raw["Id"], raw["InputTransformer"])
        target = Target(
            id=raw["Id"],
            arn=raw["Arn"],
            role_arn=raw.get("RoleArn"),
            input=raw.get("Input"),
            input_path=raw.get("InputPath"),
            input_transformer=raw.get("InputTransformer"),
            dead_letter_arn=(raw.get("DeadLetterConfig") or {}).get("Arn"),
            sqs_parameters=raw.get("SqsParameters"),
        )
        rp = raw.get("RetryPolicy") or {}
        target.retry = RetryPolicy(
            int(rp.get("MaximumRetryAttempts", 185)), int(rp.get("MaximumEventAgeInSeconds", 86400))
        )
        if target.service not in SUPPORTED_TARGETS:
            raise ValueError(
                f"rule {rule_id}: target {target.arn} ({target.service}) is not delivered by the local stack"
            )
        if target.arn.startswith("local:"):
            raise ValueError(
                f"rule {rule_id}: target {raw['Id']} refers to a resource the local stack did not create: {target.arn}"
            )
        return target

    def _create_role(self, iam: Any, logical_id: str) -> None:
        """The rule's role as the template declares it: path, trust policy and the inline policies
        (``AWS::IAM::Policy`` resources that name it)."""
        t = self.template
        props = t.resources[logical_id]["Properties"]
        name = props.get("RoleName") or _cfn_name(t.stack_name, logical_id)
        role = iam.create_role(
            RoleName=name,
            Path=props.get("Path", "/"),
            AssumeRolePolicyDocument=json.dumps(t.resolve(props["AssumeRolePolicyDocument"])),
            Description=props.get("Description", ""),
        )["Role"]
        t.set_physical(logical_id, name, Arn=role["Arn"], RoleId=role["RoleId"])
        for pid, pres in t.of_type("AWS::IAM::Policy"):
            if {"Ref": logical_id} in pres["Properties"].get("Roles", []):
                iam.put_role_policy(
                    RoleName=name,
                    PolicyName=pres["Properties"]["PolicyName"],
                    PolicyDocument=json.dumps(t.resolve(pres["Properties"]["PolicyDocument"])),
                )
        for inline in props.get("Policies", []):
            iam.put_role_policy(
                RoleName=name,
                PolicyName=inline["PolicyName"],
                PolicyDocument=json.dumps(t.resolve(inline["PolicyDocument"])),
            )

    def _create_queue(self, sqs: Any, logical_id: str) -> None:
        t = self.template
        props = t.resources[logical_id]["Properties"]
        name = props.get("QueueName") or _cfn_name(t.stack_name, logical_id, limit=80)
        attrs = {
            k: str(props[k]) for k in ("MessageRetentionPeriod", "VisibilityTimeout", "DelaySeconds") if k in props
        }
        url = sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        # Ref of a queue is its URL; GetAtt Arn, QueueName and QueueUrl
        # (https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-sqs-queue.html).
        t.set_physical(logical_id, url, Arn=arn, QueueName=name, QueueUrl=url)

    def _queue_policies(self, sqs: Any) -> None:
        """Each template queue policy on the queues the local stack knows (resolved once the rule
        ARN it names is recorded)."""
        t = self.template
        for _, pres in t.of_type("AWS::SQS::QueuePolicy"):
            doc = t.resolve(pres["Properties"]["PolicyDocument"])
            if "local:" in json.dumps(doc):
                continue
            for q in pres["Properties"]["Queues"]:
                url = t.resolve(q)
                if not str(url).startswith("local:"):
                    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(doc)})

    # ------------------------------------------------------------------ events in

    def put(self, event: dict) -> list[str]:
        """Matches ``event`` against the enabled rules of its bus and starts the deliveries;
        returns the names of the rules that matched."""
        matched = []
        for rule in self.rules:
            if rule.enabled and rule.bus == event.get("_bus", "default") and rule.pattern.matches(_public(event)):
                matched.append(rule.name)
                for target in rule.targets:
                    self._start(rule, target, _public(event))
        return matched

    def _start(self, rule: Rule, target: Target, event: dict) -> None:
        d = Delivery(
            event_id=event["id"], rule=rule.name, rule_arn=rule.arn, target_id=target.id, target_arn=target.arn
        )
        with self._lock:
            self._deliveries.append(d)
        th = threading.Thread(
            target=self._deliver, args=(rule, target, event, d), name=f"events-{rule.name}-{target.id}", daemon=True
        )
        th.start()
        self._threads = [x for x in self._threads if x.is_alive()] + [th]

    def deliveries(self, event_id: str | None = None) -> list[dict]:
        with self._lock:
            return [d.to_dict() for d in self._deliveries if event_id in (None, d.event_id)]

    def clear_deliveries(self) -> None:
        with self._lock:
            self._deliveries = [d for d in self._deliveries if d.status == "pending"]

    # ------------------------------------------------------------------ delivery

    def _deliver(self, rule: Rule, target: Target, event: dict, d: Delivery) -> None:
        try:
            d.input = target_input(target, event, rule.arn, rule.name)
        except InputTransformerError as e:
            # Not delivered (an object template that does not give JSON is "silently ignored").
            self._finish(d, "dropped", code="INVALID_INPUT", message=str(e))
            return
        # Retries: "exponential back off and jitter" up to MaximumRetryAttempts and
        # MaximumEventAgeInSeconds (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-retry-policy.html).
        # Local time runs at ``time_scale``: 1 s base, 60 s cap, so 0.01 s and 0.6 s by default.
        age_limit = target.retry.maximum_event_age_seconds * self.time_scale
        started = time.monotonic()
        while True:
            d.attempts += 1
            try:
                d.result = self._invoke(rule, target, d.input)
                self._finish(d, "delivered")
                return
            except DeliveryError as e:
                d.error_code, d.error_message = e.code, e.message
                if not e.retryable:
                    break
                if d.attempts > target.retry.maximum_retry_attempts:
                    d.exhausted_retry_condition = "MaximumRetryAttempts"
                    break
                delay = random.uniform(0, min(60.0, 2.0 ** (d.attempts - 1))) * self.time_scale
                if time.monotonic() - started + delay > age_limit:
                    d.exhausted_retry_condition = "MaximumEventAgeInSeconds"
                    break
                time.sleep(delay)
        if target.dead_letter_arn:
            d.dead_letter = self._dead_letter(rule, target, event, d)
        self._finish(d, "failed", code=d.error_code, message=d.error_message)

    def _finish(self, d: Delivery, status: str, code: str | None = None, message: str | None = None) -> None:
        d.status, d.ended = status, time.time()
        if code:
            d.error_code, d.error_message = code, message
        LOG.info(
            "event %s rule %s target %s: %s after %d attempt(s)%s",
            d.event_id,
            d.rule,
            d.target_id,
            status,
            d.attempts,
            f" ({d.error_code}: {d.error_message})" if d.error_code and status != "delivered" else "",
        )

    def _session(self, target: Target):
        """boto3 clients with the rule role's credentials (STS AssumeRole, as EventBridge does),
        with the SDK's own retries off: the target's RetryPolicy is the only retry."""
        import boto3
        from botocore.config import Config

        from . import ACCESS_KEY, SECRET_KEY

        config = Config(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=30)
        base = dict(endpoint_url=self.endpoint, region_name=self.region, config=config)
        if not target.role_arn:
            return lambda service: boto3.client(
                service, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, **base
            )
        role = _moto_role(target.role_arn)
        if role is None:
            raise DeliveryError("NO_PERMISSIONS", f"Role {target.role_arn} does not exist", retryable=False)
        trust = policy_decision(
            [_doc(role.assume_role_policy_document)],
            "sts:AssumeRole",
            target.role_arn,
            service_principal=self.SERVICE_PRINCIPAL,
        )
        if trust != "allow":
            raise DeliveryError(
                "NO_PERMISSIONS", f"{self.SERVICE_PRINCIPAL} is not trusted by role {target.role_arn}", retryable=False
            )
        sts = boto3.client("sts", aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, **base)
        creds = sts.assume_role(RoleArn=target.role_arn, RoleSessionName=f"events-{uuid.uuid4().hex[:16]}")[
            "Credentials"
        ]
        try:
            # The call is then made with the credentials that identify the template role in the
            # request log (principals.py), so the action-coverage check holds it to that role.
            from .principals import REGISTRY

            own = REGISTRY.credentials_of_role_arn(target.role_arn)
            creds = {
                "AccessKeyId": own["AWS_ACCESS_KEY_ID"],
                "SecretAccessKey": own["AWS_SECRET_ACCESS_KEY"],
                "SessionToken": own["AWS_SESSION_TOKEN"],
            }
        except ImportError:
            pass
        return lambda service: boto3.client(
            service,
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            **base,
        )

    def _identity_allows(self, target: Target, action: str, resource: str) -> None:
        if not target.role_arn:
            return
        role = _moto_role(target.role_arn)
        docs = [_doc(p) for p in getattr(role, "policies", {}).values()]
        for managed in getattr(role, "managed_policies", {}).values():
            docs += [_doc(v.document) for v in getattr(managed, "versions", []) if v.is_default_version]
        decision = policy_decision(docs, action, resource, context={"aws:SecureTransport": "true"})
        if decision != "allow":
            raise DeliveryError(
                "NO_PERMISSIONS",
                f"Role {target.role_arn} is not authorized to perform {action} on {resource} ({decision})",
                retryable=False,
            )

    def _invoke(self, rule: Rule, target: Target, payload: str) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            clients = self._session(target)
            if target.service == "states":
                # https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-targets.html: a state
                # machine target is started with StartExecution and the event (or transformed
                # input) as its input; EventBridge gives no name, so Step Functions makes a UUID.
                self._identity_allows(target, "states:StartExecution", target.arn)
                out = clients("stepfunctions").start_execution(stateMachineArn=target.arn, input=payload)
                return {"executionArn": out["executionArn"]}
            if target.service == "sns":
                self._resource_allows(
                    clients("sns").get_topic_attributes(TopicArn=target.arn)["Attributes"].get("Policy"),
                    "sns:Publish",
                    target.arn,
                    rule,
                )
                return {"MessageId": clients("sns").publish(TopicArn=target.arn, Message=payload)["MessageId"]}
            if target.service == "sqs":
                return self._send_to_queue(clients, rule, target, payload)
            if target.service == "lambda":
                lam = clients("lambda")
                try:
                    policy = lam.get_policy(FunctionName=target.arn)["Policy"]
                except ClientError:
                    policy = None
                self._resource_allows(policy, "lambda:InvokeFunction", target.arn, rule)
                # EventBridge invokes Lambda asynchronously
                # (https://docs.aws.amazon.com/lambda/latest/dg/services-cloudwatchevents.html).
                out = lam.invoke(FunctionName=target.arn, InvocationType="Event", Payload=payload.encode())
                return {"StatusCode": out["StatusCode"]}
        except ClientError as e:
            raise _classify(e) from None
        except BotoCoreError as e:
            raise DeliveryError("CONNECTION_FAILURE", str(e), retryable=True) from None
        raise DeliveryError("SDK_CLIENT_ERROR", f"unsupported target {target.arn}", retryable=False)

    def _send_to_queue(self, clients: Any, rule: Rule, target: Target, payload: str) -> dict:
        """An SQS target: the event (or transformed input) becomes one message
        (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-targets.html). EventBridge
        sends as the service, so the queue policy must let events.amazonaws.com send from this rule
        (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html#eb-sqs-permissions).
        A FIFO queue needs ``SqsParameters.MessageGroupId`` and content-based deduplication ("If
        you specify an SQS FIFO queue as a target, the queue must have content-based deduplication
        enabled", https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_SqsParameters.html):
        without them the message is refused as a client error, not retried."""
        from botocore.exceptions import ClientError

        sqs = clients("sqs")
        _, _, _, _, account, name = target.arn.split(":", 5)
        url = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]).get("Attributes", {})
        self._resource_allows(attrs.get("Policy"), "sqs:SendMessage", target.arn, rule)
        kwargs: dict[str, Any] = {"QueueUrl": url, "MessageBody": payload}
        group = (target.sqs_parameters or {}).get("MessageGroupId")
        if name.endswith(".fifo"):
            if not group:
                raise DeliveryError(
                    "SDK_CLIENT_ERROR", f"target {target.id}: a FIFO queue needs SqsParameters.MessageGroupId", False
                )
            if attrs.get("ContentBasedDeduplication") != "true":
                raise DeliveryError(
                    "SDK_CLIENT_ERROR",
                    f"target {target.id}: a FIFO queue target needs content-based deduplication",
                    False,
                )
            kwargs["MessageGroupId"] = group
        try:
            out = sqs.send_message(**kwargs)
        except ClientError as e:
            raise _classify(e) from None
        return {"MessageId": out["MessageId"], "QueueUrl": url}

    def _resource_allows(self, policy: str | None, action: str, resource: str, rule: Rule) -> None:
        ctx = {"aws:SourceArn": rule.arn, "aws:SourceAccount": self.account, "aws:SecureTransport": "true"}
        decision = policy_decision(
            [_doc(policy)] if policy else [], action, resource, ctx, service_principal=self.SERVICE_PRINCIPAL
        )
        if decision != "allow":
            raise DeliveryError(
                "NO_PERMISSIONS",
                f"{self.SERVICE_PRINCIPAL} is not authorized to perform {action} on {resource}",
                retryable=False,
            )

    def _dead_letter(self, rule: Rule, target: Target, event: dict, d: Delivery) -> dict:
        """The original event into the target's DLQ, with EventBridge's message attributes:
        RULE_ARN, TARGET_ARN, ERROR_CODE, ERROR_MESSAGE, EXHAUSTED_RETRY_CONDITION, RETRY_ATTEMPTS
        (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-dlq.html). The queue's
        policy must let events.amazonaws.com send from this rule, else the event is lost
        (InvocationsFailedToBeSentToDLQ)."""
        from . import ACCESS_KEY, SECRET_KEY
        import boto3

        queue_arn = target.dead_letter_arn
        out: dict[str, Any] = {"queue_arn": queue_arn}
        sqs = boto3.client(
            "sqs",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )
        try:
            _, _, _, region, account, name = queue_arn.split(":", 5)
            url = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
            policy = (
                sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"]).get("Attributes", {}).get("Policy")
            )
            self._resource_allows(policy, "sqs:SendMessage", queue_arn, rule)
            attributes = {
                "RULE_ARN": rule.arn,
                "TARGET_ARN": target.arn,
                "ERROR_CODE": d.error_code or "",
                "ERROR_MESSAGE": (d.error_message or "")[:1000],
                "RETRY_ATTEMPTS": str(d.attempts - 1),
            }
            if d.exhausted_retry_condition:
                attributes["EXHAUSTED_RETRY_CONDITION"] = d.exhausted_retry_condition
            sent = sqs.send_message(
                QueueUrl=url,
                MessageBody=json.dumps(event, ensure_ascii=False, separators=(",", ":")),
                MessageAttributes={k: {"DataType": "String", "StringValue": v or "-"} for k, v in attributes.items()},
            )
            out["message_id"] = sent["MessageId"]
        except Exception as e:  # noqa: BLE001 - reported, as InvocationsFailedToBeSentToDLQ
            out["error"] = getattr(e, "message", None) or repr(e)
            LOG.warning(
                "event %s could not be sent to the dead-letter queue %s: %s", d.event_id, queue_arn, out["error"]
            )
        return out

    def wait_idle(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        for th in list(self._threads):
            th.join(max(0.0, deadline - time.monotonic()))


def _classify(e: Any) -> DeliveryError:
    """A target's error as EventBridge treats it: throttling and server errors are retried;
    missing permissions and missing targets go to the DLQ at once; other client errors are not
    retried ("Events that fail to be delivered due to client-side errors are dropped immediately",
    https://aws.amazon.com/blogs/compute/improved-failure-recovery-for-amazon-eventbridge/).
    ERROR_CODE: the DLQ page gives only "a sample of the error codes a DLQ can return" (such as
    CONNECTION_FAILURE); which code AWS gives a particular target error is not documented, so the
    names here are descriptive and tests should not depend on them beyond NO_PERMISSIONS."""
    err = e.response.get("Error", {})
    code, message = err.get("Code", ""), err.get("Message", str(e))
    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if code in ("ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"):
        return DeliveryError("THROTTLING", f"{code}: {message}", retryable=True)
    if status >= 500:
        return DeliveryError("INTERNAL_ERROR", f"{code}: {message}", retryable=True)
    if code.startswith("AccessDenied") or code in (
        "UnauthorizedOperation",
        "AuthorizationErrorException",
        "KMSAccessDeniedException",
    ):
        return DeliveryError("NO_PERMISSIONS", f"{code}: {message}", retryable=False)
    if code in (
        "StateMachineDoesNotExist",
        "ResourceNotFoundException",
        "NotFound",
        "NotFoundException",
        "StateMachineDeleting",
    ):
        return DeliveryError("RESOURCE_NOT_FOUND", f"{code}: {message}", retryable=False)
    return DeliveryError("SDK_CLIENT_ERROR", f"{code}: {message}", retryable=False)


def _doc(policy: Any) -> dict:
    if isinstance(policy, dict):
        return policy
    from urllib.parse import unquote

    text = str(policy)
    return json.loads(unquote(text) if text.startswith("%7B") else text)


def _moto_role(arn: str) -> Any | None:
    from moto.iam.models import iam_backends

    account = arn.split(":")[4]
    try:
        return iam_backends[account]["global"].get_role_by_arn(arn)
    except Exception:  # noqa: BLE001 - moto raises its own IAMNotFoundException
        return None


def _getatt_id(value: Any) -> str | None:
    """The logical id behind ``{"Fn::GetAtt": [id, attr]}`` / ``{"Ref": id}``, else None."""
    if isinstance(value, dict) and len(value) == 1:
        ((k, v),) = value.items()
        if k == "Fn::GetAtt":
            return v[0] if isinstance(v, list) else v.split(".", 1)[0]
        if k == "Ref" and not v.startswith("AWS::"):
            return v
    return None


def _api_target(raw: dict) -> dict:
    """A template target as PutTargets takes it (for moto's DescribeRule / ListTargetsByRule)."""
    keep = (
        "Id",
        "Arn",
        "RoleArn",
        "Input",
        "InputPath",
        "InputTransformer",
        "RetryPolicy",
        "DeadLetterConfig",
        "SqsParameters",
    )
    return {k: raw[k] for k in keep if k in raw}


def _public(event: dict) -> dict:
    return {k: v for k, v in event.items() if not k.startswith("_")}


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# =============================================================================== PutEvents


def putevents_entry_size(entry: dict) -> int:
    """https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-putevent-size.html: 14 bytes for
    Time when given, plus the UTF-8 bytes of Source, DetailType, Detail and each Resources ARN."""
    size = 14 if entry.get("Time") is not None else 0
    for key in ("Source", "DetailType", "Detail"):
        if isinstance(entry.get(key), str):
            size += len(entry[key].encode())
    for r in entry.get("Resources") or []:
        if isinstance(r, str):
            size += len(r.encode())
    return size


MAX_PUTEVENTS_BYTES = 256 * 1024


class PutEventsShim:
    """``events:PutEvents`` (JSON 1.1, ``AWSEvents.PutEvents``) on the local bus, answered as
    PutEvents answers (https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_PutEvents.html):
    1 to 10 entries and at most 256 KB in all (else ValidationException); per entry, in order of
    the request, an ``EventId`` or an ``ErrorCode``/``ErrorMessage``; ``FailedEntryCount``.

    Per-entry refusals (PutEventsResultEntry,
    https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_PutEventsResultEntry.html):
    a missing Source/DetailType/Detail is ``InvalidArgument``, a Detail that is not a JSON object
    ``MalformedDetail``, and a Source starting with ``aws.`` ``NotAuthorizedForSourceException``
    (only AWS services emit ``aws.*`` events: "the source field in all AWS events begins with
    aws."; a client's PutEvents with such a source is refused). Those events come in through
    ``POST /_cordon/events`` instead.

    Control: ``POST /_cordon/events`` an AWS-service event (or a list), ``GET /_cordon/events/rules``,
    ``GET|DELETE /_cordon/events/deliveries[?event_id=]``.
    """

    name = "PutEventsShim"

    def __init__(self, bus: EventBridge) -> None:
        self.bus = bus

    def handles(self, req: AwsRequest) -> bool:
        return req.service == "events" and req.action == "PutEvents"

    def handle(self, req: AwsRequest) -> Response:
        entries = req.params.get("Entries")
        if not isinstance(entries, list) or not 1 <= len(entries) <= 10:
            n = len(entries) if isinstance(entries, list) else 0
            bound = "less than or equal to 10" if n > 10 else "greater than or equal to 1"
            return aws_error(
                req,
                "ValidationException",
                f"1 validation error detected: Value at 'entries' failed to satisfy constraint: Member must have length {bound}",
            )
        if sum(putevents_entry_size(e) for e in entries if isinstance(e, dict)) > MAX_PUTEVENTS_BYTES:
            return aws_error(req, "ValidationException", "Total size of the entries in the request is over the limit.")
        results, failed = [], 0
        for entry in entries:
            outcome = self._entry(entry if isinstance(entry, dict) else {}, req.region)
            failed += "ErrorCode" in outcome
            results.append(outcome)
        return json_response({"FailedEntryCount": failed, "Entries": results}, req)

    def _entry(self, entry: dict, region: str) -> dict:
        for key in ("Source", "DetailType", "Detail"):
            if not entry.get(key):
                return {
                    "ErrorCode": "InvalidArgument",
                    "ErrorMessage": f"Parameter {key} is not valid. Reason: {key} is a required argument.",
                }
        try:
            detail = json.loads(entry["Detail"])
        except ValueError:
            detail = None
        if not isinstance(detail, dict):
            return {"ErrorCode": "MalformedDetail", "ErrorMessage": "Detail is malformed."}
        if entry["Source"].startswith("aws."):
            return {"ErrorCode": "NotAuthorizedForSourceException", "ErrorMessage": "Not authorized for the source."}
        when = entry.get("Time")
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": entry["DetailType"],
            "source": entry["Source"],
            "account": self.bus.account,
            "time": (
                datetime.fromtimestamp(float(when), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                if when is not None
                else _now_iso()
            ),
            "region": region,
            "resources": list(entry.get("Resources") or []),
            "detail": detail,
            "_bus": _bus_name(entry.get("EventBusName")),
        }
        self.bus.put(event)
        return {"EventId": event["id"]}

    # ------------------------------------------------------------------ control

    def control_routes(self) -> dict:
        def inject(body: Any, q: dict) -> tuple[int, Any]:
            events = body if isinstance(body, list) else [body]
            out = []
            for ev in events:
                out.append(self._inject(ev))
            return 201, {"events": out}

        def deliveries(body: Any, q: dict) -> tuple[int, Any]:
            return 200, {"deliveries": self.bus.deliveries(q.get("event_id", [None])[0])}

        return {
            ("POST", "/_cordon/events"): inject,
            ("GET", "/_cordon/events/rules"): lambda body, q: (200, {"rules": [r.describe() for r in self.bus.rules]}),
            ("GET", "/_cordon/events/deliveries"): deliveries,
            ("DELETE", "/_cordon/events/deliveries"): lambda body, q: (
                200,
                self.bus.clear_deliveries() or {"cleared": True},
            ),
        }

    def _inject(self, ev: Any) -> dict:
        """An event as an AWS service puts it on the default bus: the full envelope
        (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-events-structure.html)."""
        if not isinstance(ev, dict):
            raise ControlError(400, "an event object is required")
        for key in ("source", "detail-type", "detail"):
            if key not in ev:
                raise ControlError(400, f"the event needs {key!r}")
        if not isinstance(ev["detail"], dict):
            raise ControlError(400, "'detail' must be an object")
        if not str(ev["source"]).startswith("aws."):
            raise ControlError(
                400, "only AWS-service events (source aws.*) are injected here; send others with events:PutEvents"
            )
        event = {
            "version": ev.get("version", "0"),
            "id": ev.get("id") or str(uuid.uuid4()),
            "detail-type": ev["detail-type"],
            "source": ev["source"],
            "account": ev.get("account", self.bus.account),
            "time": ev.get("time") or _now_iso(),
            "region": ev.get("region", self.bus.region),
            "resources": ev.get("resources", []),
            "detail": ev["detail"],
        }
        event.update({k: v for k, v in ev.items() if k not in event})
        return {"id": event["id"], "rules": self.bus.put(event)}


def _bus_name(value: str | None) -> str:
    if not value:
        return "default"
    return value.rsplit("/", 1)[-1] if value.startswith("arn:") else value


# =============================================================================== StartExecution name


class StartExecutionNameShim:
    """Step Functions ``StartExecution`` without ``name``: "If you don't provide a name for the
    execution, Step Functions automatically generates a universally unique identifier (UUID) as the
    execution name" (https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html).
    moto 5.2.5 names it ``None`` instead (the ARN ends in ``:None``, and a second nameless start with
    the same input returns the first execution). The request gets a UUID name before moto sees it."""

    name = "StartExecutionNameShim"

    def handles(self, req: AwsRequest) -> bool:
        return req.service == "states" and req.action == "StartExecution" and not req.params.get("name")

    def handle(self, req: AwsRequest) -> Response | None:
        params = dict(req.params)
        params["name"] = str(uuid.uuid4())
        body = json.dumps(params).encode()
        req.environ["wsgi.input"] = io.BytesIO(body)
        req.environ["CONTENT_LENGTH"] = str(len(body))
        req.body, req.params = body, params
        return None

    def control_routes(self) -> dict:
        return {}


__all__ = [
    "EventBridge",
    "EventPattern",
    "InvalidEventPattern",
    "InputTransformerError",
    "PutEventsShim",
    "StartExecutionNameShim",
    "compile_pattern",
    "json_path",
    "policy_decision",
    "render_input_transformer",
    "target_input",
    "validate_input_transformer",
]
