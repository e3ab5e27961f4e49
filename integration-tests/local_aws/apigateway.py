"""The ``SecurityResponse`` REST API on loopback, run from the synthesized template as API Gateway runs it.

Nothing about the API is written here: the stage, resources, methods, authorization type, request
models and validators, integration (service, action, role, passthrough behaviour, request
templates) and integration responses (selection patterns, status codes, response templates) are
read from the template's ``AWS::ApiGateway::*`` resources, with intrinsics resolved to the local
resources (``Template.resolve``; ``deploy()`` recorded the state machine's ARN and name). A
request goes through the steps of API Gateway's REST request flow
(https://docs.aws.amazon.com/apigateway/latest/developerguide/rest-api-data-transformations.html):

1. Route: ``/<stage>/<resource path>`` and the method. Anything else is 403
   ``Missing Authentication Token``, which is also what an unsupported method or resource gets
   (MISSING_AUTHENTICATION_TOKEN in
   https://docs.aws.amazon.com/apigateway/latest/developerguide/supported-gateway-response-types.html).
2. Throttling: the stage's ``MethodSettings`` rate and burst, a token bucket
   (https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-request-throttling.html);
   429 ``Too Many Requests`` (THROTTLED).
3. ``AWS_IAM`` authorization: the request must be signed with SigV4 for ``execute-api``
   (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-troubleshooting.html: an
   unsigned request gets ``Missing Authentication Token``); a bad signature, an unknown key, a
   wrong scope or an expired signature get 403. The signer's identity becomes
   ``$context.identity``: the stack's own key is the configurable local caller
   (``CORDON_API_CALLER_ARN``, ``POST /_cordon/apigateway/caller``); keys moto issued (IAM users,
   STS sessions) are those principals. Whether that identity may call ``execute-api:Invoke`` is
   not evaluated (no IAM policy evaluation here).
4. Request validation (the method's request validator): required parameters present and
   non-blank (400 BAD_REQUEST_PARAMETERS), and the body valid against the method's model for its
   content type, JSON Schema draft 4 (400 ``{"message": "Invalid request body"}``,
   BAD_REQUEST_BODY). Nothing is called when validation fails.
   https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-method-request-validation.html
5. Integration request: the mapping template for the request's ``Content-Type`` (none means
   ``application/json``); with ``PassthroughBehavior: NEVER`` a content type with no template is
   415 ``Unsupported Media Type``
   (https://docs.aws.amazon.com/apigateway/latest/developerguide/integration-passthrough-behaviors.html).
   Templates are rendered by ``vtl`` (``$input``, ``$util``, ``$context``).
6. The AWS integration: ``arn:aws:apigateway:<region>:<service>:action/<Action>`` is called on the
   local endpoint (through its middleware, so fault rules and the request log apply) with the
   rendered template as the body, signed with credentials of the integration's role
   (``Credentials``): the role's own local credentials (``principals``), so the call is the role's.
7. Integration response: the first ``SelectionPattern`` that matches the integration's HTTP
   status code (for AWS integrations the status code is what is matched; the regex must match
   the whole value), else the default response (no pattern); its response template renders the
   service's body; ``$context.responseOverride.status`` replaces the status code
   (https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-override-request-response-parameters.html).

Each request is written to ``<state-dir>/api-access.log`` in the stage's access log format.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import http.client
import itertools
import json
import logging
import os
import random
import re
import string
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import jsonschema
from werkzeug.serving import make_server
from werkzeug.wsgi import get_input_stream

from . import ACCESS_KEY, REGION, SECRET_KEY
from . import vtl
from .template import LOCAL_ACCOUNT, Template, TemplateError

LOG = logging.getLogger("local_aws.apigateway")

API_NAME = "SecurityResponse"
DEFAULT_CALLER_ARN = "arn:aws:iam::123456789012:user/local-responder"
# SigV4: a request must reach AWS within five minutes of its time stamp.
# https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-troubleshooting.html
SIGNATURE_SKEW = timedelta(minutes=5)
# API Gateway's maximum integration timeout for REST APIs is 29 seconds by default.
# https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html
INTEGRATION_TIMEOUT_SECONDS = 29
# The botocore service model of each service an AWS integration may call (JSON protocol only).
SERVICE_MODELS = {"states": "stepfunctions"}


class GatewayError(Exception):
    """A gateway response: API Gateway's own answer, not the integration's.

    Default bodies are ``{"message": <message>}``; ``error_type`` goes in ``x-amzn-ErrorType``.
    https://docs.aws.amazon.com/apigateway/latest/developerguide/supported-gateway-response-types.html
    """

    def __init__(self, response_type: str, status: int, message: str, error_type: str) -> None:
        super().__init__(message)
        self.response_type = response_type
        self.status = status
        self.message = message
        self.error_type = error_type


def missing_token() -> GatewayError:
    return GatewayError("MISSING_AUTHENTICATION_TOKEN", 403, "Missing Authentication Token", "MissingAuthenticationTokenException")


def invalid_signature(message: str) -> GatewayError:
    return GatewayError("INVALID_SIGNATURE", 403, message, "InvalidSignatureException")


def internal_error(response_type: str = "DEFAULT_5XX") -> GatewayError:
    return GatewayError(response_type, 500, "Internal server error", "InternalServerErrorException")


# ----------------------------------------------------------------------------------- the model


@dataclass
class IntegrationResponse:
    status_code: str
    selection_pattern: str | None
    templates: dict[str, str]


@dataclass
class Integration:
    service: str
    action: str
    credentials: str | None
    passthrough: str
    request_templates: dict[str, str]
    responses: list[IntegrationResponse]


@dataclass
class Method:
    http_method: str
    resource_path: str
    authorization: str
    request_models: dict[str, dict]
    validate_body: bool
    validate_params: bool
    required_params: list[str]
    method_responses: set[str]
    integration: Integration

    def match(self, segments: list[str]) -> dict[str, str] | None:
        """Path parameters if ``segments`` (decoded) fit this method's resource path."""
        parts = [p for p in self.resource_path.split("/") if p]
        if len(parts) != len(segments):
            return None
        params = {}
        for part, seg in zip(parts, segments):
            if part.startswith("{") and part.endswith("}"):
                if seg == "":
                    return None
                params[part[1:-1]] = seg
            elif part != seg:
                return None
        return params


