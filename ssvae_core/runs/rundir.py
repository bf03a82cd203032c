"""A run directory's mechanics: one writer at a time, exclusive creation, and recovery.

Every command that writes a run directory holds an exclusive lock on ``RUN_DIR/.lock``
(``fcntl.flock``, released by the OS when the process ends, however it ends); a second
writer is refused with one line naming the holder. A new run directory is created
exclusively: two ``ssvae train --out D`` started together cannot both write ``D``.

After a kill, ``recover`` removes what an interrupted atomic write left behind (a
hidden temporary file beside its target) and cuts ``metrics.jsonl`` back to the step of
the last complete checkpoint (dropping a last line the kill cut short), so that a resumed
run logs every step once; any other damage to it is refused (``ssvae_core.runs.runfiles``).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from ssvae_core.errors import ConfigError
from ssvae_core.runs.runfiles import metric_lines
from ssvae_core.training.checkpoint import atomic_write_bytes

LOCK_NAME = ".lock"
METRICS_NAME = "metrics.jsonl"
# Names that atomic_write_bytes gives its temporary files: ".{target}.{random}".
ATOMIC_TARGETS = (
    "model.ckpt", "config.toml", "report.json", "report.md", METRICS_NAME, "labels.json", "rounds.jsonl",
)


class RunLock:
    """The exclusive writer lock of one run directory; a context manager."""

    def __init__(self, run_dir: str | os.PathLike[str]):
        self.run_dir = Path(run_dir)
        self._handle: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock now or raise ``ConfigError`` naming the process that holds it."""
        path = self.run_dir / LOCK_NAME
        try:
            handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise ConfigError(
                f"cannot lock run directory {os.fspath(self.run_dir)!r}: {error.strerror}"
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(handle)
            raise ConfigError(
                f"run directory {os.fspath(self.run_dir)!r} is being written by another ssvae "
                f"process (pid {holder}); wait for it to finish"
            ) from None
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()}\n".encode("ascii"), 0)
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            os.ftruncate(self._handle, 0)
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            os.close(self._handle)
            self._handle = None

    def __enter__(self) -> RunLock:
        return self if self._handle is not None else self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def check_fresh_dir(path: Path) -> None:
    """Refuse an output path that is a file, lies below a file, or already holds files."""
    where = os.fspath(path)
    if any(parent.exists() and not parent.is_dir() for parent in path.parents):
        raise ConfigError(f"--out {where!r} lies below a file, not a directory")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {where!r} is a file; give a directory that does not exist yet")
    if path.is_dir() and any(p.name != LOCK_NAME for p in path.iterdir()):
        raise ConfigError(
            f"output directory {where!r} already exists and is not empty; "
            "choose a new --out (runs are never overwritten)"
        )


def claim_new_run_dir(path: Path) -> RunLock:
    """Create ``path`` (or take an empty one) and lock it; the caller releases the lock.

    The emptiness check is repeated under the lock, so of two commands claiming the same
    directory at once exactly one proceeds.
    """
    where = os.fspath(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"--out {where!r} lies below a file, not a directory") from None
    except OSError as error:
        raise ConfigError(f"cannot create run directory {where!r}: {error.strerror}") from None
    try:
        path.mkdir()
    except FileExistsError:
        if not path.is_dir():
            raise ConfigError(f"--out {where!r} is a file; give a directory that does not exist yet") from None
    except NotADirectoryError:
        raise ConfigError(f"--out {where!r} lies below a file, not a directory") from None
    except OSError as error:
        raise ConfigError(f"cannot create run directory {where!r}: {error.strerror}") from None
    lock = RunLock(path).acquire()
    try:
        check_fresh_dir(path)
    except ConfigError:
        lock.release()
        raise
    return lock


def recover(run_dir: Path, step: int, *, spare: Sequence[str] = ()) -> list[str]:
    """Clean up after an interrupted command; returns one line per thing repaired.

    Removes the temporary files of interrupted atomic writes and keeps only the lines of
    ``metrics.jsonl`` up to ``step`` (the last complete checkpoint's step; 0 without one).
    Temporary files of the targets in ``spare`` are left alone: the lock's holder may be
    writing them at this moment (the studio writes ``labels.json`` while it retrains).
    """
    notes = []
    targets = [target for target in ATOMIC_TARGETS if target not in spare]
    for leftover in sorted(run_dir.iterdir()):
        name = leftover.name
        if any(name.startswith(f".{target}.") for target in targets) and leftover.is_file():
            leftover.unlink()
            notes.append(f"removed {name}, left by a write that was interrupted")
    metrics = run_dir / METRICS_NAME
    if metrics.exists() or metrics.is_symlink():
        lines, cut = metric_lines(metrics)
        kept = [line for line in lines if json.loads(line)["step"] <= step]
        if cut or len(kept) != len(lines):
            atomic_write_bytes(metrics, "".join(f"{line}\n" for line in kept).encode("utf-8"))
            notes.append(
                f"cut {METRICS_NAME} back to step {step} (dropped {len(lines) - len(kept) + cut} "
                "lines logged after the last checkpoint)"
            )
    return notes
