"""Policy lint: every policy document of the synthesized template through parliament.

parliament (pinned in ``requirements.txt``) knows each action's resource types and condition keys
(its copy of the Service Authorization Reference) and reports malformed ARNs, resources that do not
fit an action, condition keys of the wrong type, and (community auditors) permissions management,
privilege escalation and credentials exposure.

Linted: the roles' inline policies, ``AWS::IAM::Policy`` / ``AWS::IAM::ManagedPolicy`` resources,
and the resource policies (bucket, topic, queue and key policies). Not linted: AWS managed policies
(AWS's own documents, attached by ARN). References are resolved to CloudFormation-shaped names and
ARNs (``physical_ids``), so ARNs are checked in the form a deployment would have them.

Each finding is either fixed in ``cdk/lib/*.ts`` or acknowledged, with a written reason, in
``policy_lint_acknowledgements.json`` (as cdk-nag findings are acknowledged in the stack): an entry
names the policy (``fnmatch`` pattern over the labels printed below), the issue, a text that the
finding's detail must contain, and the reason. An acknowledgement that matches no finding is an
error too, so the list cannot go stale.

    python -m local_aws.policy_lint [--template FILE]      # exit 1 on an unacknowledged finding
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .iam_policies import template_policies
from .physical_ids import with_fallback
from .template import Template

ACKNOWLEDGEMENTS = Path(__file__).with_name("policy_lint_acknowledgements.json")


@dataclass(frozen=True)
class LintFinding:
    policy: str  # label, e.g. "QuarantineRole/cordon-quarantine", "EvidenceBucket/Policy"
    issue: str
    severity: str
    detail: str

    def render(self, width: int = 400) -> str:
        detail = self.detail if len(self.detail) <= width else self.detail[:width] + "..."
        return f"{self.policy}: {self.severity} {self.issue}: {detail}"


@dataclass(frozen=True)
class Acknowledgement:
    policy: str
    issue: str
    match: str
    reason: str

    def covers(self, f: LintFinding) -> bool:
        return fnmatch.fnmatchcase(f.policy, self.policy) and f.issue == self.issue and self.match in f.detail


@lru_cache(maxsize=1)
def _parliament():
    """parliament, with its community auditors' finding types registered (as its CLI does)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it imports pkg_resources, which warns about itself
        import parliament

    override = Path(parliament.__file__).parent / "community_auditors" / "config_override.yaml"
    parliament.override_config(override)
    return parliament


def _numbers_as_strings(value):
    """Condition values as strings: parliament's type check cannot read JSON numbers (it crashes on
    ``1.2``), and IAM compares condition values as strings of their type anyway
    (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return [_numbers_as_strings(v) for v in value]
    if isinstance(value, dict):
        return {k: _numbers_as_strings(v) for k, v in value.items()}
    return value


def lint_document(label: str, document: dict) -> list[LintFinding]:
    p = _parliament()
    doc = json.loads(json.dumps(document))
    statements = doc.get("Statement", [])
    for s in statements if isinstance(statements, list) else [statements]:
        if "Condition" in s:
            s["Condition"] = _numbers_as_strings(s["Condition"])
    policy = p.analyze_policy_string(json.dumps(doc), include_community_auditors=True, ignore_private_auditors=True)
    out = []
    for f in policy.findings:
        f = p.enhance_finding(f)
        detail = f.detail if isinstance(f.detail, str) else json.dumps(f.detail, sort_keys=True, default=str)
        # Some auditors put what they found (e.g. the actions) in the location, not the detail.
        extra = {
            k: sorted(v) if isinstance(v, list) and all(isinstance(x, str) for x in v) else v
            for k, v in (f.location or {}).items()
            if k not in ("line", "column", "filepath")
        }
        if extra:
            detail = " ".join(x for x in (detail, json.dumps(extra, sort_keys=True, default=str)) if x)
        finding = LintFinding(label, f.issue, f.severity, detail)
        if finding not in out:  # parliament repeats a finding once per matching action
            out.append(finding)
    return out


def lint(template: Template) -> list[LintFinding]:
    resolved = with_fallback(Template(body=template.body, path=template.path))
    findings = []
    for pol in template_policies(resolved, include_resource_policies=True):
        if pol.kind == "aws-managed":
            continue
        findings += lint_document(pol.label, pol.document)
    return findings


def load_acknowledgements(path: Path = ACKNOWLEDGEMENTS) -> list[Acknowledgement]:
    entries = json.loads(path.read_text())["acknowledgements"]
    acks = [Acknowledgement(e["policy"], e["issue"], e["match"], e["reason"]) for e in entries]
    for a in acks:
        if len(a.reason.strip()) < 20:
            raise ValueError(f"acknowledgement {a.policy} {a.issue} needs a written reason")
    return acks


def triage(
    findings: list[LintFinding], acks: list[Acknowledgement]
) -> tuple[list[LintFinding], list[tuple[LintFinding, Acknowledgement]], list[Acknowledgement]]:
    """(unacknowledged findings, acknowledged findings with their acknowledgement, unused acknowledgements)"""
    open_, done, used = [], [], set()
    for f in findings:
        ack = next((a for a in acks if a.covers(f)), None)
        if ack is None:
            open_.append(f)
        else:
            done.append((f, ack))
            used.add(ack)
    return open_, done, [a for a in acks if a not in used]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_aws.policy_lint", description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", type=Path, default=None, help="default: $CORDON_TEMPLATE or .local/cdk.out")
    parser.add_argument("--acknowledgements", type=Path, default=ACKNOWLEDGEMENTS)
    args = parser.parse_args(argv)
    template = Template.load(args.template)
    findings = lint(template)
    open_, done, stale = triage(findings, load_acknowledgements(args.acknowledgements))
    policies = len({p.label for p in template_policies(template, include_resource_policies=True) if p.kind != "aws-managed"})
    print(f"policy lint (parliament): {policies} policies, {len(findings)} findings, {len(done)} acknowledged")
    for f, a in done:
        print(f"  acknowledged  {f.render()}\n                reason: {a.reason}")
    for f in open_:
        print(f"  FINDING       {f.render()}")
    for a in stale:
        print(f"  STALE         acknowledgement {a.policy} {a.issue} {a.match!r} matches no finding: remove it")
    return 1 if open_ or stale else 0


if __name__ == "__main__":
    sys.exit(main())