@dataclass
class RestApi:
    name: str
    api_id: str
    stage: str
    methods: list[Method]
    rate_limit: float | None
    burst_limit: int | None
    access_log_format: str | None

    @classmethod
    def from_template(cls, template: Template, name: str = API_NAME) -> RestApi:
        apis = [lid for lid, res in template.of_type("AWS::ApiGateway::RestApi") if res["Properties"].get("Name") == name]
        if len(apis) != 1:
            raise TemplateError(f"expected one AWS::ApiGateway::RestApi named {name}, found {len(apis)}")
        api_lid = apis[0]

        def of_api(cfn_type: str) -> list[tuple[str, dict]]:
            return [(lid, r) for lid, r in template.of_type(cfn_type) if r["Properties"].get("RestApiId") == {"Ref": api_lid}]

        resources = dict(of_api("AWS::ApiGateway::Resource"))

        def path_of(ref: Any) -> str:
            if ref == {"Fn::GetAtt": [api_lid, "RootResourceId"]}:
                return ""
            lid = ref["Ref"]
            props = resources[lid]["Properties"]
            part = props["PathPart"]
            if "+" in part:
                raise TemplateError(f"greedy path parameter {part} is not supported by the local API")
            return path_of(props["ParentId"]) + "/" + part

        models = {lid: r["Properties"] for lid, r in of_api("AWS::ApiGateway::Model")}
        validators = {lid: r["Properties"] for lid, r in of_api("AWS::ApiGateway::RequestValidator")}
        methods = []
        for lid, res in of_api("AWS::ApiGateway::Method"):
            p = res["Properties"]
            resource_path = path_of(p["ResourceId"]) if p["ResourceId"] != {"Fn::GetAtt": [api_lid, "RootResourceId"]} else ""
            validator = validators.get((p.get("RequestValidatorId") or {}).get("Ref"), {})
            method_responses = {str(r["StatusCode"]) for r in p.get("MethodResponses", [])}
            integration = _integration(template, lid, p.get("Integration") or {}, method_responses)
            methods.append(
                Method(
                    http_method=p["HttpMethod"],
                    resource_path=resource_path or "/",
                    authorization=p.get("AuthorizationType", "NONE"),
                    request_models={
                        ct: models[ref["Ref"]]["Schema"] for ct, ref in (p.get("RequestModels") or {}).items()
                    },
                    validate_body=bool(validator.get("ValidateRequestBody")),
                    validate_params=bool(validator.get("ValidateRequestParameters")),
                    required_params=[k for k, v in (p.get("RequestParameters") or {}).items() if v],
                    method_responses=method_responses,
                    integration=integration,
                )
            )
        stages = [r["Properties"] for _, r in of_api("AWS::ApiGateway::Stage")]
        if len(stages) != 1:
            raise TemplateError(f"expected one stage of {name}, found {len(stages)}")
        stage = stages[0]
        throttle = next(
            (s for s in stage.get("MethodSettings", []) if s.get("HttpMethod") == "*" and s.get("ResourcePath") == "/*"), {}
        )
        return cls(
            name=name,
            api_id="".join(random.choices(string.ascii_lowercase + string.digits, k=10)),
            stage=stage["StageName"],
            methods=methods,
            rate_limit=throttle.get("ThrottlingRateLimit"),
            burst_limit=throttle.get("ThrottlingBurstLimit"),
            access_log_format=(stage.get("AccessLogSetting") or {}).get("Format"),
        )

    def route(self, http_method: str, segments: list[str]) -> tuple[Method, dict[str, str]] | None:
        for m in self.methods:
            if m.http_method in (http_method, "ANY"):
                params = m.match(segments)
                if params is not None:
                    return m, params
        return None


