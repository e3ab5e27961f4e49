"""Lambda invocations run the real step binaries, through the Lambda Runtime API, as in Lambda.

Emulator gap: with ``use_docker: false`` moto's Lambda (``moto.awslambda_simple``) only echoes the
payload back. This module replaces ``LambdaSimpleBackend.invoke`` so that an Invoke (from boto3, or
from moto's Step Functions interpreter) is handed to an *execution environment*: a child process
running the function's binary, ``<bin-dir>/<function name>``, talking to its own Runtime API server
on 127.0.0.1 exactly as a ``provided.al2023`` custom runtime does in Lambda:

- ``GET  /2018-06-01/runtime/invocation/next``   the next event, with ``Lambda-Runtime-Aws-Request-Id``,
  ``-Deadline-Ms``, ``-Invoked-Function-Arn``, ``-Trace-Id``
- ``POST /2018-06-01/runtime/invocation/{id}/response`` and ``.../{id}/error``
- ``POST /2018-06-01/runtime/init/error``
  https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html

Environment variables are those Lambda defines for a custom runtime
(https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime)
plus the function's own ``Environment.Variables`` from CreateFunction, credentials of the function's
own (``principals``: Lambda hands the runtime its execution role's temporary credentials, here one
access key per function so the request log can name the caller), and ``AWS_ENDPOINT_URL``
pointing the SDK at this stack.

Each environment handles one invocation at a time (Lambda's concurrency model,
https://docs.aws.amazon.com/lambda/latest/dg/lambda-concurrency.html); a busy pool grows up to
``max_envs`` per function, then an Invoke waits for a free one (and is throttled with
``TooManyRequestsException`` if none frees up within the function's timeout). Warm environments are
reused; a changed configuration or a rebuilt binary retires them (as an update does in Lambda).

Errors are answered as Lambda answers a synchronous Invoke
(https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html): HTTP 200,
``X-Amz-Function-Error: Unhandled``, body ``{"errorType", "errorMessage"}`` as the runtime posted it;
Step Functions then uses ``errorType`` as the error name that ``Retry``/``Catch`` match
(https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html). A process that
exits mid-invocation gives ``Runtime.ExitError``; one that overruns the function's ``Timeout`` is
killed and gives ``Sandbox.Timedout`` (the names Lambda and Step Functions report).

Output of each binary goes to ``<state-dir>/logs/<function>.log``, framed by Lambda's
``START`` / ``END`` / ``REPORT`` lines.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .principals import REGISTRY

LOG = logging.getLogger("local_aws.lambda")

PREFIX = "/2018-06-01/runtime"
INIT_LIMIT_SECONDS = 10  # Lambda's init phase limit for on-demand functions
TAIL_BYTES = 4096  # X-Amz-Log-Type: Tail returns the last 4 KB of the log


@dataclass(frozen=True)
class FunctionSpec:
    """What an execution environment is built from: the function's configuration at invoke time."""

    name: str
    arn: str
    region: str
    account: str
    timeout: int
    memory: int
    env: tuple[tuple[str, str], ...]
    binary: Path
    binary_mtime: float

    @classmethod
    def of(cls, fn: Any, bin_dir: Path) -> FunctionSpec:
        binary = bin_dir / fn.function_name
        try:
            mtime = binary.stat().st_mtime
        except OSError:
            mtime = 0.0
        return cls(
            name=fn.function_name,
            arn=f"arn:aws:lambda:{fn.region}:{fn.account_id}:function:{fn.function_name}",
            region=fn.region,
            account=fn.account_id,
            timeout=int(fn.timeout or 3),
            memory=int(fn.memory_size or 128),
            env=tuple(sorted((str(k), str(v)) for k, v in (fn.environment_vars or {}).items())),
            binary=binary,
            binary_mtime=mtime,
        )


class Invocation:
    def __init__(self, payload: bytes, invoked_arn: str, timeout: int) -> None:
        self.request_id = str(uuid.uuid4())
        self.payload = payload
        self.invoked_arn = invoked_arn
        self.timeout = timeout
        self.trace_id = f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)};Parent={secrets.token_hex(8)};Sampled=0"
        self.fetched_at: float | None = None  # monotonic time the runtime took the event
        self.result: tuple[str, bytes] | None = None  # ("ok" | "error", body)


def _error(error_type: str, message: str) -> bytes:
    return json.dumps({"errorType": error_type, "errorMessage": message}).encode()


