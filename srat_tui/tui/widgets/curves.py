"""Accuracy, loss and learning-rate curves of one run, drawn with plotext.

Two halves:

* pure functions that turn metrics records into series (which lines to draw, nothing else);
* `CurvePlot`, a `PlotextPlot` that builds its figure in a thread worker and only ever hands
  the finished text to the UI thread (a `FigureBuilt` message).

Building a plotext figure is slow and grows with points drawn: measured here at 160x48, 200
epochs, 12 lines take 0.1-0.7 s and 100 lines 1-7 s (noisier curves cost more). Even the group
view is too slow for the UI thread once a run is long, so every figure is built off-thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import work
from textual.color import Color
from textual_plotext import PlotextPlot
from textual_plotext.plot import Plot

from srat_engine.evaluation.metrics import class_group_mean
from srat_engine.runs.records import current_final, epoch_records, is_number
from srat_tui.tui.messages import FigureBuilt

Record = dict[str, Any]
Points = tuple[list[int], list[float]]
Series = dict[str, Points]
RGB = tuple[int, int, int]

GROUPS = 10
"""Runs with more classes than this plot frequency-ordered group averages by default."""

HEAD: RGB = (86, 156, 255)  # most frequent classes
TAIL: RGB = (255, 176, 64)  # least frequent classes
UNDER: RGB = (255, 85, 85)
FOREGROUND = "foreground"  # resolved to the app theme's text colour at build time
# One colour a run where runs are overlaid (the compare screen): Okabe and Ito's palette,
# told apart with colour-blindness and on dark and light themes; cycled past eight runs.
RUN_COLORS: tuple[RGB, ...] = (
    (86, 180, 233), (230, 159, 0), (0, 158, 115), (204, 121, 167),
    (240, 228, 66), (0, 114, 178), (213, 94, 0), (153, 153, 153),
)  # fmt: skip


# -- records -> series ------------------------------------------------------------------------


def final_record(records: Sequence[Record]) -> Record | None:
    """The final evaluation, unless the run trained further after it (`records.current_final`)."""
    return current_final(records)


def scalar_series(rows: Sequence[Record], name: str) -> Points:
    """One scalar field against the epoch; epochs where it is missing are left out."""
    epochs, values = [], []
    for row in rows:
        value = row.get(name)
        if is_number(value):
            epochs.append(row["epoch"])
            values.append(float(value))
    return epochs, values


def summary_series(rows: Sequence[Record], key: str) -> Series:
    """Overall and under-represented accuracy: the paper's columns `{key}_overall/_under`."""
    return {
        "overall": scalar_series(rows, f"{key}_overall"),
        "under": scalar_series(rows, f"{key}_under"),
    }


def class_series(rows: Sequence[Record], key: str, names: Sequence[str] | None = None) -> Series:
    """One line per class from `{key}_class`; rows without that list (no robust eval) are
    skipped, and so are values that are no number (a damaged record must not stop the app)."""
    per_class: dict[int, Points] = {}
    for row in rows:
        values = row.get(f"{key}_class")
        if not isinstance(values, list):
            continue
        for cls, value in enumerate(values):
            if not is_number(value):
                continue
            epochs, ys = per_class.setdefault(cls, ([], []))
            epochs.append(row["epoch"])
            ys.append(float(value))
    return {
        (names[cls] if names is not None and cls < len(names) else str(cls)): per_class[cls]
        for cls in sorted(per_class)
    }


def frequency_groups(counts: Sequence[int], groups: int = GROUPS) -> list[list[int]]:
    """Class indices from most to least frequent, cut into `groups` near-equal runs.

    Ties keep index order, so the result is deterministic; sizes differ by at most one (the
    larger groups come first, as numpy's array_split does).
    """
    order = sorted(range(len(counts)), key=lambda cls: (-counts[cls], cls))
    groups = max(1, min(groups, len(order)))
    size, extra = divmod(len(order), groups)
    result, start = [], 0
    for g in range(groups):
        end = start + size + (1 if g < extra else 0)
        result.append(order[start:end])
        start = end
    return result


def group_label(group: Sequence[int], counts: Sequence[int], number: int) -> str:
    ns = [counts[cls] for cls in group]
    return f"G{number} n{max(ns)}" if min(ns) == max(ns) else f"G{number} n{max(ns)}-{min(ns)}"


