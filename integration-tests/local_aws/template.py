"""The synthesized CloudFormation template: what the local stack deploys and enforces comes from it.

The CDK app is the one source of truth for roles, API mapping templates, models and event rules.
The local stack reads the template that ``make local-template`` synthesizes (placeholder code, the
local context: every optional rule switched on) instead of keeping a second copy by hand, so that a
test that passes here exercises what would be deployed.

Intrinsic functions are resolved as CloudFormation resolves them
(https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/intrinsic-function-reference.html):
``Ref``, ``Fn::GetAtt``, ``Fn::Join``, ``Fn::Sub``, ``Fn::Select``, ``Fn::Split``, ``Fn::If``
(conditions resolved to false unless given) and the pseudo parameters. A ``Ref``/``GetAtt`` of a
resource the local stack did not create resolves to a recognisable placeholder
(``local:<LogicalId>`` / ``local:<LogicalId>.<Attr>``), never silently to an empty string.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import REGION

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEMPLATE = REPO_ROOT / ".local" / "cdk.out" / "Cordon.template.json"
LOCAL_ACCOUNT = "123456789012"  # moto's default account

# Step name -> the construct id prefix the CDK app gives its function and role (cdk/lib/steps.ts).
STEP_CONSTRUCTS = {
    "metadata": "Metadata",
    "screenshot": "Screenshot",
    "snapshot": "Snapshot",
    "termprotect": "Termprotect",
    "detach-profile": "DetachProfile",
    "ssm-collect": "SsmCollect",
    "quarantine": "Quarantine",
    "notify": "Notify",
}


class TemplateError(Exception):
    """The template is missing or is not what the local stack expects."""


def template_path() -> Path:
    """``$CORDON_TEMPLATE`` or ``<repo>/.local/cdk.out/Cordon.template.json``."""
    return Path(os.environ.get("CORDON_TEMPLATE") or DEFAULT_TEMPLATE)


@dataclass
class Template:
    """A synthesized template plus the physical values of the resources the local stack created."""

    body: dict
    path: Path | None = None
    # LogicalId -> {"Ref": value, "<Attr>": value, ...}: filled in by whoever creates the resource.
    physical: dict[str, dict[str, str]] = field(default_factory=dict)
    region: str = REGION
    account: str = LOCAL_ACCOUNT
    stack_name: str = "Cordon"

    @classmethod
    def load(cls, path: Path | None = None) -> Template:
        path = path or template_path()
        if not path.is_file():
            raise TemplateError(
                f"no synthesized template at {path}: run `make local-template` (cdk synth with the local context)"
            )
        return cls(body=json.loads(path.read_text()), path=path)

    # ------------------------------------------------------------------ resources

    @property
    def resources(self) -> dict[str, dict]:
        return self.body["Resources"]

    def of_type(self, cfn_type: str) -> Iterator[tuple[str, dict]]:
        for logical_id, res in self.resources.items():
            if res["Type"] == cfn_type:
                yield logical_id, res

    def cdk_path(self, logical_id: str) -> str:
        return self.resources[logical_id].get("Metadata", {}).get("aws:cdk:path", "")

    def by_path(self, path: str) -> str:
        """The logical id of the resource whose ``aws:cdk:path`` is ``<stack>/<path>``."""
        for logical_id, res in self.resources.items():
            p = res.get("Metadata", {}).get("aws:cdk:path", "")
            if p.split("/", 1)[-1] == path:
                return logical_id
        raise TemplateError(f"no resource with cdk path {path!r} in {self.path}")

    def function_id(self, step: str) -> str:
        return self.by_path(f"{STEP_CONSTRUCTS[step]}Function/Resource")

    def role_of_function(self, step: str) -> str:
        """The logical id of the role that the step's function runs under."""
        role = self.resources[self.function_id(step)]["Properties"]["Role"]
        if not (isinstance(role, dict) and "Fn::GetAtt" in role):
            raise TemplateError(f"function {step}: role is not a GetAtt of a template role: {role}")
        return role["Fn::GetAtt"][0]

    def set_physical(self, logical_id: str, ref: str, **attrs: str) -> None:
        if logical_id not in self.resources:
            raise TemplateError(f"{logical_id} is not a resource of {self.path}")
        self.physical[logical_id] = {"Ref": ref, **attrs}

    # ------------------------------------------------------------------ intrinsic functions

    def resolve(self, value: Any, conditions: dict[str, bool] | None = None) -> Any:
        """``value`` with every intrinsic function replaced by its local value."""
        conditions = conditions or {}
        if isinstance(value, list):
            return [self.resolve(v, conditions) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self._ref(arg)
            if key == "Fn::GetAtt":
                logical_id, attr = arg if isinstance(arg, list) else arg.split(".", 1)
                return self._get_att(logical_id, attr)
            if key == "Fn::Join":
                sep, parts = arg
                return sep.join(str(self.resolve(p, conditions)) for p in self.resolve(parts, conditions))
            if key == "Fn::Select":
                index, items = arg
                return self.resolve(items, conditions)[int(self.resolve(index, conditions))]
            if key == "Fn::Split":
                sep, text = arg
                return str(self.resolve(text, conditions)).split(sep)
            if key == "Fn::Sub":
                text, names = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                names = {k: self.resolve(v, conditions) for k, v in names.items()}
                return re.sub(r"\$\{([^}!][^}]*)\}", lambda m: str(self._sub_name(m.group(1), names)), text)
            if key == "Fn::If":
                name, yes, no = arg
                return self.resolve(yes if conditions.get(name, False) else no, conditions)
        return {k: self.resolve(v, conditions) for k, v in value.items()}

    def _pseudo(self, name: str) -> str | None:
        return {
            "AWS::Partition": "aws",
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": self.stack_name,
            "AWS::StackId": f"arn:aws:cloudformation:{self.region}:{self.account}:stack/{self.stack_name}/local",
            "AWS::NoValue": None,
        }.get(name)

    def _ref(self, name: str) -> Any:
        if name.startswith("AWS::"):
            return self._pseudo(name)
        if name in self.physical:
            return self.physical[name]["Ref"]
        if name in self.body.get("Parameters", {}):
            return self.body["Parameters"][name].get("Default", f"local:{name}")
        return f"local:{name}"

    def _get_att(self, logical_id: str, attr: str) -> str:
        values = self.physical.get(logical_id, {})
        return values.get(attr, f"local:{logical_id}.{attr}")

    def _sub_name(self, name: str, names: dict[str, Any]) -> Any:
        if name in names:
            return names[name]
        if "." in name:
            return self._get_att(*name.split(".", 1))
        return self._ref(name)
