"""Cold start of one Lambda function process: init, first invoke, peak RSS, network at start-up.

One *sample* is one fresh process under the bench's own Runtime API (``runtime_api``):

- **init**: ``Popen`` → the first ``GET /runtime/invocation/next`` (exec, loading, the runtime's
  and the handler's start-up: for a step, ``aws_config::load_defaults`` and the clients; for the
  baseline, the interpreter, ``import boto3`` and the clients);
- **first invoke**: the event written → its ``/response`` or ``/error`` received. The event is
  ``{}``, which every step rejects as ``InvalidInput`` before any AWS call;
- **peak RSS**: ``VmHWM`` from ``/proc/<pid>/status`` once the process has asked for its next
  event (so the peak covers init and the first invoke), just before it is killed;
- **AWS connections**: connections to ``AWS_ENDPOINT_URL``, which points at a tripwire listener.

The process gets the environment Lambda gives a function (plus the step's own variables), with
test credentials and no AWS config files.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from runtime_api import RuntimeApi, Tripwire, error_type

REGION = "us-east-1"
ACCOUNT = "123456789012"
EVENT = b"{}"
# The variables the CDK stack gives the functions (cdk/lib/steps.ts), with local values.
STEP_ENV = {
    "EVIDENCE_BUCKET": "cordon-evidence-bench",
    "TOPIC_ARN": f"arn:aws:sns:{REGION}:{ACCOUNT}:cordon-notifications",
    "FORENSIC_INSTANCE_PROFILE_ARN": f"arn:aws:iam::{ACCOUNT}:instance-profile/cordon-forensic",
    "FORENSIC_INSTANCE_PROFILE_NAME": "cordon-forensic",
}


@dataclass
class Target:
    """One thing to start: a step binary or its Python baseline."""

    step: str
    kind: str  # "rust" | "python"
    argv: list[str]
    cwd: Path
    execution_env: str  # AWS_EXECUTION_ENV
    extra_env: dict[str, str]

    @property
    def function_name(self) -> str:
        return f"cordon-{self.step}" + ("-py" if self.kind == "python" else "")


def rust_target(step: str, bin_dir: Path) -> Target:
    binary = bin_dir / f"cordon-{step}"
    return Target(step, "rust", [str(binary)], bin_dir, "AWS_Lambda_provided.al2023", {})


def python_target(step: str, python: Path, baseline_dir: Path) -> Target:
    return Target(
        step,
        "python",
        [str(python), "-m", "awslambdaric", "handler.handler"],
        baseline_dir,
        "AWS_Lambda_python3.11",
        {"CORDON_STEP": step},
    )


@dataclass
class Sample:
    init_ms: float | None
    invoke_ms: float | None
    peak_rss_kib: int
    error_type: str | None
    outcome: str | None  # "response" | "error" | "init-error" | None (no answer)
    aws_connections: int


def lambda_env(target: Target, runtime_api: str, endpoint_url: str, home: Path) -> dict[str, str]:
    now = time.gmtime()
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "_HANDLER": "handler.handler" if target.kind == "python" else "bootstrap",
        "LAMBDA_TASK_ROOT": str(target.cwd),
        "AWS_EXECUTION_ENV": target.execution_env,
        "AWS_LAMBDA_RUNTIME_API": runtime_api,
        "AWS_LAMBDA_FUNCTION_NAME": target.function_name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{target.function_name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": time.strftime("%Y/%m/%d/", now) + "[$LATEST]bench",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_SESSION_TOKEN": "test",
        # Every AWS endpoint is the tripwire: any connection to it is counted.
        "AWS_ENDPOINT_URL": endpoint_url,
        "S3_FORCE_PATH_STYLE": "true",
        # Lambda has no ~/.aws files.
        "AWS_CONFIG_FILE": str(home / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
        "HOME": str(home),
        **STEP_ENV,
        **target.extra_env,
    }
    return env


def _peak_rss_kib(pid: int) -> int:
    """``VmHWM``, the high-water mark of the process's resident set since its ``exec``.

    Not ``wait4``'s ``ru_maxrss``: Linux folds the RSS of the address space a process had before
    ``exec`` into it, which for a child of this (large) Python process is the parent's own."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    m = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    return int(m.group(1)) if m else 0


