"""Command line of the local AWS stack (run from ``integration-tests/``).

    python -m local_aws serve --bin-dir DIR --state-dir DIR [--port N]   # foreground
    python -m local_aws up    --bin-dir DIR --state-dir DIR [--port N]   # background, waits until ready
    python -m local_aws down  --state-dir DIR
    python -m local_aws demo  --state-dir DIR [--instance-id ID] [--fail-at STATE]

``serve`` starts the emulator, installs the Lambda runtime shim and the gap shims, deploys Cordon,
serves its REST API (``apigateway``), seeds the environment, and only then writes
``<state-dir>/env`` (``export NAME=value`` lines, see ``envfile``: endpoint, region, credentials,
ARNs, IDs, the API's URL), so the env file's existence means "ready". It also writes
``<state-dir>/pid`` and ``<state-dir>/seed.json``, and runs until SIGTERM/SIGINT, then stops the
function processes and removes ``env`` and ``pid``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import ACCESS_KEY, REGION, SECRET_KEY

PACKAGE_PARENT = Path(__file__).resolve().parent.parent  # integration-tests/


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def serve(args: argparse.Namespace) -> int:
    from . import ec2_throttling, iam_shims, model_fixes, network_shims, snapshot_locks, strict, wait_scale
    from .apigateway import LocalApiGateway
    from .envfile import format_env
    from .deploy import DEFAULT_ASL, STEPS, deploy
    from .eventbridge import EventBridge, PutEventsShim, StartExecutionNameShim
    from .sqs_event_source import SqsEventSourcePoller
    from .journal import FILE_NAME as JOURNAL_FILE, Journal
    from .redrive import STATUS_LISTENERS, StepFunctionsRedriveShim
    from .runtime_api import LambdaRuntime
    from .seed import seed_environment
    from .server import LocalAws
    from .shims import ConsoleScreenshotShim, ManagedNodes, S3ObjectLockChecksumShim, SsmInstanceInformationShim
    from .ssm_run_command import SsmRunCommandShim
    from .template import Template

    state_dir: Path = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    env_file = state_dir / "env"
    env_file.unlink(missing_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    log = logging.getLogger("local_aws")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    bin_dir: Path = args.bin_dir.resolve()
    missing = [f"cordon-{s}" for s in STEPS if not (bin_dir / f"cordon-{s}").is_file()]
    if missing:
        log.warning(
            "no binary in %s for %s: invoking them answers Runtime.InvalidEntrypoint", bin_dir, ", ".join(missing)
        )

    server = LocalAws(port=args.port)
    # Every request of the run, for the action-coverage check (journal.py, coverage.py).
    server.middleware.journal = Journal(state_dir / JOURNAL_FILE)
    model_fixes.apply()
    wait_scale.apply()  # Wait states 15x faster; budgets and SSM timeouts stay real (wait_scale.py)
    runtime = LambdaRuntime(bin_dir, state_dir, server.endpoint)
    runtime.install()
    nodes = ManagedNodes()
    ssm = SsmRunCommandShim(nodes, server.endpoint)
    server.add_shim(S3ObjectLockChecksumShim())
    server.add_shim(snapshot_locks.SnapshotLockShim())  # LockSnapshot, DescribeLockedSnapshots (snapshot_locks.py)
    server.add_shim(ConsoleScreenshotShim())
    server.add_shim(SsmInstanceInformationShim(nodes))
    server.add_shim(ssm)
    server.add_shim(StartExecutionNameShim())  # eventbridge.py: nameless StartExecution gets a UUID
    # RedriveExecution and the executions' status-change events (redrive.py); before any execution starts.
    server.add_shim(StepFunctionsRedriveShim())
    strict.install(server)  # where moto is kinder than AWS (strict.py)
    network_shims.install(server)  # conntrack timeouts, network ACL entries, NAT interfaces
    iam_shims.install(server)  # a role's inline-policy size quota (iam_shims.py)
    # EC2's request token buckets, in front of every other shim (ec2_throttling.py; CORDON_EC2_THROTTLING[_SCALE]).
    ec2_throttling.install(server)
    server.middleware.add_routes(runtime.control_routes())
    server.start()
    (state_dir / "pid").write_text(str(os.getpid()))
    log.info("moto %s listening on %s", _moto_version(), server.endpoint)

    api = None
    pollers = None
    try:
        extra_env = dict(kv.split("=", 1) for kv in args.extra_env)
        template = Template.load()
        deployment = deploy(server.endpoint, template, args.asl or DEFAULT_ASL, extra_env)
        # The template's queues, the GuardDuty dispatcher and its SQS event source mapping, polled
        # as Lambda polls (sqs_event_source.py); before the rules, whose targets they are.
        pollers = SqsEventSourcePoller(server.endpoint, template)
        pollers.install(extra_env)
        server.middleware.add_routes(pollers.control_routes())
        # The template's event rules, applied to events put on the local bus (eventbridge.py).
        bus = EventBridge(server.endpoint, template)
        bus.install()
        STATUS_LISTENERS.append(bus.put)  # Step Functions Execution Status Change events (redrive.py)
        server.add_shim(PutEventsShim(bus))
        # The SecurityResponse REST API, from the template's methods and mapping templates (apigateway.py).
        api = LocalApiGateway(template, server.endpoint, state_dir)
        api.start()
        server.middleware.add_routes(api.control_routes())
        ctx, web01, web02 = seed_environment(server.endpoint)
        _write_atomic(
            state_dir / "seed.json",
            json.dumps(
                {
                    "context": ctx.to_dict(),
                    "instances": {"web-01": web01.to_dict(), "web-02": web02.to_dict()},
                    "deployment": deployment.to_dict(),
                },
                indent=2,
            ),
        )
        values = {
            "AWS_ENDPOINT_URL": server.endpoint,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "CORDON_STATE_MACHINE_ARN": deployment.state_machine_arn,
            "CORDON_EVIDENCE_BUCKET": deployment.bucket,
            "CORDON_TOPIC_ARN": deployment.topic_arn,
            "CORDON_QUEUE_URL": deployment.queue_url,
            "CORDON_DEMO_INSTANCE_ID": web01.instance_id,
            "CORDON_UNMANAGED_INSTANCE_ID": web02.instance_id,
            "CORDON_CONTROL_URL": server.control_url,
            "CORDON_API_URL": api.url,
            "CORDON_STATE_DIR": str(state_dir),
        }
        _write_atomic(env_file, format_env(values))
        log.info("ready: %s", env_file)
        stop.wait()
    except Exception:
        log.exception("start-up failed")
        return 1
    finally:
        log.info("stopping")
        env_file.unlink(missing_ok=True)
        if pollers is not None:
            pollers.stop()
        runtime.shutdown()
        ssm.shutdown()
        if api is not None:
            api.stop()
        server.stop()
        server.middleware.journal.close()
        (state_dir / "pid").unlink(missing_ok=True)
    return 0


def _moto_version() -> str:
    from importlib.metadata import version

    return version("moto")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(state_dir: Path) -> int | None:
    try:
        return int((state_dir / "pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def up(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    env_file, log_file = state_dir / "env", state_dir / "server.log"
    pid = _read_pid(state_dir)
    if pid and _alive(pid) and env_file.exists():
        print(f"# already running (pid {pid})", file=sys.stderr)
        print(env_file.read_text(), end="")
        return 0
    env_file.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "local_aws",
        "serve",
        "--bin-dir",
        str(args.bin_dir.resolve()),
        "--state-dir",
        str(state_dir),
        "--port",
        str(args.port),
    ]
    if args.asl:
        cmd += ["--asl", str(args.asl.resolve())]
    for kv in args.extra_env:
        cmd += ["--extra-env", kv]
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=PACKAGE_PARENT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if env_file.exists():
            print(env_file.read_text(), end="")
            return 0
        if proc.poll() is not None:
            print(
                f"local AWS stack exited with status {proc.returncode}; {log_file}:\n{_tail(log_file)}", file=sys.stderr
            )
            return 1
        time.sleep(0.2)
    print(f"local AWS stack not ready after {args.timeout}s; {log_file}:\n{_tail(log_file)}", file=sys.stderr)
    proc.terminate()
    return 1


def down(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir.resolve()
    pid = _read_pid(state_dir)
    if pid is None or not _alive(pid):
        (state_dir / "pid").unlink(missing_ok=True)
        (state_dir / "env").unlink(missing_ok=True)
        print("local AWS stack not running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        print(f"local AWS stack (pid {pid}) killed")
    else:
        print(f"local AWS stack (pid {pid}) stopped")
    (state_dir / "pid").unlink(missing_ok=True)
    (state_dir / "env").unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_aws", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "up"):
        p = sub.add_parser(name)
        p.add_argument("--bin-dir", type=Path, required=True, help="directory holding the cordon-<step> binaries")
        p.add_argument("--state-dir", type=Path, required=True)
        p.add_argument("--port", type=int, default=0, help="0: a free port")
        p.add_argument(
            "--asl", type=Path, default=None, help="state machine definition (default ../statemachine.asl.json)"
        )
        p.add_argument(
            "--extra-env",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="an extra environment variable for every function",
        )
        if name == "up":
            p.add_argument("--timeout", type=float, default=60)
    p = sub.add_parser("down")
    p.add_argument("--state-dir", type=Path, required=True)
    p = sub.add_parser("demo")
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--instance-id", default=None, help="default: CORDON_DEMO_INSTANCE_ID")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument(
        "--fail-at",
        default=None,
        metavar="STATE",
        help='inject a final failure at this containment state (e.g. "Quarantine network"), then redrive',
    )
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "up":
        return up(args)
    if args.command == "down":
        return down(args)
    from .demo import demo

    return demo(args)


if __name__ == "__main__":
    sys.exit(main())
