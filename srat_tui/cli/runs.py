"""`srat runs ...`: list, inspect, follow, kill, resume, tag, note, remove, compare, export."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from srat_engine.errors import SratError
from srat_engine.jobs.forecast import with_queue_forecast
from srat_engine.reporting.selection import select_records
from srat_engine.runs.home import Home
from srat_engine.runs.index import reindex
from srat_engine.runs.records import (
    best_epoch,
    class_count,
    damage_note,
    metric_damage,
    result_record,
)
from srat_engine.runs.rundir import RunDir, is_valid_run_id, validate_run_id
from srat_engine.runs.summary import at_best_epoch, with_config
from srat_engine.runs.sync import (
    add_note,
    current_record,
    needs_refresh,
    refreshed_records,
    set_tag,
)
from srat_tui.cli.common import (
    NO_SLURM,
    PerGpu,
    SlurmRequest,
    chosen_backend,
    open_run,
    stdout_console,
    with_slurm_options,
)
from srat_tui.render.format import inert, queue_summary, runs_cell, tag_report, time_left

if TYPE_CHECKING:
    from srat_engine.reporting.export import RobustSource

app = typer.Typer(help="Run history: list, inspect, follow, kill, resume, compare, export.")


@app.callback()
def _reconcile_on_start(ctx: typer.Context) -> None:
    """Every `srat runs` command starts from true statuses: dead processes are found here.

    The reconciled records are kept on the context, so listing commands do not read and
    reconcile the index a second time.
    """
    ctx.obj = None
    # a corrupt index must not block `srat runs reindex`, the command that repairs it
    with suppress(SratError):
        home = Home.from_env()
        ctx.obj = refreshed_records(home.index, home.runs)


def _with_forecast(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Queued local runs with their expected start and end (`jobs.forecast`): for the
    commands that show them (ls, show), not every `srat runs` command."""
    return with_queue_forecast(records, Home.from_env().slots, datetime.now(timezone.utc))


LS_COLUMNS = (
    "id", "status", "method", "dataset", "imbalance", "epoch", "std_overall", "std_under",
    "rob_overall", "rob_under", "aa_overall", "device", "backend", "age",
)  # fmt: skip


def _reconciled(ctx: typer.Context) -> list[dict[str, Any]]:
    """The records the callback reconciled (read again only if it could not: a corrupt index
    then raises its one-line error here)."""
    if isinstance(ctx.obj, list):
        return ctx.obj
    home = Home.from_env()
    return refreshed_records(home.index, home.runs)


def _ls_status(status: str | None, records: list[dict[str, Any]]) -> str | None:
    """`--status` checked: a status a run can have (the engine's lists: a run starts
    created, then is ACTIVE, ENDED or LOST) or one a listed run has, any case; else one line
    naming them, not an empty listing that reads as "no such runs"."""
    from srat_engine.runs.liveness import ACTIVE, ENDED, LOST

    if status is None:
        return None
    known = dict.fromkeys(["created", *ACTIVE, *ENDED, LOST])
    known.update(dict.fromkeys(str(r["status"]) for r in records if r.get("status")))
    wanted = status.strip().lower()
    if wanted not in known:
        raise SratError(f"unknown status {status!r}: use one of {', '.join(known)}")
    return wanted


def _ls_sort(sort: str | None) -> str | None:
    """`--sort` as `select_records` reads it: a column as the table heads it ("rob") or the
    record field it shows ("rob_overall"), `-` first to reverse; age is the time since
    `created`, so it sorts that field the other way. One line naming the columns otherwise
    (an unknown field would sort nothing, silently)."""
    if not sort:
        return None
    descending = sort.startswith("-")
    name = sort[1:] if descending else sort
    fields = {LS_HEADERS.get(c, c): c for c in LS_COLUMNS} | {c: c for c in LS_COLUMNS}
    if name not in fields:
        shown = [f"{LS_HEADERS[c]} ({c})" if c in LS_HEADERS else c for c in LS_COLUMNS]
        raise SratError(f"--sort {sort!r}: sort by one of {', '.join(shown)}; prefix - to reverse")
    field = fields[name]
    if field == "age":
        field, descending = "created", not descending
    return f"-{field}" if descending else field


