"""`make bench`: cold start, memory, size, time to containment and fleet scale, side by side with
a Python/boto3 baseline. Prints tables and writes bench/results.json. Never fails on a figure:
the targets are reported against, not asserted.

    python bench/bench.py --bin-dir $CARGO_TARGET_DIR/release [--runs 7] [--e2e-runs 5] [--fleet 25]
                          [--burst 50] [--only coldstart,stack] [--out bench/results.json]

Parts:
1. per step binary (release profile, as deployed): init, first invoke of `{}` (InvalidInput),
   peak RSS, binary and zip size; the same for the Python/boto3 baseline under awslambdaric;
2. end to end on the local stack (`integration-tests/local_aws`, running the release binaries):
   time to containment and to the end, transitions, invocations, EC2 calls, cost per incident;
3. a fleet of N instances at once (FLEET, default 25);
4. a burst of N GuardDuty findings at once through the template's rule (BURST, default 50), with
   EC2's request token buckets at their documented values: mutating EC2 calls per instance,
   RequestLimitExceeded answers, time from the first finding to the last interface isolated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import coldstart  # noqa: E402
import report  # noqa: E402
import sizes  # noqa: E402

STEPS = ["metadata", "screenshot", "snapshot", "termprotect", "detach-profile", "ssm-collect", "quarantine", "notify"]

# us-east-1 list prices as known to the author (model knowledge, 2025); not fetched: check
# https://aws.amazon.com/step-functions/pricing/ and https://aws.amazon.com/lambda/pricing/.
PRICES = {
    "region": "us-east-1",
    "as_of": "2025 (list prices as known when this bench was written; not fetched at run time)",
    "sfn_standard_transition": 0.000025,  # $0.025 per 1,000 state transitions
    "lambda_arm64_gb_second": 0.0000133334,  # first 7.5 billion GB-s per month
    "lambda_request": 0.20 / 1_000_000,
    "free_tiers": "ignored (4,000 transitions, 1M requests, 400,000 GB-s per month)",
}


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=ROOT).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(
            line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    mem_kib = 0
    try:
        mem_kib = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1))
    except (OSError, AttributeError):
        pass
    return {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "rustc": _run(["rustc", "--version"]),
        "commit": _run(["git", "rev-parse", "--short", "HEAD"]),
        "dirty": bool(_run(["git", "status", "--porcelain", "--untracked-files=no"])),
        # Timings are only as quiet as the machine: anything else running shows here.
        "loadavg_at_start": os.getloadavg(),
    }


def release_profile() -> dict:
    with open(ROOT / "Cargo.toml", "rb") as f:
        return tomllib.load(f).get("profile", {}).get("release", {})


def run_coldstart(bin_dir: Path, runs: int, log_dir: Path) -> dict:
    python = Path(sys.executable)
    out = {}
    for step in STEPS:
        rust = coldstart.rust_target(step, bin_dir)
        py = coldstart.python_target(step, python, HERE / "baseline")
        print(f"  {step}: Rust ×{runs} ...", end="", flush=True)
        r = coldstart.measure(rust, runs, log_dir)
        if not r["init_ms"] or not r["invoke_ms"]:
            raise RuntimeError(f"cordon-{step} never asked for or answered its event: see {r['log']}")
        print(f" {r['init_ms']['median']:.2f} ms; boto3 ×{runs} ...", end="", flush=True)
        p = coldstart.measure(py, runs, log_dir)
        if not p["init_ms"] or not p["invoke_ms"]:
            raise RuntimeError(f"the boto3 baseline of {step} never asked for or answered its event: see {p['log']}")
        print(f" {p['init_ms']['median']:.0f} ms", flush=True)
        out[step] = {
            "rust": r,
            "python": p,
            "init_speedup": p["init_ms"]["median"] / r["init_ms"]["median"],
            "invoke_speedup": p["invoke_ms"]["median"] / r["invoke_ms"]["median"] if r["invoke_ms"] and p["invoke_ms"] else None,
            "size": sizes.binary(bin_dir / f"cordon-{step}"),
            "network_at_startup": {
                "rust": coldstart.connects_at_startup(rust, log_dir),
                "python": coldstart.connects_at_startup(py, log_dir),
            },
        }
    return out


def run_stack(bin_dir: Path, e2e_runs: int, fleet_n: int, burst_n: int = 0) -> dict:
    import local_stack

    state_dir = Path(tempfile.mkdtemp(prefix="cordon-bench-stack-"))
    stack = local_stack.LocalStack(Path(sys.executable), bin_dir, state_dir)
    print(f"  local stack ({state_dir}) ...", flush=True)
    stack.up()
    try:
        e2e = None
        if e2e_runs > 0:
            print(f"  end to end: {e2e_runs} non-SSM, {e2e_runs} SSM-managed executions ...", flush=True)
            e2e = local_stack.end_to_end(stack, e2e_runs, PRICES)
        fleet = None
        if fleet_n > 0:
            print(f"  fleet: {fleet_n} executions at once ...", flush=True)
            fleet = local_stack.fleet(stack, fleet_n)
        burst = None
        if burst_n > 0:
            print(f"  burst: {burst_n} GuardDuty findings at once, EC2 request buckets on ...", flush=True)
            burst = local_stack.burst(stack, burst_n)
    finally:
        stack.down()
    minimum = {
        "as_coded": local_stack.total(local_stack.EC2_CALLS_AS_CODED),
        "floor": local_stack.total(local_stack.EC2_CALLS_FLOOR),
        "per_vpc": sum(local_stack.EC2_CALLS_PER_VPC.values()),
        "ssm_extra": sum(local_stack.EC2_CALLS_SSM_EXTRA.values()),
        "as_coded_by_step": local_stack.EC2_CALLS_AS_CODED,
        "floor_by_step": local_stack.EC2_CALLS_FLOOR,
        "per_vpc_by_action": local_stack.EC2_CALLS_PER_VPC,
    }
    shutil.rmtree(state_dir, ignore_errors=True)
    return {"e2e": e2e, "fleet": fleet, "burst": burst, "ec2_minimum": minimum}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    parser.add_argument("--bin-dir", type=Path, default=target_dir / "release")
    parser.add_argument("--runs", type=int, default=int(os.environ.get("RUNS", 7)))
    parser.add_argument("--e2e-runs", type=int, default=int(os.environ.get("E2E_RUNS", 5)))
    parser.add_argument("--fleet", type=int, default=int(os.environ.get("FLEET", 25)))
    parser.add_argument("--burst", type=int, default=int(os.environ.get("BURST", 50)))
    parser.add_argument("--only", default=os.environ.get("ONLY", "coldstart,stack"))
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument("--built-from", default=None, help="what the binaries were built from (default: this work tree)")
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    bin_dir = args.bin_dir.resolve()
    missing = [s for s in STEPS if not (bin_dir / f"cordon-{s}").is_file()]
    if missing:
        print(f"no release binary for {', '.join(missing)} in {bin_dir}: run `make bench` (it builds them)", file=sys.stderr)
        return 2

    results: dict = {
        "command": "make bench "
        + " ".join(f"{k}={v}" for k, v in (("RUNS", args.runs), ("FLEET", args.fleet), ("BURST", args.burst))),
        "machine": machine(),
        "release_profile": release_profile(),
        "bin_dir": str(bin_dir),
        "built_from": args.built_from or "this work tree",
        "runs": args.runs,
        "event": coldstart.EVENT.decode(),
        "prices": PRICES,
    }
    m = results["machine"]
    print(f"Cordon bench on {m['nproc']} × {m['cpu']}, {m['date_utc']}, load average {m['loadavg_at_start'][0]:.2f}")
    if "coldstart" in parts:
        print("cold start (Lambda Runtime API served by the bench):", flush=True)
        results["coldstart"] = run_coldstart(bin_dir, args.runs, HERE / "out" / "logs")
        results["baseline_sizes"] = {
            "handler": sizes.python_handler(HERE / "baseline" / "handler.py"),
            "vendored_boto3": sizes.vendored_boto3(),
        }
    if "stack" in parts:
        print("local stack:", flush=True)
        results.update(run_stack(bin_dir, args.e2e_runs, args.fleet, args.burst))
    results["loadavg_at_end"] = os.getloadavg()
    results["verdicts"] = report.verdicts(results)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")

    print()
    if "coldstart" in results:
        print(f"Per step: median [min–max] of {args.runs} cold starts; event {{}} → InvalidInput; release profile {results['release_profile']}")
        print(report.coldstart_table(results))
        b = results["baseline_sizes"]
        print(
            f"boto3 baseline code: handler zip {b['handler']['zip_bytes']} B (boto3 from the Lambda Python runtime); "
            f"vendored boto3+botocore would be {b['vendored_boto3']['bytes'] / 1e6:.1f} MB, {b['vendored_boto3']['zip_bytes'] / 1e6:.1f} MB zipped"
        )
        other = {
            f"{s}/{k}": v["other_connects"]
            for s, r in results["coldstart"].items()
            for k, v in r["network_at_startup"].items()
            if v and v["other_connects"]
        }
        traced = any(v for r in results["coldstart"].values() for v in r["network_at_startup"].values())
        print(
            "connect() at start-up and first invoke, other than the Runtime API (strace): "
            + ("none" if traced and not other else json.dumps(other) if other else "not checked (no strace)")
        )
        print()
    if results.get("e2e"):
        print(f"End to end on the local stack (binaries of {bin_dir}), seconds after StartExecution:")
        print(report.e2e_table(results["e2e"]))
        p = PRICES
        print(
            f"cost: Step Functions Standard ${p['sfn_standard_transition']:.6f}/transition, Lambda arm64 "
            f"${p['lambda_arm64_gb_second']}/GB-s at 256 MB and ${p['lambda_request'] * 1e6:.2f}/1M requests; "
            f"{p['region']} list prices as of {p['as_of']}"
        )
        print()
    if results.get("fleet"):
        print("Fleet (executions started at once, local stack):")
        print(report.fleet_table(results["fleet"], results["ec2_minimum"]))
        print()
    if results.get("burst"):
        print("Burst (GuardDuty findings at once through the template's rule, EC2 request buckets on):")
        print(report.burst_table(results["burst"]))
        print()
    print("Targets (reported, not asserted):")
    print(report.verdict_table(results["verdicts"]))
    print(f"\nwrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
