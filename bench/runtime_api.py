"""A Lambda Runtime API that serves one event to one process and times it.

The endpoints a custom runtime (and ``awslambdaric``) uses,
<https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html>:

- ``GET  /2018-06-01/runtime/invocation/next``: the first call gets the event (with the
  ``Lambda-Runtime-*`` headers); its arrival is the end of the init phase. A later call (the
  runtime asking for the next event after answering) is held open until the server stops, as
  Lambda does while the environment is frozen;
- ``POST /2018-06-01/runtime/invocation/{id}/response`` and ``.../{id}/error``: the outcome of
  the first invocation; its arrival ends the invoke phase;
- ``POST /2018-06-01/runtime/init/error``.

Times are ``time.perf_counter_ns()`` of this process, taken when the request has been read (for
``next``) and after the event has been written to the socket (the start of the invoke).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "/2018-06-01/runtime"


class RuntimeApi:
    def __init__(self, event: bytes, function_arn: str, timeout_s: int = 60) -> None:
        self.event = event
        self.function_arn = function_arn
        self.timeout_s = timeout_s
        self.request_id = str(uuid.uuid4())
        self.first_next_ns: int | None = None
        self.event_sent_ns: int | None = None
        self.result_ns: int | None = None
        self.result: tuple[str, bytes] | None = None  # ("response" | "error" | "init-error", body)
        self.next_calls = 0
        self.done = threading.Event()  # the first invocation ended (or init failed)
        self.idle = threading.Event()  # the runtime asked for the next event after the first
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.http.daemon_threads = True
        self._thread = threading.Thread(target=self.http.serve_forever, name="bench-runtime-api", daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.http.server_address[1]}"

    @property
    def port(self) -> int:
        return self.http.server_address[1]

    def start(self) -> RuntimeApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        self.http.shutdown()
        self.http.server_close()

    # ---------------------------------------------------------------- called by the handler

    def next_event(self, arrived_ns: int) -> bool:
        """True when this call gets the event; False for a later call (to be held)."""
        with self._lock:
            self.next_calls += 1
            if self.first_next_ns is None:
                self.first_next_ns = arrived_ns
                return True
        self.idle.set()
        return False

    def finish(self, kind: str, body: bytes, arrived_ns: int) -> None:
        with self._lock:
            if self.result is None:
                self.result_ns = arrived_ns
                self.result = (kind, body)
        self.done.set()

    def hold(self) -> None:
        self._closing.wait(self.timeout_s)


def _handler_for(api: RuntimeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args) -> None:  # quiet
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
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
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def do_GET(self) -> None:
            arrived = time.perf_counter_ns()
            if self.path != f"{PREFIX}/invocation/next":
                return self._send(404, b'{"errorType":"InvalidRequest"}')
            if not api.next_event(arrived):
                api.hold()
                self.close_connection = True
                return None
            self._send(
                200,
                api.event,
                {
                    "Lambda-Runtime-Aws-Request-Id": api.request_id,
                    "Lambda-Runtime-Deadline-Ms": str(int((time.time() + api.timeout_s) * 1000)),
                    "Lambda-Runtime-Invoked-Function-Arn": api.function_arn,
                    "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000;Sampled=0",
                },
            )
            api.event_sent_ns = time.perf_counter_ns()

        def do_POST(self) -> None:
            body = self._body()
            arrived = time.perf_counter_ns()
            parts = self.path.removeprefix(PREFIX).strip("/").split("/")
            if parts == ["init", "error"]:
                api.finish("init-error", body, arrived)
            elif len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
                api.finish(parts[2], body, arrived)
            else:
                return self._send(404, b'{"errorType":"InvalidRequest"}')
            self._send(202, b'{"status":"OK"}')

    return Handler


class Tripwire:
    """A TCP listener standing in for every AWS endpoint (``AWS_ENDPOINT_URL``): it counts the
    connections made to it, which must stay 0 during start-up and a rejected event."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-tripwire", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def error_type(body: bytes) -> str | None:
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    return obj.get("errorType") if isinstance(obj, dict) else None
