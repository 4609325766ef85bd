"""The run directory: the contract between the engine and every interface.

<runs>/<id>/config.json    the validated config plus the resolved block (never rewritten)
            metrics.jsonl  append-only, one JSON object per event
            log.txt        human-readable log
            state.json     status, pid, process start time, host, device, epoch
            exit.json      how the run ended (status, error, final metrics)
            meta.json      tags and notes people add later
            launch.json    how a detached run was launched: worker pid, devices, slots
            checkpoints/   last.pt (atomic)
Files, not pipes, so a run outlives the terminal that started it.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from srat_engine.errors import SratError
from srat_engine.fsutil import append_jsonl, atomic_write_json, read_json, read_jsonl

_RUN_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def is_valid_run_id(run_id: str) -> bool:
    return bool(_RUN_ID.fullmatch(run_id))


def validate_run_id(run_id: str) -> str:
    """Reject anything that is not a plain lower-case path component (no `/`, `..`, spaces)."""
    if not is_valid_run_id(run_id):
        raise SratError(f"invalid run id {run_id!r}: use lower-case letters, digits, - and _")
    return run_id


def new_run_id() -> str:
    """Sortable by start time, short, unique enough; creation is exclusive anyway."""
    return f"{time.strftime('%y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.id = path.name

    @classmethod
    def create(cls, root: Path, config_doc: dict[str, Any], run_id: str | None = None) -> RunDir:
        root.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            candidate = validate_run_id(run_id or new_run_id())
            path = root / candidate
            try:
                path.mkdir()
            except FileExistsError:
                if run_id:
                    raise SratError(f"run {run_id} already exists") from None
                continue
            run = cls(path)
            (path / "checkpoints").mkdir()
            atomic_write_json(path / "config.json", config_doc)
            run.write_state(status="created", created=now_iso())
            return run
        raise SratError(f"could not allocate a run id under {root}")

    @classmethod
    def open(cls, root: Path, run_id: str) -> RunDir:
        path = root / validate_run_id(run_id)
        if not (path / "config.json").is_file():
            raise SratError(f"no run {run_id!r} in {root}")
        return cls(path)

    # paths
    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoints" / "last.pt"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def log_path(self) -> Path:
        return self.path / "log.txt"

    # reads
    def config(self) -> dict[str, Any]:
        return read_json(self.path / "config.json")

    def _read_object(self, name: str) -> dict[str, Any]:
        """A JSON object file; missing, corrupt or wrongly shaped reads as empty."""
        try:
            data = read_json(self.path / name)
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def state(self) -> dict[str, Any]:
        return self._read_object("state.json")

    def exit_record(self) -> dict[str, Any] | None:
        try:
            return read_json(self.path / "exit.json")
        except (FileNotFoundError, ValueError):
            return None

    def metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.metrics_path)

    def launch_record(self) -> dict[str, Any]:
        return self._read_object("launch.json")

    def write_launch_record(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.path / "launch.json", record)

    def metrics_since(self, offset: int) -> tuple[list[dict[str, Any]], int]:
        """Records appended after byte `offset`, and the offset to pass next time.

        Only complete lines are consumed: a line still being written is left for the next
        call, so a live reader never sees half a record (and never skips one).
        """
        try:
            with self.metrics_path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
        except FileNotFoundError:
            return [], offset
        end = chunk.rfind(b"\n")
        if end < 0:
            return [], offset
        complete = chunk[: end + 1]
        records = []
        for line in complete.decode("utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn line from a crash, followed by newer records
            if isinstance(record, dict):
                records.append(record)
        return records, offset + len(complete)

    def meta(self) -> dict[str, Any]:
        """Tags and notes: kept in the run directory so the index can be rebuilt from it."""
        meta = self._read_object("meta.json")
        tags, notes = meta.get("tags", []), meta.get("notes", [])
        return {
            "tags": [str(t) for t in tags] if isinstance(tags, list) else [],
            "notes": [str(n) for n in notes] if isinstance(notes, list) else [],
        }

    # writes
    def write_state(self, **fields: Any) -> dict[str, Any]:
        state = {**self.state(), **fields, "updated": now_iso()}
        atomic_write_json(self.path / "state.json", state)
        return state

    def write_exit(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.path / "exit.json", {**record, "time": now_iso()})

    def clear_exit(self) -> None:
        (self.path / "exit.json").unlink(missing_ok=True)

    def record_end(
        self,
        status: str,
        *,
        error: str | None = None,
        final: dict[str, Any] | None = None,
        log: str | None = None,
    ) -> None:
        """Record how the run ended: `status` in state.json, exit.json (the status and the
        error or the final metrics), and `log` as a line of run.log."""
        self.write_state(status=status)
        record: dict[str, Any] = {"status": status}
        if error is not None:
            record["error"] = error
        if final is not None:
            record["final"] = final
        self.write_exit(record)
        if log is not None:
            self.log(log)

    def write_meta(self, tags: list[str], notes: list[str]) -> None:
        atomic_write_json(self.path / "meta.json", {"tags": tags, "notes": notes})

    def append_metrics(self, record: dict[str, Any]) -> None:
        append_jsonl(self.metrics_path, record)

    def log(self, line: str) -> None:
        with self.log_path.open("a", encoding="utf-8") as handle:
            handle.write(f"{now_iso()} {line}\n")