@app.command("ls")
def runs_ls(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option("--status", help="only runs with this status")
    ] = None,
    filters: Annotated[
        list[str] | None,
        typer.Option(
            "--filter", "-f", help="key=value on any listed field (key=a,b: either); tag=NAME"
        ),
    ] = None,
    sort: Annotated[
        str | None,
        typer.Option(
            "--sort",
            help="column to sort by, as headed (rob) or its field (rob_overall); "
            "prefix - to reverse",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="the selected runs' index records as JSON")
    ] = False,
    wide: Annotated[
        bool,
        typer.Option("--wide", help="every column, however narrow the terminal"),
    ] = False,
) -> None:
    """Every run with status, progress and the paper's four columns."""
    records = _with_forecast(_reconciled(ctx))
    wanted, order = _ls_status(status, records), _ls_sort(sort)
    records = select_records(records, wanted, filters or [], order)
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        return
    if not records:
        typer.echo("no runs")
        return
    # a terminal's width; piped, every column, for grep and awk
    console = stdout_console()
    text, hidden = format_rows(records, None if wide or not console.is_terminal else console.width)
    typer.echo(text)
    if hidden:
        typer.echo(f"(--wide also shows {', '.join(LS_HEADERS.get(c, c) for c in hidden)})")
    queue = queue_summary(records, datetime.now(timezone.utc))
    if queue:
        typer.echo(queue)


LS_HEADERS = {"std_overall": "std", "std_under": "std:u", "rob_overall": "rob",
              "rob_under": "rob:u", "aa_overall": "aa", "imbalance": "imb"}  # fmt: skip


# What `srat runs ls` leaves out, in this order, where a terminal is too narrow for every
# column: first those in which every run reads the same (all "-", all "local"), then the rest.
LS_NARROW_DROP = ("backend", "device", "aa_overall", "dataset", "age", "imbalance")


def narrow_columns(cells: Mapping[str, Sequence[str]], width: int) -> list[str]:
    """The columns of `cells` (name -> header, then one cell a run) that fit `width`
    characters, two spaces apart: all where they fit, else without LS_NARROW_DROP's, one at a
    time, until they do (the id, status, method, epoch and the paper's four always stay)."""
    shown = list(cells)
    widths = {c: max(map(len, column)) for c, column in cells.items()}  # once, not per drop
    uniform = [c for c in LS_NARROW_DROP if c in cells and len(set(cells[c][1:])) <= 1]
    for column in dict.fromkeys([*uniform, *(c for c in LS_NARROW_DROP if c in cells)]):
        if sum(widths[c] for c in shown) + 2 * (len(shown) - 1) <= width:
            break
        shown.remove(column)
    return shown


def format_rows(records: list[dict[str, Any]], width: int | None = None) -> tuple[str, list[str]]:
    """Aligned plain columns (a Rich table takes ~20 s for 10,000 rows, this ~0.1 s), and the
    columns left out to fit a terminal `width` wide (`narrow_columns`; None: none left out)."""
    now = datetime.now(timezone.utc)
    cells = {
        c: [LS_HEADERS.get(c, c), *(runs_cell(record, c, now) for record in records)]
        for c in LS_COLUMNS
    }
    shown = list(LS_COLUMNS) if width is None else narrow_columns(cells, width)
    widths = [max(map(len, cells[c])) for c in shown]
    right = [c.startswith(("std", "rob", "aa_", "epoch")) for c in shown]
    lines = (
        "  ".join(
            cells[c][row].rjust(w) if is_right else cells[c][row].ljust(w)
            for c, w, is_right in zip(shown, widths, right, strict=True)
        ).rstrip()
        for row in range(len(records) + 1)
    )
    return "\n".join(lines), [c for c in LS_COLUMNS if c not in shown]


