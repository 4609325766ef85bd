"""When the local queue's runs should start and finish: the queue of `jobs.slots` played
forward with each run's pace, for the listings (`srat runs ls`, the runs screen).

Torch-free and lock-free: it reads the slots folder's files (`slots.read_queue`) and the index
records (`runs.summary`: each run's `epoch_seconds`, `epoch_forwards`, `final_forwards`), so a
display never delays a waiter. Slurm's queue is Slurm's to forecast (`squeue --start`).

A run's pace is seconds per forward pass, r = epoch_seconds / epoch_forwards, its own once it
has timed an epoch, else that of the most recently updated run of the same model and dataset
on one of its devices, the slowest of those (the seeds and methods of one study share it: the
forward-pass counts already hold their attack steps and evaluation cadence). A run's whole
time is r (E F_e + F_f) for E epochs of F_e forward passes and a final evaluation of F_f.
Estimates, shown with "~": batch size, precision and what else shares the device move r.

The runs of a stack (`srat run --stack`) train K at once in one process, so a stacked run's
epoch_seconds, and r, are the stack's: its pace is read from like stacks of its own size K,
and lacking one, from a like run of another size K' as r K / K' (the device's time per forward
pass taken as the same: K lone runs' time for a stack, with no gain from stacking counted).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srat_engine.jobs.slots import read_queue, slot_device, slots_for
from srat_engine.runs.progress import forwards, moment_after
from srat_engine.runs.records import is_number

if TYPE_CHECKING:  # the prepared run's type only: preparing imports torch, this module not
    from srat_engine.config.prepare import PreparedRun

Record = Mapping[str, Any]


@dataclass(frozen=True)
class Waiter:
    """A queued run as the forecast sees it: its slots, its place, its whole time (None:
    unknown)."""

    run_id: str
    slots: frozenset[str]
    queued_ns: int
    seconds: float | None


def forecast_starts(
    free_in: Mapping[str, float | None], waiters: Sequence[Waiter]
) -> dict[str, float | None]:
    """Seconds from now until each waiter should start, served as `slots.hold_slot` serves
    them: in (queued_ns, run_id) order, waiter i starts at

        s_i = max(min_{k in S_i} f_k, max_{j < i, S_j & S_i nonempty} s_j)

    (the slot of S_i that frees first, and never before an older waiter sharing a slot with
    it, to which it defers), takes the first slot by name free by then, and frees it at
    s_i + d_i. `free_in`: each slot's f_k, 0 for a free one, absent = free; None (unknown)
    makes every start that depends on it unknown, as does an unknown d_i for what follows it
    on its slot. A waiter with no slots (a foreground run) starts now and holds none.
    """
    free: dict[str, float | None] = dict(free_in)
    starts: dict[str, float | None] = {}
    served: list[tuple[frozenset[str], float | None]] = []
    for waiter in sorted(waiters, key=lambda w: (w.queued_ns, w.run_id)):
        if not waiter.slots:  # a foreground run waits for nobody
            starts[waiter.run_id] = 0.0
            continue
        slots = sorted(waiter.slots)
        times = [free.get(slot, 0.0) for slot in slots]
        after = [start for shared, start in served if shared & waiter.slots]
        start: float | None = None
        if None not in times and None not in after:
            start = max([min(times), *after])  # type: ignore[type-var]
        starts[waiter.run_id] = start
        served.append((waiter.slots, start))
        if start is None:
            continue
        slot = next(s for s, t in zip(slots, times, strict=True) if t is not None and t <= start)
        free[slot] = start + waiter.seconds if waiter.seconds is not None else None
    return starts


def _finite(value: Any) -> float | None:
    """A record's number as a float, None for anything else (a hand-edited run directory can
    hold a string, a list, NaN or infinity where a count belongs)."""
    return float(value) if is_number(value) and math.isfinite(value) else None


def seconds_per_forward(record: Record) -> float | None:
    """r = epoch_seconds / epoch_forwards of a run that has timed an epoch, else None."""
    seconds, forwards = _finite(record.get("epoch_seconds")), _finite(record.get("epoch_forwards"))
    if seconds is not None and forwards is not None and seconds > 0 and forwards > 0:
        return seconds / forwards
    return None


def stack_size(record: Record) -> int:
    """How many runs train in the record's process: its stack's (an index record's `stack`,
    the run ids; a planned run's `stack_size`), else 1."""
    stack, size = record.get("stack"), record.get("stack_size")
    if isinstance(stack, list) and len(stack) > 1:
        return len(stack)
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 1 else 1


Kind = tuple[str, str, str, int]


def _kind(record: Record, device: Any) -> Kind:
    """What makes runs alike for their pace: model, dataset, device (as text), stack size."""
    return str(record.get("arch")), str(record.get("dataset")), str(device), stack_size(record)


Paces = dict[Kind, float]


def like_paces(records: Sequence[Record]) -> Paces:
    """r of the most recently updated timed run for each (model, dataset, device, stack
    size)."""
    latest: dict[Kind, tuple[str, float]] = {}
    for record in records:
        rate = seconds_per_forward(record)
        if rate is None:
            continue
        key = _kind(record, record.get("device"))
        updated = str(record.get("updated") or "")
        if key not in latest or updated > latest[key][0]:
            latest[key] = (updated, rate)
    return {key: rate for key, (_, rate) in latest.items()}


def _pace(record: Record, paces: Paces, devices: set[str]) -> float | None:
    """The run's own r, else a like run's of its stack size on one of `devices` (the slowest,
    when several), else a like run's of another stack size K' scaled by K / K'."""
    own = seconds_per_forward(record)
    if own is not None:
        return own
    known = [paces.get(_kind(record, device)) for device in devices]
    rates = [rate for rate in known if rate is not None]
    if rates:
        return max(rates)
    size = stack_size(record)
    wanted = {_kind(record, device)[:3] for device in devices}
    scaled = [rate * size / kind[3] for kind, rate in paces.items() if kind[:3] in wanted]
    return max(scaled) if scaled else None


def _work(record: Record) -> tuple[float, float] | None:
    """(E F_e, F_f): a run's forward passes in training with per-epoch evaluation, and at
    the end."""
    epochs, per_epoch, final = (
        _finite(record.get(k)) for k in ("epochs", "epoch_forwards", "final_forwards")
    )
    if epochs is None or per_epoch is None or final is None or min(epochs, per_epoch, final) < 0:
        return None
    return epochs * per_epoch, final


def _seconds_until(iso: Any, now: datetime) -> float | None:
    if not isinstance(iso, str):
        return None
    try:
        return max(0.0, (datetime.fromisoformat(iso) - now).total_seconds())
    except (ValueError, TypeError):  # unparsable, or naive against aware
        return None


def _holder_left(record: Record, paces: Paces, now: datetime) -> float | None:
    """Seconds until a running run frees its slot: its training's expected end (`ends`)
    and then its final evaluation, r F_f; before its first timed epoch, its whole time by a
    like run's pace."""
    device = {str(record.get("device"))}
    rate, work = _pace(record, paces, device), _work(record)
    if rate is None or work is None:
        return None
    training = _seconds_until(record.get("ends"), now)
    if training is None:
        training = rate * work[0] if seconds_per_forward(record) is None else None
    return None if training is None else training + rate * work[1]


@dataclass(frozen=True)
class QueuedForecast:
    starts: datetime | None
    ends: datetime | None  # when its training should end (the final evaluation follows)
    training_seconds: float | None = None  # its training at its pace, wherever it starts


@dataclass(frozen=True)
class Planned:
    """A run about to be launched, as the forecast reads it: the index-record fields it uses
    (`planned_run`), the slots it would wait for (none: a foreground run, which starts at
    once) and the devices it may train on."""

    record: Mapping[str, Any]
    slots: frozenset[str]
    devices: frozenset[str]


def planned_run(
    prepared: PreparedRun,
    devices: Sequence[str],
    per_device: int | None,
    stack_size: int = 1,
) -> Planned:
    """`prepared` as the forecast reads it (its model, data and work, the workload block
    config.json will hold), waiting for one of `per_device` slots on each of `devices` as
    `srat run --detach` queues it; `per_device` None: a foreground run on `devices`, which
    takes no slot. `stack_size` > 1: the first run of a stack of that many seeds, which
    waits and trains for them all."""
    config, work = prepared.config, prepared.workload
    counted = forwards(asdict(work) if work is not None else None, config.train.epochs)
    record = {
        "arch": config.model.arch,
        "dataset": config.data.dataset,
        "epochs": config.train.epochs,
        "epoch_forwards": counted[0] if counted else None,
        "final_forwards": counted[1] if counted else None,
        "stack_size": stack_size,
    }
    slots = slots_for(list(devices), per_device) if per_device is not None else []
    return Planned(record, frozenset(slot.name for slot in slots), frozenset(devices))


def queue_forecast(
    slots_root: Path,
    records: Sequence[Record],
    now: datetime,
    planned: Sequence[Planned] = (),
) -> dict[str, QueuedForecast]:
    """Every queued local run's expected start and end of training, from the slots folder
    `slots_root` (a home's `Home.slots`) and the index `records` (`refreshed_records`: the
    statuses tell live holders and waiters from ended ones). `planned` runs join the queue
    behind them, in order, as `planned-0`, `planned-1`, ... `now` is timezone-aware."""
    holders, tickets = read_queue(slots_root)
    if not tickets and not planned:
        return {}
    by_id = {str(r.get("id")): r for r in records}
    paces = like_paces(records)
    free_in: dict[str, float | None] = {}
    for slot, run_id in holders.items():
        holder = by_id.get(run_id)
        if holder is not None and holder.get("status") == "running":
            free_in[slot] = _holder_left(holder, paces, now)
    queue: list[tuple[str, Record, frozenset[str], set[str], int]] = []
    for ticket in tickets:
        record = by_id.get(ticket.run_id)
        if record is None or record.get("status") != "queued":
            continue  # a dead waiter's ticket, or a run the index does not know
        devices = {slot_device(s) for s in ticket.slots}
        queue.append((ticket.run_id, record, ticket.slots, devices, ticket.queued_ns))
    last_ns = max((t.queued_ns for t in tickets), default=0)
    for number, run in enumerate(planned):
        place = last_ns + 1 + number  # behind every waiter, in the order given
        queue.append((f"planned-{number}", run.record, run.slots, set(run.devices), place))
    waiters, training = [], {}
    for run_id, record, slots, devices, queued_ns in queue:
        rate, work = _pace(record, paces, devices), _work(record)
        seconds: float | None = None
        training[run_id] = None
        if rate is not None and work is not None:
            seconds, training[run_id] = rate * (work[0] + work[1]), rate * work[0]
        waiters.append(Waiter(run_id, slots, queued_ns, seconds))
    forecast = {}
    for run_id, start in forecast_starts(free_in, waiters).items():
        length = training[run_id]
        ends = None if start is None or length is None else start + length
        forecast[run_id] = QueuedForecast(moment_after(now, start), moment_after(now, ends), length)
    return forecast


@dataclass(frozen=True)
class LaunchOutlook:
    """Launching planned runs now, as the forecast sees it: the training seconds of a run
    (shortest, longest), when the first should start and when the last should end its
    training; None where a pace is missing."""

    training_seconds: tuple[float, float] | None
    first_start: datetime | None
    last_end: datetime | None


def launch_outlook(
    planned: Sequence[Planned], slots_root: Path, records: Sequence[Record], now: datetime
) -> LaunchOutlook:
    """What `planned` runs would do if launched now, behind the queue as it is
    (`queue_forecast`)."""
    forecast = queue_forecast(slots_root, records, now, planned)
    runs = [forecast[f"planned-{number}"] for number in range(len(planned))]
    lengths = [run.training_seconds for run in runs if run.training_seconds is not None]
    if len(lengths) < len(runs):  # no pace for one of them
        return LaunchOutlook(None, None, None)
    starts = [run.starts for run in runs]
    ends = [run.ends for run in runs]
    if not runs or None in starts or None in ends:
        return LaunchOutlook((min(lengths), max(lengths)) if lengths else None, None, None)
    return LaunchOutlook(
        (min(lengths), max(lengths)),
        min(s for s in starts if s is not None),
        max(e for e in ends if e is not None),
    )


def with_queue_forecast(
    records: Sequence[dict[str, Any]], slots_root: Path, now: datetime
) -> list[dict[str, Any]]:
    """`records` with each queued local run's `starts` and `ends` (UTC ISO) filled in from
    `queue_forecast` (new dicts for those; the others as they are). The runs of a stack
    (`srat run --stack`: the record's `stack`) wait as one, on their first run's ticket, and
    share its forecast: they start and train together."""
    forecast = queue_forecast(slots_root, records, now)
    out = []
    for record in records:
        known = forecast.get(str(record.get("id")))
        stack = record.get("stack")
        if known is None and record.get("status") == "queued" and isinstance(stack, list):
            known = forecast.get(str(stack[0])) if stack else None
        if known is None:
            out.append(record)
        else:
            out.append({**record, "starts": _iso(known.starts), "ends": _iso(known.ends)})
    return out


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment is not None else None
