"""The Run screen: one run's live curves, per-class table, log and config.

Everything shown comes from the run directory. A timer polls every `context.poll_seconds`;
each poll reads only what was appended since the last one (`RunDir.metrics_since`, log
offsets) in a thread worker, which posts them back as a `RunPolled` message, so a slow disk
never stalls the UI. The records live on the
screen (`records`); watchers re-plot only when they change, and the plots build their
figures off the UI thread (see `srat_tui.tui.widgets.curves`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.reactive import var
from textual.screen import Screen
from textual.widgets import DataTable, RichLog, Static, TabbedContent, TabPane, Tree
from textual.widgets.tree import TreeNode

from srat_engine.errors import SratError
from srat_engine.jobs.forecast import QueuedForecast, queue_forecast
from srat_engine.runs.liveness import ACTIVE, reconcile
from srat_engine.runs.progress import training_ends
from srat_engine.runs.rundir import RunDir
from srat_tui.render.format import (
    age,
    data_text,
    inert,
    pct,
    status_style,
    time_left,
    wrap_chips,
)
from srat_tui.tui.context import app_context
from srat_tui.tui.messages import RunPolled, RunPollFailed
from srat_tui.tui.widgets.curves import (
    GROUPS,
    CurvePlot,
    Record,
    accuracy_figure,
    epoch_records,
    final_record,
    legend,
    loss_figure,
    lr_figure,
    separability_figure,
)
from srat_tui.tui.widgets.footer import SratFooter

if TYPE_CHECKING:
    from srat_tui.tui.context import AppContext

TABS = ("curves", "loss", "classes", "log", "config")
LOG_TAIL_BYTES = 64 * 1024  # what a first look (or a burst between polls) shows of a log
# A queued run's place is read again at most this often: it reads the whole index, and the
# estimate moves in seconds, not in polls
FORECAST_EVERY_S = 5.0
# How the Curves tab says that a run ended before its first epoch record
ENDED_EARLY = {"failed": "failed", "killed": "was killed", "dead": "died"}


# -- reading the run directory (thread side) ----------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    """How far each file has been read. Offsets of -1: not read yet (start from the tail)."""

    metrics: int = 0
    log: int = -1
    output: int = -1
    have_config: bool = False


@dataclass
class Update:
    cursor: Cursor
    records: list[Record] = field(default_factory=list)
    reset: bool = False  # metrics.jsonl shrank (rewritten): records replace, not extend
    status: str = ""
    state: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    log_lines: list[str] = field(default_factory=list)
    output_lines: list[str] | None = None  # None: there is no output.log
    error: str | None = None
    # why the run ended, as its exit record says (`srat runs show` prints the same line)
    exit_error: str | None = None
    queued: QueuedForecast | None = None  # a queued local run's expected start and end
    stack: list[str] | None = None  # the runs sharing its process (`RunDir.stack`), if any
    # meta.json's tags and notes, which people add while it runs (`srat runs tag`, `t`)
    tags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_new_lines(
    path: Path, offset: int, tail_bytes: int = LOG_TAIL_BYTES
) -> tuple[list[str] | None, int]:
    """Complete lines appended to `path` after byte `offset`, and the next offset.

    A first read (offset -1), a truncated file, or more than `tail_bytes` new bytes start from
    the tail, dropping the partial first line. A missing file gives (None, -1).
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None, -1
    start = offset
    if offset < 0 or offset > size or size - offset > tail_bytes:
        start = max(0, size - tail_bytes)
    tailing = start > 0 and start != offset
    with path.open("rb") as handle:
        # one byte before the tail says whether it starts mid-line
        handle.seek(start - 1 if tailing else start)
        partial_first = tailing and handle.read(1) != b"\n"
        chunk = handle.read(size - start)
    end = chunk.rfind(b"\n")
    if end < 0:
        return [], start
    complete = chunk[: end + 1]
    if partial_first:
        complete = complete[complete.find(b"\n") + 1 :]
    text = complete.decode("utf-8", errors="replace")
    return text.splitlines(), start + end + 1