@app.command("show")
def runs_show(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="run id")],
    as_json: Annotated[
        bool, typer.Option("--json", help="its record, config, exit and evaluations as JSON")
    ] = False,
) -> None:
    """Status, provenance, schedule and results of one run."""
    from srat_engine.runs.evaluations import read_eval
    from srat_tui.render import run as render
    from srat_tui.render.evaluations import eval_renderables

    run = open_run(run_id)
    summary = _shown_record(ctx, run)  # the status `runs ls` shows
    doc = run.config()
    evaluations = read_eval(run)
    if as_json:
        typer.echo(
            json.dumps(
                {"summary": summary, "config": doc, "exit": run.exit_record(), "eval": evaluations}
            )
        )
        return
    console = stdout_console(piped_width=240)  # prints strings as text: see `inert`
    records = run.metrics()
    warn_damaged(run.id, records, doc)
    meta_problem = run.meta_damage()
    if meta_problem is not None:
        typer.echo(
            inert(f"warning: run {run.id}: meta.json is damaged ({meta_problem}): tags and notes "
                  "are the index's copy, and `runs tag`/`runs note` refuse until it is fixed"),
            err=True,
        )  # fmt: skip
    console.print(render.heading(run.id, f"  {summary['status']}  {run.path}"))
    console.print(inert(f"source   {doc.get('source', '-')}   created {doc.get('created', '-')}"))
    prov = doc.get("provenance") or {}
    if prov:
        dirty = " (dirty)" if prov.get("git_dirty") else ""
        console.print(inert(f"code     {prov.get('git_commit') or 'not a git checkout'}{dirty}"))
    state = run.state()
    console.print(
        inert(
            f"progress epoch {summary['epoch']}/{summary['epochs']} on {state.get('device', '-')} "
            f"(host {state.get('host', '-')}, pid {state.get('pid', '-')})"
        )
    )
    pace = _pace_line(records, summary) or _queue_line(summary)
    if pace:
        console.print(inert(pace))
    slurm_line = _slurm_line(run, summary)
    if slurm_line:
        console.print(inert(slurm_line))
    stack_line = _stack_line(run.id, summary)
    if stack_line:
        console.print(inert(stack_line))
    best_line = _best_line(run, records, doc)
    if best_line:
        console.print(inert(best_line))
    if summary.get("tags"):
        console.print(inert(f"tags     {', '.join(map(str, summary['tags']))}"))
    for note in summary.get("notes", []):
        console.print(inert(f"note     {note}"))
    exit_record = run.exit_record()
    if exit_record and exit_record.get("error"):
        console.print(inert(f"error    {exit_record['error']}"))
    if summary["status"] in ("failed", "dead"):
        for path in (run.log_path, run.path / "output.log", *_slurm_logs(run)):
            if path.exists():
                tail = path.read_text(encoding="utf-8", errors="replace").splitlines()[-8:]
                console.rule(f"{path.name} (last {len(tail)} lines)")
                for line in tail:
                    console.print(inert(line))
    resolved = doc.get("resolved") or {}
    result, _ = result_record(records, class_count(doc))
    if result is not None:
        label = "final" if result["event"] == "final" else f"epoch {result['epoch']}"
        method = (doc.get("config") or {}).get("method", "?")
        console.print(render.summary_table(result, f"{method} ({label})"))
        console.print(
            render.class_table(
                result,
                resolved.get("class_names") or [],
                resolved.get("class_counts") or [],
                resolved.get("under_classes") or [],
            )
        )
    names, under = resolved.get("class_names", []), resolved.get("under_classes", [])
    for renderable in eval_renderables(evaluations, names, under):
        console.print(renderable)


