"""Bar charts of a bench summary: prompt, generation and aggregate tokens/s per cell, one bar
per variant, whiskers from the lowest to the highest repeat.

``.html`` is a self-contained page with inline SVG (no dependency); ``.png`` uses matplotlib,
an optional dependency (``pip install 'llamasup[bench]'``).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from llamasup.bench.report import Row, Stat
from llamasup.errors import LlamasupError

PANELS = (
    ("prompt_tps", "prompt tokens/s"),
    ("gen_tps", "generation tokens/s"),
    ("throughput", "aggregate generated tokens/s"),
)
COLOURS = ("#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#3ca951", "#ff8ab7", "#a463f2", "#97bbf5")


class PlotError(LlamasupError):
    """The plot cannot be written (unknown extension, matplotlib missing)."""


def _series(rows: Sequence[Row]) -> tuple[list[str], list[str], dict[str, dict[str, Stat | None]]]:
    groups: list[str] = []
    variants: list[str] = []
    for row in rows:
        label = _group(row)
        if label not in groups:
            groups.append(label)
        if row.variant.name not in variants:
            variants.append(row.variant.name)
    values: dict[str, dict[str, Stat | None]] = {}
    for row in rows:
        for metric, _ in PANELS:
            values.setdefault(metric, {})[f"{_group(row)}\0{row.variant.name}"] = row.metrics.get(
                metric
            )
    return groups, variants, values


def _group(row: Row) -> str:
    cell = row.cell
    return f"p{cell.prompt_tokens} g{cell.gen_tokens} c{cell.concurrency}"


def write_plot(rows: Sequence[Row], path: Path, title: str = "llamasup bench") -> None:
    suffix = path.suffix.lower()
    if suffix in (".html", ".htm"):
        path.write_text(_html(rows, title), encoding="utf-8")
    elif suffix in (".png", ".svg", ".pdf"):
        _matplotlib(rows, path, title)
    else:
        raise PlotError(f"{path}: plot to .png, .svg, .pdf (matplotlib) or .html")


def _matplotlib(rows: Sequence[Row], path: Path, title: str) -> None:
    try:
        import matplotlib  # noqa: PLC0415 - optional, and slow to import

        matplotlib.use("Agg")
        from matplotlib import pyplot  # noqa: PLC0415
    except ImportError as exc:
        raise PlotError(
            f"{path}: a {path.suffix} plot needs matplotlib: pip install 'llamasup[bench]' "
            "(or plot to .html, which needs nothing)"
        ) from exc
    groups, variants, values = _series(rows)
    figure, axes = pyplot.subplots(
        len(PANELS), 1, figsize=(max(6.0, 1.2 * len(groups) * max(1, len(variants)) / 2), 9)
    )
    width = 0.8 / max(1, len(variants))
    for axis, (metric, label) in zip(axes, PANELS, strict=True):
        for v, variant in enumerate(variants):
            xs, heights, lows, highs = [], [], [], []
            for g, group in enumerate(groups):
                stat = values[metric].get(f"{group}\0{variant}")
                if stat is None:
                    continue
                xs.append(g + (v - (len(variants) - 1) / 2) * width)
                heights.append(stat.median)
                lows.append(stat.median - stat.low)
                highs.append(stat.high - stat.median)
            axis.bar(
                xs,
                heights,
                width,
                yerr=[lows, highs],
                capsize=3,
                label=variant,
                color=COLOURS[v % len(COLOURS)],
            )
        axis.set_ylabel(label)
        axis.set_xticks(range(len(groups)), groups)
        axis.grid(axis="y", alpha=0.3)
    axes[0].set_title(title)
    axes[0].legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def _html(rows: Sequence[Row], title: str) -> str:
    groups, variants, values = _series(rows)
    panels = "\n".join(_svg(values[m], label, groups, variants) for m, label in PANELS)
    legend = " ".join(
        f'<span style="color:{COLOURS[i % len(COLOURS)]}">■</span> {html.escape(v)}'
        for i, v in enumerate(variants)
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head>"
        "<body style='font-family:sans-serif'>"
        f"<h1>{html.escape(title)}</h1><p>{legend}</p>\n{panels}\n"
        "<p>Bars: median over repeats; whiskers: lowest to highest repeat.</p></body></html>\n"
    )


def _svg(values: dict[str, Stat | None], label: str, groups: list[str], variants: list[str]) -> str:
    width, height, left, bottom, top = 120 * max(1, len(groups)) + 80, 260, 60, 30, 20
    stats = [s for s in values.values() if s is not None]
    peak = max((s.high for s in stats), default=1.0) or 1.0
    scale = (height - bottom - top) / peak
    slot = (width - left - 20) / max(1, len(groups))
    bar = slot * 0.8 / max(1, len(variants))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">',
        f'<text x="4" y="14" font-size="12">{html.escape(label)} (max {peak:.1f})</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" '
        'stroke="#888"/>',
    ]
    for g, group in enumerate(groups):
        x0 = left + g * slot + slot * 0.1
        parts.append(
            f'<text x="{x0 + slot * 0.4:.1f}" y="{height - 10}" font-size="11" '
            f'text-anchor="middle">{html.escape(group)}</text>'
        )
        for v, variant in enumerate(variants):
            stat = values.get(f"{group}\0{variant}")
            if stat is None:
                continue
            x = x0 + v * bar
            y = height - bottom - stat.median * scale
            colour = COLOURS[v % len(COLOURS)]
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar * 0.9:.1f}" '
                f'height="{stat.median * scale:.1f}" fill="{colour}">'
                f"<title>{html.escape(variant)}: {stat.median:.2f}</title></rect>"
            )
            mid = x + bar * 0.45
            y_low = height - bottom - stat.low * scale
            y_high = height - bottom - stat.high * scale
            parts.append(
                f'<line x1="{mid:.1f}" y1="{y_low:.1f}" x2="{mid:.1f}" y2="{y_high:.1f}" '
                'stroke="#222"/>'
            )
    parts.append("</svg>")
    return "\n".join(parts)
