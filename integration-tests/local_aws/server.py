"""moto's WSGI app, in this process, behind a middleware that logs, injects faults and shims gaps.

Why in-process rather than ``moto_server``: the shims and the Lambda runtime shim need moto's
backends (instances, functions) directly, and moto's Step Functions interpreter runs inside the
server process anyway. This is what ``moto.moto_server.threaded_moto_server.ThreadedMotoServer``
does (werkzeug ``make_server``, threaded, ``MotoRequestHandler``), with our middleware in front.

moto configuration (``moto.core.config.default_user_config``), set before the first request:

- ``stepfunctions.execute_state_machine``: run executions with moto's ASL interpreter instead of
  returning canned results. The interpreter calls services back over HTTP on
  ``localhost:$MOTO_PORT`` (``moto/stepfunctions/parser/asl/utils/boto_client.py``), so
  ``MOTO_PORT`` is set to our port before anything can start an execution.
- ``lambda.use_docker = false``: moto's Docker-less Lambda backend, whose ``invoke`` the
  ``runtime_api`` module replaces with one that runs the real step binaries.
- ``iam.load_aws_managed_policies``: moto's copy of the AWS managed policies, so that a template
  role's ``ManagedPolicyArns`` (AmazonSSMManagedInstanceCore) can be attached as on AWS.

Every request is recorded (service, action, status, time) for tests and the demo. Control endpoints
share the port under ``/_cordon``:

- ``GET /_cordon/health``
- ``GET /_cordon/requests[?service=&action=&since=]``, ``DELETE /_cordon/requests``
- ``GET|POST|DELETE /_cordon/faults[?id=]`` (see ``faults``)
- ``GET|POST /_cordon/scenario`` ``{"scenario": "<test id>"|null}``: the scenario that each request
  is logged under (the tests' autouse fixture sets it); every request also carries its caller
  (``journal.attribute``) and is appended to the run's journal (``journal``)
- the shims' own endpoints (see ``shims``, ``ssm_run_command``, ``runtime_api``)

Presigned S3 URLs (SigV4 query-string authentication) are checked before anything else answers
them, because moto checks neither their signature nor their expiry (``principals.verify_presigned``):
an expired URL, one used with another method or key, or one signed with a key the stack does not
know is refused as S3 refuses it (``shim: PresignedUrlCheck`` in the request log, ``auth:
presigned-refused``, no principal: the request was never authenticated, so it is nobody's call). A
valid one goes on to moto like any request and is logged and journaled under the signer's principal
(the access key of ``X-Amz-Credential``), with ``auth: presigned``.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime, UTC
from typing import Any, Protocol
from xml.sax.saxutils import escape

from werkzeug.serving import make_server

from .faults import FaultInjector
from .journal import Journal, attribute
from .principals import verify_presigned
from .wire import AwsRequest, Response, read_request, request_id

LOG = logging.getLogger("local_aws")

ControlHandler = Callable[[Any, dict[str, list[str]]], tuple[int, Any]]


class ControlError(Exception):
    """Raised by a control handler: answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Shim(Protocol):
    """An emulator-gap shim: answers some AWS requests itself, in the real wire format, or fixes
    a request up so that moto treats it as AWS would."""

    name: str

    def handles(self, req: AwsRequest) -> bool: ...

    def handle(self, req: AwsRequest) -> Response | None:
        """The answer; or None to pass the (possibly fixed-up) request on to moto."""

    def control_routes(self) -> dict[tuple[str, str], ControlHandler]: ...


def configure_moto() -> None:
    """Switches on moto's Step Functions interpreter and its Docker-less Lambda backend."""
    from moto.core.config import default_user_config

    default_user_config.setdefault("stepfunctions", {})["execute_state_machine"] = True
    default_user_config.setdefault("lambda", {})["use_docker"] = False
    default_user_config.setdefault("iam", {})["load_aws_managed_policies"] = True


def _brief(req: AwsRequest) -> Any:
    """A bounded copy of the request parameters, enough for tests to assert on."""
    if req.protocol in ("ec2", "query"):
        return {k[:80]: v[:300] for k, v in itertools.islice(req.params.items(), 60)}
    if req.protocol == "json":
        text = json.dumps(req.params)
        return req.params if len(text) <= 4000 else text[:4000]
    return None