def _shown_record(ctx: typer.Context, run: RunDir) -> dict[str, Any]:
    """The run's current record: the callback's, when it has just reconciled the run (one that
    has not ended: asking again would repeat its liveness check and squeue call), else
    `current_record` (an ended run's record re-read from its directory)."""
    listed = ctx.obj if isinstance(ctx.obj, list) else []
    record = next((r for r in listed if r.get("id") == run.id), None)
    if record is not None and needs_refresh(record):
        if record.get("status") == "queued":  # where it stands in the local queue
            return next(r for r in _with_forecast(listed) if r.get("id") == run.id)
        return record
    return current_record(run, Home.from_env().index)


def _pace_line(records: list[dict[str, Any]], summary: dict[str, Any]) -> str | None:
    """A running run's seconds an epoch (`progress.epoch_seconds`) and when its training should
    end (the record's `ends`); None for a run that is not running or has timed no epoch."""
    from srat_engine.runs.progress import epoch_seconds

    seconds = epoch_seconds(records)
    if summary.get("status") != "running" or seconds is None:
        return None
    line = f"pace     {seconds:.1f} s an epoch (training and evaluation, recent epochs)"
    left = time_left(summary.get("ends"), datetime.now(timezone.utc))
    if left is None:
        return line
    return line + f"; training ends ~{summary['ends']} (in {left}), then the final evaluation"


def _queue_line(summary: dict[str, Any]) -> str | None:
    """A queued local run's expected start and end of training (`jobs.forecast`); None for
    any other run, or without an estimate."""
    if summary.get("status") != "queued" or not summary.get("starts"):
        return None
    now = datetime.now(timezone.utc)
    wait = time_left(summary["starts"], now) or "0s"
    line = f"queue    should start ~{summary['starts']} (in {wait})"
    left = time_left(summary.get("ends"), now)
    if left is None:
        return line + "; no pace of its model, dataset and device to end it by yet"
    return line + f", training end ~{summary['ends']} (in {left}), then the final evaluation"


def _stack_line(run_id: str, summary: dict[str, Any]) -> str | None:
    """For a run launched in a stack (`srat run --stack`): which runs share its process."""
    stack = summary.get("stack")
    if not stack:
        return None
    others = ", ".join(str(other) for other in stack if other != run_id)
    return (
        f"stack    one process with {others}: a kill stops them all; each resumes from its "
        "own checkpoint, alone or together (`srat runs resume ID --stack`)"
    )


def _best_line(run: RunDir, records: list[dict[str, Any]], doc: dict[str, Any]) -> str | None:
    """The run's best epoch by per-epoch PGD (`records.best_epoch`) and whether best.pt holds
    its weights; None before any epoch measured robust accuracy."""
    chosen = best_epoch(records, class_count(doc))
    if chosen is None:
        return None
    robust = chosen["rob_overall"]
    line = f"best     epoch {chosen['epoch']}, robust {robust:.2f} (chosen on the test set)"
    if run.best_checkpoint_path.is_file():
        return line + "; its weights in checkpoints/best.pt (srat eval --checkpoint best)"
    return line + "; no best.pt kept"


def _slurm_line(run: RunDir, summary: dict[str, Any]) -> str | None:
    """Where a Slurm run's job is: "slurm    job 12_3 (array 12, task 3) on node7, requeued 1
    time; RUNNING on node7"; None for a local run."""
    if summary.get("backend") != "slurm":
        return None
    state, launch = run.state(), run.launch_record()
    job = state.get("slurm_job_id") or launch.get("job_id") or "?"
    parts = [f"slurm    job {job}"]
    if state.get("slurm_array_job_id") is not None or launch.get("array_job_id"):
        array = state.get("slurm_array_job_id") or launch.get("array_job_id")
        index = state.get("slurm_array_index", launch.get("array_index"))
        parts.append(f" (array {array}, task {index})")
    if state.get("node"):
        parts.append(f" on {state['node']}")
    requeues = state.get("requeues")
    if requeues:
        parts.append(f", requeued {requeues} time{'s' if requeues != 1 else ''}")
    queued = summary.get("slurm_state")  # current_record asked the queue
    if queued:
        parts.append(f"; {queued}")
    return "".join(parts)


