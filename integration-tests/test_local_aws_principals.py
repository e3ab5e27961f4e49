"""The local stack deploys the template's roles and runs every caller under its own identity, so the
request log (and the action-coverage check) knows which role made each call."""

from __future__ import annotations

import json
import time
from datetime import datetime
import uuid

from local_aws.template import STEP_CONSTRUCTS, Template


def template() -> Template:
    return Template.load()


def test_each_function_runs_under_its_template_role_with_the_template_policies(stack):
    t = template()
    lam = stack.client("lambda")
    for step in STEP_CONSTRUCTS:
        role_arn = lam.get_function_configuration(FunctionName=f"cordon-{step}")["Role"]
        role_id = t.role_of_function(step)
        assert role_arn.endswith(f":role/cordon/Cordon-{role_id}"), (step, role_arn)
        name = role_arn.rsplit("/", 1)[-1]
        [inline] = t.resources[role_id]["Properties"]["Policies"]
        doc = stack.iam.get_role_policy(RoleName=name, PolicyName=inline["PolicyName"])["PolicyDocument"]
        doc = json.loads(doc) if isinstance(doc, str) else doc
        assert [s.get("Sid") for s in doc["Statement"]] == [s.get("Sid") for s in inline["PolicyDocument"]["Statement"]]
    # The forensic role: no managed policy, only the SSM agent's channel actions, inline.
    forensic = t.by_path("ForensicRole/Resource")
    assert stack.iam.list_attached_role_policies(RoleName=f"Cordon-{forensic}")["AttachedPolicies"] == []
    [inline] = t.resources[forensic]["Properties"]["Policies"]
    doc = stack.iam.get_role_policy(RoleName=f"Cordon-{forensic}", PolicyName=inline["PolicyName"])["PolicyDocument"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    actions = {a for st in doc["Statement"] for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])}
    assert actions and all(a.split(":")[0] in ("ssm", "ssmmessages", "ec2messages") for a in actions), actions
    assert not any(a.startswith("ssm:GetParameter") for a in actions), actions


def test_every_call_of_a_response_is_logged_with_the_function_and_role_that_made_it(stack):
    t = template()
    inst = stack.seed_instance(name="who-called", ssm=False)
    since = stack.last_request_seq()
    incident = f"IR-{uuid.uuid4().hex[:10]}"
    desc, _ = stack.run_execution({"instance_id": inst.instance_id, "incident_id": incident}, name=incident)
    assert desc["status"] == "SUCCEEDED", desc
    reqs = stack.requests(since=since)
    by_principal = {}
    for r in reqs:
        by_principal.setdefault(r["principal"], set()).add(r["role"])
    for step in ("metadata", "screenshot", "snapshot", "termprotect", "quarantine", "notify"):
        assert by_principal.get(f"function:cordon-{step}") == {t.role_of_function(step)}, (step, by_principal.keys())
    # moto's Step Functions interpreter invokes the functions: as the state machine's role.
    invokes = [r for r in reqs if r["service"] == "lambda" and r["action"] == "Invoke"]
    sm_role = t.resources[t.by_path("StateMachine/Resource")]["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    assert invokes and {(r["principal"], r["role"]) for r in invokes} == {("state-machine:cordon-incident-response", sm_role)}
    assert {tuple(r["iam_actions"]) for r in invokes} == {("lambda:InvokeFunction",)}
    # Each request of the response also names the scenario it was made in. (Background callers are
    # left out: the SQS event source poller long-polls as the dispatcher's role, and a poll that
    # began during the previous test is logged when it ends, with the scenario it began in.)
    response_principals = {f"function:cordon-{s}" for s in ("metadata", "screenshot", "snapshot", "termprotect",
                                                             "detach-profile", "quarantine", "notify")}
    response_principals.add("state-machine:cordon-incident-response")
    started = desc["startDate"]
    during = [r for r in reqs if r["principal"] in response_principals
              and datetime.fromisoformat(r["time"]) >= started]
    assert during and {r["scenario"] for r in during} == {
        "test_local_aws_principals.py::test_every_call_of_a_response_is_logged_with_the_function_and_role_that_made_it"
    }