class ExecutionEnvironment:
    """One process of one function, with its own Runtime API server."""

    def __init__(self, spec: FunctionSpec, endpoint: str, log_path: Path, isolated_dir: Path) -> None:
        self.spec = spec
        self.id = secrets.token_hex(16)
        self.cond = threading.Condition()
        self.pending: Invocation | None = None  # handed over, not yet fetched by the runtime
        self.current: Invocation | None = None  # fetched, awaiting response/error
        self.init_error: bytes | None = None
        self.dead = False
        self.closing = False
        self.exit_status: str = ""
        self.invocations = 0
        self.started = time.monotonic()
        self.init_duration_ms: float | None = None
        self.log_path = log_path

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, name=f"runtime-api-{spec.name}", daemon=True).start()
        port = self.http.server_address[1]

        now = time.gmtime()
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "_HANDLER": "bootstrap",
            "LAMBDA_TASK_ROOT": str(spec.binary.parent),
            "AWS_EXECUTION_ENV": "AWS_Lambda_provided.al2023",
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": time.strftime("%Y/%m/%d/", now) + f"[$LATEST]{self.id}",
            "AWS_REGION": spec.region,
            "AWS_DEFAULT_REGION": spec.region,
            # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN: this function's own.
            **REGISTRY.register_function(spec.name),
            "AWS_ENDPOINT_URL": endpoint,
            "S3_FORCE_PATH_STYLE": "true",
            # Lambda has no ~/.aws files and no instance metadata service: keep the SDK off both.
            "AWS_CONFIG_FILE": str(isolated_dir / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(isolated_dir / "aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        for passthrough in ("RUST_LOG", "RUST_BACKTRACE", "AWS_LAMBDA_LOG_LEVEL", "AWS_LAMBDA_LOG_FORMAT"):
            if passthrough in os.environ:
                env[passthrough] = os.environ[passthrough]
        env.update(dict(spec.env))

        self._log = open(log_path, "ab", buffering=0)
        self.proc = subprocess.Popen(
            [str(spec.binary)],
            env=env,
            cwd=str(spec.binary.parent),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        LOG.info("%s: started execution environment %s (pid %d)", spec.name, self.id[:8], self.proc.pid)
        threading.Thread(target=self._watch, name=f"watch-{spec.name}", daemon=True).start()

    def note(self, line: str) -> None:
        """A platform line in the function's log, as Lambda writes START/END/REPORT."""
        self._log.write((line + "\n").encode())

    def _watch(self) -> None:
        code = self.proc.wait()
        status = (
            f"exit status {code}" if code >= 0 else f"signal: {signal.Signals(-code).name.lower().removeprefix('sig')}"
        )
        with self.cond:
            self.dead = True
            self.exit_status = status
            self.cond.notify_all()
        if not self.closing:
            LOG.warning("%s: execution environment %s exited (%s)", self.spec.name, self.id[:8], status)

    # -------------------------------------------------------------- called by the Runtime API

    def next_event(self) -> Invocation | None:
        with self.cond:
            while self.pending is None and not self.closing and not self.dead:
                self.cond.wait(1.0)
            if self.pending is None:
                return None
            inv, self.pending = self.pending, None
            inv.fetched_at = time.monotonic()
            if self.init_duration_ms is None:
                self.init_duration_ms = (inv.fetched_at - self.started) * 1000
            self.current = inv
            self.cond.notify_all()
            return inv

    def complete(self, request_id: str, kind: str, body: bytes) -> bool:
        with self.cond:
            inv = self.current
            if inv is None or inv.request_id != request_id or inv.result is not None:
                return False
            inv.result = (kind, body)
            self.current = None
            self.cond.notify_all()
            return True

    def fail_init(self, body: bytes) -> None:
        with self.cond:
            self.init_error = body
            self.cond.notify_all()

    # -------------------------------------------------------------- called by the invoker

    def run(self, inv: Invocation) -> tuple[str, bytes]:
        """Hands ``inv`` to the runtime and waits for its outcome (bounded by the function timeout)."""
        self.invocations += 1
        with self.cond:
            self.pending = inv
            self.cond.notify_all()
            waiting_since = time.monotonic()
            while inv.result is None:
                now = time.monotonic()
                if self.init_error is not None and inv.fetched_at is None:
                    self._kill()
                    return "error", self.init_error
                if self.dead:
                    return "error", _error(
                        "Runtime.ExitError",
                        f"RequestId: {inv.request_id} Error: Runtime exited with error: {self.exit_status}",
                    )
                if inv.fetched_at is None:
                    limit = waiting_since + max(INIT_LIMIT_SECONDS, inv.timeout)
                else:
                    limit = inv.fetched_at + inv.timeout
                if now >= limit:
                    self._kill()
                    return "error", _error(
                        "Sandbox.Timedout",
                        f"RequestId: {inv.request_id} Error: Task timed out after {inv.timeout:.2f} seconds",
                    )
                self.cond.wait(min(0.5, limit - now))
            return inv.result

    def _kill(self) -> None:
        self.dead = True
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        self.http.shutdown()
        self.http.server_close()
        self._log.close()

    def describe(self) -> dict:
        return {
            "id": self.id,
            "pid": self.proc.pid,
            "dead": self.dead,
            "busy": self.current is not None or self.pending is not None,
            "invocations": self.invocations,
            "exit_status": self.exit_status or None,
        }


def _handler_for(env: ExecutionEnvironment) -> type[BaseHTTPRequestHandler]:
    class RuntimeApiHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            LOG.debug("runtime api %s: " + format, env.spec.name, *args)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            try:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the runtime process went away

        def do_GET(self) -> None:
            if self.path != f"{PREFIX}/invocation/next":
                return self._send(404, _error("InvalidRequest", f"unknown path {self.path}"))
            inv = env.next_event()
            if inv is None:  # the process died or the environment is shutting down: no one to answer
                self.close_connection = True
                return None
            deadline_ms = int((time.time() + inv.timeout) * 1000)
            self._send(
                200,
                inv.payload,
                {
                    "Lambda-Runtime-Aws-Request-Id": inv.request_id,
                    "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
                    "Lambda-Runtime-Invoked-Function-Arn": inv.invoked_arn,
                    "Lambda-Runtime-Trace-Id": inv.trace_id,
                },
            )

        def do_POST(self) -> None:
            body = self._body()
            parts = self.path.removeprefix(PREFIX).strip("/").split("/")
            if parts == ["init", "error"]:
                env.fail_init(
                    body or _error(self.headers.get("Lambda-Runtime-Function-Error-Type", "Runtime.InitError"), "")
                )
                return self._send(202, b'{"status":"OK"}')
            if len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
                kind = "ok" if parts[2] == "response" else "error"
                if kind == "error":
                    body = _normalise_error(body, self.headers.get("Lambda-Runtime-Function-Error-Type"))
                if env.complete(parts[1], kind, body):
                    return self._send(202, b'{"status":"OK"}')
                return self._send(400, _error("InvalidRequestID", "Invalid request ID"))
            self._send(404, _error("InvalidRequest", f"unknown path {self.path}"))

    return RuntimeApiHandler


def _normalise_error(body: bytes, header_type: str | None) -> bytes:
    """The error body as posted when it is the documented JSON; otherwise wrapped into that shape."""
    try:
        obj = json.loads(body)
        if isinstance(obj, dict) and "errorType" in obj:
            return body
    except ValueError:
        pass
    return _error(header_type or "Runtime.Unknown", body.decode("utf-8", "replace"))


class FunctionPool:
    """The execution environments of one function."""

    def __init__(self, max_envs: int) -> None:
        self.max_envs = max_envs
        self.envs: list[ExecutionEnvironment] = []
        self.idle: list[ExecutionEnvironment] = []
        self.spec: FunctionSpec | None = None
        self.cond = threading.Condition()

    def acquire(self, spec: FunctionSpec, spawn, wait_s: float) -> ExecutionEnvironment | None:
        retired: list[ExecutionEnvironment] = []
        try:
            with self.cond:
                self.spec = spec
                deadline = time.monotonic() + wait_s
                while True:
                    for e in list(self.idle):
                        if e.dead or e.spec != spec:
                            self.idle.remove(e)
                            self.envs.remove(e)
                            retired.append(e)
                    if self.idle:
                        return self.idle.pop()  # the most recently used: warmest
                    if len(self.envs) < self.max_envs:
                        env = spawn(spec)
                        self.envs.append(env)
                        return env
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self.cond.wait(min(left, 1.0))
        finally:
            for e in retired:
                e.close()

    def release(self, env: ExecutionEnvironment) -> None:
        with self.cond:
            if env.dead or env.spec != self.spec:
                self.envs.remove(env)
                retire = True
            else:
                self.idle.append(env)
                retire = False
            self.cond.notify_all()
        if retire:
            env.close()

    def take_all(self) -> list[ExecutionEnvironment]:
        """Empties the pool and hands its environments over (to be closed)."""
        with self.cond:
            envs, self.envs, self.idle = list(self.envs), [], []
        return envs


class LambdaRuntime:
    """Replaces moto's Docker-less Lambda invoke with the Runtime API execution environments."""

    def __init__(self, bin_dir: Path, state_dir: Path, endpoint: str, max_envs: int = 8) -> None:
        self.bin_dir = bin_dir.resolve()
        self.logs_dir = state_dir / "logs"
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.isolated_dir = state_dir / "lambda-home"
        self.isolated_dir.mkdir(parents=True, exist_ok=True)
        self.endpoint = endpoint
        self.max_envs = max_envs
        self.pools: dict[str, FunctionPool] = {}
        self._lock = threading.Lock()

    def install(self) -> None:
        from moto.awslambda_simple.models import LambdaSimpleBackend

        runtime = self

        def invoke(
            backend: Any, function_name: str, qualifier: str | None, body: Any, headers: Any, response_headers: Any
        ):
            return runtime.invoke(backend, function_name, qualifier, body, headers, response_headers)

        LambdaSimpleBackend.invoke = invoke  # type: ignore[method-assign]

    def control_routes(self) -> dict:
        def environments(body: Any, q: dict) -> tuple[int, Any]:
            return 200, {name: [e.describe() for e in pool.envs] for name, pool in self.pools.items()}

        return {("GET", "/_cordon/lambda/environments"): environments}

    def _pool(self, name: str) -> FunctionPool:
        with self._lock:
            return self.pools.setdefault(name, FunctionPool(self.max_envs))

    def _spawn(self, spec: FunctionSpec) -> ExecutionEnvironment:
        return ExecutionEnvironment(spec, self.endpoint, self.logs_dir / f"{spec.name}.log", self.isolated_dir)

    def invoke(
        self, backend: Any, function_name: str, qualifier: str | None, body: Any, headers: Any, response_headers: dict
    ) -> bytes:
        fn = backend.get_function(function_name, qualifier)  # raises moto's ResourceNotFoundException
        spec = FunctionSpec.of(fn, self.bin_dir)
        payload = body.encode() if isinstance(body, str) else (body or b"")
        if not payload.strip():
            payload = b"{}"
        invoked_arn = function_name if function_name.startswith("arn:") else spec.arn
        if qualifier and not invoked_arn.endswith(f":{qualifier}"):
            invoked_arn += f":{qualifier}"
        invocation_type = (headers.get("X-Amz-Invocation-Type") or "RequestResponse") if headers else "RequestResponse"
        response_headers["x-amz-executed-version"] = "$LATEST"
        if invocation_type == "DryRun":
            return b""
        if invocation_type == "Event":
            threading.Thread(target=self._run, args=(spec, payload, invoked_arn), daemon=True).start()
            return b""
        kind, result, tail = self._run(spec, payload, invoked_arn)
        if kind == "throttled":
            raise _too_many_requests()
        if kind == "error":
            response_headers["x-amz-function-error"] = "Unhandled"
        if headers and headers.get("X-Amz-Log-Type") == "Tail":
            response_headers["x-amz-log-result"] = base64.b64encode(tail).decode()
        response_headers["Content-Length"] = str(len(result))
        return result

    def _run(self, spec: FunctionSpec, payload: bytes, invoked_arn: str) -> tuple[str, bytes, bytes]:
        inv = Invocation(payload, invoked_arn, spec.timeout)
        if not spec.binary.is_file() or not os.access(spec.binary, os.X_OK):
            LOG.error("%s: no executable %s", spec.name, spec.binary)
            return (
                "error",
                _error(
                    "Runtime.InvalidEntrypoint",
                    f"RequestId: {inv.request_id} Error: Couldn't find valid bootstrap(s): [{spec.binary}]",
                ),
                b"",
            )
        pool = self._pool(spec.name)
        env = pool.acquire(spec, self._spawn, wait_s=spec.timeout)
        if env is None:
            return "throttled", b"", b""
        log_start = _size(env.log_path)
        started = time.monotonic()
        env.note(f"START RequestId: {inv.request_id} Version: $LATEST")
        try:
            kind, result = env.run(inv)
        finally:
            elapsed = (time.monotonic() - (inv.fetched_at or started)) * 1000
            env.note(f"END RequestId: {inv.request_id}")
            init = (
                f"\tInit Duration: {env.init_duration_ms:.2f} ms"
                if env.invocations == 1 and env.init_duration_ms
                else ""
            )
            env.note(
                f"REPORT RequestId: {inv.request_id}\tDuration: {elapsed:.2f} ms\tBilled Duration: {int(elapsed) + 1} ms"
                f"\tMemory Size: {spec.memory} MB{init}"
            )
            pool.release(env)
        tail = _tail(env.log_path, log_start)
        if kind == "error":
            LOG.info("%s: %s failed: %s", spec.name, inv.request_id, result[:300].decode("utf-8", "replace"))
        return kind, result, tail

    def shutdown(self) -> None:
        """Stops every execution environment (in parallel: each takes up to a poll interval)."""
        from concurrent.futures import ThreadPoolExecutor

        envs = [e for pool in list(self.pools.values()) for e in pool.take_all()]
        if envs:
            with ThreadPoolExecutor(len(envs)) as ex:
                list(ex.map(ExecutionEnvironment.close, envs))


def _too_many_requests() -> Exception:
    """Lambda's throttling error (HTTP 429), raised through moto so it is rendered as moto renders errors."""
    from moto.awslambda.exceptions import LambdaClientError

    class TooManyRequestsException(LambdaClientError):
        code = 429

    return TooManyRequestsException("TooManyRequestsException", "Rate Exceeded.")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _tail(path: Path, start: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(max(start, _size(path) - TAIL_BYTES))
            return f.read(TAIL_BYTES)
    except OSError:
        return b""
