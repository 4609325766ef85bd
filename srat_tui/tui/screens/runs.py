"""The runs screen: every run, live, with sort, filter, marks and the run verbs.

Data flow: a timer starts a thread worker that calls `refreshed_records` (liveness checks, file
reads and Slurm's queue, one squeue call at most, stay off the UI thread) and turns records into
display rows, posted back as a `RunsRefreshed` message; the UI thread then diffs those rows
against what the table shows and touches only the cells that changed, so a 1,000-run table
costs nothing when nothing moved and keeps its cursor and scroll when something did. Every
number shown comes from the engine's records as is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.reactive import var
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Header, Input, Static
from textual.widgets.data_table import ColumnKey
from textual.worker import get_current_worker

from srat_engine.errors import SratError
from srat_engine.jobs.forecast import with_queue_forecast
from srat_engine.reporting.selection import field_filter, is_field_filter
from srat_engine.runs.liveness import ACTIVE, RESUMABLE
from srat_engine.runs.rundir import RunDir
from srat_engine.runs.sync import checked_tag, refreshed_records, set_tag
from srat_tui.render.format import queue_summary, runs_cell, status_style, tag_report
from srat_tui.tui.context import AppContext, app_context
from srat_tui.tui.messages import (
    OpenCompare,
    OpenNewRun,
    OpenRun,
    RunsRefreshed,
    RunsRefreshFailed,
    VerbsApplied,
)
from srat_tui.tui.widgets.confirm import ConfirmModal, TextPromptModal
from srat_tui.tui.widgets.footer import SratFooter
from srat_tui.tui.widgets.gpu_panel import GpuPanel


@dataclass(frozen=True)
class ColumnSpec:
    key: str
    label: str
    right: bool = False


COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("mark", ""),
    ColumnSpec("id", "id"),
    ColumnSpec("status", "status"),
    ColumnSpec("method", "method"),
    ColumnSpec("imbalance", "imb"),
    ColumnSpec("epoch", "epoch", right=True),
    # the paper's four columns before the rest: at 80 columns they are what stays in view
    ColumnSpec("std_overall", "std", right=True),
    ColumnSpec("std_under", "std:u", right=True),
    ColumnSpec("rob_overall", "rob", right=True),
    ColumnSpec("rob_under", "rob:u", right=True),
    # `srat eval --attack autoattack`: robust accuracy under AutoAttack; "!" = masking suspected
    ColumnSpec("aa_overall", "aa", right=True),
    ColumnSpec("dataset", "dataset"),
    ColumnSpec("device", "device"),
    # local, or slurm and what Slurm's queue says of an active run's job
    ColumnSpec("backend", "backend"),
    ColumnSpec("age", "age", right=True),
)
DATA_COLUMNS: tuple[ColumnSpec, ...] = COLUMNS[1:]
SORTABLE: tuple[str, ...] = tuple(spec.key for spec in DATA_COLUMNS)
METRICS = ("std_overall", "std_under", "rob_overall", "rob_under")
# Columns a person reads best-first: choosing one sorts it descending (S flips it).
DESCENDING_FIRST = (*METRICS, "aa_overall", "epoch")
MARK = "●"
# Past this many rows leaving the view (a filter typed, a filter cleared) one clear + add is
# cheaper than DataTable.remove_row, which renumbers every row on each call.
REBUILD_ABOVE = 50


# -- records -> display rows (pure, run in the refresh worker) ------------------------------


@dataclass(frozen=True)
class RunRow:
    """One run as the table shows it, plus what sorting and filtering need."""

    id: str
    cells: tuple[str, ...]  # one per DATA_COLUMNS entry
    record: dict[str, Any]
    haystack: str  # the cells shown, method, dataset, status and tags, lower case, one per line

    @property
    def status(self) -> str:
        return str(self.record.get("status") or "unknown")

    def matches(self, words: list[str], fields: list[Callable[[dict[str, Any]], bool]]) -> bool:
        """Every free-text word is in the haystack and every `key=value` filter holds."""
        return all(word in self.haystack for word in words) and all(f(self.record) for f in fields)


def parse_filter(text: str) -> tuple[list[str], list[Callable[[dict[str, Any]], bool]]]:
    """The filter box's words: free text (lower case), and `key=value` filters as
    `srat runs ls -f` reads them (`reporting.selection`)."""
    words, fields = [], []
    for word in text.split():
        if is_field_filter(word):
            fields.append(field_filter(word))
        else:
            words.append(word.lower())
    return words, fields


def build_rows(records: Iterable[dict[str, Any]], now: datetime) -> dict[str, RunRow]:
    rows: dict[str, RunRow] = {}
    for record in records:
        run_id = str(record.get("id") or "")
        if not run_id:
            continue
        tags = record.get("tags") if isinstance(record.get("tags"), list) else []
        cells = tuple(runs_cell(record, spec.key, now) for spec in DATA_COLUMNS)
        # what is shown (exp10, cpu, slurm ...) and the record's names behind it
        fields = [*cells, record.get("method"), record.get("dataset"), record.get("status")]
        haystack = "\n".join(str(v) for v in [*fields, *tags] if v is not None).lower()
        rows[run_id] = RunRow(run_id, cells, record, haystack)
    return rows


def _sort_value(row: RunRow, column: str) -> Any:
    record = row.record
    if column == "imbalance":
        imbalance = record.get("imbalance")
        ratio = record.get("ratio")
        return None if imbalance is None else (str(imbalance), ratio if ratio is not None else 0)
    if column == "age":
        return record.get("created") or None
    value = record.get(column)
    return None if value == "" else value


def ordered_ids(rows: Iterable[RunRow], column: str, reverse: bool) -> list[str]:
    """Run ids sorted by `column`; runs without a value last either way; ties by id."""
    by_id = sorted(rows, key=lambda row: row.id)
    present = [row for row in by_id if _sort_value(row, column) is not None]
    missing = [row for row in by_id if _sort_value(row, column) is None]
    # Ascending age means newest first: the creation time runs the other way.
    descending = reverse != (column == "age")
    try:
        present.sort(key=lambda row: _sort_value(row, column), reverse=descending)
    except TypeError:  # mixed types in a hand-edited record
        present.sort(key=lambda row: str(_sort_value(row, column)), reverse=descending)
    return [row.id for row in present + missing]


def _renderable(column: ColumnSpec, value: str) -> Text:
    # a Text, never a str: DataTable reads markup in a str cell ("[/]" in a tag)
    if column.key == "status":
        return Text(value, style=status_style(value))
    if column.right:
        return Text(value, justify="right")
    return Text(value)


# -- widgets ----------------------------------------------------------------------------------


class RunsTable(DataTable[Any]):
    """The runs DataTable: enter opens a run; sort indicators live in the header labels."""

    BINDINGS: ClassVar[list[BindingType]] = [
        # not in the footer (enter opens a table's row anywhere): its room goes to the verbs
        Binding(
            "enter", "select_cursor", "Open", tooltip="Open the run under the cursor", show=False
        ),
    ]

    def set_column_label(self, key: str, label: Text) -> None:
        column = self.columns[ColumnKey(key)]
        if column.label == label:
            return
        column.label = label
        column.content_width = max(column.content_width, label.cell_len)
        # DataTable has no public way to relabel a column: recompute the virtual width on
        # idle and drop the render caches (keyed by the update count), as add_column does.
        self._require_update_dimensions = True
        self._update_count += 1
        self.check_idle()
        self.refresh()


class RunsScreen(Screen[None]):
    """Every run in the index, refreshed every `context.poll_seconds`."""

    BINDINGS: ClassVar[list[BindingType]] = [
        # the app's help key again, so the footer shows it first even at 80 columns
        Binding("question_mark", "app.help", "Help", key_display="?"),
        Binding("space", "toggle_mark", "Mark"),
        Binding("u", "unmark_all", "Unmark all", show=False),
        Binding("c", "compare", "Compare"),
        Binding("n", "new_run", "New"),
        Binding("slash", "focus_filter", "Filter", show=False),  # the filter bar says "/"
        Binding("s", "cycle_sort", "Sort"),
        Binding("k", "kill", "Kill"),
        Binding("r", "resume", "Resume"),
        Binding("t", "tag", "Tag"),
        Binding("d", "delete", "Delete"),
        Binding("S", "reverse_sort", "Reverse sort", show=False),
        Binding("g", "toggle_gpu", "GPU panel", show=False),
        Binding("escape", "escape", "Clear filter / back to table", show=False),
    ]

    sort_column: var[str] = var("age", init=False)
    sort_reverse: var[bool] = var(False, init=False)
    filter_text: var[str] = var("", init=False)
    marked: var[frozenset[str]] = var(frozenset(), init=False)
    show_gpu: var[bool] = var(True, init=False)

    def __init__(self) -> None:
        super().__init__()
        self._rows: dict[str, RunRow] = {}  # the latest refresh, every run
        self._shown: dict[str, tuple[str, ...]] = {}  # what the table holds, per run
        self._shown_order: list[str] = []  # the table's row order
        self._refresh_pending = False
        self._last_error: str | None = None
        self._timer: Timer | None = None
        self._cursor_wanted: str | None = None  # a run to put the cursor on once it is shown
        self.loaded = False  # True once the first refresh reached the table

    @property
    def context(self) -> AppContext:
        return app_context(self)

    @property
    def table(self) -> RunsTable:
        return self.query_one(RunsTable)

    # -- layout -------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="runs-bar"):
            yield Input(
                placeholder="/ filter: words shown, or key=value as `srat runs ls -f` (tag=best)",
                id="filter",
            )
            yield Static("", id="runs-count")
        yield RunsTable(id="runs-table", cursor_type="row", fixed_columns=2, zebra_stripes=True)
        yield GpuPanel(self.context)  # hides itself where there is no NVIDIA GPU
        yield SratFooter(compact=True)

    def on_mount(self) -> None:
        self.title = "srat"
        self.sub_title = "runs"
        table = self.table
        for spec in COLUMNS:
            table.add_column(
                Text(spec.label, justify="right" if spec.right else "left"), key=spec.key
            )
        self._update_headers()
        self._update_count_label()
        table.focus()
        self.request_refresh()
        self._timer = self.set_interval(self.context.poll_seconds, self._poll)

    def on_screen_suspend(self) -> None:
        if self._timer is not None:
            self._timer.pause()  # nobody sees this table: stop polling the disk for it

    def on_screen_resume(self) -> None:
        if self._timer is not None:
            self._timer.resume()
        if self.loaded:
            self.request_refresh()

    # -- refresh ------------------------------------------------------------------------------
    def _poll(self) -> None:
        if not self._refresh_pending:
            self.request_refresh(fresh_queue=False)

    def request_refresh(self, *, fresh_queue: bool = True) -> None:
        """Re-read the runs now (cancels a refresh in flight: its data may predate an action);
        with `fresh_queue`, ask squeue anew too rather than within its cache's age."""
        self._refresh_pending = True
        if fresh_queue:
            self.context.queue.invalidate()
        self.refresh_runs(self.context)

    @work(thread=True, exclusive=True, group="refresh")
    def refresh_runs(self, context: AppContext) -> None:
        worker = get_current_worker()
        message: Message
        try:
            # squeue (one call, bounded by its timeout) runs here too, off the UI thread
            records = refreshed_records(context.index, context.runs_root, context.queue.snapshot)
            records = with_queue_forecast(records, context.home.slots, context.now())
            message = RunsRefreshed(build_rows(records, context.now()))
        except (SratError, OSError) as err:
            message = RunsRefreshFailed(str(err))
        except Exception as err:  # a bug must not end the polling: show it, try the next poll
            message = RunsRefreshFailed(f"refreshing runs failed: {err!r}")
        if not worker.is_cancelled:  # a newer refresh is on its way
            self.post_message(message)

    def on_runs_refresh_failed(self, message: RunsRefreshFailed) -> None:
        self._refresh_pending = False
        if message.error != self._last_error:  # once per distinct error, not once per poll
            self._last_error = message.error
            self.notify(message.error, severity="error", timeout=10)

    def on_runs_refreshed(self, message: RunsRefreshed) -> None:
        self._refresh_pending = False
        self._last_error = None
        self._rows = message.rows
        gone = self.marked - message.rows.keys()
        if gone:
            self.marked = self.marked - gone
        self.loaded = True
        self._sync_table()

    # -- the table, diffed --------------------------------------------------------------------
    def _cells(self, run_id: str) -> tuple[str, ...]:
        return (MARK if run_id in self.marked else "", *self._rows[run_id].cells)

    def focus_run(self, run_id: str) -> None:
        """Put the cursor on `run_id` now, or as soon as a refresh shows it."""
        self._cursor_wanted = run_id
        self._sync_table()

    def cursor_run_id(self) -> str | None:
        row = self.table.cursor_row
        return self._shown_order[row] if 0 <= row < len(self._shown_order) else None

    def _visible_order(self) -> list[str]:
        words, fields = parse_filter(self.filter_text)
        visible = [row for row in self._rows.values() if row.matches(words, fields)]
        return ordered_ids(visible, self.sort_column, self.sort_reverse)

    def _sync_table(self) -> None:
        """Make the table show `_visible_order()` with the fewest DataTable operations."""
        if not self.is_mounted:
            return
        table = self.table
        order = self._visible_order()
        wanted = set(order)
        cursor_id = self.cursor_run_id()
        if self._cursor_wanted in wanted:
            cursor_id, self._cursor_wanted = self._cursor_wanted, None
        removed = [run_id for run_id in self._shown_order if run_id not in wanted]
        added = [run_id for run_id in order if run_id not in self._shown]

        if len(removed) > REBUILD_ABOVE:
            table.clear()
            self._shown.clear()
            self._shown_order = []
            added = order
        else:
            for run_id in removed:
                table.remove_row(run_id)
                del self._shown[run_id]
            self._shown_order = [run_id for run_id in self._shown_order if run_id in wanted]

        for run_id, old in self._shown.items():
            new = self._cells(run_id)
            if new != old:
                for spec, before, after in zip(COLUMNS, old, new, strict=True):
                    if before != after:
                        table.update_cell(
                            run_id, spec.key, _renderable(spec, after), update_width=True
                        )
                self._shown[run_id] = new
        for run_id in added:
            cells = self._cells(run_id)
            table.add_row(
                *(_renderable(spec, v) for spec, v in zip(COLUMNS, cells, strict=True)),
                key=run_id,
            )
            self._shown[run_id] = cells
        self._shown_order.extend(added)

        if self._shown_order != order:
            position = {run_id: k for k, run_id in enumerate(order)}
            table.sort("id", key=lambda cell: position[str(cell)])  # cells are Text
            self._shown_order = order
        if cursor_id is not None and cursor_id in wanted:
            row = self._shown_order.index(cursor_id)
            if row != table.cursor_row:
                table.move_cursor(row=row, animate=False)
        self._update_count_label()

    def _update_headers(self) -> None:
        table = self.table
        arrow = " ▼" if self.sort_reverse else " ▲"
        for spec in COLUMNS:
            label = spec.label + (arrow if spec.key == self.sort_column else "")
            table.set_column_label(spec.key, Text(label, justify="right" if spec.right else "left"))

    def _update_count_label(self) -> None:
        total, shown = len(self._rows), len(self._shown_order)
        noun = "run" if total == 1 else "runs"
        text = f"{shown} of {total} {noun}" if shown != total else f"{total} {noun}"
        if self.loaded and not total:
            text = "no runs yet: n starts one"
        if self.marked:
            text += f" · {len(self.marked)} marked"
        records = (row.record for row in self._rows.values())
        queue = queue_summary(records, self.context.now(), short=True)
        if queue:
            text += f" · {queue}"
        self.query_one("#runs-count", Static).update(text)

    # -- reactive state -> view -------------------------------------------------------------
    def watch_sort_column(self) -> None:
        self._update_headers()
        self._sync_table()

    def watch_sort_reverse(self) -> None:
        self._update_headers()
        self._sync_table()

    def watch_filter_text(self) -> None:
        self._sync_table()

    def watch_marked(self) -> None:
        self._sync_table()

    def watch_show_gpu(self, show: bool) -> None:
        self.set_class(not show, "-hide-gpu")

    # -- events -------------------------------------------------------------------------------
    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self) -> None:
        self.table.focus()

    @on(DataTable.RowSelected, "#runs-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(OpenRun(event.row_key.value))

    @on(DataTable.HeaderSelected, "#runs-table")
    def _header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        column = event.column_key.value
        if column not in SORTABLE:
            return
        if column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            self._sort_by(column)

    def _sort_by(self, column: str) -> None:
        self.sort_reverse = column in DESCENDING_FIRST
        self.sort_column = column

    # -- actions: view ------------------------------------------------------------------------
    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_escape(self) -> None:
        filter_input = self.query_one("#filter", Input)
        if filter_input.has_focus:
            self.table.focus()
        elif filter_input.value:
            filter_input.value = ""  # Input.Changed clears filter_text

    def action_cycle_sort(self) -> None:
        index = SORTABLE.index(self.sort_column) if self.sort_column in SORTABLE else -1
        self._sort_by(SORTABLE[(index + 1) % len(SORTABLE)])

    def action_reverse_sort(self) -> None:
        self.sort_reverse = not self.sort_reverse

    def action_toggle_mark(self) -> None:
        run_id = self.cursor_run_id()
        if run_id is None:
            return
        self.marked = self.marked ^ {run_id}
        table = self.table
        if table.cursor_row < table.row_count - 1:  # like a file manager: mark and move on
            table.move_cursor(row=table.cursor_row + 1)

    def action_unmark_all(self) -> None:
        if self.marked:
            self.marked = frozenset()

    def action_toggle_gpu(self) -> None:
        if self.query_one(GpuPanel).available is False:
            self.notify("no NVIDIA GPU here (NVML does not answer): nothing to show")
            return
        self.show_gpu = not self.show_gpu

    # -- actions: other screens ---------------------------------------------------------------
    def action_new_run(self) -> None:
        self.post_message(OpenNewRun())

    def action_open_run(self) -> None:
        run_id = self.cursor_run_id()
        if run_id is not None:
            self.post_message(OpenRun(run_id))

    def marked_in_order(self) -> list[str]:
        """Marked runs in table order; marked runs the filter hides come last."""
        shown = [run_id for run_id in self._shown_order if run_id in self.marked]
        return shown + sorted(self.marked - set(shown))

    def action_compare(self) -> None:
        ids = self.marked_in_order()
        if len(ids) < 2:
            self.notify("mark at least two runs (space) to compare them", severity="warning")
            return
        self.post_message(OpenCompare(ids))

    # -- actions: run verbs -------------------------------------------------------------------
    def _targets(self) -> list[str]:
        """The marked runs, else the run under the cursor."""
        if self.marked:
            return self.marked_in_order()
        run_id = self.cursor_run_id()
        return [run_id] if run_id is not None else []

    def _status(self, run_id: str) -> str:
        row = self._rows.get(run_id)
        return row.status if row is not None else "unknown"

    def _describe(self, ids: list[str]) -> str:
        """The runs a verb acts on, saying when they are the marked ones (marks win over the
        cursor, which is easy to forget once the marks have scrolled away)."""
        marked = bool(ids) and self.marked.issuperset(ids)
        listed = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        if len(ids) == 1:
            return f"the marked run {ids[0]}" if marked else f"run {ids[0]}"
        return f"the {len(ids)} marked runs ({listed})" if marked else f"{len(ids)} runs ({listed})"

    def _their_status(self, targets: list[str], many: str) -> str:
        """`is <status>` of one run; of several, `are <many>`."""
        return f"is {self._status(targets[0])}" if len(targets) == 1 else f"are {many}"

    def _not_for(self, verb: str, targets: list[str], why: str) -> None:
        """Say that `verb` has nothing to act on among `targets`, and how to act on others."""
        hint = " (u unmarks all, to act on the run under the cursor)" if self.marked else ""
        self.notify(f"nothing to {verb}: {self._describe(targets)} {why}{hint}")

    def action_kill(self) -> None:
        targets = self._targets()
        ids = [run_id for run_id in targets if self._status(run_id) in ACTIVE]
        if not ids:
            if targets:
                self._not_for("kill", targets, self._their_status(targets, "not active"))
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.notify(f"killing {self._describe(ids)}…")
                self._kill(ids)

        message = (
            f"Kill {self._describe(ids)}?\n\n"
            "SIGTERM to the run's process group, SIGKILL after 10 s. "
            "It can be resumed from its last checkpoint."
        )
        others = self._stacked_with(ids)
        if others:
            message += (
                f"\n\nThe rest of its stack shares the process and stops too: "
                f"{self._describe(others)}."
            )
        self.app.push_screen(ConfirmModal(message, yes_label="Kill"), confirmed)

    def _stacked_with(self, ids: list[str]) -> list[str]:
        """The runs outside `ids` that share a process with one of them (`srat run --stack`,
        the records' `stack`), in stack order."""
        others: list[str] = []
        for run_id in ids:
            row = self._rows.get(run_id)
            stack = row.record.get("stack") if row is not None else None
            for other in stack if isinstance(stack, list) else []:
                if other not in ids and other not in others:
                    others.append(str(other))
        return others

    @work(thread=True, group="verbs")
    def _kill(self, ids: list[str]) -> None:
        from srat_engine.jobs.supervisor import kill_run

        home = self.context.home
        self._each(ids, lambda run: f"{run.id} {kill_run(run, home=home)}")

    def action_resume(self) -> None:
        targets = self._targets()
        ids = [run_id for run_id in targets if self._status(run_id) in RESUMABLE]
        if not ids:  # said at once, as kill and delete say it, not "resuming…" then an error
            if targets:
                why = self._their_status(targets, "not resumable")
                self._not_for("resume", targets, f"{why} (failed, killed, dead or lost runs do)")
            return
        kept = [run_id for run_id in targets if run_id not in ids]
        note = f" (not {', '.join(kept)}: not resumable)" if kept else ""
        self.notify(f"resuming {self._describe(ids)}…{note}")
        self._resume(ids)

    @work(thread=True, group="verbs")
    def _resume(self, ids: list[str]) -> None:
        """Each run where it was launched; the runs of a stack all among `ids` as one stack
        again (`supervisor.resume_groups`)."""
        from srat_engine.jobs.supervisor import resume_as_launched, resume_groups

        home, root = self.context.home, self.context.runs_root
        runs: list[RunDir] = []
        done: list[str] = []
        errors: list[str] = []
        for run_id in ids:
            try:
                runs.append(RunDir.open(root, run_id))
            except (SratError, OSError) as err:
                errors.append(str(err))
        for group in resume_groups(runs):
            try:
                done.append(resume_as_launched(group, home=home))
            except (SratError, OSError) as err:
                errors.append(str(err))
        self.post_message(VerbsApplied(done, errors))

    def action_delete(self) -> None:
        targets = self._targets()
        ids = [run_id for run_id in targets if self._status(run_id) not in ACTIVE]
        if not ids:
            if targets:  # asked first and refused after would waste the question
                self._not_for("delete", targets, "still active: kill first")
            return
        kept = [run_id for run_id in targets if run_id not in ids]

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._delete(ids)

        message = f"Move {self._describe(ids)} to the trash?\n\n({self.context.home.trash})"
        if kept:
            message += f"\n\nKept, still active: {', '.join(kept)}."
        self.app.push_screen(ConfirmModal(message, yes_label="Delete"), confirmed)

    @work(thread=True, group="verbs")
    def _delete(self, ids: list[str]) -> None:
        from srat_engine.jobs.supervisor import remove_run

        home = self.context.home

        def delete(run: RunDir) -> str:
            return f"{run.id} moved to {remove_run(run, home=home)}"

        self._each(ids, delete)

    def action_tag(self) -> None:
        ids = self._targets()
        if not ids:
            return

        def answered(text: str | None) -> None:
            if not text:
                return
            try:  # once here, not once per run in the worker
                checked_tag(text[1:] if text.startswith("-") else text)
            except SratError as err:
                self.notify(str(err), severity="error")
                return
            self._tag(ids, text)

        prompt = f"Tag for {self._describe(ids)}"
        hint = "one word; -word removes the tag · enter: OK · escape: cancel"
        self.app.push_screen(TextPromptModal(prompt, placeholder="tag", hint=hint), answered)

    @work(thread=True, group="verbs")
    def _tag(self, ids: list[str], text: str) -> None:
        remove = text.startswith("-")
        tag = text[1:].strip() if remove else text.strip()
        index = self.context.index

        def apply(run: RunDir) -> str:
            change = set_tag(run, tag, remove=remove, index=index)
            return tag_report(run.id, tag, change.tags, removed=remove, changed=change.changed)

        self._each(ids, apply)

    def _each(self, ids: list[str], verb: Callable[[RunDir], str]) -> None:
        """Apply `verb` to each run (worker thread); report results and errors; refresh."""
        root = self.context.runs_root
        done: list[str] = []
        errors: list[str] = []
        for run_id in ids:
            try:
                done.append(verb(RunDir.open(root, run_id)))
            except (SratError, OSError) as err:
                errors.append(str(err))
        self.post_message(VerbsApplied(done, errors))

    def on_verbs_applied(self, message: VerbsApplied) -> None:
        if message.done:
            self.notify("\n".join(message.done))
        for error in message.errors:
            self.notify(error, severity="error", timeout=10)
        self.request_refresh()
