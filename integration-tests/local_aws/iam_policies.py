"""The IAM policies of the synthesized template, per role, and IAM's matching of actions.

A role's permissions are the union of (https://docs.aws.amazon.com/IAM/latest/UserGuide/access_policies.html):

- its inline policies (``AWS::IAM::Role`` ``Policies``),
- every ``AWS::IAM::Policy`` (and ``AWS::IAM::ManagedPolicy``) whose ``Roles`` name it with a ``Ref``
  (both attach their document to the role, https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-iam-policy.html),
- its ``ManagedPolicyArns``: an AWS managed policy's document comes from the copy that moto ships
  (``moto/iam/aws_managed_policies.py``, imported from AWS by moto's maintainers); a customer
  managed policy of the template from its ``AWS::IAM::ManagedPolicy`` resource.

Action matching follows the IAM JSON policy reference
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_action.html and
``..._elements_notaction.html``): action names and prefixes are case-insensitive; ``*`` matches any
run of characters and ``?`` one character; a statement with ``NotAction`` matches every action
that none of its patterns matches. Evaluation (``reference_policies_evaluation-logic.html``): an
explicit ``Deny`` overrides any ``Allow``. Only actions are decided here: ``Resource`` and
``Condition`` are not evaluated (they depend on the request's resources and context), so an Allow
counts whatever its scope and conditions, and only a Deny without a ``Condition`` whose ``Resource``
is ``*`` is taken as covering every call of its actions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .template import Template, TemplateError


@dataclass(frozen=True)
class Statement:
    source: str  # "<policy label>#<Sid or index>"
    effect: str
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    not_resources: tuple[str, ...] = ()
    condition: bool = False

    def matches(self, action: str) -> bool:
        if self.not_actions:
            return not any(action_matches(p, action) for p in self.not_actions)
        return any(action_matches(p, action) for p in self.actions)

    @property
    def everywhere(self) -> bool:
        """No Condition and ``Resource: "*"``: applies to every call of its actions."""
        return not self.condition and "*" in self.resources and not self.not_resources


@lru_cache(maxsize=1024)
def _pattern(pattern: str) -> re.Pattern[str]:
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def action_matches(pattern: str, action: str) -> bool:
    """Whether the policy ``Action`` entry ``pattern`` matches ``service:Action``, as IAM matches."""
    if not isinstance(pattern, str):
        return False
    return _pattern(pattern).fullmatch(action) is not None


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    return (str(value),)


def statements_of(document: dict, label: str) -> list[Statement]:
    """The statements of one policy document (``Statement`` may be one object or a list)."""
    raw = document.get("Statement", [])
    raw = raw if isinstance(raw, list) else [raw]
    out = []
    for i, s in enumerate(raw):
        out.append(
            Statement(
                source=f"{label}#{s.get('Sid') or i}",
                effect=s.get("Effect", ""),
                actions=_strings(s.get("Action")),
                not_actions=_strings(s.get("NotAction")),
                resources=_strings(s.get("Resource")),
                not_resources=_strings(s.get("NotResource")),
                condition=bool(s.get("Condition")),
            )
        )
    return out


@dataclass
class Decision:
    allowed_by: list[str] = field(default_factory=list)
    denied_by: list[str] = field(default_factory=list)  # Deny statements that cover every call
    scoped_denies: list[str] = field(default_factory=list)  # Deny statements with a scope or condition

    @property
    def allowed(self) -> bool:
        return bool(self.allowed_by) and not self.denied_by


def decide(statements: list[Statement], action: str) -> Decision:
    d = Decision()
    for s in statements:
        if not s.matches(action):
            continue
        if s.effect == "Allow":
            d.allowed_by.append(s.source)
        elif s.effect == "Deny":
            (d.denied_by if s.everywhere else d.scoped_denies).append(s.source)
    return d


# ---------------------------------------------------------------------------------- template


@lru_cache(maxsize=1)
def _aws_managed() -> dict[str, dict]:
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    return json.loads(aws_managed_policies_data)


def aws_managed_document(arn: str) -> dict:
    """The document of an AWS managed policy (``arn:aws:iam::aws:policy[/path]/Name``), from moto's copy."""
    m = re.fullmatch(r"arn:[^:]+:iam::aws:policy(/(?:[^/]+/)*)([^/]+)", arn)
    if not m:
        raise TemplateError(f"{arn} is not an AWS managed policy ARN")
    path, name = m.group(1), m.group(2)
    data = _aws_managed().get(name)
    if data is None or data.get("Path", "/") != path:
        raise TemplateError(f"AWS managed policy {arn} is not in moto's copy of the AWS managed policies")
    return data["Document"]