def read_updates(root: Path, run_id: str, cursor: Cursor) -> Update:
    """One poll's worth of file reads; runs in a thread worker."""
    try:
        run = RunDir.open(root, run_id)
    except SratError as error:
        return Update(cursor, error=str(error))
    update = Update(cursor)
    if not cursor.have_config:
        try:
            update.config = run.config()
        except (OSError, ValueError) as error:
            return Update(cursor, error=f"cannot read config.json: {error}")
    metrics_offset = cursor.metrics
    try:
        if run.metrics_path.stat().st_size < metrics_offset:
            metrics_offset, update.reset = 0, True
    except FileNotFoundError:
        pass
    update.records, metrics_offset = run.metrics_since(metrics_offset)
    try:
        update.status = reconcile(run)  # a running run whose process is gone shows as dead
    except OSError:
        update.status = run.state().get("status", "unknown")
    update.state = run.state()
    update.stack = run.stack()
    try:
        meta = run.meta()  # a damaged meta.json reads as no tags: the run still shows
        update.tags, update.notes = list(meta["tags"]), list(meta["notes"])
    except OSError:
        pass
    exit_record = run.exit_record()
    if isinstance(exit_record, dict) and exit_record.get("error"):
        update.exit_error = str(exit_record["error"])
    log_lines, log_offset = read_new_lines(run.log_path, cursor.log)
    update.log_lines = log_lines or []
    update.output_lines, output_offset = read_new_lines(run.path / "output.log", cursor.output)
    update.cursor = Cursor(metrics_offset, log_offset, output_offset, have_config=True)
    return update


# -- formatting ---------------------------------------------------------------------------------


def _label(key: str, value: Any) -> Text:
    shown = value if isinstance(value, str) else json.dumps(value)
    return Text.assemble((inert(key), "bold"), " = ", (inert(shown), "cyan"))


