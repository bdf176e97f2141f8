"""A figure of ``benchmarks/run.py`` from its runs' samples: the median of the per-run
ratios (or differences), with the spread, CPU and wall, and the machine's load."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

import benchlib
from benchlib import Sample, median_sample, progress

RUNS = 3


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def median_known(values: Sequence[float | None]) -> float | None:
    """The median of the values that were measured (``None``: too short to count)."""
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def repeated(
    label: str, one_run: Callable[[], dict[str, list[Sample]]]
) -> tuple[list[dict[str, list[Sample]]], dict[str, Any]]:
    """``one_run`` done ``RUNS`` times with its progress line, and the machine's load over
    the whole (the ``load`` every figure of the phase carries)."""
    load = benchlib.MachineLoad()
    per_run = []
    for run in range(RUNS):
        progress(f"{label}: run {run + 1} of {RUNS}")
        per_run.append(one_run())
    return per_run, load.done()


def paired(
    per_run: Sequence[dict[str, list[Sample]]], numerator: str, denominator: str
) -> list[tuple[list[Sample], list[Sample]]]:
    """The two operations' samples, run by run, for ``ratio_figure``/``difference_figure``."""
    return [(run[numerator], run[denominator]) for run in per_run]


def summarised(values: list[Any]) -> dict[str, Any]:
    """A figure's value (the median of its runs), spread and runs."""
    return {"value": median(values), "min": min(values), "max": max(values), "runs": values}


def spread(cpu: list[float], wall: list[float]) -> dict[str, Any]:
    """Median and spread of per-run values, CPU (the judged value) and wall."""
    return {
        **summarised(cpu),
        "wall": median(wall),
        "wall_min": min(wall),
        "wall_max": max(wall),
    }


def ratio_figure(
    runs: Sequence[tuple[Sequence[Sample], Sequence[Sample]]], load: dict[str, Any]
) -> dict[str, Any]:
    """Median (and spread) of the per-run ratios of medians, CPU and wall."""
    cpu, wall, top, bottom = [], [], [], []
    for numerator, denominator in runs:
        up, down = median_sample(numerator), median_sample(denominator)
        cpu.append(up.cpu / down.cpu)
        wall.append(up.wall / down.wall)
        top.append(up)
        bottom.append(down)
    return {
        **spread(cpu, wall),
        "numerator_ms": _milliseconds(top),
        "denominator_ms": _milliseconds(bottom),
        "samples_per_run": len(runs[0][0]) if runs else 0,
        "load": load,
    }


def _milliseconds(samples: Sequence[Sample]) -> dict[str, float]:
    """The median CPU and wall time of ``samples``, in milliseconds."""
    middle = median_sample(samples)
    return {"cpu": middle.cpu * 1e3, "wall": middle.wall * 1e3}


def difference_figure(
    runs: Sequence[tuple[Sequence[Sample], Sequence[Sample]]], load: dict[str, Any]
) -> dict[str, Any]:
    """Median (and spread) of the per-run differences of medians, in CPU milliseconds."""
    medians = [(median_sample(a), median_sample(b)) for a, b in runs]
    cpu = [(up.cpu - down.cpu) * 1e3 for up, down in medians]
    wall = [(up.wall - down.wall) * 1e3 for up, down in medians]
    return {**spread(cpu, wall), "load": load}


def exact_figure(value: Any, load: dict[str, Any] | None = None) -> dict[str, Any]:
    return {**summarised([value]), "load": load}