def group_series(
    rows: Sequence[Record], key: str, groups: Sequence[Sequence[int]], counts: Sequence[int]
) -> Series:
    """The mean of `{key}_class` over each group of classes, per epoch.

    Plotting 100 classes one by one is unreadable and slow; ten frequency-ordered group means
    keep the head-to-tail picture. Classes with no value at an epoch are left out of that
    epoch's mean; an epoch where a whole group is missing is skipped.
    """
    series: Series = {}
    for number, group in enumerate(groups, start=1):
        epochs, means = [], []
        for row in rows:
            values = row.get(f"{key}_class")
            mean = class_group_mean(values, group) if isinstance(values, list) else None
            if mean is not None:
                epochs.append(row["epoch"])
                means.append(mean)
        series[group_label(group, counts, number)] = (epochs, means)
    return series


# -- figures ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    label: str
    epochs: tuple[int, ...]
    values: tuple[float, ...]
    color: RGB | str
    emphasis: bool = False  # thick blocks and a legend entry; thin braille otherwise


@dataclass(frozen=True)
class Figure:
    """Everything a plot shows; equal figures are never rebuilt."""

    kind: str  # which view this is (e.g. "std:groups"): a different kind never shows stale
    title: str
    lines: tuple[Line, ...] = ()
    log_y: bool = False
    legend: bool = True  # plotext's in-plot legend for the emphasised lines
    empty: str = "No epochs recorded yet."
    # the epochs the x axis spans (`epoch_span`), None: its lines' own. Plots shown side by side
    # get one span, so they line up though robust accuracy may start later (eval.robust_every)
    x_range: tuple[int, int] | None = None

    @property
    def has_data(self) -> bool:
        return any(line.epochs for line in self.lines)


def gradient(n: int, head: RGB = HEAD, tail: RGB = TAIL) -> list[RGB]:
    """Head-to-tail colours: frequent classes blue, rare ones amber."""
    if n <= 1:
        return [head] * n
    return [
        tuple(round(h + (t - h) * i / (n - 1)) for h, t in zip(head, tail, strict=True))  # type: ignore[misc]
        for i in range(n)
    ]


def _line(label: str, points: Points, color: RGB | str, emphasis: bool = False) -> Line:
    return Line(label, tuple(points[0]), tuple(points[1]), color, emphasis)


def epoch_span(rows: Sequence[Record]) -> tuple[int, int] | None:
    """The first and last epoch recorded so far (`rows`: `epoch_records`, in epoch order),
    whatever each metric measured at them; None without epochs."""
    return (rows[0]["epoch"], rows[-1]["epoch"]) if rows else None


def accuracy_figure(
    rows: Sequence[Record],
    key: str,
    *,
    view: str,
    counts: Sequence[int],
    names: Sequence[str] | None = None,
    groups: int = GROUPS,
) -> Figure:
    """Class-wise accuracy (`key` is "std" or "rob") with overall and under-represented on top.

    `view` "groups" draws frequency-group means, "classes" one line per class; both are drawn
    head to tail in a blue-to-amber gradient, in frequency order.
    """
    name = "standard" if key == "std" else "robust"
    if view == "groups":
        parts = frequency_groups(counts, groups)
        thin = group_series(rows, key, parts, counts)
        title = f"{name} accuracy % · {len(parts)} groups"
    else:
        labels = [str(cls) for cls in range(len(counts))]
        if names is not None and len(names) == len(counts):
            labels = list(names)
        by_class = class_series(rows, key, labels)
        order = sorted(range(len(counts)), key=lambda cls: (-counts[cls], cls))
        thin = {labels[cls]: by_class[labels[cls]] for cls in order if labels[cls] in by_class}
        title = f"{name} accuracy % · per class"
    lines = [
        _line(label, points, color)
        for (label, points), color in zip(thin.items(), gradient(len(thin)), strict=True)
    ]
    summary = summary_series(rows, key)
    # drawn last so they sit on top of the class lines
    lines.append(_line("under", summary["under"], UNDER, emphasis=True))
    lines.append(_line("overall", summary["overall"], FOREGROUND, emphasis=True))
    empty = "No epochs recorded yet."
    if key == "rob" and rows:
        empty = "No robust evaluation yet (eval.robust_every)."
    # the key line under the plots names these; plotext's legend would cover early epochs
    return Figure(
        f"{key}:{view}", title, tuple(lines), legend=False, empty=empty, x_range=epoch_span(rows)
    )


def loss_figure(rows: Sequence[Record]) -> Figure:
    lines = [_line("loss", scalar_series(rows, "loss"), HEAD, emphasis=True)]
    sep = scalar_series(rows, "sep_loss")
    if sep[0]:
        lines.append(_line("sep_loss", sep, TAIL, emphasis=True))
    return Figure(
        "loss", "training loss", tuple(lines), legend=len(lines) > 1, x_range=epoch_span(rows)
    )


