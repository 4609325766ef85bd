"""Runs side by side: the config keys that differ, the paper's four columns, per-class accuracy,
overlaid accuracy curves, and an export of the comparison in the paper's table layout; each
run's last checkpoint, or (`b`) its best epoch by PGD on the test set, marked as such.

Everything shown comes from the run directories through the same functions as
`srat runs compare` and `srat runs export`; the screen only lays it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Group
from textual import on, work
from textual.app import ComposeResult, RenderResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.reactive import reactive, var
from textual.screen import ModalScreen, Screen
from textual.widgets import (
    Button,
    Checkbox,
    Header,
    Input,
    Label,
    RadioButton,
    RadioSet,
    Static,
)
from textual.worker import get_current_worker
from textual_plotext import PlotextPlot

from srat_engine.errors import SratError
from srat_engine.reporting.export import (
    DEFAULT_FORMAT,
    EXPORT_FORMATS,
    EXTENSIONS,
    RobustSource,
    format_export,
    format_of_path,
    training_title,
)
from srat_engine.reporting.report import TableBlock, group_seeds, paper_table, repeated_note
from srat_engine.runs.records import class_count
from srat_engine.runs.rundir import RunDir
from srat_engine.runs.summary import at_best_epoch, summarize_run, with_config
from srat_tui.render.compare import CompareRun, compare_renderables, compare_run, seed_tables
from srat_tui.render.format import inert, inert_text
from srat_tui.tui.context import app_context
from srat_tui.tui.messages import CompareLoaded, ExportFailed, ExportWritten
from srat_tui.tui.widgets.curves import (
    epoch_axis,
    epoch_records,
    run_color,
    runs_key,
    scalar_series,
)
from srat_tui.tui.widgets.footer import SratFooter

# Long id lists would make file names the file system refuses (255 bytes).
_MAX_IDS_IN_NAME = 4


def default_export_path(exports: Path, run_ids: list[str], fmt: str) -> Path:
    """<exports>/compare-<id>_<id>.<ext> (the home's exports folder)."""
    shown = run_ids[:_MAX_IDS_IN_NAME]
    name = "_".join(shown)
    if len(run_ids) > len(shown):
        name += f"_and-{len(run_ids) - len(shown)}-more"
    return exports / f"compare-{name}.{EXTENSIONS[fmt]}"


@dataclass(frozen=True)
class Curve:
    """One run's overall accuracy per epoch; robust accuracy may skip epochs (robust_every)."""

    run_id: str
    std: tuple[tuple[int, float], ...]
    rob: tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class Loaded:
    runs: tuple[CompareRun, ...]
    curves: tuple[Curve, ...]
    errors: tuple[str, ...]  # one line per run that could not be read
    # the runs in the paper's layout, seeds of one configuration averaged (`paper_table`)
    blocks: tuple[TableBlock, ...] = ()

    @property
    def has_seeds(self) -> bool:
        """Whether some configuration has several seeds here (else the per-run table says
        it all)."""
        return any(cell.n > 1 for b in self.blocks for r in b.rows for cell in r.cells.values())


@dataclass(frozen=True)
class ExportRequest:
    fmt: str
    with_paper: bool
    path: Path


def curve_of(run_id: str, events: list[dict[str, Any]]) -> Curve:
    """A run's overall accuracy curves, read the way the run screen reads them (a resumed
    run's repeated epochs: the later record stands)."""
    rows = epoch_records(events)

    def pairs(name: str) -> tuple[tuple[int, float], ...]:
        return tuple(zip(*scalar_series(rows, name), strict=True))

    return Curve(run_id, pairs("std_overall"), pairs("rob_overall"))


def load_runs(runs_root: Path, run_ids: list[str], checkpoint: str = "last") -> Loaded:
    """The runs' documents, what to show for each (`compare_run`: the runs list's four
    columns, or with checkpoint "best" the best epoch's record when it has one) and their
    curves."""
    runs: list[CompareRun] = []
    curves: list[Curve] = []
    errors: list[str] = []
    records: list[dict[str, Any]] = []
    for run_id in run_ids:
        try:
            run = RunDir.open(runs_root, run_id)
            doc = run.config()
            events = run.metrics()
        except (SratError, OSError, ValueError) as err:
            errors.append(f"{run_id}: {err}")
            continue
        records.append(table_record(run, runs_root, checkpoint, events, doc))
        runs.append(compare_run(run.id, doc, events, class_count(doc), checkpoint))
        curves.append(curve_of(run.id, events))
    blocks = paper_table(group_seeds(records))
    return Loaded(tuple(runs), tuple(curves), tuple(errors), tuple(blocks))


def table_record(
    run: RunDir,
    runs_root: Path,
    checkpoint: str,
    events: list[dict[str, Any]] | None = None,
    doc: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A run's record for the paper's layout: its summary, at its best epoch when asked
    (`events`: its metrics.jsonl, `doc` its config.json, already read: not read again)."""
    record = with_config(summarize_run(run, events), run, doc)
    return at_best_epoch(record, runs_root, events) if checkpoint == "best" else record


def write_export(
    runs_root: Path, run_ids: list[str], request: ExportRequest, checkpoint: str = "last"
) -> tuple[Path, int, list[str]]:
    """Write the comparison in the paper's layout (each run's last checkpoint, or its best
    epoch, marked); returns the path, how many runs were left out for lack of final metrics
    and the runs set aside for repeating a seed (`Groups.repeated`)."""
    records = [table_record(RunDir.open(runs_root, i), runs_root, checkpoint) for i in run_ids]
    groups = group_seeds(records)
    table = paper_table(groups, with_paper=request.with_paper)
    robust = RobustSource(training=training_title(records)).at_checkpoint(checkpoint)
    text = format_export(table, request.fmt, robust=robust)
    path = request.path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path.resolve(), len(groups.skipped), groups.repeated


class EpochPlot(PlotextPlot):
    """A plotext plot whose x axis spans `span` (first and last epoch) with whole-epoch
    ticks for its width at each render: plotext's own ticks split the range evenly
    ("15.8")."""

    span: tuple[int, int] | None = None

    def render(self) -> RenderResult:
        if self.span is not None:
            epoch_axis(self.plt, *self.span, self.size.width)
        return super().render()


class ExportScreen(ModalScreen[ExportRequest | None]):
    """Format, paper numbers or not, and where to write. The format and a typed file name
    agree: a name ending in a format's extension picks that format (as `srat runs export -o`
    does), and picking a format rewrites such an extension."""

    CSS_PATH = "compare.tcss"
    AUTO_FOCUS = "#export-path"  # enter writes at once; tab reaches the formats

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, run_ids: list[str]) -> None:
        super().__init__()
        self.run_ids = run_ids

    def compose(self) -> ComposeResult:
        with Vertical(id="export-dialog") as dialog:
            dialog.border_title = f"Export {len(self.run_ids)} runs"
            with RadioSet(id="export-format"):
                for fmt in EXPORT_FORMATS:
                    yield RadioButton(fmt, value=fmt == DEFAULT_FORMAT, name=fmt)
            yield Checkbox("with paper numbers", id="export-paper")
            yield Label("file (empty: the default below)")
            yield Input(placeholder=str(self._default(DEFAULT_FORMAT)), id="export-path")
            with Horizontal(id="export-buttons"):
                yield Button("Export", variant="primary", id="export-ok")
                yield Button("Cancel", id="export-cancel")

    def _default(self, fmt: str) -> Path:
        return default_export_path(app_context(self).home.exports, self.run_ids, fmt)

    @property
    def fmt(self) -> str:
        pressed = self.query_one(RadioSet).pressed_button
        return pressed.name if pressed is not None and pressed.name else DEFAULT_FORMAT

    @on(RadioSet.Changed)
    def _format_changed(self) -> None:
        field = self.query_one("#export-path", Input)
        field.placeholder = str(self._default(self.fmt))
        typed = Path(field.value.strip())
        named = format_of_path(typed)  # None for an empty field too: no suffix
        if named is not None and named != self.fmt:
            field.value = str(typed.with_suffix(f".{EXTENSIONS[self.fmt]}"))

    @on(Input.Changed, "#export-path")
    def _path_changed(self, event: Input.Changed) -> None:
        named = format_of_path(Path(event.value.strip()))
        if named is not None and named != self.fmt:
            button = next(b for b in self.query(RadioButton) if b.name == named)
            button.value = True

    @on(Button.Pressed, "#export-ok")
    @on(Input.Submitted, "#export-path")
    def action_export(self) -> None:
        typed = self.query_one("#export-path", Input).value.strip()
        path = Path(typed) if typed else self._default(self.fmt)
        with_paper = self.query_one(Checkbox).value
        self.dismiss(ExportRequest(self.fmt, with_paper, path))

    @on(Button.Pressed, "#export-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class CompareScreen(Screen[None]):
    """Two or more runs side by side."""

    CSS_PATH = "compare.tcss"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("a", "toggle_all", "All keys"),
        Binding("b", "toggle_best", "Best epoch"),
        Binding("e", "export", "Export"),
        Binding("r", "reload", "Reload"),
    ]

    show_all: reactive[bool] = reactive(False)
    # which weights' numbers: "last" (each run's end) or "best" (its best epoch by PGD)
    checkpoint: reactive[str] = reactive("last", init=False)
    loaded: var[Loaded | None] = var(None)

    def __init__(self, run_ids: list[str]) -> None:
        super().__init__()
        self.run_ids = list(run_ids)

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="compare-body"):
            yield Static("loading runs…", id="compare-errors")
            yield Static(id="config-diff")
            yield Static(id="compare-metrics")
            yield Static(id="seed-tables")
            with Horizontal(id="curves"):
                yield EpochPlot(id="std-plot")
                yield EpochPlot(id="rob-plot")
            yield Static(id="curve-key")  # the plots' key: an in-plot legend covers curves
            yield Static(id="per-class")
        yield SratFooter()

    def on_mount(self) -> None:
        self.title = "Compare"
        self._subtitle()
        self.action_reload()

    def _subtitle(self) -> None:
        shown = " vs ".join(self.run_ids)
        best = "  ·  best epoch, selected on the test set" if self.checkpoint == "best" else ""
        self.sub_title = shown + best

    # -- loading ------------------------------------------------------------------------------

    def action_reload(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="compare-load")
    def _load(self) -> None:
        loaded = load_runs(app_context(self).runs_root, self.run_ids, self.checkpoint)
        if not get_current_worker().is_cancelled:  # a newer reload is on its way
            self.post_message(CompareLoaded(loaded))

    def on_compare_loaded(self, message: CompareLoaded) -> None:
        self.loaded = message.loaded

    def on_export_written(self, message: ExportWritten) -> None:
        self.notify(f"exported to {message.path}", title="Export")
        if message.skipped:
            self.notify(
                f"{message.skipped} run(s) without final metrics left out",
                severity="warning",
                title="Export",
            )
        if message.repeated:
            self.notify(repeated_note(message.repeated), severity="warning", title="Export")

    def on_export_failed(self, message: ExportFailed) -> None:
        self.notify(message.error, severity="error", title="Export failed")

    def watch_loaded(self, loaded: Loaded | None) -> None:
        if loaded is None:
            return
        errors = self.query_one("#compare-errors", Static)
        errors.update(inert_text("\n".join(loaded.errors), newlines=True))
        errors.display = bool(loaded.errors)
        self._show_tables()
        self._plot(self.query_one("#std-plot", EpochPlot), "Standard accuracy (%)", "std")
        self._plot(self.query_one("#rob-plot", EpochPlot), "Robust accuracy (%)", "rob")
        key = self.query_one("#curve-key", Static)
        # a run with no epoch yet keeps its colour (and place) but says why no line has it
        labels = [
            inert(curve.run_id) + ("" if curve.std or curve.rob else " (no epochs yet)")
            for curve in loaded.curves
        ]
        key.update(runs_key(labels))

    def watch_show_all(self) -> None:
        self._show_tables()

    def _show_tables(self) -> None:
        if self.loaded is None:
            return
        renderables = compare_renderables(
            list(self.loaded.runs),
            only_changed=not self.show_all,
            robust=RobustSource().at_checkpoint(self.checkpoint),
        )
        config, metrics, *rest = renderables
        self.query_one("#config-diff", Static).update(config)
        self.query_one("#compare-metrics", Static).update(metrics)
        seeds = self.query_one("#seed-tables", Static)
        seeds.display = self.loaded.has_seeds
        if self.loaded.has_seeds:
            robust = RobustSource().at_checkpoint(self.checkpoint)
            seeds.update(Group(*seed_tables(self.loaded.blocks, robust=robust)))
        per_class = self.query_one("#per-class", Static)
        # per-class accuracy and, for the best epoch, the note on how it was selected
        per_class.update(Group(*rest) if rest else "")
        per_class.display = bool(rest)

    def _plot(self, widget: EpochPlot, title: str, which: str) -> None:
        plt = widget.plt
        plt.clear_data()
        plt.title(title)
        plt.xlabel("epoch")
        assert self.loaded is not None
        for k, curve in enumerate(self.loaded.curves):  # k: a run's colour in both plots
            points = curve.std if which == "std" else curve.rob
            if points:
                epochs, values = zip(*points, strict=True)
                plt.plot(list(epochs), list(values), color=run_color(k), marker="braille")
        # both plots span every epoch either draws, so they line up side by side
        seen = [epoch for curve in self.loaded.curves for epoch, _ in (*curve.std, *curve.rob)]
        widget.span = (min(seen), max(seen)) if seen else None
        widget.refresh()

    # -- actions -----------------------------------------------------------------------------

    def action_back(self) -> None:
        self.dismiss(None)

    def action_toggle_all(self) -> None:
        self.show_all = not self.show_all

    def action_toggle_best(self) -> None:
        self.checkpoint = "last" if self.checkpoint == "best" else "best"

    def watch_checkpoint(self) -> None:
        self._subtitle()
        self.action_reload()

    def action_export(self) -> None:
        def chosen(request: ExportRequest | None) -> None:
            if request is not None:
                self._export(request)

        self.app.push_screen(ExportScreen(self.run_ids), chosen)

    @work(thread=True, group="compare-export")
    def _export(self, request: ExportRequest) -> None:
        try:
            root = app_context(self).runs_root
            path, skipped, repeated = write_export(root, self.run_ids, request, self.checkpoint)
        except Exception as error:  # a file that cannot be written is a notification, not a crash
            self.post_message(ExportFailed(str(error)))
        else:
            self.post_message(ExportWritten(path, skipped, repeated))
