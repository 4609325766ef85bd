"""The run index: one TinyDB file over all run directories, safe for many writer processes.

TinyDB is not multi-process safe (concurrent writers corrupt the file, each instance caches its
next id), so every write here
  1. takes an exclusive `fcntl` lock on `<index>.lock` (the kernel drops it if the holder dies,
     so a killed writer never leaves a stale lock behind),
  2. opens a fresh TinyDB (no cache survives from an earlier operation),
  3. reads, modifies and writes the whole file through a temp file + fsync + `os.replace`
     (a crash mid-write leaves the previous file intact), and closes it.
Documents are keyed by run id (the TinyDB document id is the run id string), so a lookup is a
dict access, not a scan, and no process ever allocates a numeric id.

The index only summarises run directories: `reindex` rebuilds it from them. One exception: a
run whose meta.json is damaged reads as having no tags and no notes, which is not what it has,
so its record keeps the index's copy of them (`summarize_indexed`) until meta.json is fixed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import Storage
from tinydb.table import Document, Table

from srat_engine.errors import SratError
from srat_engine.fsutil import atomic_write, held_lock
from srat_engine.runs.rundir import RunDir, validate_run_id
from srat_engine.runs.summary import summarize_run

TABLE = "runs"
LOCK_TIMEOUT_S = 30.0

Data = dict[str, dict[str, Any]]
_META_FIELDS = ("tags", "notes")


class _IndexCorrupt(Exception):
    """The index file is not a JSON object of tables (internal; surfaced as SratError)."""


class AtomicJSONStorage(Storage):
    """TinyDB storage whose writes replace the file atomically.

    Lives for one locked operation only, so it may keep what it read: TinyDB's upsert reads
    the file two or three times, and parsing a 10,000-run index costs more than writing it.
    """

    def __init__(self, path: str, tolerate_corrupt: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self.tolerate_corrupt = tolerate_corrupt
        self._data: Data | None = None
        self._loaded = False

    def read(self) -> Data | None:
        if not self._loaded:
            self._data = self._load()
            self._loaded = True
        return self._data

    def _load(self) -> Data | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        if not raw.strip():
            # Every write replaces the file whole, so srat never leaves it empty: an empty
            # index was truncated, and read as TinyDB's "empty database" it hid every run
            if self.tolerate_corrupt:
                return None
            raise _IndexCorrupt("the file is empty")
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or not all(isinstance(t, dict) for t in data.values()):
                raise ValueError("not a JSON object of tables")
            if not all(isinstance(doc, dict) for doc in data.get(TABLE, {}).values()):
                raise ValueError(f"table {TABLE!r} holds something that is not a record")
        except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            if self.tolerate_corrupt:
                return None
            raise _IndexCorrupt(str(err)) from None
        return data

    def write(self, data: Data) -> None:
        # Compact: an indented 10,000-run index is ~2x the bytes to write, fsync and parse.
        payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        self._remove_orphans()
        atomic_write(self.path, lambda handle: handle.write(payload))
        self._data, self._loaded = data, True

    def _remove_orphans(self) -> None:
        # Every writer holds the lock while its temp file exists, so under the lock any temp
        # file left is from a writer killed mid-write.
        for orphan in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            orphan.unlink(missing_ok=True)

    def close(self) -> None:
        self._data, self._loaded = None, False


class _RunTable(Table):
    document_id_class = str  # the run id


class _IndexDB(TinyDB):
    table_class = _RunTable


def _record_id(record: dict[str, Any]) -> str:
    run_id = record.get("id")
    if not isinstance(run_id, str) or not run_id:
        raise SratError(f"a run index record needs a non-empty string 'id' (got {run_id!r})")
    return run_id


class RunIndex:
    """Run records keyed by run id, in one JSON file; every call is one locked transaction."""

    def __init__(self, path: Path, timeout: float = LOCK_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"RunIndex({str(self.path)!r})"

    def _corrupt(self, err: Exception) -> SratError:
        return SratError(
            f"run index {self.path} is corrupt ({err}): run `srat runs reindex` to rebuild it"
        )

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        busy = (
            f"run index lock {self.lock_path} has been held for {self.timeout:g} s by "
            "another srat process; try again"
        )
        with held_lock(self.lock_path, timeout=self.timeout, busy=busy):
            yield

    @contextmanager
    def _table(self, tolerate_corrupt: bool = False) -> Iterator[_RunTable]:
        """A fresh TinyDB on the index file for one operation (the caller holds the lock
        for writes)."""
        db = _IndexDB(str(self.path), storage=AtomicJSONStorage, tolerate_corrupt=tolerate_corrupt)
        try:
            yield db.table(TABLE, cache_size=0)
        except _IndexCorrupt as err:
            raise self._corrupt(err) from None
        finally:
            db.close()

    def _write(self, change: Callable[[_RunTable], None]) -> None:
        with self._locked(), self._table() as table:
            change(table)

    # -- writes ------------------------------------------------------------------------------
    def upsert(self, record: dict[str, Any]) -> None:
        """Insert the run's record, or replace the fields given and keep the others."""
        run_id, fields = _record_id(record), dict(record)

        def change(table: _RunTable) -> None:
            # TinyDB's own upsert is an update (a full-file write even when nothing matched)
            # followed by an insert: two writes. Checking first makes it one.
            if table.contains(doc_id=run_id):
                table.update(fields, doc_ids=[run_id])
            else:
                table.insert(Document(fields, doc_id=run_id))

        self._write(change)

    def upsert_many(self, records: list[dict[str, Any]]) -> None:
        """`upsert` for several runs in one transaction: one parse and one write of the file
        instead of one per run (each costs ~0.1-0.3 s on a 10,000-run index)."""
        if not records:
            return
        updates = [(_record_id(record), dict(record)) for record in records]
        with self._locked(), self._table() as table:
            _merge(table, updates)

    def refresh(self, runs: Sequence[RunDir]) -> list[dict[str, Any]]:
        """Re-read `runs` from their directories and upsert their records, in one transaction;
        returns the records. A run whose directory is gone (removed meanwhile) is skipped.

        A run whose meta.json is damaged keeps the tags and notes the index holds
        (`summarize_indexed`), in the index and in the record returned.

        The directories are read under the index lock, so of two processes that each change a
        run (a tag each) and then refresh it, the one that writes the index last also read the
        run last: the index ends holding both changes, never a summary read before the other's.
        """
        if not runs:
            return []
        with self._locked(), self._table() as table:
            present = [run for run in runs if (run.path / "config.json").is_file()]
            if not present:
                return []
            indexed = (table.storage.read() or {}).get(TABLE, {})
            records = [
                with_indexed_meta(record, indexed.get(record["id"]))
                for record in map(summarize_indexed, present)
            ]
            _merge(table, [(record["id"], record) for record in records])
        return records

    def remove(self, run_id: str) -> None:
        """Forget a run (no error if it is not indexed)."""

        def change(table: _RunTable) -> None:
            if table.contains(doc_id=run_id):
                table.remove(doc_ids=[run_id])

        self._write(change)

    def replace_all(
        self, records: list[dict[str, Any]], keep_meta_of: Collection[str] = ()
    ) -> None:
        """Make the index exactly `records` in one atomic write; works on a corrupt file
        (it is the repair path). The runs of `keep_meta_of` (their meta.json is damaged:
        `summarize_indexed`) get the tags and notes the index holds now, if it can be read."""
        runs = {_record_id(record): dict(record) for record in records}
        with self._locked(), self._table(tolerate_corrupt=True) as table:
            # One write, not TinyDB's truncate + insert_multiple (two): a crash between them
            # would leave an empty index. Other tables, if any, are kept.
            tables = dict(table.storage.read() or {})
            old = tables.get(TABLE, {})
            for run_id in set(keep_meta_of) & runs.keys():
                runs[run_id] = with_indexed_meta(runs[run_id], old.get(run_id))
            tables[TABLE] = runs
            table.storage.write(tables)

    # -- reads -------------------------------------------------------------------------------
    # Reads do not take the lock. Writers only ever `os.replace` a complete, fsynced file, so
    # a reader opens either the old index or the new one, never half of one; and a listing
    # then never waits behind writers (or a slow reindex), nor needs write access to the
    # directory to create the lock file. A read is a consistent snapshot of one moment, which
    # is all a lock would give it too.
    def get(self, run_id: str) -> dict[str, Any] | None:
        """The run's record, or None if it is not indexed."""
        with self._table() as table:
            doc = table.get(doc_id=run_id)
        return dict(doc) if doc is not None else None

    def all(self) -> list[dict[str, Any]]:
        """Every record, in insertion order."""
        with self._table() as table:
            # The raw table dict, not Table.all(): that wraps each record in a Document copy,
            # which we would copy again into a plain dict.
            raw = (table.storage.read() or {}).get(TABLE, {})
        return [dict(doc) for doc in raw.values()]

    def __len__(self) -> int:
        with self._table() as table:
            return len(table)


