"""Resident memory over many deposits, in a process of its own (see ``run.py``)."""

from __future__ import annotations

import multiprocessing
import queue
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import benchlib
from benchlib import progress
from figures import summarised
from sizes import Sizes


def slope_per_1e4(points: Sequence[tuple[int, float]]) -> float | None:
    """Least-squares growth of ``(deposits, MB)`` samples, in MB per 10^4 deposits."""
    xs = [n for n, _ in points]
    if len(set(xs)) < 2:
        return None
    return statistics.linear_regression(xs, [mb for _, mb in points]).slope * 1e4


class MemoryPhase:
    """The resident-memory measurement, in a process of its own started early."""

    def __init__(self, sizes: Sizes, workdir: Path, budget: float) -> None:
        self.sizes = sizes
        self.budget = budget
        context = multiprocessing.get_context("spawn")
        self.results = context.Queue()
        self.process = context.Process(
            target=benchlib.rss_child,
            args=(
                benchlib.sqlite_url(workdir / "memory.sqlite3"),
                sizes.rss_deposits,
                sizes.rss_warmup,
                budget,
                self.results,
            ),
            name="rss-child",
        )
        self.load: benchlib.MachineLoad | None = None  # set when the process starts

    def start(self) -> benchlib.MachineLoad:
        if self.load is None:
            progress(
                f"memory: {self.sizes.rss_warmup:,} + {self.sizes.rss_deposits:,} deposits in "
                f"a process of their own (budget {self.budget:.0f} s, 0 = none)"
            )
            self.process.start()
            self.load = benchlib.MachineLoad()
        return self.load

    def result(self) -> dict[str, Any]:
        load = self.start()
        report = None
        while report is None:
            try:
                report = self.results.get(timeout=1)
            except queue.Empty:
                if not self.process.is_alive():
                    try:
                        report = self.results.get(timeout=2)
                    except queue.Empty:
                        raise RuntimeError(
                            f"the memory process died (exit code {self.process.exitcode})"
                        ) from None
        load_done = load.done()
        self.process.join(timeout=30)
        if report["error"]:
            raise RuntimeError("memory process failed:\n" + report["error"])
        points = [(n, kb / 1024) for n, kb in report["samples"]]
        done = report["deposits"]
        thirds = [
            slope_per_1e4(
                [(n, mb) for n, mb in points if third * done <= 3 * n <= (third + 1) * done]
            )
            for third in range(3)
        ]
        whole = slope_per_1e4(points) or 0.0
        by_third = [value for value in thirds if value is not None] or [whole]
        growth = {
            **summarised(by_third),
            "whole_run_slope": whole,
            "end_minus_start_per_1e4": (
                (report["end_kb"] - report["start_kb"]) / 1024 * 1e4 / done if done else None
            ),
            "load": load_done,
        }
        return {
            "figures": {"rss_growth_mb_per_1e4_after_warmup": growth},
            "deposits_after_warmup": done,
            "warmup_deposits": self.sizes.rss_warmup,
            "start_mb": report["start_kb"] / 1024,
            "end_mb": report["end_kb"] / 1024,
            "peak_mb": report["peak_kb"] / 1024,
            "deposits_per_second": done / report["seconds"] if report["seconds"] else None,
            "samples_mb": [(n, round(mb, 2)) for n, mb in points],
        }

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=10)
        self.results.close()
