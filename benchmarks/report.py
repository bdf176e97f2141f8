"""The targets, the machine's description and the human summary of ``benchmarks/run.py``."""

from __future__ import annotations

import os
import platform
import sqlite3
from pathlib import Path
from typing import Any

TARGETS: dict[str, tuple[str, Any] | None] = {
    "deposit_tx_overhead": ("<=", 1.25),
    "deposit_ms_added": None,
    "deposit_overhead": None,
    "deposit_lock_hold_vs_raw": None,
    "deposit_lock_hold_overhead": None,
    "lookup_vs_raw": ("<=", 2.0),
    "verify_vs_raw": ("<=", 2.0),
    "lookup_page_vs_raw": None,
    "lookup_lock_hold_vs_raw": ("<=", 1.5),
    "lookup_statements": ("<=", 5),
    "verify_statements": ("<=", 3),
    "lookup_scaling": ("<=", 1.1),
    "deposit_scaling": None,
    "lookup_after_10k_wrong_same_email": ("<=", 1.1),
    "http_lookup_cpu_vs_bare": ("<=", 3.0),
    "http_lookup_post_cpu_vs_bare": None,
    "rss_growth_mb_per_1e4_after_warmup": ("<=", 1.0),
    "pg_speedup_4_workers": None,
    "pg_errors": ("==", 0),
    "pg_codes_equal_dossiers": ("==", True),
    "codegen_us": None,
    "stats_page_ms_1e6_events": None,
    "lookup_branch_cpu_ratio": ("~", (0.9, 1.1)),
    "identity_branch_cpu_ratio": ("~", (0.9, 1.1)),
}


def machine() -> dict[str, Any]:
    import psycopg
    import sqlalchemy

    cpu_model = None
    memory_mb = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_mb = int(line.split()[1]) // 1024
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_mb": memory_mb,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": sqlalchemy.__version__,
        "psycopg": psycopg.__version__,
    }


def status(key: str, value: Any) -> str:
    target = TARGETS.get(key)
    if target is None:
        return ""
    operator, bound = target
    if operator == "~":  # within a range
        low, high = bound
        return f"{(low + high) / 2:g} +- {(high - low) / 2:g}: " + (
            "met" if low <= value <= high else "MISSED"
        )
    met = {"<=": value <= bound, ">=": value >= bound, "==": value == bound}[operator]
    return f"{operator} {bound}: {'met' if met else 'MISSED'}"


def shown(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def busy_shown(cores: float | None, form: str) -> str:
    """Busy cores in ``form``, or why they were not counted (``MachineLoad``'s ``None``)."""
    return "too short to count" if cores is None else form.format(cores)


def load_shown(load: dict[str, Any] | None) -> str:
    if not load:
        return ""
    busy = load["machine_cores_busy"]
    cores = busy_shown(busy, "{:.1f}/" + f"{load['cpu_count']} busy")
    if busy is not None:
        cores += f", {load['machine_cores_stolen']:.1f} stolen"
    return f"{load['loadavg_1min_start']:.1f}, {cores}"


def summary(figures: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "",
        "opencrm-horscompte benchmark"
        + (" (--quick: tiny sizes, figures not meaningful)" if meta["quick"] else ""),
        f"machine: {meta['machine']['cpu_model']} x {meta['machine']['cpu_count']}, "
        f"Python {meta['machine']['python']}, SQLite {meta['machine']['sqlite']}, "
        f"PostgreSQL {meta['machine']['postgresql']}",
        "value = median of 3 interleaved runs of the CPU-time figure; spread = min-max of the "
        "3; wall = the same on the wall clock; load = 1-min load average at the phase's start "
        "and the cores the whole machine kept busy during it (stolen: the cores the hypervisor "
        "gave to other machines meanwhile); memory: the growth over each third of the "
        "deposits in one process, in place of runs",
        "",
        f"{'figure':36} {'value':>9} {'spread':>17} {'wall':>8}  {'target':18} load",
    ]
    for key, figure in figures.items():
        value = figure["value"]
        span = (
            f"{shown(figure['min'])}-{shown(figure['max'])}"
            if figure["min"] != figure["max"]
            else ""
        )
        wall = shown(figure["wall"]) if "wall" in figure else ""
        lines.append(
            f"{key:36} {shown(value):>9} {span:>17} {wall:>8}  {status(key, value):18} "
            f"{load_shown(figure.get('load'))}"
        )
    if "postgresql" in meta:
        pg = meta["postgresql"]
        lines.append(
            "\npg cores busy (median of runs): "
            + ", ".join(
                f"{w} worker(s): client {busy_shown(v['client_cores_busy'], '{:.2f}')}, "
                f"machine {busy_shown(v['machine_cores_busy'], '{:.2f}')}, "
                f"stolen {busy_shown(v['machine_cores_stolen'], '{:.2f}')}"
                for w, v in figures["pg_speedup_4_workers"]["cores_busy"].items()
            )
            + f"; {pg['deposits_per_second']['4']:.0f} vs {pg['deposits_per_second']['1']:.0f} "
            "deposits/s"
        )
    if "driver_speed" in meta:
        speed = meta["driver_speed"]
        lines.append(
            "one fixed statement, CPU us: Core {:.1f}, DriverStatement {:.1f}, raw {:.1f}".format(
                speed["core_vs_raw"]["numerator_ms"]["cpu"] * 1e3,
                speed["driver_statement_vs_raw"]["numerator_ms"]["cpu"] * 1e3,
                speed["core_vs_raw"]["denominator_ms"]["cpu"] * 1e3,
            )
        )
    if "scaling" in meta:
        lines.append(f"rows per table (big file): {meta['scaling']['rows']['big']}")
    lines.append(f"total {meta['seconds']['total']:.0f} s")
    return "\n".join(lines)