def _merge(table: _RunTable, updates: list[tuple[str, dict[str, Any]]]) -> None:
    """Upsert (run id, fields) pairs with one read and one write of the file (lock held)."""
    tables = table.storage.read() or {}
    runs = tables.setdefault(TABLE, {})
    for run_id, fields in updates:
        runs[run_id] = {**runs.get(run_id, {}), **fields}
    table.storage.write(tables)


def summarize_indexed(run: RunDir) -> dict[str, Any]:
    """The run's record as the index is to hold it: `summarize_run`, without tags and notes
    when its meta.json is damaged. Those read as none there, and writing that would erase the
    index's copy of what the run had: the one a person can still see, and rebuild meta.json
    from. Only a record with none of either is checked: a damaged file reads as none."""
    record = summarize_run(run)
    if not record["tags"] and not record["notes"] and run.meta_damage() is not None:
        return {k: v for k, v in record.items() if k not in _META_FIELDS}
    return record


def with_indexed_meta(record: dict[str, Any], indexed: dict[str, Any] | None) -> dict[str, Any]:
    """`record` with tags and notes: its own, else the `indexed` record's, else none."""
    if all(field in record for field in _META_FIELDS):
        return record
    kept = {}
    for field in _META_FIELDS:
        value = (indexed or {}).get(field)
        kept[field] = [str(v) for v in value] if isinstance(value, list) else []
    return {**record, **kept, **{f: record[f] for f in _META_FIELDS if f in record}}


def run_dirs(runs_root: Path) -> list[Path]:
    """Run directories under runs_root: valid run ids with a config.json, sorted by id."""
    if not runs_root.is_dir():
        return []
    found = []
    for path in sorted(runs_root.iterdir()):
        try:
            validate_run_id(path.name)
        except SratError:
            continue  # not something srat created, and not addressable as a run id
        if (path / "config.json").is_file():
            found.append(path)
    return found


def reindex(runs_root: Path, index: RunIndex) -> int:
    """Rebuild the index from the run directories under runs_root; returns the run count.

    Runs are summarised before the lock is taken (reading thousands of metrics files under it
    would block every running experiment's writes), so an update a live run made to the index
    in that window is replaced by the summary read just before it; the run's next update
    corrects it.
    """
    records = [summarize_indexed(RunDir(path)) for path in run_dirs(runs_root)]
    index.replace_all(records, keep_meta_of={r["id"] for r in records if "tags" not in r})
    return len(records)