def _slurm_logs(run: RunDir) -> list[Path]:
    """The Slurm job's output file, where Slurm wrote what the job printed (a job that died
    before training says why there)."""
    log = run.launch_record().get("log") if run.launch_record().get("backend") == "slurm" else None
    return [Path(str(log))] if log else []


def warn_damaged(run_id: str, records: list[dict[str, Any]], doc: dict[str, Any]) -> None:
    """One warning line on stderr when readers leave out part of a run's metrics.jsonl
    (`records.damage_note`): a hand edit or another tool damaged it."""
    note = damage_note(records, class_count(doc))
    if note is not None:
        typer.echo(inert(f"warning: run {run_id}: {note}"), err=True)


@app.command("logs")
def runs_logs(
    run_id: Annotated[str, typer.Argument(help="run id")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines")] = False,
    lines: Annotated[
        int,
        typer.Option(
            "--lines", "-n", help="last N lines of each log; 0: none (with -f: only new lines)"
        ),
    ] = 40,
) -> None:
    """The run's log (and its process output, or its Slurm job's), optionally followed until
    the run ends."""
    from srat_engine.runs.liveness import ACTIVE, reconcile

    # [-0:] would be the whole log and [5:] of -n -5 some middle of it: 0 means none, as tail's
    if lines < 0:
        raise SratError(f"-n/--lines must be 0 or more (got {lines})")
    run = open_run(run_id)
    paths = [run.log_path, run.path / "output.log", *_slurm_logs(run)]
    for path in paths if lines else []:
        if path.exists():
            tail = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
            for line in tail:
                typer.echo(inert(line))
    if not follow:
        return
    offset = run.log_path.stat().st_size if run.log_path.exists() else 0
    while True:
        if run.log_path.exists():
            with run.log_path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            offset += len(chunk)
            if chunk:
                typer.echo(inert(chunk.decode("utf-8", errors="replace"), newlines=True), nl=False)
        if reconcile(run) not in ACTIVE:
            return
        time.sleep(0.5)


@app.command("kill")
def runs_kill(run_id: Annotated[str, typer.Argument(help="run id")]) -> None:
    """Stop a queued or running run: its whole process group, or its Slurm job (scancel)."""
    from srat_engine.jobs.supervisor import kill_run

    run = open_run(run_id)
    kill_run(run, home=Home.from_env())
    others = [other for other in run.stack() or [] if other != run.id]
    if others:  # one process: the kill stopped them all
        typer.echo(inert(f"{run.id} killed, and the rest of its stack: {', '.join(others)}"))
        return
    typer.echo(f"{run.id} killed")


def _launched_devices(
    run: RunDir, slots: int | None, per_gpu: int
) -> tuple[str | None, str | None, int | None, int]:
    """(--gpus, --device, --slots, --per-gpu) that place a resume where `run` was launched
    last, with a count given (slots for the CPU, per_gpu for GPUs) and the launch's own
    count kept for the other; per_gpu 1 reads as not given (its default)."""
    from srat_engine.jobs.supervisor import previous_devices

    launched, count = previous_devices(run)
    if all(name.startswith("cuda:") for name in launched):
        ids = ",".join(name.removeprefix("cuda:") for name in launched)
        return ids, None, slots, count if per_gpu == 1 else per_gpu
    return None, launched[0], count if slots is None else slots, per_gpu


@app.command("resume")
@with_slurm_options
def runs_resume(
    run_id: Annotated[str, typer.Argument(help="run id")],
    gpus: Annotated[str | None, typer.Option("--gpus", help="'all' or ids like 0,1,3")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu | cuda | cuda:N")] = None,
    slots: Annotated[int | None, typer.Option("--slots", help="CPU runs at once")] = None,
    per_gpu: PerGpu = 1,
    stack: Annotated[
        bool,
        typer.Option(
            "--stack",
            help="resume the whole stack the run was launched in, as one stack again "
            "(one process or Slurm job); without it, the run resumes alone",
        ),
    ] = False,
    slurm_request: SlurmRequest = NO_SLURM,
) -> None:
    """Continue a failed, killed, dead or lost run from its last checkpoint: detached on this
    machine, or resubmitted to Slurm (with the options it had, unless given again; --backend:
    where it ran last unless given)."""
    from srat_engine.jobs.slurm import previous_options
    from srat_engine.jobs.supervisor import resolve_devices, resume, stack_of

    run = open_run(run_id)
    home = Home.from_env()
    runs = stack_of(run) if stack else [run]
    last = "slurm" if run.launch_record().get("backend") == "slurm" else "local"
    request = slurm_request
    if device is not None and chosen_backend(request.backend or last) == "slurm":
        raise SratError("--device is for local runs; on Slurm use --gpus-per-run")
    options = request.options(
        home, local=(gpus, slots, per_gpu), default_backend=last, before=previous_options(run)
    )
    if options is None and gpus is None and device is None and (slots, per_gpu) != (None, 1):
        # --slots or --per-gpu alone: the devices it was launched on, with that count (not
        # dropped: the count is checked by the one rule `srat run` uses, resolve_devices)
        gpus, device, slots, per_gpu = _launched_devices(runs[0], slots, per_gpu)
    placement = None  # where it was launched last
    if options is None and not (gpus is None and device is None):
        placement = resolve_devices(gpus=gpus, device=device, slots=slots, per_gpu=per_gpu)
    typer.echo(inert(resume(runs, home=home, slurm=options, placement=placement)))


@app.command("rm")
def runs_rm(
    run_ids: Annotated[list[str], typer.Argument(help="run ids")],
    purge: Annotated[
        bool, typer.Option("--purge", help="delete instead of moving to trash")
    ] = False,
) -> None:
    """Move runs to <home>/trash (or delete them with --purge)."""
    from srat_engine.jobs.supervisor import check_removable, remove_run

    # an id given twice is one run: its second removal found it gone, halfway through
    runs = [open_run(run_id) for run_id in dict.fromkeys(run_ids)]
    for run in runs:  # every id valid and every run stopped before anything moves
        check_removable(run)
    home = Home.from_env()
    for run in runs:
        destination = remove_run(run, home=home, purge=purge)
        typer.echo(f"{run.id} {'deleted' if destination is None else f'moved to {destination}'}")


@app.command("tag")
def runs_tag(
    run_id: Annotated[str, typer.Argument(help="run id")],
    tag: Annotated[str, typer.Argument(help="tag to add")],
    remove: Annotated[bool, typer.Option("--remove", help="remove the tag instead")] = False,
) -> None:
    """Add (or --remove) a tag."""
    run = open_run(run_id)
    change = set_tag(run, tag, index=Home.from_env().index, remove=remove)
    typer.echo(tag_report(run.id, tag, change.tags, removed=remove, changed=change.changed))


@app.command("note")
def runs_note(
    run_id: Annotated[str, typer.Argument(help="run id")],
    text: Annotated[str, typer.Argument(help="note text")],
) -> None:
    """Append a note."""
    run = open_run(run_id)
    add_note(run, text, index=Home.from_env().index)
    typer.echo(f"{run.id}: note added")


@app.command("reindex")
def runs_reindex() -> None:
    """Rebuild the run index from the run directories."""
    home = Home.from_env()
    count = reindex(home.runs, home.index)
    typer.echo(f"indexed {count} runs from {home.runs}")


_ATTACK_HELP = "robust columns from `srat eval` results: pgd20 | cw | autoattack"
Checkpoint = Annotated[
    str,
    typer.Option(
        "--checkpoint",
        help="last (each run's end) | best (the epoch with the best PGD robust accuracy on the "
        "test set, as AT-BSL and REAT report: marked as selected on the test set)",
    ),
]


def _robust_source(
    attack: str | None, flagged: set[str], records: Sequence[Mapping[str, Any] | None] = ()
) -> RobustSource:
    """The tables' RobustSource; SratError for an unknown attack name. Its title is the
    attack the `records`' stored results ran (`with_eval_robust`'s rob_attack: "PGD-5" for
    runs evaluating with 5 steps), every one of them when they differ."""
    from srat_engine.reporting.export import RobustSource
    from srat_engine.runs.evaluations import attack_title, check_request

    if attack is None:
        return RobustSource(None, frozenset(flagged))
    check_request(attack, None)
    titles = sorted({str(r["rob_attack"]) for r in records if r and r.get("rob_attack")})
    return RobustSource(" / ".join(titles) or attack_title(attack), frozenset(flagged))


@app.command("compare")
def runs_compare(
    run_ids: Annotated[list[str], typer.Argument(help="two or more run ids")],
    only_changed: Annotated[
        bool, typer.Option("--only-changed/--all", help="config keys that differ, or all")
    ] = True,
    attack: Annotated[
        str | None, typer.Option("--attack", help=_ATTACK_HELP, show_default=False)
    ] = None,
    checkpoint: Checkpoint = "last",
) -> None:
    """Config diff, the four columns and per-class accuracy of runs side by side."""
    from srat_engine.runs.evaluations import (
        current_results,
        eval_summary,
        read_eval,
        with_eval_robust,
    )
    from srat_tui.render.compare import compare_renderables, compare_run

    robust = _robust_source(attack, set()).at_checkpoint(checkpoint)
    if len(run_ids) < 2:
        raise SratError("compare needs at least two run ids")
    runs = [open_run(run_id) for run_id in run_ids]
    items = []
    for run in runs:
        records, doc = run.metrics(), run.config()
        warn_damaged(run.id, records, doc)
        # the runs list's four columns for a run still training, as the compare screen
        compared = compare_run(run.id, doc, records, class_count(doc), checkpoint)
        metrics = compared.metrics
        results = read_eval(run)
        if checkpoint == "best" and metrics is not None:
            results = current_results(results, metrics.get("best_epoch"))
        if attack and metrics is not None:
            metrics = with_eval_robust(metrics, results, attack, checkpoint)
        elif results and metrics is not None:
            masking = eval_summary(results, checkpoint)["masking"]
            metrics = {**(metrics or {}), "masking": masking}
        items.append(replace(compared, metrics=metrics))
    robust = _robust_source(attack, set(), [item.metrics for item in items])
    robust = robust.at_checkpoint(checkpoint)
    console = stdout_console(piped_width=240)
    for renderable in compare_renderables(items, only_changed=only_changed, robust=robust):
        console.print(renderable)


@app.command("export")
def runs_export(
    ctx: typer.Context,
    run_ids: Annotated[list[str] | None, typer.Argument(help="run ids (default: all)")] = None,
    filters: Annotated[
        list[str] | None,
        typer.Option("--filter", "-f", help="key=value (key=a,b: either), as in `runs ls`"),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="csv | md | latex | json (default: what -o's extension names, else md)",
            show_default=False,
        ),
    ] = None,
    paper: Annotated[bool, typer.Option("--paper", help="the paper's numbers beside ours")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write to a file instead of stdout")
    ] = None,
    attack: Annotated[
        str | None, typer.Option("--attack", help=_ATTACK_HELP, show_default=False)
    ] = None,
    checkpoint: Checkpoint = "last",
) -> None:
    """Results in the paper's table layout (mean ± std over seeds of one configuration)."""
    from srat_engine.reporting.export import export_format, format_export, training_title
    from srat_engine.reporting.report import (
        group_seeds,
        paper_table,
        repeated_note,
        robust_coverage,
    )
    from srat_engine.runs.evaluations import current_results, read_eval, with_eval_robust

    try:
        fmt = export_format(fmt, output)
    except ValueError as error:
        raise SratError(str(error)) from None
    _robust_source(attack, set())  # an unknown attack fails before anything is read
    records = select_records(_reconciled(ctx), None, filters or [], None)
    if run_ids:
        wanted = {validate_run_id(r) for r in run_ids}
        missing = wanted - {r["id"] for r in records}
        if missing:
            raise SratError(f"no run {sorted(missing)[0]!r} in the index")
        records = [r for r in records if r["id"] in wanted]
    _robust_source(attack, set()).at_checkpoint(checkpoint)  # bad input: before reading
    root = Home.from_env().runs
    # each run's config, so rows of one method are named by what differs between them
    records = [
        with_config(r, RunDir(root / r["id"])) if is_valid_run_id(str(r.get("id"))) else r
        for r in records
    ]
    if checkpoint == "best":
        records = [at_best_epoch(r, root) for r in records]
    if attack:
        records = [
            with_eval_robust(
                r,
                current_results(read_eval(RunDir(root / r["id"])), r.get("best_epoch")),
                attack,
                checkpoint,
            )
            for r in records
        ]
    flagged = {r["id"] for r in records if r.get("masking") is True}
    robust = _robust_source(attack, flagged, records).at_checkpoint(checkpoint)
    robust = replace(robust, training=training_title(records))
    groups = group_seeds(records)
    if attack:
        coverage = robust_coverage(groups, records)
        missing = coverage.missing
        if missing:  # their robust cells are marked (n=k); say how to fill them in
            which = "" if checkpoint == "last" else " --checkpoint best"
            typer.echo(inert(f"{len(missing)} run(s) without a stored {attack} result, left "
                             f"out of the robust columns (srat eval ID --attack {attack}{which}): "
                             f"{', '.join(missing)}"), err=True)  # fmt: skip
        for group, sizes in coverage.mixed:  # a mean of results on different subsets: said
            shown = ", ".join(str(size) for size in sizes)
            typer.echo(inert(f"warning: the {attack} results averaged for {group.method} "
                             f"({', '.join(group.run_ids)}) are of different numbers of "
                             f"test examples ({shown}): evaluate them with one --n"),
                       err=True)  # fmt: skip
    if groups.skipped:
        note = f"skipped {len(groups.skipped)} run(s) without final metrics"
        typer.echo(note, err=True)
        _warn_damaged_skips(records, groups.skipped)
    if groups.repeated:
        typer.echo(inert(repeated_note(groups.repeated)), err=True)
    if not groups:  # an empty table (or file) would read as a result
        what = "no run has final metrics" if records else "no run matches"
        raise SratError(f"nothing to export: {what} (srat runs ls shows what there is)")
    text = format_export(paper_table(groups, with_paper=paper), fmt, robust=robust)
    if output is None:
        typer.echo(text, nl=not text.endswith("\n"))
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)


def _warn_damaged_skips(records: list[dict[str, Any]], skipped: list[str]) -> None:
    """Why export left out runs that have finished: a damaged index record, or a damaged
    metrics.jsonl (`warn_damaged`); one warning line each. Only those runs' files are read."""
    root = Home.from_env().runs
    by_id = {str(r.get("id")): r for r in records}
    for run_id in skipped:
        record = by_id.get(run_id, {})
        wrong = metric_damage(record)
        if wrong is not None:
            typer.echo(inert(f"warning: run {run_id}: index record: {wrong}"), err=True)
        elif record.get("status") == "finished" and is_valid_run_id(run_id):
            run = RunDir(root / run_id)
            with suppress(OSError, ValueError):  # unreadable: `runs show` says why
                warn_damaged(run_id, run.metrics(), run.config())