class RequestLog:
    """The last requests (bounded), newest last, each with a sequence number."""

    def __init__(self, maxlen: int = 20000) -> None:
        self._entries: collections.deque[dict] = collections.deque(maxlen=maxlen)
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, entry: dict) -> None:
        with self._lock:
            entry["seq"] = next(self._seq)
            self._entries.append(entry)

    def query(self, service: str | None, action: str | None, since: int) -> list[dict]:
        with self._lock:
            entries = list(self._entries)
        return [
            e
            for e in entries
            if e["seq"] > since and (not service or e["service"] == service) and (not action or e["action"] == action)
        ]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class CordonMiddleware:
    """WSGI middleware: control endpoints, then faults, then shims, then moto."""

    def __init__(self, app: Callable) -> None:
        self.app = app
        self.faults = FaultInjector()
        self.log = RequestLog()
        self.shims: list[Shim] = []
        self.journal = Journal()  # serve() points it at <state-dir>/requests.jsonl
        self.scenario: str | None = None
        self.routes: dict[tuple[str, str], ControlHandler] = {
            ("GET", "/_cordon/health"): lambda body, q: (200, {"ok": True, "shims": [s.name for s in self.shims]}),
            ("GET", "/_cordon/requests"): self._get_requests,
            ("DELETE", "/_cordon/requests"): lambda body, q: (200, self.log.clear() or {"cleared": True}),
            ("GET", "/_cordon/faults"): lambda body, q: (200, {"rules": self.faults.rules()}),
            ("POST", "/_cordon/faults"): self._post_fault,
            ("DELETE", "/_cordon/faults"): self._delete_faults,
            ("GET", "/_cordon/scenario"): lambda body, q: (200, {"scenario": self.scenario}),
            ("POST", "/_cordon/scenario"): self._post_scenario,
        }

    def add_shim(self, shim: Shim) -> None:
        self.shims.append(shim)
        self.add_routes(shim.control_routes())

    def add_routes(self, routes: dict[tuple[str, str], ControlHandler]) -> None:
        self.routes.update(routes)

    # ------------------------------------------------------------------ control endpoints

    def _get_requests(self, body: Any, q: dict) -> tuple[int, Any]:
        since = int(q.get("since", ["0"])[0])
        service = q.get("service", [None])[0]
        action = q.get("action", [None])[0]
        return 200, {"requests": self.log.query(service, action, since)}

    def _post_scenario(self, body: Any, q: dict) -> tuple[int, Any]:
        scenario = body.get("scenario") if isinstance(body, dict) else None
        if scenario is not None and not isinstance(scenario, str):
            raise ControlError(400, 'a JSON body {"scenario": "<test id>" | null} is required')
        self.scenario = scenario
        return 200, {"scenario": scenario}

    def _post_fault(self, body: Any, q: dict) -> tuple[int, Any]:
        specs = body if isinstance(body, list) else [body]
        try:
            rules = [self.faults.add(spec or {}) for spec in specs]
        except (ValueError, TypeError) as e:
            raise ControlError(400, str(e)) from e
        return 201, {"rules": [r.id for r in rules]}

    def _delete_faults(self, body: Any, q: dict) -> tuple[int, Any]:
        """Every rule, or only those named by ``?id=`` (repeatable), so that concurrent scenarios
        remove their own rules and nobody else's."""
        if "id" not in q:
            self.faults.clear()
            return 200, {"cleared": True}
        try:
            ids = {int(i) for i in q["id"]}
        except ValueError as e:
            raise ControlError(400, f"id must be a rule number: {e}") from e
        return 200, {"removed": self.faults.remove(ids)}

    def _control(self, environ: dict, start_response: Callable) -> list[bytes]:
        from urllib.parse import parse_qs

        from werkzeug.wsgi import get_input_stream

        method = environ["REQUEST_METHOD"]
        path = environ["PATH_INFO"].rstrip("/")
        handler = self.routes.get((method, path))
        status, obj = 404, {"error": f"no control endpoint {method} {path}"}
        if handler is not None:
            raw = get_input_stream(environ, safe_fallback=True).read()
            try:
                body = json.loads(raw) if raw.strip() else None
                status, obj = handler(body, parse_qs(environ.get("QUERY_STRING", "")))
            except ControlError as e:
                status, obj = e.status, {"error": str(e)}
            except ValueError as e:
                status, obj = 400, {"error": f"bad request: {e}"}
            except Exception as e:  # a bug in a control handler must not kill the server thread
                LOG.exception("control endpoint %s %s failed", method, path)
                status, obj = 500, {"error": repr(e)}
        data = json.dumps(obj, default=str).encode()
        start_response(
            f"{status} {'OK' if status < 400 else 'Error'}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
        )
        return [data]

    # ------------------------------------------------------------------ AWS requests

    def __call__(self, environ: dict, start_response: Callable):
        if environ.get("PATH_INFO", "").startswith("/_cordon/"):
            return self._control(environ, start_response)
        started = time.monotonic()
        req = read_request(environ)
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "service": req.service,
            "action": req.action,
            "method": req.method,
            "path": req.path,
            "params": _brief(req),
            "user_agent": req.headers.get("user-agent", "")[:160],
            "fault": None,
            "shim": None,
            "scenario": self.scenario,
            **attribute(req),
        }
        # A presigned URL S3 would refuse is refused before faults and shims (S3 authenticates first).
        answer: Response | None = presigned_refusal(req)
        injected = self.faults.answer(req) if answer is None else None
        if answer is not None:
            # Refused before authentication: nobody's call (the key still says whose URL it was),
            # so the action-coverage check does not hold the signer to it.
            entry.update(shim="PresignedUrlCheck", principal=None, role=None, auth="presigned-refused")
        elif injected is not None:
            answer, rule = injected
            entry["fault"] = rule.id
        else:
            for shim in self.shims:
                if shim.handles(req):
                    entry["shim"] = shim.name
                    try:
                        answer = shim.handle(req)
                    except Exception:
                        LOG.exception("shim %s failed on %s", shim.name, req.action)
                        from .wire import aws_error

                        answer = aws_error(req, "InternalFailure", f"local shim {shim.name} failed", 500)
                    break
        if answer is not None:
            status, headers, data = answer
            headers = [h for h in headers if h[0].lower() != "content-length"]
            headers.append(("Content-Length", str(len(data))))
            start_response(f"{status} {'OK' if status < 400 else 'Error'}", headers)
            self._record(entry, status, started)
            return [data]

        captured: dict[str, int] = {}

        def capture(status: str, headers: list, exc_info: Any = None):
            captured["status"] = int(status.split(" ", 1)[0])
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        try:
            result = self.app(environ, capture)
        except Exception:
            self._record(entry, 500, started)
            raise
        self._record(entry, captured.get("status", 0), started)
        return result

    def _record(self, entry: dict, status: int, started: float) -> None:
        entry["status"] = status
        entry["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
        self.log.add(entry)
        self.journal.append(entry)
        tag = f" [fault {entry['fault']}]" if entry["fault"] else f" [shim {entry['shim']}]" if entry["shim"] else ""
        LOG.info("%s %s %s %.0fms%s", entry["service"], entry["action"], status, entry["duration_ms"], tag)


def presigned_refusal(req: AwsRequest) -> Response | None:
    """S3's answer to a presigned request it would refuse, or None (see the module docstring)."""
    if req.service != "s3" or "X-Amz-Signature" not in req.query:
        return None
    raw = req.environ.get("RAW_URI") or req.environ.get("REQUEST_URI") or ""
    raw_path = raw.split("?", 1)[0] if raw else ""
    if not raw_path:
        from urllib.parse import quote

        raw_path = quote(req.path.encode("latin-1"), safe="/~")
    refusal = verify_presigned(req.method, raw_path, req.query_string, req.headers)
    if refusal is None:
        return None
    rid = request_id()
    headers = [("Content-Type", "application/xml"), ("x-amz-request-id", rid), ("x-amz-id-2", rid)]
    if req.method == "HEAD":
        return refusal.status, headers, b""
    extra = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in refusal.extra)
    body = (
        f"<Error><Code>{escape(refusal.code)}</Code><Message>{escape(refusal.message)}</Message>{extra}"
        f"<RequestId>{rid}</RequestId><HostId>{rid}</HostId></Error>"
    )
    return refusal.status, headers, ('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode()


class LocalAws:
    """moto + middleware on 127.0.0.1:<port> (0 = a free port), served from a daemon thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        configure_moto()
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

        self.middleware = CordonMiddleware(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(host, port, self.middleware, threaded=True, request_handler=MotoRequestHandler)
        self.host = host
        self.port = self._server.server_port
        # The Step Functions interpreter reaches the services at localhost:$MOTO_PORT.
        os.environ["MOTO_PORT"] = str(self.port)
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def control_url(self) -> str:
        return f"{self.endpoint}/_cordon"

    def add_shim(self, shim: Shim) -> None:
        self.middleware.add_shim(shim)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-aws", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        if self._thread:
            self._thread.join(timeout=10)