@dataclass(frozen=True)
class PolicyDocument:
    """One policy of the template: where it is attached and its document (intrinsics resolved)."""

    label: str  # e.g. "QuarantineRole/cordon-quarantine", "StateMachineRole/DefaultPolicy"
    logical_id: str
    kind: str  # "inline", "AWS::IAM::Policy", "managed", "aws-managed", "resource"
    document: dict
    roles: tuple[str, ...] = ()  # logical ids of the roles it applies to


def _short(template: Template, logical_id: str) -> str:
    path = template.cdk_path(logical_id)
    path = path.split("/", 1)[-1] if path else logical_id
    return path.removesuffix("/Resource")


def _role_refs(template: Template, refs: Any) -> tuple[str, ...]:
    out = []
    for r in refs or []:
        if isinstance(r, dict) and "Ref" in r and r["Ref"] in template.resources:
            out.append(r["Ref"])
    return tuple(out)


RESOURCE_POLICIES = {
    "AWS::S3::BucketPolicy": "PolicyDocument",
    "AWS::SNS::TopicPolicy": "PolicyDocument",
    "AWS::SQS::QueuePolicy": "PolicyDocument",
    "AWS::KMS::Key": "KeyPolicy",
}


def template_policies(template: Template, include_resource_policies: bool = False) -> list[PolicyDocument]:
    """Every identity policy of the template (and, if asked, the resource policies), resolved with
    ``template``'s physical values."""
    out: list[PolicyDocument] = []
    for lid, res in template.resources.items():
        t, props = res["Type"], res.get("Properties", {})
        if t == "AWS::IAM::Role":
            for pol in props.get("Policies", []):
                name = template.resolve(pol["PolicyName"])
                out.append(
                    PolicyDocument(f"{_short(template, lid)}/{name}", lid, "inline", template.resolve(pol["PolicyDocument"]), (lid,))
                )
            for arn in template.resolve(props.get("ManagedPolicyArns", [])):
                if isinstance(arn, str) and ":iam::aws:policy/" in arn:
                    out.append(PolicyDocument(arn, lid, "aws-managed", aws_managed_document(arn), (lid,)))
        elif t in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            roles = _role_refs(template, props.get("Roles"))
            out.append(PolicyDocument(_short(template, lid), lid, t, template.resolve(props["PolicyDocument"]), roles))
        elif include_resource_policies and t in RESOURCE_POLICIES and RESOURCE_POLICIES[t] in props:
            out.append(PolicyDocument(_short(template, lid), lid, "resource", template.resolve(props[RESOURCE_POLICIES[t]])))
    # A role's ManagedPolicyArns may also Ref a customer managed policy of the template.
    managed = {p.logical_id: p for p in out if p.kind == "AWS::IAM::ManagedPolicy"}
    for lid, res in template.of_type("AWS::IAM::Role"):
        for ref in res.get("Properties", {}).get("ManagedPolicyArns", []):
            if isinstance(ref, dict) and ref.get("Ref") in managed:
                p = managed[ref["Ref"]]
                out.append(PolicyDocument(p.label, p.logical_id, p.kind, p.document, (lid,)))
    return out


def role_statements(template: Template) -> dict[str, list[Statement]]:
    """Role logical id -> every statement that applies to it."""
    roles: dict[str, list[Statement]] = {lid: [] for lid, _ in template.of_type("AWS::IAM::Role")}
    for pol in template_policies(template):
        for role in pol.roles:
            roles.setdefault(role, []).extend(statements_of(pol.document, pol.label))
    return roles