def _integration(template: Template, method_lid: str, props: dict, method_responses: set[str]) -> Integration:
    if props.get("Type") != "AWS":
        raise TemplateError(f"{method_lid}: integration type {props.get('Type')} is not supported by the local API")
    uri = template.resolve(props["Uri"])
    m = re.fullmatch(r"arn:aws:apigateway:[a-z0-9-]+:([a-z0-9-]+):action/(\w+)", uri)
    if not m or m.group(1) not in SERVICE_MODELS:
        raise TemplateError(f"{method_lid}: integration URI {uri} is not an action of a supported service")
    request_templates = {ct: template.resolve(t) for ct, t in (props.get("RequestTemplates") or {}).items()}
    for ct, text in request_templates.items():
        if "local:" in text:
            raise TemplateError(f"{method_lid}: request template {ct} refers to a resource the local stack did not create: {text}")
    responses = []
    for r in props.get("IntegrationResponses", []):
        status = str(r["StatusCode"])
        # PutIntegrationResponse needs the method response it maps to.
        # https://docs.aws.amazon.com/apigateway/latest/api/API_PutIntegrationResponse.html
        if status not in method_responses:
            raise TemplateError(f"{method_lid}: integration response {status} has no method response")
        responses.append(IntegrationResponse(status, r.get("SelectionPattern"), dict(r.get("ResponseTemplates") or {})))
    return Integration(
        service=m.group(1),
        action=m.group(2),
        credentials=template.resolve(props["Credentials"]) if props.get("Credentials") else None,
        passthrough=props.get("PassthroughBehavior", "WHEN_NO_MATCH"),
        request_templates=request_templates,
        responses=responses,
    )


# ----------------------------------------------------------------------------------- callers (SigV4)


@dataclass
class Caller:
    """The principal that signed a request: ``$context.identity``."""

    arn: str
    access_key: str

    @property
    def account_id(self) -> str:
        return self.arn.split(":")[4]

    @property
    def principal_id(self) -> str:
        """IAM's unique id: ``AIDA...`` for a user, ``AROA...:<session>`` for an assumed role
        (synthesized, stable per ARN). https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_identifiers.html#identifiers-unique-ids"""
        digest = base64.b32encode(hashlib.sha256(self.arn.encode()).digest()).decode()[:17]
        if ":assumed-role/" in self.arn:
            return f"AROA{digest}:{self.arn.rsplit('/', 1)[-1]}"
        return f"AIDA{digest}"

    def identity(self, source_ip: str, user_agent: str) -> dict:
        pid = self.principal_id
        return {
            "accountId": self.account_id,
            "caller": pid,
            "user": pid,
            "userArn": self.arn,
            "accessKey": self.access_key,
            "apiKey": None,
            "apiKeyId": None,
            "sourceIp": source_ip,
            "userAgent": user_agent,
            "principalOrgId": None,
            "cognitoIdentityId": None,
            "cognitoIdentityPoolId": None,
            "cognitoAuthenticationType": None,
            "cognitoAuthenticationProvider": None,
        }