def separability_figure(rows: Sequence[Record]) -> Figure:
    """Feature separability per epoch, as the engine records it (its definition lives in
    `srat_engine.evaluation.separability`): higher means classes sit further apart."""
    line = _line("separability", scalar_series(rows, "separability"), HEAD, emphasis=True)
    title = "feature separability (between / within)"
    return Figure("separability", title, (line,), legend=False, x_range=epoch_span(rows))


def lr_figure(rows: Sequence[Record]) -> Figure:
    points = scalar_series(rows, "lr")
    # step schedules span decades: a log axis shows each step. Not for zero, nor for a
    # range within one decade (plotext 5 inverts the ticks of a flat log axis)
    log_y = bool(points[1]) and min(points[1]) > 0 and max(points[1]) >= 10 * min(points[1])
    title = "learning rate (log)" if log_y else "learning rate"
    line = _line("lr", points, FOREGROUND, emphasis=True)
    return Figure("lr", title, (line,), log_y=log_y, legend=False, x_range=epoch_span(rows))


def legend(view: str, counts: Sequence[int], names: Sequence[str], under: Sequence[int]) -> Text:
    """The key under the accuracy plots (plotext's own legend would cover the curves)."""
    text = Text.assemble(("━━", "bold"), " overall  ", ("━━", f"bold {_hex(UNDER)}"), " under")
    if under:
        text.append(f" ({len(under)} rarest)")
    text.append("   ")
    n = len(counts)
    if view == "groups":
        parts = frequency_groups(counts)
        text.append(f"{len(parts)} groups of ~{n // len(parts)} classes by train count: head ")
        for color in gradient(len(parts)):
            text.append("■", style=_hex(color))
        text.append(f" tail (n {max(counts, default=0)} → {min(counts, default=0)}; p: per class)")
    elif n > GROUPS:
        text.append(f"{n} classes by train count: head ")
        for color in gradient(GROUPS):
            text.append("■", style=_hex(color))
        text.append(" tail (p: groups)")
    else:
        order = sorted(range(n), key=lambda cls: (-counts[cls], cls))
        for cls, color in zip(order, gradient(n), strict=True):
            text.append("■ ", style=_hex(color))
            text.append(f"{names[cls] if cls < len(names) else cls}  ")
    return text


def run_color(k: int) -> RGB:
    """The colour of the k-th overlaid run, the same in every plot that shows it."""
    return RUN_COLORS[k % len(RUN_COLORS)]


def runs_key(labels: Sequence[str]) -> Text:
    """The key under overlaid runs' plots, each label in `run_color` of its place: in the
    plot, plotext's legend of 20-character run ids covered half an 80-column plot."""
    text = Text()
    for k, label in enumerate(labels):
        text.append("━━ ", style=f"bold {_hex(run_color(k))}")
        text.append(label)
        text.append("   ")
    text.rstrip()
    return text


def _hex(color: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color)


