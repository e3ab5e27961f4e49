"""The printed tables and the verdict against the issue's targets (reported, never asserted)."""

from __future__ import annotations

MB = 1_000_000
MIB = 1024 * 1024

TARGETS = {
    "init_ms": 10.0,
    "peak_rss_mib": 16.0,
    "init_speedup": 25.0,
    "binary_mb": 12.0,
    "containment_s": 3.0,
    "isolated_s": 3.0,
    "state_transitions": 40,
    "ec2_mutations": 10,
}


def _m(s: dict | None, fmt: str = "{:.1f}") -> str:
    if not s:
        return "-"
    return f"{fmt.format(s['median'])} [{fmt.format(s['min'])}–{fmt.format(s['max'])}]"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def coldstart_table(results: dict) -> str:
    rows = []
    for step, r in results["coldstart"].items():
        rust, py = r["rust"], r["python"]
        rows.append(
            [
                step,
                _m(rust["init_ms"], "{:.2f}"),
                _m(py["init_ms"], "{:.0f}"),
                f"{r['init_speedup']:.0f}×" if r.get("init_speedup") else "-",
                _m(rust["invoke_ms"], "{:.2f}"),
                _m(py["invoke_ms"], "{:.2f}"),
                _m(rust["peak_rss_mib"]),
                _m(py["peak_rss_mib"]),
                f"{r['size']['bytes'] / MB:.2f}",
                f"{r['size']['zip_bytes'] / MB:.2f}",
                "/".join(rust["error_types"]) + " · " + "/".join(py["error_types"]),
                str(rust["aws_connections"] + py["aws_connections"]),
            ]
        )
    return _table(
        [
            "step",
            "init ms Rust",
            "init ms boto3",
            "×",
            "1st invoke ms Rust",
            "1st invoke ms boto3",
            "peak RSS MiB Rust",
            "peak RSS MiB boto3",
            "binary MB",
            "zip MB",
            "error (Rust · boto3)",
            "AWS conns",
        ],
        rows,
    )


def e2e_table(e2e: dict) -> str:
    rows = []
    for label, key in (("not SSM-managed", "non_ssm"), ("SSM-managed (waits 1 s)", "ssm")):
        s = e2e[key]
        cold = s["cold"]
        rows.append(
            [
                f"{label}, first run (cold functions)",
                f"{cold['containment_s']:.2f}" if cold["containment_s"] is not None else "-",
                f"{cold['isolated_s']:.2f}" if cold.get("isolated_s") is not None else "-",
                f"{cold['end_s']:.2f}",
                str(cold["state_transitions"]),
                str(cold["lambda_invocations"]),
                str(cold["ec2_mutations"]["per_instance_total"]) + f" (+{cold['ec2_mutations']['per_vpc_total']} VPC)",
                f"${cold['cost']['total_usd']:.6f}",
                cold["status"],
            ]
        )
        w = s["warm"]
        if w["runs"]:
            rows.append(
                [
                    f"{label}, warm ×{w['runs']}",
                    _m(w["containment_s"], "{:.2f}"),
                    _m(w.get("isolated_s"), "{:.2f}"),
                    _m(w["end_s"], "{:.2f}"),
                    _m(w["state_transitions"], "{:.0f}"),
                    _m(w["lambda_invocations"], "{:.0f}"),
                    _m(w["ec2_mutations_per_instance"], "{:.0f}"),
                    _m(w["cost_usd"], "${:.6f}"),
                    "all contained" if w["all_contained"] else "NOT ALL CONTAINED",
                ]
            )
    single = e2e.get("single_interface")
    if single:
        rows.append(
            [
                "single interface, single volume (warm)",
                f"{single['containment_s']:.2f}" if single["containment_s"] is not None else "-",
                f"{single['isolated_s']:.2f}" if single.get("isolated_s") is not None else "-",
                f"{single['end_s']:.2f}",
                str(single["state_transitions"]),
                str(single["lambda_invocations"]),
                str(single["ec2_mutations"]["per_instance_total"]),
                f"${single['cost']['total_usd']:.6f}",
                single["status"],
            ]
        )
    return _table(
        [
            "incident",
            "containment s",
            "last interface isolated s",
            "end s",
            "transitions",
            "Lambda invocations",
            "EC2 mutating calls",
            "cost / incident",
            "result",
        ],
        rows,
    )