def _kill_and_reap(proc: subprocess.Popen) -> int:
    """The peak RSS in KiB, then SIGKILL and reap."""
    rss = _peak_rss_kib(proc.pid)
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    return rss


def measure_once(target: Target, log_path: Path, timeout_s: float = 30) -> Sample:
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{target.function_name}"
    api = RuntimeApi(EVENT, arn).start()
    tripwire = Tripwire()
    home = Path(tempfile.mkdtemp(prefix="cordon-bench-home-"))
    try:
        env = lambda_env(target, api.address, tripwire.url, home)
        with open(log_path, "ab") as log:
            start_ns = time.perf_counter_ns()
            proc = subprocess.Popen(
                target.argv, env=env, cwd=target.cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        api.done.wait(timeout_s)
        # Let the runtime come back for its next event: the invocation is then over for Lambda too.
        api.idle.wait(2 if api.done.is_set() else 0)
        rss = _kill_and_reap(proc)
    finally:
        api.stop()
        tripwire.close()
        shutil.rmtree(home, ignore_errors=True)
    outcome, body = api.result if api.result else (None, b"")
    init_ms = (api.first_next_ns - start_ns) / 1e6 if api.first_next_ns else None
    invoke_ms = (
        (api.result_ns - api.event_sent_ns) / 1e6 if api.result_ns and api.event_sent_ns and outcome != "init-error" else None
    )
    return Sample(init_ms, invoke_ms, rss, error_type(body), outcome, tripwire.connections)


def stats(values: list[float]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def measure(target: Target, runs: int, log_dir: Path, warmup: int = 1) -> dict:
    """``warmup`` discarded samples (page cache, .pyc files), then ``runs`` samples."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{target.function_name}.log"
    log_path.unlink(missing_ok=True)
    for _ in range(warmup):
        measure_once(target, log_path)
    samples = [measure_once(target, log_path) for _ in range(runs)]
    return {
        "step": target.step,
        "kind": target.kind,
        "argv": target.argv,
        "init_ms": stats([s.init_ms for s in samples]),
        "invoke_ms": stats([s.invoke_ms for s in samples]),
        "peak_rss_mib": stats([s.peak_rss_kib / 1024 for s in samples]),
        "error_types": sorted({str(s.error_type) for s in samples}),
        "outcomes": sorted({str(s.outcome) for s in samples}),
        "aws_connections": sum(s.aws_connections for s in samples),
        "samples": [asdict(s) for s in samples],
        "log": str(log_path),
    }


_CONNECT = re.compile(r"connect\((\d+), \{sa_family=(AF_\w+)(.*?)\}, \d+\)\s*=\s*(-?\d+)")


def connects_at_startup(target: Target, log_dir: Path) -> dict | None:
    """One more sample under ``strace -f -e trace=connect``: every socket the process connects
    during init and the first invoke, other than the Runtime API's. None without strace."""
    strace = shutil.which("strace")
    if not strace:
        return None
    trace = log_dir / f"{target.function_name}.strace"
    traced = Target(
        target.step,
        target.kind,
        [strace, "-f", "-qq", "-e", "trace=connect", "-o", str(trace), *target.argv],
        target.cwd,
        target.execution_env,
        target.extra_env,
    )
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{target.function_name}"
    api = RuntimeApi(EVENT, arn).start()
    tripwire = Tripwire()
    home = Path(tempfile.mkdtemp(prefix="cordon-bench-home-"))
    try:
        with open(log_dir / f"{target.function_name}.strace.log", "wb") as log:
            proc = subprocess.Popen(
                traced.argv,
                env=lambda_env(traced, api.address, tripwire.url, home),
                cwd=traced.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        api.done.wait(60)
        api.idle.wait(5)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        api.stop()
        tripwire.close()
        shutil.rmtree(home, ignore_errors=True)
    runtime_api = f"htons({api.port})"
    other = []
    for m in _CONNECT.finditer(trace.read_text(errors="replace")):
        family, rest = m.group(2), m.group(3)
        if family == "AF_INET" and runtime_api in rest and "127.0.0.1" in rest:
            continue
        other.append(f"{family}{rest}".strip())
    return {"other_connects": other, "answered": api.done.is_set()}