def _fill_tree(node: TreeNode[None], value: Any, depth: int = 0) -> None:
    """Dicts open two levels deep; long lists (per-class counts, weights) stay folded."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in items:
        nested = isinstance(child, (dict, list)) and child
        if isinstance(child, list) and child and len(child) <= 8:
            nested = any(isinstance(item, (dict, list)) for item in child)
        if nested:
            size = f" [{len(child)}]" if isinstance(child, list) else ""
            branch = node.add(Text(inert(f"{key}{size}"), style="bold"), expand=depth < 1)
            _fill_tree(branch, child, depth + 1)
        else:
            node.add_leaf(_label(str(key), child))


def _append(log: RichLog, lines: list[str]) -> None:
    """Append `lines` to `log` in one write (one Rich render, not one per line)."""
    log.write(Text("\n".join(inert(line) for line in lines)))


# -- the screen ---------------------------------------------------------------------------------


class RunScreen(Screen[None]):
    """Live view of one run: `RunScreen(run_id)`, reading `app.context`."""

    CSS_PATH = "run_detail.tcss"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,b", "back", "Back"),
        Binding("p", "toggle_view", "Groups/classes"),
        Binding("left_square_bracket", "step_epoch(-1)", "Prev epoch"),
        Binding("right_square_bracket", "step_epoch(1)", "Next epoch"),
        *(
            Binding(str(number), f"show_tab('{tab}')", f"{tab.capitalize()} tab", show=False)
            for number, tab in enumerate(TABS, start=1)
        ),
    ]

    records: var[list[Record]] = var(list, init=False)
    """Every metrics record read so far, in file order."""
    status: var[str] = var("", init=False)
    view: var[str] = var("", init=False)
    """"groups" (frequency-group means) or "classes" (one line per class)."""
    class_epoch: var[int | None] = var(None, init=False)
    """Index into the Classes tab's epoch choices; None follows the latest."""

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.config_doc: dict[str, Any] = {}
        self.state_doc: dict[str, Any] = {}
        self.error: str | None = None
        self.exit_error: str | None = None  # why the run ended, from its exit record
        self.rows: list[Record] = []  # epoch records, one per epoch (derived from records)
        self.queued: QueuedForecast | None = None  # while queued: its expected start and end
        self.stack: list[str] | None = None  # the runs of its stack, as its last launch says
        self.tags: list[str] = []
        self.notes: list[str] = []
        self._forecast_at = -FORECAST_EVERY_S  # monotonic time of the last forecast
        self._cursor = Cursor()
        self._polling = False  # a read is in flight: the next poll waits for its records
        self._table_ready = False

    # context and run facts ------------------------------------------------------------------
    @property
    def context(self) -> AppContext:
        return app_context(self)

    @property
    def resolved(self) -> dict[str, Any]:
        return self.config_doc.get("resolved", {})

    @property
    def ended_error(self) -> str | None:
        """The error the run ended with, as `srat runs show` prints it; None while it is
        queued or running (a resume clears the exit record as it starts, and an old one
        must not show meanwhile)."""
        status = self.status or self.state_doc.get("status", "")
        return None if status in ACTIVE else self.exit_error

    @property
    def num_classes(self) -> int:
        if isinstance(self.resolved.get("num_classes"), int):
            return self.resolved["num_classes"]
        for row in self.rows:
            if isinstance(row.get("std_class"), list):
                return len(row["std_class"])
        return 0

    @property
    def counts(self) -> list[int]:
        counts = self.resolved.get("class_counts")
        if isinstance(counts, list) and len(counts) == self.num_classes:
            return counts
        # without counts there is no frequency order: index order, equal weights
        return [0] * self.num_classes

    @property
    def names(self) -> list[str]:
        names = self.resolved.get("class_names")
        if isinstance(names, list) and len(names) == self.num_classes:
            return [inert(name) for name in names]  # drawn in plots, legend and table
        return [str(cls) for cls in range(self.num_classes)]

    @property
    def under(self) -> list[int]:
        under = self.resolved.get("under_classes")
        return under if isinstance(under, list) else []

    def epoch_choices(self) -> list[Record]:
        """What `[` / `]` step through: every evaluated epoch (`eval.every` leaves some out),
        then the final evaluation if there is one."""
        final = final_record(self.records)
        evaluated = [row for row in self.rows if row.get("std_class") is not None]
        return [*evaluated, final] if final is not None else evaluated

    # composition -------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(Text(f"{self.run_id}  loading…", style="bold"), id="run-header")
        with TabbedContent(initial="curves"):
            with TabPane("1 Curves", id="curves"):
                yield Static("", id="curves-empty", classes="empty")
                with Horizontal(id="curves-plots", classes="plots"):
                    yield CurvePlot(id="std-plot")
                    yield CurvePlot(id="rob-plot")
                yield Static("", id="curves-legend")
            with TabPane("2 Loss", id="loss"), Horizontal(classes="plots"):
                yield CurvePlot(id="loss-plot")
                yield CurvePlot(id="sep-plot")
                yield CurvePlot(id="lr-plot")
            with TabPane("3 Classes", id="classes"):
                yield Static("", id="classes-caption")
                yield DataTable(id="classes-table", zebra_stripes=True, cursor_type="row")
            with TabPane("4 Log", id="log"):
                # RichLog, not Log: Log cuts a line at the width, and the end of an error
                # line (what to do about it) is what matters. Lines wrap at the width they
                # are written at; min_width 1: never wider than the widget
                yield RichLog(id="log-txt", max_lines=5000, wrap=True, min_width=1)
                yield RichLog(id="output-log", max_lines=5000, wrap=True, min_width=1)
            with TabPane("5 Config", id="config"):
                yield Tree("config.json", id="config-tree")
        yield SratFooter()

    def on_mount(self) -> None:
        self.query_one("#log-txt", RichLog).border_title = "log.txt"
        output = self.query_one("#output-log", RichLog)
        output.border_title = "output.log"
        output.display = False
        self.query_one("#config-tree", Tree).show_root = False
        self._show_curves(False, "Loading…")
        self.poll()
        self.set_interval(self.context.poll_seconds, self.poll)

    def on_resize(self) -> None:
        # the header's chips break for its width (`wrap_chips`): again once laid out anew
        self.call_after_refresh(self._update_header)

    # polling -----------------------------------------------------------------------------------
    def poll(self) -> None:
        """Start a read of what was appended, unless the previous one is still going."""
        if self._polling:
            return
        self._polling = True
        self._read(self.context, self._cursor)

    @work(thread=True, group="poll")
    def _read(self, context: AppContext, cursor: Cursor) -> None:
        try:
            update = read_updates(context.runs_root, self.run_id, cursor)
            update.queued = self.queued
            due = time.monotonic() - self._forecast_at >= FORECAST_EVERY_S
            if update.status == "queued" and due:  # where it stands in the local queue
                forecast = queue_forecast(context.home.slots, context.index.all(), context.now())
                update.queued = forecast.get(self.run_id)
                self._forecast_at = time.monotonic()
            message: RunPolled | RunPollFailed = RunPolled(update)
        except Exception as error:  # a bug must not end the polling: show it, try the next poll
            message = RunPollFailed(str(error))
        self.post_message(message)

    def on_run_poll_failed(self, message: RunPollFailed) -> None:
        self._polling = False
        self.notify(f"reading run {self.run_id}: {message.error}", severity="error")

    def on_run_polled(self, message: RunPolled) -> None:
        self._polling = False
        self._apply(message.update)

    def _apply(self, update: Update) -> None:
        if update.error is not None:
            # polling goes on: a run moved away or mid-rewrite (a sync, a restore from the
            # trash, a hand edit) may come back, and is then read whole again
            self.error = update.error
            self._cursor = Cursor()
            self._show_curves(False, update.error)
            self._update_header()
            return
        recovered = self.error is not None
        if recovered:
            self.error = None
            update.reset = True
            for log in self.query(RichLog):
                log.clear()
        self._cursor = update.cursor
        if update.config is not None:
            self.config_doc = update.config
            self._fill_config()
        self.state_doc = update.state
        self.exit_error = update.exit_error
        if update.log_lines:
            _append(self.query_one("#log-txt", RichLog), update.log_lines)
        if update.output_lines is not None:
            output = self.query_one("#output-log", RichLog)
            output.display = True
            if update.output_lines:
                _append(output, update.output_lines)
        if update.reset:
            unchanged = self.records == update.records
            self.records = list(update.records)
            if recovered and unchanged:
                self.watch_records()  # the same records: no watcher fires, the curves must
        elif update.records:
            self.records = [*self.records, *update.records]
        elif not self.view:
            self.watch_records()  # no metrics yet: still show the empty state and the table
        self.status = update.status
        self.queued = update.queued
        self.stack = update.stack
        self.tags, self.notes = update.tags, update.notes
        self._update_header()

    # reactions ---------------------------------------------------------------------------------
    def watch_records(self) -> None:
        self.rows = epoch_records(self.records)
        if not self.view:
            self.view = "groups" if self.num_classes > GROUPS else "classes"
        else:
            self._update_curves()
        self._update_loss()
        self._update_classes()
        self._update_header()

    def watch_view(self) -> None:
        self._update_curves()

    def watch_class_epoch(self) -> None:
        self._update_classes()

    def watch_status(self) -> None:
        self._update_header()
        if not self.rows and self.view:
            self._update_curves()  # "no epochs yet" may have become "failed before any"

    # actions -----------------------------------------------------------------------------------
    def action_back(self) -> None:
        if len(self.app.screen_stack) > 1:
            self.dismiss()

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_toggle_view(self) -> None:
        self.action_show_tab("curves")
        if self.num_classes <= GROUPS:
            self.notify(f"All {self.num_classes} classes are already drawn one by one.")
            return
        self.view = "classes" if self.view == "groups" else "groups"

    def action_step_epoch(self, step: int) -> None:
        self.action_show_tab("classes")
        choices = self.epoch_choices()
        if not choices:
            return
        last = len(choices) - 1
        current = last if self.class_epoch is None else min(self.class_epoch, last)
        chosen = max(0, min(last, current + step))
        # stepping onto the newest choice goes back to following new epochs
        self.class_epoch = None if chosen == last else chosen

    # views -------------------------------------------------------------------------------------
    def _show_curves(self, has_data: bool, message: str | Text = "") -> None:
        self.query_one("#curves-empty", Static).update(message)
        self.query_one("#curves-empty").display = not has_data
        self.query_one("#curves-plots").display = has_data
        self.query_one("#curves-legend").display = has_data

    def _update_curves(self) -> None:
        if not self.rows:
            status = self.status or self.state_doc.get("status", "")
            if status in ENDED_EARLY:
                message = Text(f"The run {ENDED_EARLY[status]} before writing any metrics.")
                if self.ended_error is not None:
                    message.append(f"\nerror  {inert(self.ended_error)}", style="red")
            else:
                message = Text(
                    f"No epochs recorded yet (status: {inert(status or 'unknown')}).\n"
                    "Curves appear here as the run writes metrics.jsonl."
                )
            self._show_curves(False, message)
            return
        self._show_curves(True)
        options = {"view": self.view, "counts": self.counts, "names": self.names}
        self.query_one("#std-plot", CurvePlot).show(accuracy_figure(self.rows, "std", **options))
        self.query_one("#rob-plot", CurvePlot).show(accuracy_figure(self.rows, "rob", **options))
        self.query_one("#curves-legend", Static).update(
            legend(self.view, self.counts, self.names, self.under)
        )

    def _update_loss(self) -> None:
        self.query_one("#loss-plot", CurvePlot).show(loss_figure(self.rows))
        self.query_one("#sep-plot", CurvePlot).show(separability_figure(self.rows))
        self.query_one("#lr-plot", CurvePlot).show(lr_figure(self.rows))

    def _update_header(self) -> None:
        header = self.query_one("#run-header", Static)
        if self.error is not None:
            header.update(
                Text.assemble((inert(self.run_id), "bold"), "  ", (inert(self.error), "red"))
            )
            return
        config = self.config_doc.get("config", {})
        data = config.get("data", {})
        status = self.status or self.state_doc.get("status", "")
        latest = self.rows[-1] if self.rows else None
        epochs = (latest or {}).get("epochs") or config.get("train", {}).get("epochs", "?")
        where = data_text(data)
        chips = [
            Text(inert(self.run_id), style="bold"),
            Text(inert(config.get("method", "?")), style="bold magenta"),
            Text(inert(where)),
            Text(inert(f"● {status or '?'}"), style=status_style(status)),
            Text(f"epoch {latest['epoch'] if latest else 0}/{epochs}"),
        ]
        if latest is not None:
            ago = age(latest.get("time"), self.context.now())
            if ago != "-":
                chips.append(Text(f"({ago} ago)", style="dim"))
            ends = training_ends(self.records, epochs) if isinstance(epochs, int) else None
            left = time_left(ends, self.context.now())
            if status == "running" and left is not None:
                chips.append(Text(f"~{left} left", style="dim"))
        queued = self.queued
        if status == "queued" and queued is not None and queued.starts is not None:
            wait = time_left(queued.starts, self.context.now())
            when = Text(f"starts {f'in ~{wait}' if wait else 'at once'}", style="dim")
            end = time_left(queued.ends, self.context.now())
            if end is not None:
                when.append(f", training ends in ~{end}")
            chips.append(when)
        others = [other for other in self.stack or [] if other != self.run_id]
        if others:  # a kill of this run stops them too
            chips.append(Text(f"stacked with {inert(', '.join(others))}", style="dim"))
        if self.tags:
            chips.append(Text(f"tags {inert(', '.join(self.tags))}", style="cyan"))
        # whole facts per line at 80 columns: "(1d ago)" never split over two
        line = wrap_chips(chips, header.content_size.width)
        line.append("\n")
        if self.ended_error is not None:  # the Static wraps it: the whole line shows
            line.append("error  ", style="bold red")
            line.append(inert(self.ended_error), style="red")
            line.append("\n")
        if self.notes:  # the latest; `srat runs show` lists them all
            line.append("note   ", style="bold")
            line.append(inert(" ".join(self.notes[-1].split())))
            if len(self.notes) > 1:
                line.append(f"  (+{len(self.notes) - 1} earlier)", style="dim")
            line.append("\n")
        final = final_record(self.records)
        source = final or latest
        if source is None:
            line.append("no metrics yet", style="dim")
        else:
            line.append("final  " if final else "latest ", style="dim")
            for key in ("std", "rob"):
                overall, under = source.get(f"{key}_overall"), source.get(f"{key}_under")
                suffix = ""
                if overall is None and final is None:
                    # robust eval may run every k epochs: show the latest one and say when
                    for row in reversed(self.rows):
                        if row.get(f"{key}_overall") is not None:
                            overall, under = row[f"{key}_overall"], row.get(f"{key}_under")
                            suffix = f" @{row['epoch']}"
                            break
                line.append(f"{key} ", style="bold")
                line.append(f"overall {pct(overall)}  under {pct(under)}{suffix}   ")
        header.update(line)

    def _fill_config(self) -> None:
        tree = self.query_one("#config-tree", Tree)
        tree.clear()
        _fill_tree(tree.root, self.config_doc)
        tree.root.expand()

    def _setup_table(self) -> None:
        table = self.query_one("#classes-table", DataTable)
        table.clear(columns=True)
        table.add_column("#", key="index")
        table.add_column("class", key="name")
        table.add_column(Text("train n", justify="right"), key="count")
        table.add_column(Text("std %", justify="right"), key="std")
        table.add_column(Text("rob %", justify="right"), key="rob")
        table.add_column("", key="under")
        counts = self.resolved.get("class_counts")
        for cls, name in enumerate(self.names):
            under = cls in self.under
            style = "bold red" if under else ""
            count = counts[cls] if isinstance(counts, list) and cls < len(counts) else "-"
            table.add_row(
                Text(str(cls), style=style),
                Text(name, style=style),
                Text(str(count), justify="right", style=style),
                Text("-", justify="right"),
                Text("-", justify="right"),
                Text("under" if under else "", style=style),
                key=str(cls),
            )
        self._table_ready = bool(self.names)

    def _update_classes(self) -> None:
        if not self._table_ready:
            self._setup_table()
        choices = self.epoch_choices()
        caption = self.query_one("#classes-caption", Static)
        if not choices:
            caption.update(Text("No epochs recorded yet.  [ ] step epochs", style="dim"))
            return
        index = len(choices) - 1 if self.class_epoch is None else self.class_epoch
        index = min(index, len(choices) - 1)
        chosen = choices[index]
        table = self.query_one("#classes-table", DataTable)
        std = chosen.get("std_class") if isinstance(chosen.get("std_class"), list) else []
        rob = chosen.get("rob_class") if isinstance(chosen.get("rob_class"), list) else []
        for cls in range(self.num_classes):
            for column, values in (("std", std), ("rob", rob)):
                value = values[cls] if cls < len(values) else None
                table.update_cell(
                    str(cls), column, Text(pct(value), justify="right"), update_width=True
                )
        label = (
            "final evaluation"
            if chosen.get("event") == "final"
            else (f"epoch {chosen['epoch']}/{chosen.get('epochs', '?')}")
        )
        caption.update(
            Text.assemble(
                (label, "bold"),
                ("  following latest" if self.class_epoch is None else "  pinned", "dim"),
                ("   [ ] step epochs · under-represented classes in red", "dim"),
            )
        )
