"""Plots for the analysis commands, drawn with plotext into a string (printed by the caller).

plotext keeps one global figure, so every function here starts from `clear_figure()` and
returns `build()`'s text; nothing is shown directly, which keeps `--json` output clean and
lets tests read the plot.
"""

from __future__ import annotations

import math
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from srat_engine.errors import SratError
from srat_tui.render.format import inert

# plotext's named colours, distinct on dark and light terminals; cycled past 10 classes
PALETTE: tuple[str, ...] = (
    "red", "green", "blue", "orange", "magenta", "cyan", "yellow", "gray", "white", "black",
)  # fmt: skip


CLASS_MARKS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
MARKERS: tuple[str, ...] = ("o", "x", "+", "*", "#", "@", "%", "&")


@dataclass(frozen=True)
class Series:
    label: str
    x: list[float]
    y: list[float]


def parse_numbers(text: str, option: str) -> list[float]:
    """'1,2,5' -> [1.0, 2.0, 5.0]; a one-line SratError naming the option otherwise (nan
    and inf, which float() accepts, are not values any option here can take)."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SratError(f"{option} expects numbers separated by commas (got {text!r})") from None
    if not all(math.isfinite(value) for value in values):
        raise SratError(f"{option} expects finite numbers (got {text!r})")
    if not values:
        raise SratError(f"{option} needs at least one value")
    return values


def _built(plt: Any) -> str:
    """The figure as text; colour codes only for a terminal (a pipe or file gets plain text)."""
    text = str(plt.build())
    return text if sys.stdout.isatty() else str(plt.uncolorize(text))


def _fresh_figure(height: int) -> Any:
    """plotext with its global figure cleared, sized to the terminal (40-120 columns)."""
    import plotext as plt

    plt.clear_figure()
    columns = shutil.get_terminal_size((100, 30)).columns
    plt.plotsize(max(40, min(columns, 120)), height)
    plt.theme("clear")
    return plt


def line_plot(
    series: Sequence[Series],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    xlog: bool = False,
    height: int = 20,
) -> str:
    """Lines with markers, one colour per series, plotext's legend in the corner."""
    plt = _fresh_figure(height)
    for k, item in enumerate(series):
        plt.plot(item.x, item.y, label=inert(item.label), color=PALETTE[k % len(PALETTE)])
        # a distinct marker per series too: piped output has no colours to tell lines apart
        marker = MARKERS[k % len(MARKERS)]
        plt.scatter(item.x, item.y, color=PALETTE[k % len(PALETTE)], marker=marker)
    if xlog:
        plt.xscale("log")
    plt.title(inert(title))
    plt.xlabel(xlabel)
    plt.ylabel(ylabel)
    return _built(plt)


def scatter_classes(
    points: Sequence[tuple[float, float]],
    labels: Sequence[int],
    class_names: Sequence[str],
    *,
    title: str,
    height: int = 30,
) -> str:
    """A 2-D scatter, one colour per class, named in the legend."""
    plt = _fresh_figure(height)
    for cls, name in enumerate(class_names):
        xs = [p[0] for p, y in zip(points, labels, strict=True) if y == cls]
        ys = [p[1] for p, y in zip(points, labels, strict=True) if y == cls]
        if xs:
            # piped output has no colours: the class's index character tells classes apart
            marker = "dot" if sys.stdout.isatty() else CLASS_MARKS[cls % len(CLASS_MARKS)]
            label = inert(name)
            plt.scatter(xs, ys, label=label, color=PALETTE[cls % len(PALETTE)], marker=marker)
    plt.title(inert(title))
    return _built(plt)


def grouped_bars(
    groups: Sequence[str],
    bars: dict[str, list[float]],
    *,
    title: str,
    ylabel: str,
    height: int = 22,
) -> str:
    """Side-by-side bars: one group per entry of `groups`, one coloured bar per key of `bars`."""
    plt = _fresh_figure(height)
    names = list(bars)
    plt.multiple_bar(
        [inert(group) for group in groups],
        [bars[name] for name in names],
        labels=[inert(name) for name in names],
        color=[PALETTE[k % len(PALETTE)] for k in range(len(names))],
    )
    plt.title(inert(title))
    plt.ylabel(ylabel)
    return _built(plt)