def fleet_table(f: dict, minimum: dict) -> str:
    m = f["ec2_mutations"]
    rows = [
        ["instances", str(f["instances"])],
        ["contained (execution succeeded · isolated per EC2)", f"{f['succeeded']} · {f['isolated_per_ec2']}"],
        ["StartExecution spread s", f"{f['start_spread_s']:.2f}"],
        ["wall time to the last containment s", f"{f['last_containment_s']:.2f}" if f["last_containment_s"] else "-"],
        ["wall time to the last execution end s", f"{f['last_end_s']:.2f}"],
        ["containment per execution s", _m(f["containment_s"], "{:.2f}")],
        ["state transitions per execution", _m(f["state_transitions"], "{:.0f}")],
        ["Lambda retries (all executions)", str(f["retries"])],
        [
            "step run time under load ms (cold starts)",
            f"{_m(f['lambda']['duration_ms'], '{:.0f}')} ({f['lambda']['cold_starts']} of {f['lambda']['invocations']})",
        ],
        ["EC2 mutating calls per instance", f"{f['ec2_mutations_per_instance']:.2f} {m['per_instance']}"],
        ["  + per-VPC group set-up (first incidents of a VPC)", f"{m['per_vpc_total']} {m['per_vpc']}"],
        ["  rejected by EC2", str(m["rejected"] or "none")],
        ["  minimum: as coded · design floor", f"{minimum['as_coded']} · {minimum['floor']} (+{minimum['per_vpc']} per VPC)"],
        [
            f"role {f['shared_role']}: inline policies · chars",
            f"{f['shared_role_inline_policies']} · {f['shared_role_inline_policy_chars']} of IAM's 10,240",
        ],
    ]
    return _table(["fleet", "value"], rows)


def burst_table(b: dict) -> str:
    t = b["throttling"]
    rows = [
        ["findings · matched by the rule", f"{b['instances']} · {b['findings_matched']}"],
        ["EC2 request buckets", ("on" if t.get("enabled") else "OFF") + f", capacity ×{t.get('capacity_scale')}, refill ×{t.get('refill_scale')}"],
        ["executions", ", ".join(f"{k} {v}" for k, v in b["statuses"].items())],
        ["interfaces isolated (per the request log)", f"{b['interfaces_isolated']} of {b['interfaces']}"],
        ["first finding → last interface isolated s", f"{b['last_isolated_s']:.2f}" if b["last_isolated_s"] is not None else "-"],
        ["first finding → first / last StartExecution s", f"{b['first_start_s']:.2f} / {b['last_start_s']:.2f}" if b["first_start_s"] is not None else "-"],
        ["first finding → last execution end s", f"{b['last_end_s']:.2f}" if b["last_end_s"] is not None else "-"],
        ["StartExecution → last interface isolated, per response s", _m(b["isolated_after_start_s"], "{:.2f}")],
        ["mutating EC2 calls per instance (answered · attempted)", f"{b['ec2_mutations_per_instance']:.2f} · {b['ec2_mutating_attempts_per_instance']:.2f} {b['ec2_mutations_by_action']}"],
        ["RequestLimitExceeded answers", f"{b['ec2_throttled']} {b['ec2_throttled_by_action'] or ''}".strip()],
    ]
    return _table(["burst", "value"], rows)