class Callers:
    """Secret key and principal of each access key the API accepts."""

    def __init__(self, caller_arn: str) -> None:
        self.default_arn = caller_arn
        self.caller_arn = caller_arn

    def lookup(self, access_key: str, session_token: str | None) -> tuple[str, Caller]:
        """``(secret, caller)``, or GatewayError 403 for a key nobody issued."""
        if access_key == ACCESS_KEY and session_token is None:
            return SECRET_KEY, Caller(self.caller_arn, access_key)
        from moto.iam.access_control import CreateAccessKeyFailure, create_access_key

        headers = {"X-Amz-Security-Token": session_token} if session_token else {}
        try:
            key = create_access_key(account_id=LOCAL_ACCOUNT, partition="aws", access_key_id=access_key, headers=headers)
        except CreateAccessKeyFailure:
            raise GatewayError(
                "INVALID_SIGNATURE", 403, "The security token included in the request is invalid.", "UnrecognizedClientException"
            ) from None
        return key.create_credentials().secret_key, Caller(key.arn, access_key)


_AUTH = re.compile(r"^AWS4-HMAC-SHA256\s+(.*)$", re.S)


def verify_sigv4(method: str, raw_uri: str, headers: dict[str, str], body: bytes, callers: Callers) -> Caller:
    """The caller of a SigV4-signed request for ``execute-api``, or the GatewayError API Gateway
    answers. The signature is recomputed with botocore's SigV4 signer over the headers the client
    signed (https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    auth = headers.get("authorization")
    if not auth:
        raise missing_token()
    m = _AUTH.match(auth)
    if not m:
        raise GatewayError(
            "INVALID_SIGNATURE", 403, f"Authorization header requires the AWS4-HMAC-SHA256 algorithm. Authorization={auth}",
            "IncompleteSignatureException",
        )
    parts = dict(p.strip().split("=", 1) for p in m.group(1).split(",") if "=" in p)
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if k not in parts]
    if missing:
        raise GatewayError(
            "INVALID_SIGNATURE", 403,
            " ".join(f"Authorization header requires '{k}' parameter." for k in missing) + f" Authorization={auth}",
            "IncompleteSignatureException",
        )
    amz_date = headers.get("x-amz-date")
    if not amz_date:
        raise GatewayError(
            "INVALID_SIGNATURE", 403,
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
            "IncompleteSignatureException",
        )
    scope = parts["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise invalid_signature("Credential should be scoped to a valid region. ")
    access_key, date, region, service, _ = scope
    if service != "execute-api":
        raise invalid_signature("Credential should be scoped to correct service: 'execute-api'. ")
    if region != REGION:
        raise invalid_signature("Credential should be scoped to a valid region. ")
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise invalid_signature(f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'.") from None
    if date != amz_date[:8]:
        raise invalid_signature(f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{date}' != '{amz_date[:8]}', from '{amz_date}'.")
    now = datetime.now(UTC)
    if abs(now - signed_at) > SIGNATURE_SKEW:
        raise invalid_signature(
            f"Signature expired: {amz_date} is now earlier than {(now - SIGNATURE_SKEW).strftime('%Y%m%dT%H%M%SZ')} "
            f"({now.strftime('%Y%m%dT%H%M%SZ')} - 5 min.)"
        )
    declared = headers.get("x-amz-content-sha256")
    if declared and declared != "UNSIGNED-PAYLOAD" and declared != hashlib.sha256(body).hexdigest():
        raise invalid_signature("The provided 'x-amz-content-sha256' header does not match what was computed.")
    secret, caller = callers.lookup(access_key, headers.get("x-amz-security-token"))
    signed = parts["SignedHeaders"].split(";")
    host = headers.get("host", "")
    request = AWSRequest(
        method=method,
        url=f"http://{host}{raw_uri}",
        data=body,
        headers={name: headers[name] for name in signed if name in headers},
    )
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(access_key, secret), "execute-api", region)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, parts["Signature"]):
        raise invalid_signature(
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
            "Access Key and signing method. Consult the service documentation for details."
        )
    return caller


# ----------------------------------------------------------------------------------- integration credentials


class IntegrationRole:
    """Credentials of the integration's role (``Credentials``), with which API Gateway calls the
    service (https://docs.aws.amazon.com/apigateway/latest/developerguide/integration-request-basic-setup.html).
    The local stack's credentials of a template role are the role's own (``principals``), so the
    request log and the action-coverage check attribute the call to that role."""

    def __init__(self, role_arn: str) -> None:
        if role_arn.startswith("local:"):
            raise TemplateError(f"the integration role {role_arn} was not created by the local stack's deployment")
        self.role_arn = role_arn

    def credentials(self):
        from botocore.credentials import Credentials

        from .principals import REGISTRY

        c = REGISTRY.credentials_of_role_arn(self.role_arn)
        return Credentials(c["AWS_ACCESS_KEY_ID"], c["AWS_SECRET_ACCESS_KEY"], c["AWS_SESSION_TOKEN"])


# ----------------------------------------------------------------------------------- the gateway


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.updated = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


def _media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``; none -> application/json
    (the passthrough table's "None (default to application/json)")."""
    if not content_type or not content_type.strip():
        return "application/json"
    return content_type.split(";", 1)[0].strip().lower()


def _ecma_pattern(pattern: str) -> str:
    """A JSON Schema ``pattern`` (ECMA 262, draft 4 §5.2.3) for Python's ``re``: an unescaped ``$``
    outside a character class matches only at the very end of the input (``\\Z``), as in ECMA 262,
    not also before a final newline as Python's ``$`` does."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if c == "[":
            in_class = True
        elif c == "]":
            in_class = False
        elif c == "$" and not in_class:
            c = r"\Z"
        out.append(c)
        i += 1
    return "".join(out)


def _pattern(validator, pattern, instance, schema):
    if isinstance(instance, str) and not re.search(_ecma_pattern(pattern), instance):
        yield jsonschema.ValidationError(f"ECMA 262 regex {pattern!r} does not match input string {instance!r}")


# Draft 4, with ECMA 262 semantics for "pattern" (and "patternProperties" keys are not used here).
Draft4 = jsonschema.validators.extend(jsonschema.Draft4Validator, {"pattern": _pattern})


class Gateway:
    """The WSGI application: one REST API, one stage."""

    def __init__(self, api: RestApi, endpoint: str, roles: dict[str, IntegrationRole], callers: Callers,
                 access_log: Path | None = None) -> None:
        self.api = api
        self.endpoint = endpoint
        self.roles = roles
        self.callers = callers
        self.access_log = access_log
        self.bucket = TokenBucket(api.rate_limit, int(api.burst_limit)) if api.rate_limit and api.burst_limit else None
        self._log_lock = threading.Lock()
        self._validators = {
            (m.http_method, m.resource_path, ct): Draft4(schema)
            for m in api.methods
            for ct, schema in m.request_models.items()
        }
        self.count = itertools.count(1)

    # -------------------------------------------------------------- WSGI

    def __call__(self, environ: dict, start_response):
        started = time.monotonic()
        request_id = str(uuid.uuid4())
        body = get_input_stream(environ, safe_fallback=True).read()
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        if environ.get("CONTENT_LENGTH"):
            headers["content-length"] = environ["CONTENT_LENGTH"]
        method = environ["REQUEST_METHOD"]
        raw_uri = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO", "/")
        raw_path, _, query = raw_uri.partition("?")
        now = datetime.now(UTC)
        context: dict[str, Any] = {
            "accountId": LOCAL_ACCOUNT,
            "apiId": self.api.api_id,
            "domainName": headers.get("host", ""),
            "domainPrefix": headers.get("host", "").split(".", 1)[0],
            "extendedRequestId": base64.b32encode(uuid.uuid4().bytes).decode()[:16],
            "httpMethod": method,
            "path": unquote(raw_path),
            "protocol": environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
            "requestId": request_id,
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "resourceId": None,
            "resourcePath": None,
            "stage": self.api.stage,
            "identity": {"sourceIp": environ.get("REMOTE_ADDR", "127.0.0.1"), "userAgent": headers.get("user-agent", "")},
            "requestOverride": {"header": {}, "path": {}, "querystring": {}},
            "responseOverride": {"header": {}, "status": None},
            "error": {"message": None, "responseType": None, "validationErrorString": None},
            "integration": {"status": None, "error": None, "latency": None},
        }
        try:
            status, out_headers, data = self._handle(method, raw_path, query, headers, body, context)
        except GatewayError as e:
            context["error"].update(message=e.message, responseType=e.response_type)
            status = e.status
            data = json.dumps({"message": e.message}).encode()
            out_headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", e.error_type)]
        except Exception:
            LOG.exception("local API Gateway failed on %s %s", method, raw_path)
            status = 500
            data = json.dumps({"message": "Internal server error"}).encode()
            out_headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", "InternalServerErrorException")]
        out_headers += [("x-amzn-RequestId", request_id), ("x-amz-apigw-id", context["extendedRequestId"]),
                        ("Content-Length", str(len(data)))]
        start_response(f"{status} {_REASONS.get(status, 'Status')}", out_headers)
        self._access_log(context, status, len(data), started)
        return [data]

    # -------------------------------------------------------------- the request flow

    def _handle(self, method, raw_path, query, headers, body, context):
        segments = [unquote(s) for s in raw_path.split("/")[1:]]
        if not segments or segments[0] != self.api.stage:
            raise missing_token()
        routed = self.api.route(method, [s for s in segments[1:] if s])
        if routed is None:
            raise missing_token()
        m, path_params = routed
        context["resourcePath"] = m.resource_path
        context["resourceId"] = hashlib.sha1(m.resource_path.encode()).hexdigest()[:6]

        if self.bucket and not self.bucket.take():
            raise GatewayError("THROTTLED", 429, "Too Many Requests", "TooManyRequestsException")

        if m.authorization == "AWS_IAM":
            raw_uri = raw_path + ("?" + query if query else "")
            caller = verify_sigv4(method, raw_uri, headers, body, self.callers)
            context["identity"] = caller.identity(context["identity"]["sourceIp"], context["identity"]["userAgent"])
        elif m.authorization != "NONE":
            raise TemplateError(f"authorization type {m.authorization} is not supported by the local API")

        params = {
            "path": path_params,
            "querystring": dict(parse_qsl(query, keep_blank_values=True)),
            "header": {k.title(): v for k, v in headers.items()},
        }
        media_type = _media_type(headers.get("content-type"))
        text = body.decode("utf-8", "replace")
        self._validate(m, params, media_type, text, context)

        integration = m.integration
        template = integration.request_templates.get(media_type)
        if template is None:
            if integration.passthrough in ("NEVER", "WHEN_NO_TEMPLATE") and (
                integration.passthrough == "NEVER" or integration.request_templates
            ):
                raise GatewayError("UNSUPPORTED_MEDIA_TYPE", 415, "Unsupported Media Type", "UnsupportedMediaTypeException")
            rendered = text
        else:
            try:
                rendered = vtl.render(template, vtl.Input(text, params), context)
            except vtl.TemplateRenderError as e:
                LOG.error("integration request template of %s %s: %s", method, m.resource_path, e)
                raise internal_error() from e

        status, response_body = self._call(integration, rendered, context)
        return self._respond(m, status, response_body, headers, context)

    def _validate(self, m: Method, params: dict, media_type: str, text: str, context: dict) -> None:
        if m.validate_params:
            missing = []
            for name in m.required_params:
                _, _, where, key = name.split(".", 3)
                source = {"path": params["path"], "querystring": params["querystring"], "header": params["header"]}[where]
                value = next((v for k, v in source.items() if (k.lower() == key.lower() if where == "header" else k == key)), "")
                if not str(value).strip():
                    missing.append(key)
            if missing:
                raise GatewayError(
                    "BAD_REQUEST_PARAMETERS", 400, f"Missing required request parameters: [{', '.join(missing)}]",
                    "BadRequestException",
                )
        if m.validate_body and media_type in m.request_models:
            validator = self._validators[(m.http_method, m.resource_path, media_type)]
            try:
                document = json.loads(text)
            except ValueError as e:
                context["error"]["validationErrorString"] = f"[Invalid JSON: {e}]"
                raise GatewayError("BAD_REQUEST_BODY", 400, "Invalid request body", "BadRequestException") from None
            errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
            if errors:
                context["error"]["validationErrorString"] = "[" + ", ".join(e.message for e in errors) + "]"
                raise GatewayError("BAD_REQUEST_BODY", 400, "Invalid request body", "BadRequestException")

    def _call(self, integration: Integration, rendered: str, context: dict) -> tuple[int, str]:
        """The AWS service action, as API Gateway calls it: the service's JSON protocol, signed
        with the integration role's credentials."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        meta = _service_metadata(integration.service)
        headers = {
            "Content-Type": f"application/x-amz-json-{meta['jsonVersion']}",
            "X-Amz-Target": f"{meta['targetPrefix']}.{integration.action}",
            "User-Agent": "AmazonAPIGateway_" + self.api.api_id,
        }
        creds = self.roles[integration.credentials].credentials() if integration.credentials else None
        data = rendered.encode("utf-8")
        req = AWSRequest(method="POST", url=self.endpoint + "/", data=data, headers=headers)
        if creds is not None:
            SigV4Auth(creds, meta.get("signingName", integration.service), REGION).add_auth(req)
        started = time.monotonic()
        http = urllib.request.Request(self.endpoint + "/", data=data, headers=dict(req.headers.items()), method="POST")
        try:
            with urllib.request.urlopen(http, timeout=INTEGRATION_TIMEOUT_SECONDS) as resp:
                status, text = resp.status, resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode("utf-8", "replace")
        except TimeoutError as e:
            context["integration"]["error"] = str(e)
            raise GatewayError("INTEGRATION_TIMEOUT", 504, "Endpoint request timed out", "InternalServerErrorException") from e
        except urllib.error.URLError as e:
            context["integration"]["error"] = str(e.reason)
            raise internal_error("INTEGRATION_FAILURE") from e
        context["integration"].update(status=status, latency=round((time.monotonic() - started) * 1000))
        return status, text

    def _respond(self, m: Method, status: int, body: str, headers: dict, context: dict):
        selected = next(
            (r for r in m.integration.responses if r.selection_pattern and re.fullmatch(r.selection_pattern, str(status))),
            None,
        ) or next((r for r in m.integration.responses if not r.selection_pattern), None)
        if selected is None:
            # "integration response mapping cannot match any template and no default template is configured"
            LOG.error("%s %s: no integration response for status %s", m.http_method, m.resource_path, status)
            raise internal_error("API_CONFIGURATION_ERROR")
        data = body
        if selected.templates:
            accept = _media_type(headers.get("accept")) if headers.get("accept") not in (None, "*/*") else None
            ct = accept if accept in selected.templates else (
                "application/json" if "application/json" in selected.templates else next(iter(selected.templates))
            )
            try:
                data = vtl.render(selected.templates[ct], vtl.Input(body), context)
            except vtl.TemplateRenderError as e:
                LOG.error("integration response template of %s %s: %s", m.http_method, m.resource_path, e)
                raise internal_error() from e
        final = context["responseOverride"].get("status") or selected.status_code
        try:
            final = int(final)
        except (TypeError, ValueError):
            raise internal_error() from None
        out_headers = [("Content-Type", "application/json")]
        out_headers += [(k, str(v)) for k, v in (context["responseOverride"].get("header") or {}).items()]
        return final, out_headers, data.encode("utf-8")

    # -------------------------------------------------------------- access log

    def _access_log(self, context: dict, status: int, length: int, started: float) -> None:
        if not self.access_log or not self.api.access_log_format:
            return
        context = {**context, "status": status, "responseLength": length,
                   "responseLatency": round((time.monotonic() - started) * 1000)}

        def value(m: re.Match) -> str:
            cur: Any = context
            for part in m.group(1).split("."):
                cur = cur.get(part) if isinstance(cur, dict) else None
            # Written as JSON string content, so that a JSON-shaped format stays parseable.
            return "-" if cur is None else json.dumps(str(cur), ensure_ascii=False)[1:-1]

        line = re.sub(r"\$context\.([A-Za-z0-9_.]+[A-Za-z0-9_])", value, self.api.access_log_format)
        with self._log_lock, open(self.access_log, "a") as f:
            f.write(line + "\n")


@functools.cache
def _service_metadata(service: str) -> dict:
    """Protocol metadata (JSON version, target prefix, signing name) from botocore's service model."""
    import botocore.session

    return botocore.session.get_session().get_service_model(SERVICE_MODELS[service]).metadata


_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 409: "Conflict",
            413: "Payload Too Large", 415: "Unsupported Media Type", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 504: "Gateway Timeout"}


