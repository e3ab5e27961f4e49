"""The SecurityResponse REST API, served by the local stack from the synthesized template.

The methods, request model, validator, mapping templates and integration responses are the ones
the CDK app deploys (``local_aws.apigateway``, ``local_aws.vtl``); requests are signed with SigV4
as a user's are. Each scenario asserts what the caller gets back *and* what reached Step
Functions (DescribeExecution, the request log), never the API's own say-so alone.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from local_aws import vtl
from local_aws.apigateway import Draft4, call_api

TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}


def missing_instance() -> str:
    """A well-formed instance id that no instance has: the execution fails fast, its input stays."""
    return "i-" + uuid.uuid4().hex[:17]


def incident() -> str:
    return f"API-{uuid.uuid4().hex[:10]}"


class Api:
    def __init__(self, stack) -> None:
        self.stack = stack
        self.url = stack.env["CORDON_API_URL"]

    def call(self, method: str, path: str, body=None, **kw) -> tuple[int, object, dict]:
        status, headers, text = call_api(self.url, method, path, body, **kw)
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = text
        return status, parsed, headers

    def execution_arn(self, name: str) -> str:
        return self.stack.state_machine_arn.replace(":stateMachine:", ":execution:") + ":" + name

    def started(self, since: int) -> list[dict]:
        """StartExecution calls that reached Step Functions since request ``since``."""
        return self.stack.requests(service="states", action="StartExecution", since=since)

    def wait(self, arn: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            desc = self.stack.sfn.describe_execution(executionArn=arn)
            if desc["status"] in TERMINAL:
                return desc
            assert time.monotonic() < deadline, f"{arn} still {desc['status']}"
            time.sleep(0.25)


@pytest.fixture(scope="module")
def api(stack) -> Api:
    return Api(stack)


@pytest.fixture
def faults(stack):
    yield
    stack.control("/faults", method="DELETE")


# ---------------------------------------------------------------------------------------- POST


def test_a_reason_with_quotes_newlines_backslashes_and_non_ascii_reaches_the_execution_unchanged(api):
    reason = "it's a \"quoted\" line\nthen a back\\slash, a tab\tand naïve café ✓ 😀 </script>"
    body = {"instance_id": missing_instance(), "incident_id": incident(), "reason": reason, "requested_by": "O'Brien"}
    status, answer, _ = api.call("POST", "incidents", body)
    assert status == 202, answer
    assert answer == {"incident_id": body["incident_id"], "execution_arn": api.execution_arn(body["incident_id"])}
    desc = api.stack.sfn.describe_execution(executionArn=answer["execution_arn"])
    received = json.loads(desc["input"])
    assert received == body
    assert received["reason"].encode("utf-8") == reason.encode("utf-8")
    assert received["requested_by"] == "O'Brien"


def test_without_an_incident_id_the_execution_is_named_after_the_request_id(api):
    status, answer, headers = api.call("POST", "incidents", {"instance_id": missing_instance()})
    assert status == 202, answer
    assert answer["incident_id"] == headers["x-amzn-RequestId"]
    assert api.stack.sfn.describe_execution(executionArn=answer["execution_arn"])["name"] == answer["incident_id"]


def test_the_same_body_twice_is_the_same_execution(api):
    body = {"instance_id": missing_instance(), "incident_id": incident(), "reason": "sent twice"}
    first = api.call("POST", "incidents", body)
    second = api.call("POST", "incidents", body)
    assert (first[0], second[0]) == (202, 202), (first, second)
    assert first[1] == second[1]
    executions = api.stack.sfn.list_executions(stateMachineArn=api.stack.state_machine_arn)["executions"]
    assert [e["name"] for e in executions].count(body["incident_id"]) == 1


def test_a_used_incident_id_with_another_body_is_409_and_the_first_execution_stands(api):
    body = {"instance_id": missing_instance(), "incident_id": incident(), "reason": "first"}
    assert api.call("POST", "incidents", body)[0] == 202
    status, answer, _ = api.call("POST", "incidents", {**body, "reason": "second"})
    assert status == 409, answer
    assert answer["error"] == "IncidentAlreadyExists"
    desc = api.stack.sfn.describe_execution(executionArn=api.execution_arn(body["incident_id"]))
    assert json.loads(desc["input"])["reason"] == "first"


def test_the_same_body_after_the_execution_finished_is_409(api):
    body = {"instance_id": missing_instance(), "incident_id": incident()}
    status, answer, _ = api.call("POST", "incidents", body)
    assert status == 202, answer
    api.wait(answer["execution_arn"])
    status, answer, _ = api.call("POST", "incidents", body)
    assert status == 409 and answer["error"] == "IncidentAlreadyExists", answer


@pytest.mark.parametrize(
    "body",
    [
        {"instance_id": "i-123"},
        {"instance_id": "i-0123456789ABCDEF0"},
        {"instance_id": "i-0123abcd\n"},
        {"reason": "no instance"},
        {"instance_id": "i-0123abcd", "unknown": 1},
        {"instance_id": "i-0123abcd", "incident_id": "it's"},
        {"instance_id": "i-0123abcd", "incident_id": "x" * 81},
        {"instance_id": "i-0123abcd", "reason": "x" * 1025},
        {"instance_id": "i-0123abcd", "options": {"revoke_sessions": "all"}},
        {"instance_id": "i-0123abcd", "options": {"collect": "yes"}},
        [],
        "not json",
        "",
    ],
    ids=lambda b: json.dumps(b)[:40],
)
def test_a_bad_body_is_400_and_starts_nothing(api, body):
    since = api.stack.last_request_seq()
    data = body if isinstance(body, str) else json.dumps(body)
    status, answer, headers = api.call("POST", "incidents", data)
    assert (status, answer) == (400, {"message": "Invalid request body"})
    assert headers["x-amzn-ErrorType"] == "BadRequestException"
    assert api.started(since) == []


def test_a_body_that_is_not_json_content_is_415_and_starts_nothing(api):
    since = api.stack.last_request_seq()
    body = json.dumps({"instance_id": missing_instance()})
    status, answer, _ = api.call("POST", "incidents", body, content_type="text/plain")
    assert (status, answer) == (415, {"message": "Unsupported Media Type"})
    # No Content-Type at all is taken as application/json, and the charset parameter is ignored.
    assert api.call("POST", "incidents", body, content_type=None)[0] == 202
    assert api.call("POST", "incidents", body, content_type="application/json; charset=utf-8")[0] == 202
    assert len(api.started(since)) == 2


def test_throttling_by_step_functions_is_429_and_starts_nothing(api, faults):
    instance_id = missing_instance()
    api.stack.control(
        "/faults",
        {"service": "states", "action": "StartExecution", "code": "ThrottlingException", "status": 400,
         "count": 1, "instance_id": instance_id},
    )
    body = {"instance_id": instance_id, "incident_id": incident()}
    status, answer, _ = api.call("POST", "incidents", body)
    assert status == 429, answer
    assert answer["error"] == "TooManyRequests"
    names = [e["name"] for e in api.stack.sfn.list_executions(stateMachineArn=api.stack.state_machine_arn)["executions"]]
    assert body["incident_id"] not in names
    # The caller's retry goes through.
    assert api.call("POST", "incidents", body)[0] == 202


# ---------------------------------------------------------------------------------------- GET


def test_get_describes_a_running_and_then_a_finished_incident(api):
    body = {"instance_id": missing_instance(), "incident_id": incident()}
    status, started, _ = api.call("POST", "incidents", body)
    assert status == 202, started
    status, answer, _ = api.call("GET", f"incidents/{body['incident_id']}")
    assert status == 200, answer
    assert answer["incident_id"] == body["incident_id"] and answer["execution_arn"] == started["execution_arn"]
    desc = api.wait(started["execution_arn"])
    status, answer, _ = api.call("GET", f"incidents/{body['incident_id']}")
    assert status == 200, answer
    assert answer["status"] == desc["status"] == "FAILED"
    assert answer["error"] == desc["error"] and answer["cause"] == desc["cause"]
    assert answer["start_date"] == pytest.approx(desc["startDate"].timestamp(), abs=0.01)
    assert answer["stop_date"] == pytest.approx(desc["stopDate"].timestamp(), abs=0.01)
    assert answer["output"] is None


def test_an_unknown_id_is_404(api):
    status, answer, _ = api.call("GET", f"incidents/{incident()}")
    assert status == 404, answer
    assert answer["error"] == "IncidentNotFound"


@pytest.mark.parametrize("bad_id", ["it's", 'say"hi', "back\\slash", "naïve", "a b", "a:b", "x" * 81])
def test_an_id_that_cannot_be_an_incident_id_is_400_not_500(api, bad_id):
    since = api.stack.last_request_seq()
    status, answer, _ = api.call("GET", "incidents/" + quote(bad_id, safe=""))
    assert status == 400, answer
    assert answer["error"] == "InvalidIncidentId"
    # Step Functions was asked about no execution of that name.
    assert all(bad_id not in json.dumps(r["params"]) for r in api.stack.requests(service="states", since=since))


def test_throttling_of_describe_execution_is_429(api, faults):
    name = incident()
    api.stack.control(
        "/faults",
        {"service": "states", "action": "DescribeExecution", "code": "ThrottlingException", "status": 400,
         "count": 1, "instance_id": name},
    )
    status, answer, _ = api.call("GET", f"incidents/{name}")
    assert status == 429 and answer["error"] == "TooManyRequests", answer


# ---------------------------------------------------------------------------------------- gateway


def test_an_unsigned_request_is_403_missing_authentication_token_and_starts_nothing(api):
    since = api.stack.last_request_seq()
    status, answer, headers = api.call("POST", "incidents", {"instance_id": missing_instance()}, sign=False)
    assert (status, answer) == (403, {"message": "Missing Authentication Token"})
    assert headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert api.call("GET", f"incidents/{incident()}", sign=False)[0] == 403
    assert api.started(since) == []


@pytest.mark.parametrize(
    "signer, error_type",
    [
        ({"secret_key": "not-the-secret"}, "InvalidSignatureException"),
        ({"access_key": "AKIAIOSFODNN7EXAMPLE"}, "UnrecognizedClientException"),
        ({"region": "eu-west-1"}, "InvalidSignatureException"),
    ],
    ids=["wrong-secret", "unknown-key", "wrong-region"],
)
def test_a_badly_signed_request_is_403_and_starts_nothing(api, signer, error_type):
    since = api.stack.last_request_seq()
    status, answer, headers = api.call("POST", "incidents", {"instance_id": missing_instance()}, **signer)
    assert status == 403, answer
    assert headers["x-amzn-ErrorType"] == error_type
    assert api.started(since) == []


def test_unknown_resources_and_methods_are_403_missing_authentication_token(api):
    for method, path in (("GET", "incidents"), ("DELETE", f"incidents/{incident()}"), ("GET", "nothing")):
        status, answer, _ = api.call(method, path)
        assert (status, answer) == (403, {"message": "Missing Authentication Token"}), (method, path)


def _access_log_line(stack, request_id: str) -> dict:
    for line in (Path(stack.state_dir) / "api-access.log").read_text().splitlines():
        entry = json.loads(line)
        if entry["requestId"] == request_id:
            return entry
    raise AssertionError(f"no access log line for {request_id}")


def test_the_caller_identity_is_the_signer_in_the_stages_access_log(api):
    stack = api.stack
    status, _, headers = api.call("GET", f"incidents/{incident()}")
    assert status == 404
    entry = _access_log_line(stack, headers["x-amzn-RequestId"])
    assert entry["userArn"] == "arn:aws:iam::123456789012:user/local-responder"
    assert (entry["httpMethod"], entry["resourcePath"], entry["status"]) == ("GET", "/incidents/{id}", "404")

    caller = "arn:aws:sts::123456789012:assumed-role/IncidentResponder/alice"
    stack.control("/apigateway/caller", {"user_arn": caller})
    try:
        status, _, headers = api.call("GET", f"incidents/{incident()}")
        entry = _access_log_line(stack, headers["x-amzn-RequestId"])
        assert entry["userArn"] == caller
        assert entry["caller"].startswith("AROA") and entry["caller"].endswith(":alice")
    finally:
        stack.control("/apigateway/caller", method="DELETE")

    # A key moto issued to an IAM user signs as that user.
    user = f"responder-{uuid.uuid4().hex[:6]}"
    stack.iam.create_user(UserName=user)
    key = stack.iam.create_access_key(UserName=user)["AccessKey"]
    status, _, headers = api.call(
        "GET", f"incidents/{incident()}", access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"]
    )
    assert status == 404
    assert _access_log_line(stack, headers["x-amzn-RequestId"])["userArn"] == f"arn:aws:iam::123456789012:user/{user}"


def test_the_stage_throttles_a_burst_over_its_limit(api):
    """Stage MethodSettings: 10 requests/s, burst 20 (token bucket). Unsigned requests are enough:
    throttling comes before authorization."""
    time.sleep(2.1)  # a full bucket
    results = [api.call("GET", f"incidents/{incident()}", sign=False)[:2] for _ in range(30)]
    throttled = [r for r in results if r[0] == 429]
    assert throttled and throttled[0][1] == {"message": "Too Many Requests"}
    assert 20 <= len([r for r in results if r[0] == 403]) < 30
    time.sleep(2.5)  # let the bucket refill for whatever runs next


# ---------------------------------------------------------------------------------------- the template language


def render(template: str, body: str = "", params: dict | None = None, context: dict | None = None) -> str:
    return vtl.render(template, vtl.Input(body, params), context if context is not None else {})


def test_escape_javascript_is_javascript_string_escaping_single_quote_included():
    # https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-mapping-template-reference.html
    text = "it's \"x\"\n\t\\ / é 😀"
    out = render("$util.escapeJavaScript($input.path('$.s'))", json.dumps({"s": text}))
    assert out == r"it\'s \"x\"\n\t\\ \/ \u00E9 \uD83D\uDE00"
    # The documented idiom for a JSON property turns \' back into ' and gives valid JSON.
    idiom = "\"$util.escapeJavaScript($input.path('$.s')).replaceAll(\"\\\\'\", \"'\")\""
    assert json.loads(render(idiom, json.dumps({"s": text}))) == text


def test_input_and_util_functions():
    body = json.dumps({"a": {"b": [1, 2]}, "s": "x y&z"})
    params = {"path": {"id": "p"}, "querystring": {"id": "q", "only": "q2"}, "header": {"X-Id": "h"}}
    assert render("$input.json('$.a')", body) == '{"b":[1,2]}'
    assert render("$input.path('$.a.b').size()", body) == "2"
    assert render("$input.body", body) == body
    assert render("$input.params('id') $input.params('only') $input.params('x-id')", body, params) == "p q2 h"
    assert render("$input.params().path.id", body, params) == "p"
    assert render("$util.urlEncode($input.path('$.s'))", body) == "x+y%26z"
    assert render("$util.urlDecode('x+y%26z')", body) == "x y&z"
    assert render("$util.base64Decode($util.base64Encode('é'))", body) == "é"
    assert render("$util.parseJson('{\"k\": [3]}').k.get(0)", body) == "3"


def test_java_string_methods_and_the_response_override():
    context = {"responseOverride": {"status": None}, "requestId": "r-1"}
    template = (
        "#set($arn = 'arn:aws:states:us-east-1:1:execution:sm:IR-1')\n"
        "#set($start = $arn.lastIndexOf(':') + 1)\n"
        "$arn.substring($start) $arn.indexOf('zz') $arn.endsWith('IR-1') $context.requestId\n"
        "#set($context.responseOverride.status = 409)"
    )
    assert render(template, "{}", context=context).strip() == "IR-1 -1 true r-1"
    assert context["responseOverride"]["status"] == 409
    assert render("#set($s = 'xaby')$s.replaceAll('(a)(b)', '$2$1')") == "xbay"


def test_model_patterns_are_ecma_262_a_trailing_newline_does_not_match():
    validator = Draft4({"type": "string", "pattern": "^i-[0-9a-f]{8}$"})
    assert validator.is_valid("i-0123abcd")
    assert not validator.is_valid("i-0123abcd\n")
