"""The statistics chart, drawn on the server as SVG (no JavaScript): one line per series,
told apart by colour AND dash pattern, with a title and a description for screen readers
(the data table beside it carries every figure)."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from opencrm_horscompte.stats.report import Report

WIDTH, HEIGHT = 720, 300
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 16, 36


@dataclass(frozen=True)
class Series:
    metric: str
    label: str
    colour: str
    dash: str  # SVG stroke-dasharray ("" = solid)


SERIES_STYLE = {
    "lookups": ("#000091", ""),
    "codes_sent": ("#18753c", "8 4"),
    "validations_ok": ("#6a2c91", "2 3"),
    "validations_failed": ("#c9191e", "10 3 2 3"),
    "deposits": ("#3a3a3a", "4 4"),
}


def _ticks(top: int) -> list[int]:
    if top <= 4:
        return list(range(top + 1))
    step = max(1, round(top / 4))
    return list(range(0, top + 1, step))


def render_svg(report: Report, labels: dict[str, str], title: str, desc: str) -> str:
    """A standalone ``<svg>`` element (already escaped, safe to insert)."""
    metrics = list(SERIES_STYLE)
    buckets = report.buckets
    top = max([1, *(b.counts[m] for b in buckets for m in metrics)])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(1, len(buckets) - 1)

    def x(index: int) -> float:
        return LEFT + index * step

    def y(value: int) -> float:
        return TOP + plot_h - plot_h * value / top

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" '
        'role="img" aria-labelledby="graphique-titre graphique-description" '
        'class="stats-chart" font-family="system-ui, sans-serif" font-size="12">',
        f'<title id="graphique-titre">{escape(title)}</title>',
        f'<desc id="graphique-description">{escape(desc)}</desc>',
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
    ]
    for tick in _ticks(top):
        ty = y(tick)
        parts.append(
            f'<line x1="{LEFT}" y1="{ty:.1f}" x2="{WIDTH - RIGHT}" y2="{ty:.1f}" '
            'stroke="#dddddd" stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{LEFT - 6}" y="{ty + 4:.1f}" text-anchor="end" fill="#3a3a3a">{tick}</text>'
        )
    every = max(1, len(buckets) // 6)
    for index, bucket in enumerate(buckets):
        if index % every == 0 or index == len(buckets) - 1:
            label = bucket.start.strftime("%d/%m")
            parts.append(
                f'<text x="{x(index):.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle" '
                f'fill="#3a3a3a">{label}</text>'
            )
    for metric in metrics:
        colour, dash = SERIES_STYLE[metric]
        points = " ".join(f"{x(i):.1f},{y(b.counts[metric]):.1f}" for i, b in enumerate(buckets))
        dashing = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2.5"'
            f"{dashing}><title>{escape(labels[metric])}</title></polyline>"
        )
    parts.append("</svg>")
    return "".join(parts)


def legend(labels: dict[str, str]) -> list[Series]:
    """The legend's entries, in drawing order."""
    return [Series(m, labels[m], *SERIES_STYLE[m]) for m in SERIES_STYLE]
