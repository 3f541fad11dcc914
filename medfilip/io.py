"""Atomic file writes and small Parquet helpers shared by every stage."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# mkstemp creates files readable by their owner only; results should get the usual permissions
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    A reader never sees a half-written file, and a killed writer leaves the old file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_parquet_atomic(table: pa.Table, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return Path(path)


def write_text_atomic(text: str, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_csv_atomic(rows: list[dict], path: str | Path, fieldnames: list[str] | None = None) -> Path:
    """Rows of dicts as a CSV file, written atomically (columns: ``fieldnames`` or the first row's keys)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fieldnames if fieldnames is not None else list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(buf.getvalue(), path)


def sha256_text(*parts: str) -> str:
    """sha256 over parts joined by a separator that cannot occur in text (NUL)."""
    h = hashlib.sha256()
    for i, part in enumerate(parts):
        if i:
            h.update(b"\x00")
        h.update(part.encode("utf-8"))
    return h.hexdigest()


def sha256_files(paths: list[Path]) -> str:
    """Content hash of files (names relative order-independent), for versioning vocabularies."""
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        h.update(p.name.encode())
        h.update(b"\x00")
        h.update(p.read_bytes())
        h.update(b"\x00")
    return h.hexdigest()


@contextmanager
def folder_lock(root: str | Path) -> Iterator[None]:
    """An exclusive lock on a folder (``flock`` on ``root/.lock``): other processes wait."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def part_file_name(tag: str | None = None) -> str:
    """A unique name for a Parquet part of a cache folder; names sort in the order they were made."""
    return f"part-{time.time_ns():020d}-{os.getpid()}-{tag or uuid.uuid4().hex[:8]}.parquet"


def cache_parts(root: str | Path) -> list[Path]:
    """The Parquet parts of a cache folder, oldest first (none when the folder does not exist yet)."""
    root = Path(root)
    return sorted(root.glob("part-*.parquet")) if root.is_dir() else []


def read_cache_parts(
    root: str | Path, schema: pa.Schema, columns: list[str] | None = None, filters=None, attempts: int = 50
) -> pa.Table:
    """All parts of a cache folder as one table (``columns`` of ``schema``, or all of it; only the rows
    matching ``filters``, a pyarrow expression pushed down to row groups, when given).

    A concurrent compaction may remove a part between listing and reading. Its rows are then in the
    part that compaction renamed in before removing anything, so the folder is listed again and the
    parts not read yet are read (the parts read already are kept: a key may come twice, which the
    caches' readers resolve). ``attempts`` listings at most, with a growing pause between them (about a
    minute in all: an NFS client may list a folder from its cache for up to its acdirmax, 60 s by default).
    """
    read: dict[Path, pa.Table] = {}
    for attempt in range(attempts):
        vanished = False
        for part in cache_parts(root):
            if part in read:
                continue
            try:
                read[part] = pq.read_table(part, schema=schema, columns=columns, filters=filters)
            except OSError as e:
                if not isinstance(e, FileNotFoundError) and getattr(e, "errno", None) != errno.ESTALE and part.exists():
                    raise
                vanished = True
        if not vanished:
            break
        time.sleep(min(0.05 * (attempt + 1), 2.0))
    else:
        raise RuntimeError(
            f"{root}: cache parts kept disappearing over {attempts} listings; is another process compacting in a loop?"
        )
    if read:
        return pa.concat_tables(read.values())
    return (schema if columns is None else pa.schema([schema.field(c) for c in columns])).empty_table()


class _LineStream:
    """A stream that writes each progress-bar refresh as its own line (a log file shows every update,
    not one line of carriage returns)."""

    def __init__(self, stream):
        self.stream = stream
        self._last = None

    def write(self, text: str) -> None:
        text = text.replace("\x1b[A", "").strip("\r\n ").split("\r")[-1].strip()
        head = text.split(",")[0]  # "desc: n/total unit (p%)": closing the bar repeats the last count
        if text and head != self._last:
            self.stream.write(text + "\n")
            self._last = head

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(
    iterable=None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    disable: bool = False,
    lines: int = 10,
    stream=None,
    **kwargs,
):
    """A tqdm bar; when the stream is not a terminal (a rule's log), about ``lines`` plain lines,
    one every 1/lines of the work, instead of one line of carriage returns."""
    import math
    import sys

    from tqdm.auto import tqdm

    stream = stream if stream is not None else sys.stderr
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if stream.isatty() if hasattr(stream, "isatty") else False:
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=stream, **kwargs)
    kwargs.pop("mininterval", None)
    every = max(1, math.ceil((total or 0) / lines)) if total else 1
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=disable,
        file=_LineStream(stream),
        miniters=every,
        mininterval=0,
        maxinterval=float("inf"),
        bar_format="{desc}: {n_fmt}/{total_fmt} {unit}s ({percentage:.0f}%), {elapsed} elapsed, "
        "{remaining} left, {rate_fmt}{postfix}",
        **kwargs,
    )


def save_figure(fig, path: str | Path, dpi: int) -> Path:
    """A matplotlib figure as a PNG, written atomically; the figure is closed afterwards."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return path
