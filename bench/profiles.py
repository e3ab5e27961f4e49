"""Release-profile variants of one or two step binaries, measured like `make bench` measures the
deployed ones: build time, stripped size, zipped size, init, first invoke, peak RSS.

Not part of `make bench` (each variant is a release build with LTO: minutes to tens of minutes
on 2 cores). Run by hand, one variant at a time if need be; results accumulate in
bench/profiles.json (the kept binaries and logs in bench/out/):

    .venv/bin/python bench/profiles.py --variant thin:LTO=thin --bins cordon-snapshot
    .venv/bin/python bench/profiles.py --variant o3:OPT_LEVEL=3 --bins cordon-snapshot \\
        --target-dir ~/.cache/cordon/target-o3

A variant is NAME:KEY=VALUE[,KEY=VALUE...], each KEY a `[profile.release]` setting spelt as
cargo's environment override (CARGO_PROFILE_RELEASE_<KEY>): OPT_LEVEL, LTO, CODEGEN_UNITS, PANIC.
The variant "current" builds with Cargo.toml as it is. A setting that changes how dependencies
are compiled (OPT_LEVEL, CODEGEN_UNITS, PANIC) rebuilds every crate: give such a variant a
--target-dir of its own so the shared one keeps the deployed build.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import coldstart  # noqa: E402
import sizes  # noqa: E402


def build(bins: list[str], settings: dict[str, str], target_dir: Path, src: Path) -> float:
    env = dict(os.environ, CARGO_TARGET_DIR=str(target_dir))
    env.update({f"CARGO_PROFILE_RELEASE_{k}": v for k, v in settings.items()})
    cmd = ["cargo", "build", "--release", "--locked"]
    for b in bins:
        cmd += ["--bin", b]
    started = time.monotonic()
    subprocess.run(cmd, cwd=src, env=env, check=True)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", required=True, help="NAME:KEY=VALUE,... or 'current'")
    parser.add_argument("--bins", default="cordon-snapshot", help="comma-separated binaries")
    parser.add_argument("--target-dir", type=Path, default=Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")))
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--src", type=Path, default=ROOT, help="the workspace to build (default: this one)")
    parser.add_argument(
        "--no-build", action="store_true", help="measure the variant's kept copy (else what the target dir holds)"
    )
    args = parser.parse_args()

    name, _, spec = args.variant.partition(":")
    settings = dict(kv.split("=", 1) for kv in spec.split(",") if kv)
    bins = args.bins.split(",")
    build_s = None if args.no_build else build(bins, settings, args.target_dir, args.src)

    keep = HERE / "out" / "variants" / name
    keep.mkdir(parents=True, exist_ok=True)
    out_file = HERE / "profiles.json"
    results = json.loads(out_file.read_text()) if out_file.exists() else {}
    entry = {"settings": settings, "build_s": build_s, "target_dir": str(args.target_dir), "src": str(args.src), "bins": {}}
    if args.no_build and name in results:  # re-measuring a kept build: keep what was recorded of it
        entry = {**results[name], "bins": dict(results[name]["bins"])}
    for b in bins:
        if not (args.no_build and (keep / b).exists()):
            shutil.copy2(args.target_dir / "release" / b, keep / b)
        step = b.removeprefix("cordon-")
        target = coldstart.rust_target(step, keep)
        m = coldstart.measure(target, args.runs, HERE / "out" / "logs" / "variants" / name)
        entry["bins"][b] = {
            "size": sizes.binary(keep / b),
            "init_ms": m["init_ms"],
            "invoke_ms": m["invoke_ms"],
            "peak_rss_mib": m["peak_rss_mib"],
            "error_types": m["error_types"],
        }
        s = entry["bins"][b]
        print(
            f"{name:10} {b:22} {s['size']['bytes'] / 1e6:6.2f} MB  zip {s['size']['zip_bytes'] / 1e6:5.2f} MB  "
            f"init {s['init_ms']['median']:6.2f} ms [{s['init_ms']['min']:.2f}–{s['init_ms']['max']:.2f}]  "
            f"invoke {s['invoke_ms']['median']:5.2f} ms  RSS {s['peak_rss_mib']['median']:5.1f} MiB  "
            f"build {entry['build_s'] or 0:.0f} s"
        )
    results[name] = entry
    out_file.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
