"""Crash-safe file writes: a reader sees the old file or the new one, never half of either.

Every write error (a full disk, a read-only or vanished directory, a quota) leaves the previous
file as it was and is raised as `WriteFailed`, one line naming the file and the cause. A JSON
file that cannot be decoded (a hand edit, another tool's half-written copy) is raised as
`DamagedFile`, one line naming the file and what is wrong with it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, cast

from filelock import FileLock, Timeout

from srat_engine.errors import SratError, stops_deferred


class WriteFailed(SratError):
    """A file could not be written: `could not write PATH: CAUSE` (the OS's words, e.g. "No
    space left on device"). Not a usage error: the CLI exits 1 for it, not 2."""

    def __init__(self, path: Path, cause: BaseException | str) -> None:
        self.path = Path(path)
        self.cause = cause if isinstance(cause, str) else describe_os_error(cause)
        super().__init__(f"could not write {self.path}: {self.cause}")


class DamagedFile(SratError, ValueError):
    """A file that exists but cannot be decoded: `PATH is damaged (PROBLEM)`, and what to do
    about it when the caller knows (`advice`). A user error (exit 2), never a traceback.

    Also a ValueError, as the JSONDecodeError and UnicodeDecodeError it replaces are: every
    reader that tolerates a damaged file (`except ValueError`: a state.json or eval.json read
    as empty, a run listed with what else is known) goes on tolerating it, and every other one
    gets this line instead of a traceback without catching anything itself.
    """

    def __init__(self, path: Path, problem: str, advice: str | None = None) -> None:
        self.path = Path(path)
        self.problem = problem
        tail = f": {advice}" if advice else ""
        super().__init__(f"{self.path} is damaged ({problem}){tail}")


def describe_os_error(err: BaseException) -> str:
    """The cause of an OSError in the OS's words ("No space left on device"), without the
    errno and file name Python adds; another exception's first line."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Raise an OSError from the body as WriteFailed naming `path`."""
    try:
        yield
    except OSError as err:
        raise WriteFailed(path, err) from None


class _RecordingWriter:
    """A binary file that remembers the OSError its last write raised.

    torch.save reports a failed write of the file object it was given as its own RuntimeError
    ("[enforce fail at inline_container.cc] unexpected pos ..."), losing the cause; this keeps
    it, so a full disk mid-checkpoint is reported as one.
    """

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        try:
            self.handle.flush()
        except OSError as err:
            self.error = err
            raise

    def fileno(self) -> int:
        return self.handle.fileno()


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write through a temp file in the same directory, fsync, then `os.replace`.

    On any failure the temp file is removed and `path` keeps its previous content; a write
    error (also one `write` reports as its own exception, as torch.save does) is raised as
    WriteFailed.
    """
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    raw = os.fdopen(fd, "wb")
    handle = _RecordingWriter(raw)
    try:
        with stops_deferred():  # a kill mid-write is raised once the file is whole
            try:
                write(cast(BinaryIO, handle))  # write, flush, fileno: all torch.save uses
                handle.flush()
                os.fsync(raw.fileno())
            finally:
                raw.close()  # flushes what is still buffered: may itself fail on a full disk
            os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if not isinstance(err, Exception):  # KeyboardInterrupt, SystemExit: not a write error
            raise
        cause = err if isinstance(err, OSError) else handle.error
        if cause is not None:
            raise WriteFailed(path, cause) from None
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode()))


def read_json(path: Path) -> Any:
    """The JSON document in `path`. A missing or unreadable file raises its OSError
    (FileNotFoundError: callers decide what "none yet" means); one that is not UTF-8 JSON
    raises DamagedFile naming it, so no command shows a decoder's traceback."""
    data = path.read_bytes()
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError as err:  # UnicodeDecodeError and JSONDecodeError
        raise DamagedFile(path, json_problem(data, err)) from None
    except RecursionError:
        raise DamagedFile(path, "JSON nested too deeply to read") from None


def json_problem(data: bytes, err: ValueError) -> str:
    """What is wrong with `data`, which failed to decode as UTF-8 JSON with `err`: one line,
    the position where a person can look (an editor's line and column, a byte offset)."""
    if not data.strip():
        return "empty file"
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 text: byte 0x{data[err.start]:02x} at offset {err.start}"
    if isinstance(err, json.JSONDecodeError):
        return f"not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"
    return " ".join(str(err).split()) or type(err).__name__


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete JSON object line; a torn or corrupt line (a crash mid-append) is skipped."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return parse_jsonl(text)


def parse_jsonl(text: str) -> list[dict[str, Any]]:
    """The JSON object lines of ``text``; anything else (blank, torn, not an object) is skipped."""
    records: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line. A torn previous line gets its own line so this one parses.

    A failed append is cut off again, so the file keeps exactly its previous records.
    """
    line = json.dumps(record, separators=(",", ":")) + "\n"
    # unbuffered: a buffer left over from a failed write would be flushed again on close,
    # after the cut
    with writing(path), path.open("a+b", buffering=0) as handle:
        end = handle.seek(0, os.SEEK_END)
        if end > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                line = "\n" + line
        _append(handle, line.encode(), end, sync=True)


def append_text(path: Path, text: str) -> None:
    """Append text (a log line) to a file, not fsynced; a failed append is cut off again."""
    with writing(path), path.open("ab", buffering=0) as handle:
        _append(handle, text.encode(), handle.seek(0, os.SEEK_END), sync=False)


def _append(handle: BinaryIO, data: bytes, end: int, *, sync: bool) -> None:
    """Write all of `data` at the end (O_APPEND) of an unbuffered file, or none of it."""
    try:
        view = memoryview(data)
        while view:
            view = view[handle.write(view) or 0 :]  # a short write (disk filling up) goes on
        if sync:
            os.fsync(handle.fileno())
    except OSError:
        # Half a line on a full disk would be a torn record; truncating frees space, so it
        # works when the write did not.
        handle.truncate(end)
        raise


def reserve_space(path: Path, size: int) -> None:
    """Hold `size` bytes on path's filesystem in a file (zeros, fsynced; kept if it is there).

    Deleting it (`release_space`) makes room to record a failure on a disk that filled up
    since; a reserve that does not fit is removed and raised as WriteFailed.
    """
    if path.is_file() and path.stat().st_size == size:
        return
    try:
        with writing(path), path.open("wb") as handle:
            handle.write(bytes(size))
            handle.flush()
            os.fsync(handle.fileno())
    except WriteFailed:
        path.unlink(missing_ok=True)
        raise


def release_space(path: Path) -> None:
    """Delete a reserve made by `reserve_space` (no error if there is none)."""
    path.unlink(missing_ok=True)


@contextmanager
def held_lock(
    lock_path: Path, *, timeout: float, busy: str, poll_seconds: float = 0.05
) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` (filelock: `fcntl.flock` here, so the kernel drops
    it when its holder dies) for the body; one transaction, never nested.

    SratError(`busy`) when another process holds it for `timeout` seconds; WriteFailed when the
    lock file cannot be created (a full or read-only home, no inodes left). A FileLock object
    per call: filelock's per-object reentrancy counters would otherwise be shared by threads.
    """
    lock = FileLock(str(lock_path), timeout=timeout)
    try:
        lock.acquire(poll_interval=poll_seconds)
    except Timeout:
        raise SratError(busy) from None
    except OSError as err:
        raise WriteFailed(lock_path, err) from None
    try:
        yield
    finally:
        lock.release()
