"""Keeping the run index in step with run directories.

The index is a cache: run directories are the truth, so an index failure is logged and never
stops a run. Statuses are reconciled (dead processes found) before anything is listed, by one
rule for every view (`current_records`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srat_engine.errors import SratError
from srat_engine.fsutil import WriteFailed
from srat_engine.runs.index import RunIndex, summarize_indexed, with_indexed_meta
from srat_engine.runs.liveness import ACTIVE, ENDED, reconcile
from srat_engine.runs.rundir import RunDir, is_valid_run_id
from srat_engine.runs.slurm_queue import QueueSource, queue_snapshot, with_queue_states


def record_in_index(run: RunDir, index: RunIndex) -> None:
    """Write the run's current summary into `index`; a failure is logged in the run, not raised.

    The run directory is read under the index's lock (`RunIndex.refresh`), so after concurrent
    changes the last index write holds all of them.
    """
    try:
        index.refresh([run])
    except (SratError, OSError) as err:
        with suppress(SratError):  # a full disk may refuse the log line too
            run.log(f"run index not updated: {err}")


# Long enough for any name a person types, short enough for a table cell and a filter word
MAX_TAG_LENGTH = 64


def checked_tag(tag: str) -> str:
    """`tag` stripped, or SratError unless it is one word of at most MAX_TAG_LENGTH
    characters without a comma (what `set_tag` accepts): `tag=a,b` filters for either tag,
    so a tag "a,b" could never be selected, and `=` would split a filter word; nor does it
    start with "-", the runs screen's mark of a removal."""
    tag = tag.strip()
    if not tag:
        raise SratError("a tag is one word: give one, e.g. best")
    if any(ch.isspace() for ch in tag):
        raise SratError(f"a tag is one word (got {tag!r})")
    if tag.startswith("-"):
        # the runs screen's `t` reads "-best" as "remove best": such a tag could not be removed
        raise SratError(f"a tag does not start with '-' (got {tag!r}): -tag removes a tag")
    if "," in tag or "=" in tag:
        raise SratError(
            f"a tag has no ',' or '=' (got {tag!r}): `tag=a,b` filters for either of two tags"
        )
    if len(tag) > MAX_TAG_LENGTH:
        raise SratError(f"a tag is at most {MAX_TAG_LENGTH} characters (got {len(tag)})")
    return tag


@dataclass(frozen=True)
class TagChange:
    """What `set_tag` did: the run's tags now, and whether they changed (False: the tag was
    already there, or a removal found no such tag)."""

    tags: list[str]
    changed: bool


def set_tag(run: RunDir, tag: str, *, index: RunIndex, remove: bool = False) -> TagChange:
    """Add (or remove) one tag in the run's meta.json and the index."""
    tag = checked_tag(tag)
    before: list[str] = []

    def change(meta: dict[str, list[str]]) -> dict[str, list[str]]:
        before[:] = meta["tags"]
        tags = meta["tags"]
        tags = [t for t in tags if t != tag] if remove else list(dict.fromkeys([*tags, tag]))
        return {**meta, "tags": tags}

    tags = run.update_meta(change)["tags"]
    record_in_index(run, index)
    return TagChange(tags, tags != before)


def add_note(run: RunDir, text: str, *, index: RunIndex) -> list[str]:
    """Append a note to the run's meta.json and the index; returns the run's notes."""
    note = text.strip()
    if not note:
        raise SratError("a note needs some text")
    notes = run.update_meta(lambda meta: {**meta, "notes": [*meta["notes"], note]})["notes"]
    record_in_index(run, index)
    return notes


def current_records(
    runs: Sequence[RunDir], index: RunIndex, queue_source: QueueSource = queue_snapshot
) -> list[dict[str, Any]]:
    """The runs' records with their true status, also written to `index`: the one rule by which
    `srat runs ls`, `srat runs show` and the TUI decide what a run's status is.

    Each run is reconciled first (`liveness.reconcile`: a queued/running run whose process is
    gone becomes `dead`, or what its exit record says), then summarised from its directory under
    the index lock (`RunIndex.refresh`). An index that cannot be written (a full disk) still
    gets the runs' records, read from their directories; a corrupt one raises SratError.
    An active Slurm run's record also says what the queue says of its job (`slurm_state`, not
    stored in the index); `queue_source` asks the queue (a `QueueCache` for a screen that lists
    every second).
    """
    states = {run.id: run.state() for run in runs}
    # one squeue call for every active Slurm run (taken after reading their states): it decides
    # whether a waiting job is still queued, and says where each job stands
    jobs = [str(s["slurm_job_id"]) for s in states.values() if _active_in_slurm(s)]
    queue = queue_source(jobs) if jobs else {}
    statuses = {run.id: reconcile(run, queue) for run in runs}
    try:
        records = index.refresh(runs)
    except (WriteFailed, OSError):
        # the index is a cache: a full disk must not hide the runs, nor their true status
        # (which reconcile may not have been able to record either)
        present = [run for run in runs if (run.path / "config.json").is_file()]
        records = [{**_summary(run, index), "status": statuses[run.id]} for run in present]
    return with_queue_states(records, queue if jobs else None)


def _active_in_slurm(state: dict[str, Any]) -> bool:
    return (
        state.get("backend") == "slurm"
        and state.get("status") in ACTIVE
        and bool(state.get("slurm_job_id"))
    )


def current_record(run: RunDir, index: RunIndex) -> dict[str, Any]:
    """One run's record by `current_records`; with an index that cannot be written (corrupt:
    `srat runs reindex` repairs it) the run is still reconciled and its record returned."""
    try:
        records = current_records([run], index)
    except (SratError, OSError):
        records = []  # reconciled already: the index write is what failed
    return records[0] if records else _summary(run, index)


def _summary(run: RunDir, index: RunIndex) -> dict[str, Any]:
    """The run's record read from its directory, for when the index cannot be written: with
    the index's copy of its tags and notes if its meta.json is damaged (`summarize_indexed`)
    and the index can still be read, else none."""
    record = summarize_indexed(run)
    if "tags" in record and "notes" in record:
        return record
    try:
        indexed = index.get(run.id)
    except (SratError, OSError):
        indexed = None
    return with_indexed_meta(record, indexed)


def needs_refresh(record: dict[str, Any]) -> bool:
    """Whether an index record may be stale: any status but an ended one (ENDED). A created run
    may have started since (a foreground run), a queued or running one may have died."""
    return record.get("status") not in ENDED


def refreshed_records(
    index: RunIndex, root: Path, queue_source: QueueSource = queue_snapshot
) -> list[dict[str, Any]]:
    """All index records, with every run that has not ended re-read from its directory
    (`current_records`, asking the queue through `queue_source`).

    This is where `dead` runs are found and live ones' summaries (epoch, latest accuracies)
    refreshed, so listings are live without per-epoch index writes; one index write for all.
    """
    records = index.all()
    stale = []
    for record in records:
        run_id = str(record.get("id", ""))
        if needs_refresh(record) and is_valid_run_id(run_id) and (root / run_id).is_dir():
            stale.append(RunDir(root / run_id))
    fresh = {record["id"]: record for record in current_records(stale, index, queue_source)}
    return [fresh.get(str(record.get("id", "")), record) for record in records]
