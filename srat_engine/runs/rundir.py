"""The run directory: the contract between the engine and every interface.

<runs>/<id>/config.json    the validated config, the resolved block and the workload in
                           forward passes (never rewritten)
            metrics.jsonl  append-only, one JSON object per event
            log.txt        human-readable log
            state.json     status, pid, process start time, host, device, epoch
            exit.json      how the run ended (status, error, final metrics)
            meta.json      tags and notes people add later (a damaged one is never
                           rewritten: `RunDir.update_meta`)
            launch.json    how a detached run was launched: worker pid, devices, slots
            run.lock       held (fcntl) for each read-modify-write of state.json or meta.json
            checkpoints/   last.pt (atomic); best.pt, the weights of the epoch with the
                           best per-epoch robust accuracy (train.keep_best)
            space.reserve  64 KiB held until the run ends: freed to record a failure on a
                           disk that filled up meanwhile
Files, not pipes, so a run outlives the terminal that started it.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from srat_engine.errors import SratError
from srat_engine.fsutil import (
    DamagedFile,
    WriteFailed,
    append_jsonl,
    append_text,
    atomic_write,
    atomic_write_json,
    describe_os_error,
    held_lock,
    read_json,
    read_jsonl,
    release_space,
    reserve_space,
)

_RUN_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# What recording a failure writes on a full disk: state.json, exit.json, a log line and the
# run's index update, each a new file or block before the old one is freed.
RESERVE_BYTES = 64 * 1024
LOCK_TIMEOUT_S = 30.0

StateChange = Callable[[dict[str, Any]], dict[str, Any] | None]
MetaChange = Callable[[dict[str, list[str]]], dict[str, list[str]]]
META_FILE = "meta.json"
_META_FIELDS = ("tags", "notes")


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
            try:
                (path / "checkpoints").mkdir()
                atomic_write_json(path / "config.json", config_doc)
                run.write_state(status="created", created=now_iso())
                run.hold_reserve()
            except (WriteFailed, OSError) as err:
                # half a run would list as a run that never started: none is left instead
                shutil.rmtree(path, ignore_errors=True)
                if isinstance(err, WriteFailed):
                    raise
                raise WriteFailed(path / "checkpoints", err) from None
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
    def best_checkpoint_path(self) -> Path:
        return self.path / "checkpoints" / "best.pt"

    def check_checkpoint_file(self) -> None:
        """SratError in one line if the last checkpoint exists but is no torch.save archive
        (garbage, or cut short: its zip directory is at the end), asked without torch, so a
        resume refuses at once rather than launching a worker that fails on it. Only
        `training.checkpoint.load_checkpoint` can tell a whole archive from a srat one."""
        path = self.checkpoint_path
        if not path.exists():
            return
        try:
            with zipfile.ZipFile(path):
                pass
        except OSError as err:
            raise SratError(f"cannot read checkpoint {path}: {describe_os_error(err)}") from None
        except (zipfile.BadZipFile, ValueError):
            raise SratError(
                f"checkpoint {path} is corrupt (not a torch checkpoint): it cannot be resumed "
                "from; `srat runs rm` it, or start the configuration again"
            ) from None

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def log_path(self) -> Path:
        return self.path / "log.txt"

    @property
    def lock_path(self) -> Path:
        return self.path / "run.lock"

    @property
    def reserve_path(self) -> Path:
        return self.path / "space.reserve"

    # reads
    def config(self) -> dict[str, Any]:
        """The run's config document (`{"config": {...}, "resolved": {...}, ...}`).

        The one reader of config.json: one that cannot be decoded, or is not such a document,
        raises DamagedFile (a SratError, so every command says it in one line and exits 2;
        also a ValueError, so the run summary and `srat runs ls` list the run with what else
        is known). It is never rewritten, so the advice is to restore it or remove the run.
        """
        path = self.path / "config.json"
        advice = f"restore it from a backup, or remove run {self.id} (srat runs rm {self.id})"
        try:
            doc = read_json(path)
        except DamagedFile as err:
            raise DamagedFile(path, err.problem, advice) from None
        if not isinstance(doc, dict):
            raise DamagedFile(path, f"a JSON {_json_kind(doc)}, not a run's config", advice)
        if not isinstance(doc.get("config"), dict):
            raise DamagedFile(path, 'no "config" object: not a run\'s config', advice)
        return doc

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

    def stack(self) -> list[str] | None:
        """The run ids of the stack (`srat run --stack`) the run was last launched in, itself
        included: the runs that share its process. None for a run launched alone."""
        stack = self.launch_record().get("stack")
        if isinstance(stack, list) and len(stack) > 1 and all(isinstance(i, str) for i in stack):
            return stack
        return None

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

    @property
    def meta_path(self) -> Path:
        return self.path / META_FILE

    def meta(self) -> dict[str, Any]:
        """Tags and notes: kept in the run directory so the index can be rebuilt from it.

        For display only: a damaged meta.json reads as none here, so a listing still shows
        the run, but it is not "no tags". Writes refuse it (`update_meta`), and the index
        keeps its copy of the run's tags and notes (`meta_damage` tells them apart).
        """
        return self._read_meta()[0]

    def meta_damage(self) -> str | None:
        """What is wrong with meta.json (e.g. "not valid JSON: ..."), None if nothing is (no
        meta.json is no tags and no notes, not damage)."""
        return self._read_meta()[1]

    def _read_meta(self) -> tuple[dict[str, Any], str | None]:
        """meta.json's fields (tags and notes, as lists of strings, and any other a person or a
        later version put there), and what is wrong with it; a damaged one reads as no tags
        and no notes. An OSError other than a missing file (a permission) is raised."""
        empty: dict[str, Any] = {"tags": [], "notes": []}
        try:
            data = read_json(self.meta_path)
        except FileNotFoundError:
            return empty, None
        except DamagedFile as err:
            return empty, err.problem
        if not isinstance(data, dict):
            return empty, f"a JSON {_json_kind(data)}, not an object of tags and notes"
        for field in _META_FIELDS:
            value = data.get(field, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                return empty, f"{field} is not a list of strings"
        return {**data, "tags": data.get("tags", []), "notes": data.get("notes", [])}, None

    # writes
    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the run's lock (an exclusive `fcntl.flock` on run.lock) for one transaction.

        Readers never take it: files are only ever replaced whole, so a read sees one version.
        The kernel drops the lock when its holder dies, so a killed writer leaves none behind.
        Not re-entrant (a second hold in one process waits on the first): never nest them.
        """
        busy = (
            f"run lock {self.lock_path} has been held for {LOCK_TIMEOUT_S:g} s by another srat "
            "process; try again"
        )
        # short polls: a run's transactions take milliseconds, and 8 writers share one lock
        with held_lock(self.lock_path, timeout=LOCK_TIMEOUT_S, busy=busy, poll_seconds=0.002):
            yield

    def update_state(self, change: StateChange) -> dict[str, Any]:
        """One locked read-modify-write of state.json: `change` gets the current state and
        returns the fields to set (None or {}: write nothing); returns the state after.

        Every state.json write goes through here, so concurrent writers (the run, `srat runs
        kill`, a listing that finds the run dead) never lose each other's fields.
        """
        with self._locked():
            state = self.state()
            fields = change(dict(state))
            if not fields:
                return state
            state = {**state, **fields, "updated": now_iso()}
            atomic_write_json(self.path / "state.json", state)
            return state

    def write_state(self, **fields: Any) -> dict[str, Any]:
        """Set `fields` in state.json, keeping the others (`update_state`)."""
        return self.update_state(lambda _state: fields)

    def write_exit(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.path / "exit.json", {**record, "time": now_iso()})

    def clear_exit(self) -> None:
        (self.path / "exit.json").unlink(missing_ok=True)

    def hold_reserve(self) -> None:
        """Hold RESERVE_BYTES for recording how the run ends (WriteFailed if they do not fit)."""
        reserve_space(self.reserve_path, RESERVE_BYTES)

    def record_end(
        self,
        status: str,
        *,
        error: str | None = None,
        final: dict[str, Any] | None = None,
        log: str | None = None,
    ) -> None:
        """Record how the run ended: exit.json (the status and the error or the final
        metrics), then `status` in state.json, and `log` as a line of run.log. The run's
        reserve is freed first: on a full disk it is the room these writes take.

        exit.json first, so that a reader who sees the ended status finds the exit record
        too; one who reads between the two sees the run still running, and should the process
        die there, liveness takes the status from exit.json."""
        release_space(self.reserve_path)
        record: dict[str, Any] = {"status": status}
        if error is not None:
            record["error"] = error
        if final is not None:
            record["final"] = final
        self.write_exit(record)
        self.write_state(status=status)
        if log is not None:
            self.log(log)

    def update_meta(self, change: MetaChange) -> dict[str, list[str]]:
        """One locked read-modify-write of meta.json: `change` gets the tags and notes
        (`meta()`) and returns the new ones, which are written and returned. An exception from
        `change` writes nothing; fields other than tags and notes are kept as they were.

        A damaged meta.json (`meta_damage`) is refused, not replaced: DamagedFile, one line
        naming it, and nothing written. Replacing it, as a damaged eval.json is, would write
        only the change (a tag added to none) and the index would then forget the tags and
        notes it still lists; an evaluation can be run again, a person's notes cannot. So,
        as with eval.json, the damaged bytes are also kept as meta.json.corrupt-<unix time>,
        and the person fixes meta.json, or removes it to start the tags and notes afresh.
        """
        with self._locked():
            current, damage = self._read_meta()
            if damage is not None:
                raise DamagedFile(self.meta_path, damage, self._keep_damaged_copy())
            meta = change({"tags": list(current["tags"]), "notes": list(current["notes"])})
            meta = {"tags": list(meta["tags"]), "notes": list(meta["notes"])}
            atomic_write_json(self.meta_path, {**current, **meta})
            return meta

    def _keep_damaged_copy(self) -> str:
        """What to do about a damaged meta.json, after keeping a copy of it (once: a copy with
        the same bytes is reused) so that removing it loses nothing."""
        advice = (
            "nothing was written; fix it, or remove it to start the run's tags and notes afresh"
        )
        try:
            data = self.meta_path.read_bytes()
            copies = sorted(self.path.glob(f"{META_FILE}.corrupt-*"))
            copy = next((c for c in copies if c.read_bytes() == data), None)
            if copy is None:
                copy = self.path / f"{META_FILE}.corrupt-{int(time.time())}"
                while copy.exists():  # another damaged version set aside this second
                    copy = copy.with_name(copy.name + "-1")
                atomic_write(copy, lambda handle: handle.write(data))
        except (OSError, WriteFailed) as err:  # a full disk: the refusal still stands
            return f"{advice} (no copy could be kept: {err})"
        return f"{advice} (a copy is kept as {copy.name})"

    def write_meta(self, tags: list[str], notes: list[str]) -> None:
        """Replace the tags and notes (a new run's; to add to them use `update_meta`)."""
        self.update_meta(lambda _meta: {"tags": tags, "notes": notes})

    def drop_epochs_after(self, epoch: int) -> int:
        """Remove the `epoch` records past `epoch` from metrics.jsonl; returns how many.

        A resume from a checkpoint of epoch c trains epochs c+1.. again and records them again,
        so records of those epochs written before the checkpoint was (a kill between the two
        writes, or checkpoint_every > 1) must go for each epoch to appear once. Every other
        line is kept byte for byte; the file is replaced atomically.
        """
        try:
            lines = self.metrics_path.read_bytes().splitlines(keepends=True)
        except FileNotFoundError:
            return 0
        kept = [line for line in lines if not _epoch_after(line, epoch)]
        if len(kept) < len(lines):
            data = b"".join(kept)
            atomic_write(self.metrics_path, lambda handle: handle.write(data))
        return len(lines) - len(kept)

    def append_metrics(self, record: dict[str, Any]) -> None:
        append_jsonl(self.metrics_path, record)

    def log(self, line: str) -> None:
        append_text(self.log_path, f"{now_iso()} {line}\n")


def _json_kind(value: Any) -> str:
    """How a message names a JSON value's type: "list", "string", "null", ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    kinds = {dict: "object", list: "list", str: "string", int: "number", float: "number"}
    return kinds.get(type(value), type(value).__name__)


def _epoch_after(line: bytes, epoch: int) -> bool:
    """Whether a metrics line is an `epoch` record of an epoch after `epoch`."""
    try:
        record = json.loads(line)
    except ValueError:
        return False  # a torn line: not a record, left for readers to skip
    if not isinstance(record, dict) or record.get("event") != "epoch":
        return False
    number = record.get("epoch")
    return isinstance(number, int) and number > epoch