# ----------------------------------------------------------------------------------- serving


class LocalApiGateway:
    """The API of the template on ``127.0.0.1:<port>`` (0: a free port), from a daemon thread."""

    def __init__(self, template: Template, endpoint: str, state_dir: Path | None = None, port: int = 0,
                 caller_arn: str | None = None) -> None:
        self.api = RestApi.from_template(template)
        roles = {m.integration.credentials: IntegrationRole(m.integration.credentials)
                 for m in self.api.methods if m.integration.credentials}
        self.callers = Callers(caller_arn or os.environ.get("CORDON_API_CALLER_ARN") or DEFAULT_CALLER_ARN)
        self.gateway = Gateway(self.api, endpoint, roles, self.callers,
                               access_log=(state_dir / "api-access.log") if state_dir else None)
        self._server = make_server("127.0.0.1", port, self.gateway, threaded=True)
        self.port = self._server.server_port
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The stage's invoke URL, as the ``APIBaseURI`` output gives it (ends with ``/``)."""
        return f"http://127.0.0.1:{self.port}/{self.api.stage}/"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-apigateway", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        if self._thread:
            self._thread.join(timeout=10)

    def control_routes(self) -> dict:
        """``/_cordon/apigateway``: the API's URL, methods and caller; set or reset the caller."""

        def describe(body, q):
            return 200, {
                "url": self.url,
                "api_id": self.api.api_id,
                "stage": self.api.stage,
                "methods": [f"{m.http_method} {m.resource_path}" for m in self.api.methods],
                "caller_arn": self.callers.caller_arn,
            }

        def set_caller(body, q):
            from .server import ControlError

            arn = (body or {}).get("user_arn", "")
            if not re.fullmatch(r"arn:aws:(iam|sts)::\d{12}:(user|role|assumed-role)/.+", arn):
                raise ControlError(400, "user_arn must be an IAM user, role or assumed-role ARN")
            self.callers.caller_arn = arn
            return 200, {"caller_arn": arn}

        def reset_caller(body, q):
            self.callers.caller_arn = self.callers.default_arn
            return 200, {"caller_arn": self.callers.caller_arn}

        return {
            ("GET", "/_cordon/apigateway"): describe,
            ("POST", "/_cordon/apigateway/caller"): set_caller,
            ("DELETE", "/_cordon/apigateway/caller"): reset_caller,
        }


