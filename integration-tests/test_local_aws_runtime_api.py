"""The Lambda Runtime API shim, on its own: moto in this process, and a tiny Python "runtime"
standing in for a step binary, so every path (error, crash, timeout, pool) can be forced.

The fake runtime speaks the Runtime API as documented
(https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html); the event tells it what to do.
"""

from __future__ import annotations

import io
import json
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest

from local_aws.runtime_api import LambdaRuntime
from local_aws.server import LocalAws

FAKE_RUNTIME = f"""#!{sys.executable}
import json, os, sys, time, urllib.request
api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"
if os.environ.get("FAIL_INIT"):
    urllib.request.urlopen(urllib.request.Request(api + "/init/error", method="POST",
        data=json.dumps({{"errorType": "Runtime.InitError", "errorMessage": "no config"}}).encode()))
    sys.exit(1)
while True:
    r = urllib.request.urlopen(api + "/invocation/next")
    rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
    event = json.loads(r.read())
    mode = event.get("mode")
    if mode == "crash":
        os._exit(3)
    if mode == "sleep":
        time.sleep(event["seconds"])
    if mode == "error":
        path, body = "/error", {{"errorType": "Boom", "errorMessage": "it broke"}}
    else:
        path, body = "/response", {{
            "event": event, "pid": os.getpid(),
            "env": {{k: v for k, v in os.environ.items() if k.startswith(("AWS_", "S3_", "CUSTOM"))}},
            "headers": {{k: r.headers[k] for k in ("Lambda-Runtime-Deadline-Ms", "Lambda-Runtime-Invoked-Function-Arn", "Lambda-Runtime-Trace-Id")}},
        }}
    print("handled", rid, mode, flush=True)
    urllib.request.urlopen(urllib.request.Request(api + "/invocation/" + rid + path, data=json.dumps(body).encode(), method="POST"))
"""


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    bin_dir = tmp_path_factory.mktemp("bin")
    state_dir = tmp_path_factory.mktemp("state")
    for name in ("fn", "fn-short", "fn-badinit"):
        (bin_dir / name).write_text(FAKE_RUNTIME)
        (bin_dir / name).chmod(0o755)
    server = LocalAws()
    runtime = LambdaRuntime(bin_dir, state_dir, server.endpoint, max_envs=3)
    runtime.install()
    server.middleware.add_routes(runtime.control_routes())
    server.start()
    kw = dict(
        endpoint_url=server.endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )
    lam, iam, sfn = (boto3.client(s, **kw) for s in ("lambda", "iam", "stepfunctions"))
    role = iam.create_role(RoleName="r", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("bootstrap", "")
    for name, timeout, env in (
        ("fn", 10, {"CUSTOM_SETTING": "yes"}),
        ("fn-short", 1, {}),
        ("fn-badinit", 5, {"FAIL_INIT": "1"}),
        ("fn-nobinary", 5, {}),
    ):
        lam.create_function(
            FunctionName=name,
            Runtime="provided.al2023",
            Handler="bootstrap",
            Role=role,
            Code={"ZipFile": buf.getvalue()},
            Timeout=timeout,
            Environment={"Variables": env},
        )
    yield {"server": server, "lambda": lam, "sfn": sfn, "role": role, "state_dir": state_dir}
    runtime.shutdown()
    server.stop()


def invoke(lam, name, event):
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode())
    return resp.get("FunctionError"), json.loads(resp["Payload"].read())


def test_an_invocation_runs_the_binary_with_lambdas_environment(local):
    error, out = invoke(local["lambda"], "fn", {"hello": "world"})
    assert error is None
    assert out["event"] == {"hello": "world"}
    env = out["env"]
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "fn"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "128"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/fn"
    assert env["AWS_ENDPOINT_URL"] == local["server"].endpoint
    assert env["AWS_REGION"] == "us-east-1" and env["S3_FORCE_PATH_STYLE"] == "true"
    assert env["CUSTOM_SETTING"] == "yes"
    assert out["headers"]["Lambda-Runtime-Invoked-Function-Arn"] == "arn:aws:lambda:us-east-1:123456789012:function:fn"
    assert int(out["headers"]["Lambda-Runtime-Deadline-Ms"]) > time.time() * 1000
    assert out["headers"]["Lambda-Runtime-Trace-Id"].startswith("Root=1-")
    log = (local["state_dir"] / "logs" / "fn.log").read_text()
    assert "START RequestId:" in log and "handled" in log and "REPORT RequestId:" in log