def verdicts(results: dict) -> list[dict]:
    out = []

    def add(name: str, target: str, value: str, met: bool | None) -> None:
        out.append({"target": name, "goal": target, "measured": value, "met": met})

    cs = results.get("coldstart")
    if cs:
        worst_init = max(r["rust"]["init_ms"]["median"] for r in cs.values())
        worst_rss = max(r["rust"]["peak_rss_mib"]["max"] for r in cs.values())
        least_speedup = min(r["init_speedup"] for r in cs.values())
        biggest = max(r["size"]["bytes"] for r in cs.values())
        add("init per step (median)", f"≤ {TARGETS['init_ms']:.0f} ms", f"worst {worst_init:.2f} ms", worst_init <= TARGETS["init_ms"])
        add("peak RSS per step (max)", f"≤ {TARGETS['peak_rss_mib']:.0f} MiB", f"worst {worst_rss:.1f} MiB", worst_rss <= TARGETS["peak_rss_mib"])
        add("init vs boto3", f"≥ {TARGETS['init_speedup']:.0f}×", f"least {least_speedup:.0f}×", least_speedup >= TARGETS["init_speedup"])
        add("stripped binary", f"≤ {TARGETS['binary_mb']:.0f} MB", f"largest {biggest / MB:.2f} MB ({biggest / MIB:.2f} MiB)", biggest <= TARGETS["binary_mb"] * MB)
    e2e = results.get("e2e")
    if e2e:
        cold = e2e["non_ssm"]["cold"]["containment_s"]
        warm = (e2e["non_ssm"]["warm"]["containment_s"] or {}).get("median")
        value = f"first run {cold:.2f} s" + (f", warm median {warm:.2f} s" if warm is not None else "")
        add("containment, non-SSM", f"≤ {TARGETS['containment_s']:.0f} s", value, cold <= TARGETS["containment_s"])
        runs = e2e["non_ssm"]["runs"] + e2e["ssm"]["runs"]
        most = max(r["state_transitions"] for r in runs)
        add("state transitions per incident", f"≤ {TARGETS['state_transitions']}", f"most {most} (SSM path)", most <= TARGETS["state_transitions"])
    if e2e:
        ssm = e2e["ssm"]["runs"]  # the first one cold
        isolated = [r["isolated_s"] for r in ssm if r.get("isolated_s") is not None]
        if isolated:
            worst = max(isolated)
            add(
                "last interface isolated, collection on",
                f"≤ {TARGETS['isolated_s']:.0f} s after StartExecution",
                f"first run {ssm[0]['isolated_s']:.2f} s, worst {worst:.2f} s" if ssm[0].get("isolated_s") is not None else f"worst {worst:.2f} s",
                worst <= TARGETS["isolated_s"],
            )
    if e2e and e2e.get("single_interface"):
        m = e2e["single_interface"]["ec2_mutations"]
        add(
            "mutating EC2 calls, single interface",
            f"≤ {TARGETS['ec2_mutations']}",
            f"{m['per_instance_total']} {m['per_instance']}",
            m["per_instance_total"] <= TARGETS["ec2_mutations"],
        )
    f = results.get("fleet")
    if f:
        causes = sorted({(x["cause"] or x["error"] or "")[:160] for x in f["failures"]})
        add(
            "fleet all contained",
            f"{f['instances']} of {f['instances']}",
            f"{f['isolated_per_ec2']}" + (f"; failed: {'; '.join(causes)}" if causes else ""),
            f["all_contained"],
        )
    b = results.get("burst")
    if b:
        causes = sorted({(x["cause"] or x["error"] or "")[:160] for x in b["failures"]})
        add(
            "burst all contained, none failed by throttling",
            f"{b['instances']} of {b['instances']}",
            f"{b['statuses'].get('SUCCEEDED', 0)} succeeded, {b['interfaces_isolated']} of {b['interfaces']} interfaces isolated, "
            f"{b['ec2_throttled']} RequestLimitExceeded" + (f"; failed: {'; '.join(causes)}" if causes else ""),
            b["all_contained"],
        )
    return out


def verdict_table(rows: list[dict]) -> str:
    mark = {True: "met", False: "MISSED", None: "-"}
    return _table(["target", "goal", "measured", ""], [[r["target"], r["goal"], r["measured"], mark[r["met"]]] for r in rows])