# ----------------------------------------------------------------------------------- a client


def call_api(
    base_url: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    access_key: str = ACCESS_KEY,
    secret_key: str = SECRET_KEY,
    session_token: str | None = None,
    region: str = REGION,
    content_type: str | None = "application/json",
    sign: bool = True,
    timeout: float = 60,
) -> tuple[int, dict[str, str], str]:
    """Calls the API as a user does with IAM authorization: the request signed with SigV4 for
    ``execute-api`` by botocore's signer (what the AWS SDKs use). ``body``: bytes or str as is,
    anything else JSON-encoded. Returns ``(status, headers, body text)``."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = base_url.rstrip("/") + "/" + path.lstrip("/")
    if body is None:
        data = b""
    elif isinstance(body, bytes):
        data = body
    elif isinstance(body, str):
        data = body.encode("utf-8")
    else:
        data = json.dumps(body).encode("utf-8")
    headers = {"Content-Type": content_type} if content_type and data else {}
    request = AWSRequest(method=method, url=url, data=data, headers=headers)
    if sign:
        SigV4Auth(Credentials(access_key, secret_key, session_token), "execute-api", region).add_auth(request)
    # http.client rather than urllib: urllib would add a Content-Type of its own to a body sent without one.
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=data or None, headers=dict(request.headers.items()))
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read().decode("utf-8")
    finally:
        conn.close()
