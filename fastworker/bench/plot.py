"""``--plot``: one bar chart per workload, each bar a row's median with its middle half as
whiskers, fastworker's rows in one colour, the references (floor, ceiling) in another."""

from __future__ import annotations

import io

from .report import baseline_cell
from .runner import Results
from .stats import summarize

INSTALL_HINT = "pip install 'fastworker[plot]'"
COLOURS = {"fastworker": "#d62728", "reference": "#7f7f7f", "peer": "#1f77b4"}


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    """Fail before a run, not after it, when the chart cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable(f"--plot draws with matplotlib, which is not installed: {INSTALL_HINT}") from None


def draw(results: Results, path: str, title: str) -> None:
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    panels = []
    for workload in results.workloads:
        cells = [c for c in results.cells if c.workload is workload and c.samples]
        if cells:
            panels.append((workload, cells))
    if not panels:
        raise ValueError("nothing was measured: no chart to draw")
    columns = 2 if len(panels) > 1 else 1
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.2 * columns, 3.0 * rows), squeeze=False)
    for ax, (workload, cells) in zip(axes.flat, panels):
        base = baseline_cell(cells)
        summaries = [summarize(c.samples) for c in cells]
        medians = [s.median for s in summaries]
        whiskers = [[s.median - s.p25 for s in summaries], [s.p75 - s.median for s in summaries]]
        positions = range(len(cells))
        ax.barh(positions, medians, xerr=whiskers, color=[COLOURS[c.engine.family] for c in cells],
                edgecolor=["black" if c is base else "none" for c in cells])
        ax.set_yticks(list(positions), [c.engine.label for c in cells], fontsize=7)
        ax.invert_yaxis()
        direction = "higher" if workload.higher_is_better else "lower"
        ax.set_title(f"{workload.name}: {workload.unit}, {direction} is better", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        positive = [m for m in medians if m > 0]
        if positive and max(positive) > 50 * min(positive):  # a slow peer would flatten the rest
            ax.set_xscale("log")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.98))  # leave the top line to the title
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=72)
    plt.close(fig)
    _save_small(image, path)


def _save_small(png: io.BytesIO, path: str) -> None:
    """A chart has few colours: as a 64-colour palette it is a third of the size, small
    enough to commit beside a README.  Pillow comes with matplotlib."""
    from PIL import Image

    png.seek(0)
    with Image.open(png) as chart:
        chart.convert("RGB").quantize(colors=64).save(path, format="PNG", optimize=True)