def epoch_ticks(first: int, last: int, width: int) -> list[int]:
    """Whole-epoch ticks about every 10 columns (plotext would label epoch 2.5)."""
    if last <= first:
        return [first]
    wanted = max(2, width // 10)
    step = max(1, -(-(last - first) // (wanted - 1)))
    for nice in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000):
        if nice >= step:
            step = nice
            break
    ticks = [tick for tick in range(0, last + 1, step) if tick >= first]
    if not ticks or ticks[0] - first > step / 2:
        ticks.insert(0, first)
    return ticks


def epoch_axis(plt: Plot, first: int, last: int, width: int) -> None:
    """Make `plt`'s x axis span epochs `first` to `last` with whole-epoch ticks, for a plot
    `width` cells wide; the run screen's plots and Compare's overlaid curves both draw it."""
    if last > first:  # one epoch: plotext centres it (equal limits would be no range)
        plt.xlim(first, last)
    plt.xticks(epoch_ticks(first, last, width))


def build_figure(
    figure: Figure, width: int, height: int, theme: str, foreground: RGB = (224, 224, 224)
) -> Text:
    """Draw `figure` at `width` x `height` cells. Slow (see module docstring): never call it
    on the UI thread. Each call owns a fresh `Plot`, so concurrent builds share nothing."""
    plt = Plot()
    plt.plotsize(width, height)
    plt._set_size(width, height)  # textual-plotext does both too (its issue #5)
    plt.theme(theme)
    epochs: list[int] = []
    for line in figure.lines:
        if not line.epochs:
            continue
        epochs.extend(line.epochs)
        plt.plot(
            list(line.epochs),
            list(line.values),
            marker="hd" if line.emphasis else "braille",
            color=foreground if line.color == FOREGROUND else line.color,
            label=line.label if line.emphasis and figure.legend else None,
        )
    span = figure.x_range or ((min(epochs), max(epochs)) if epochs else None)
    if span is not None:
        epoch_axis(plt, *span, width)
    if figure.log_y:
        plt.yscale("log")
    plt.title(figure.title)
    return Text.from_ansi(plt.build(), no_wrap=True)


# -- the widget ---------------------------------------------------------------------------------

BuildKey = tuple[int, int, int, str]  # figure version, width, height, plotext theme


@dataclass
class _Shown:
    key: BuildKey
    kind: str
    text: Text


class CurvePlot(PlotextPlot):
    """A plotext figure built in a thread worker, one build in flight at a time.

    `show(figure)` is cheap and may be called on every poll: an equal figure is ignored. The
    build starts when the widget is rendered at a usable size, so a hidden tab costs nothing
    until it is opened; resizes and new figures during a build coalesce into one more build.
    """

    DEFAULT_CSS = """
    CurvePlot {
        width: 1fr;
        height: 1fr;
        min-height: 6;
    }
    CurvePlot.-stale {
        tint: $background 10%;
    }
    """

    MIN_WIDTH = 16
    MIN_HEIGHT = 5

    def __init__(
        self,
        figure: Figure | None = None,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._figure = figure or Figure("none", "")
        self._version = 0
        self._shown: _Shown | None = None
        self._inflight: BuildKey | None = None

    @property
    def figure(self) -> Figure:
        return self._figure

    def show(self, figure: Figure) -> bool:
        """Display `figure`; False (and no rebuild) when it equals the one shown."""
        if figure == self._figure:
            return False
        self._figure = figure
        self._version += 1
        self.refresh()
        return True

    def _theme_name(self) -> str:
        return self._get_plotext_theme_name(self.app.theme)

    def _wanted_key(self) -> BuildKey:
        width, height = self.size
        return (self._version, width, height, self._theme_name())

    def render(self) -> Text:
        figure = self._figure
        if not figure.has_data:
            return Text(figure.empty, style="dim italic", justify="center")
        wanted = self._wanted_key()
        shown = self._shown
        if shown is None or shown.key != wanted:
            self.call_later(self._ensure_build)
        self.set_class(shown is not None and shown.key != wanted, "-stale")
        # the previous build of the same view at the same size beats a blank while building
        if shown is not None and shown.kind == figure.kind and shown.key[1:] == wanted[1:]:
            return shown.text
        lines = len(figure.lines) - sum(line.emphasis for line in figure.lines)
        what = f" ({lines} lines)" if lines > GROUPS + 2 else ""
        return Text(f"{figure.title}\nbuilding plot{what}…", style="dim", justify="center")

    def _ensure_build(self) -> None:
        if not self.is_mounted or not self._figure.has_data or self._inflight is not None:
            return
        key = self._wanted_key()
        _, width, height, _ = key
        if width < self.MIN_WIDTH or height < self.MIN_HEIGHT:
            return
        if self._shown is not None and self._shown.key == key:
            return
        self._inflight = key
        foreground = Color.parse(self.app.theme_variables.get("foreground", "#e0e0e0")).rgb
        self._build_off_thread(key, self._figure, foreground)

    @work(thread=True, group="plot-build")
    def _build_off_thread(self, key: BuildKey, figure: Figure, foreground: RGB) -> None:
        _, width, height, theme = key
        try:
            # looked up at call time so a test can slow builds down to prove they are off-thread
            text = build_figure(figure, width, height, theme, foreground)
        except Exception as error:  # drawn in the plot's place: one bad figure must not end the app
            text = Text(f"{figure.title}\ncould not draw: {error}", style="red")
        self.post_message(FigureBuilt(key, figure.kind, text))

    def on_figure_built(self, message: FigureBuilt) -> None:
        self._shown = _Shown(message.key, message.kind, message.text)
        self._inflight = None
        self.refresh()  # renders the result, or schedules the build that is now due


__all__ = [
    "GROUPS",
    "CurvePlot",
    "Figure",
    "Line",
    "accuracy_figure",
    "build_figure",
    "class_series",
    "epoch_axis",
    "epoch_records",
    "epoch_span",
    "epoch_ticks",
    "final_record",
    "frequency_groups",
    "group_series",
    "legend",
    "loss_figure",
    "lr_figure",
    "scalar_series",
    "summary_series",
]