def test_a_warm_environment_is_reused(local):
    pids = {invoke(local["lambda"], "fn", {})[1]["pid"] for _ in range(3)}
    assert len(pids) == 1


def test_a_function_error_is_answered_as_lambda_does(local):
    resp = local["lambda"].invoke(FunctionName="fn", Payload=b'{"mode": "error"}')
    assert resp["StatusCode"] == 200
    assert resp["FunctionError"] == "Unhandled"
    assert json.loads(resp["Payload"].read()) == {"errorType": "Boom", "errorMessage": "it broke"}


def test_a_crash_is_runtime_exit_error_and_the_next_call_gets_a_new_environment(local):
    pid = invoke(local["lambda"], "fn", {})[1]["pid"]
    error, out = invoke(local["lambda"], "fn", {"mode": "crash"})
    assert error == "Unhandled"
    assert out["errorType"] == "Runtime.ExitError" and "exit status 3" in out["errorMessage"]
    assert invoke(local["lambda"], "fn", {})[1]["pid"] != pid


def test_an_invocation_over_the_timeout_is_killed(local):
    started = time.monotonic()
    error, out = invoke(local["lambda"], "fn-short", {"mode": "sleep", "seconds": 5})
    assert time.monotonic() - started < 4
    assert (error, out["errorType"]) == ("Unhandled", "Sandbox.Timedout")
    assert "Task timed out after 1.00 seconds" in out["errorMessage"]


def test_concurrent_invocations_get_their_own_environments(local):
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: invoke(local["lambda"], "fn", {"mode": "sleep", "seconds": 1}), range(3)))
    assert len({out["pid"] for _, out in results}) == 3


def test_init_failure_and_a_missing_binary(local):
    error, out = invoke(local["lambda"], "fn-badinit", {})
    assert (error, out["errorType"]) == ("Unhandled", "Runtime.InitError")
    error, out = invoke(local["lambda"], "fn-nobinary", {})
    assert (error, out["errorType"]) == ("Unhandled", "Runtime.InvalidEntrypoint")


def test_the_error_type_is_the_step_functions_error_name(local):
    definition = {
        "StartAt": "Call",
        "States": {
            "Call": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": "fn", "Payload": {"mode": "error"}},
                "Catch": [{"ErrorEquals": ["Boom"], "ResultPath": "$.caught", "Next": "Caught"}],
                "End": True,
            },
            "Caught": {"Type": "Pass", "End": True},
        },
    }
    sfn = local["sfn"]
    sm = sfn.create_state_machine(name="boom", definition=json.dumps(definition), roleArn=local["role"])[
        "stateMachineArn"
    ]
    arn = sfn.start_execution(stateMachineArn=sm, name="boom-1", input="{}")["executionArn"]
    for _ in range(100):
        desc = sfn.describe_execution(executionArn=arn)
        if desc["status"] != "RUNNING":
            break
        time.sleep(0.1)
    assert desc["status"] == "SUCCEEDED"
    assert json.loads(desc["output"])["caught"]["Error"] == "Boom"


def test_event_and_dry_run_invocations(local):
    lam = local["lambda"]
    log = local["state_dir"] / "logs" / "fn.log"
    before = log.read_text().count("handled")
    assert lam.invoke(FunctionName="fn", InvocationType="Event", Payload=b'{"async": true}')["StatusCode"] == 202
    for _ in range(50):
        if log.read_text().count("handled") > before:
            break
        time.sleep(0.1)
    assert log.read_text().count("handled") == before + 1
    assert lam.invoke(FunctionName="fn", InvocationType="DryRun", Payload=b"{}")["StatusCode"] == 204
