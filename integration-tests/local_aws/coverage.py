"""Action coverage: every IAM action that a deployed principal needed during the run is granted to it
by the synthesized template.

Input: the run's journal (``<state-dir>/requests.jsonl``, see ``journal``) and the synthesized
template. For every ``(principal, action)`` the journal shows (a function, the forensic role when
the SSM shim uploads as the instance, the state machine role for the calls of moto's Step
Functions interpreter), the principal's role must have an ``Allow`` statement whose
``Action``/``NotAction`` matches the action (as IAM matches: wildcards, case-insensitive), and no
``Deny`` without a condition on ``Resource: "*"`` may cover it (``iam_policies``). A call whose
operation the stack cannot name (no IAM action) is reported too, so nothing passes unchecked.

What this proves and what it does not: see "Action coverage" in ``local_aws/README.md``.

    python -m local_aws.coverage --journal <state-dir>/requests.jsonl [--template FILE]

exits 1 and lists each uncovered call with the function, the action and the scenarios (pytest
test ids) that made it. The integration suite runs it when the session ends (``conftest.py``).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .iam_policies import decide, role_statements
from .journal import read
from .template import Template

NO_SCENARIO = "(no scenario: outside any test)"


@dataclass
class Finding:
    principal: str
    role: str | None
    action: str
    reason: str
    scenarios: list[str] = field(default_factory=list)
    calls: int = 0

    def render(self) -> str:
        shown = self.scenarios[:5] + ([f"... and {len(self.scenarios) - 5} more"] if len(self.scenarios) > 5 else [])
        return (
            f"{self.principal} (role {self.role}): {self.action or '<unnamed operation>'}: {self.reason}\n"
            + "".join(f"    made in {s}\n" for s in shown)
        )


@dataclass
class Result:
    findings: list[Finding]
    checked: Counter  # principal -> calls checked
    out_of_scope: int  # calls by no deployed principal (tests, seeding, unsigned)
    actions: dict[str, set[str]]  # principal -> actions seen

    @property
    def ok(self) -> bool:
        return not self.findings

    def render(self) -> str:
        lines = [
            f"action coverage: {sum(self.checked.values())} calls by {len(self.checked)} deployed principals checked "
            f"against the synthesized template ({self.out_of_scope} calls by the tests/seeding out of scope)"
        ]
        for principal in sorted(self.actions):
            lines.append(f"  {principal}: {len(self.actions[principal])} actions, {self.checked[principal]} calls")
        if self.findings:
            lines.append(f"{len(self.findings)} call(s) that the principal's role does not allow:")
            lines += ["  " + f.render().rstrip("\n").replace("\n", "\n  ") for f in self.findings]
        else:
            lines.append("every call is allowed by an Allow statement of its principal's role, and no Deny covers it")
        return "\n".join(lines) + "\n"


def check(entries: list[dict], template: Template) -> Result:
    statements = role_statements(template)
    seen: dict[tuple[str, str | None, str, str], dict] = {}
    checked: Counter = Counter()
    actions: dict[str, set[str]] = {}
    out_of_scope = 0
    for e in entries:
        principal = e.get("principal")
        if not principal:
            out_of_scope += 1
            continue
        checked[principal] += 1
        wanted = e.get("iam_actions") or []
        unnamed = f"{e.get('service')}:{e.get('action')}"
        for action in wanted or [unnamed]:
            key = (principal, e.get("role"), action, "" if wanted else "unnamed")
            rec = seen.setdefault(key, {"scenarios": [], "calls": 0})
            rec["calls"] += 1
            scenario = e.get("scenario") or NO_SCENARIO
            if scenario not in rec["scenarios"]:
                rec["scenarios"].append(scenario)
            actions.setdefault(principal, set()).add(action)

    findings = []
    for (principal, role, action, unnamed), rec in sorted(seen.items(), key=lambda kv: kv[0][:3]):
        reason = None
        if unnamed:
            reason = "the local stack cannot tell which IAM action this call needs (add it to iam_actions.py)"
        elif role is None:
            reason = "the caller's role is unknown (not deployed from the template)"
        elif role not in statements:
            reason = f"role {role} is not in the synthesized template"
        else:
            d = decide(statements[role], action)
            if not d.allowed_by:
                reason = f"no Allow statement of {role} grants it"
            elif d.denied_by:
                reason = f"denied by {', '.join(d.denied_by)} (a Deny without condition on every resource)"
        if reason:
            findings.append(Finding(principal, role, action, reason, rec["scenarios"], rec["calls"]))
    return Result(findings, checked, out_of_scope, actions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_aws.coverage", description=__doc__.split("\n\n")[0])
    parser.add_argument("--journal", type=Path, required=True, help="<state-dir>/requests.jsonl of a run")
    parser.add_argument("--template", type=Path, default=None, help="default: $CORDON_TEMPLATE or .local/cdk.out")
    args = parser.parse_args(argv)
    result = check(read(args.journal), Template.load(args.template))
    print(result.render(), end="")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
