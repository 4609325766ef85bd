"""Keeping the run index in step with run directories.

The index is a cache: run directories are the truth, so an index failure is logged and never
stops a run. Statuses are reconciled (dead processes found) before anything is listed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from srat_engine.errors import SratError
from srat_engine.runs.index import RunIndex
from srat_engine.runs.liveness import ACTIVE, reconcile
from srat_engine.runs.rundir import RunDir, is_valid_run_id
from srat_engine.runs.summary import summarize_run


def record_in_index(run: RunDir, index: RunIndex) -> None:
    """Write the run's current summary into `index`; a failure is logged in the run, not raised."""
    try:
        index.upsert(summarize_run(run))
    except (SratError, OSError) as err:
        run.log(f"run index not updated: {err}")


def set_tag(run: RunDir, tag: str, *, index: RunIndex, remove: bool = False) -> list[str]:
    """Add (or remove) one tag in the run's meta.json and the index; returns the run's tags."""
    tag = tag.strip()
    if not tag or any(ch.isspace() for ch in tag):
        raise SratError(f"a tag is one word (got {tag!r})")
    meta = run.meta()
    if remove:
        tags = [t for t in meta["tags"] if t != tag]
    else:
        tags = list(dict.fromkeys([*meta["tags"], tag]))
    run.write_meta(tags, meta["notes"])
    record_in_index(run, index)
    return tags


def refreshed_records(index: RunIndex, root: Path) -> list[dict[str, Any]]:
    """All index records, with every queued/running run re-read from its directory.

    This is where `dead` runs are found: each active run's liveness is checked and its
    summary (epoch, latest accuracies) refreshed, so listings are live without per-epoch
    index writes.
    """
    fresh: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    for record in index.all():
        run_id = str(record.get("id", ""))
        if record.get("status") in ACTIVE and is_valid_run_id(run_id):
            path = root / run_id
            if path.is_dir():
                run = RunDir(path)
                reconcile(run)
                record = summarize_run(run)
                changed.append(record)
        fresh.append(record)
    index.upsert_many(changed)  # one write for all live runs, not one per run
    return fresh
