"""Shared file helpers: atomic writes (permissions, no half files) and the cache-folder lock."""

from __future__ import annotations

import multiprocessing
import stat
import time
from pathlib import Path

import pytest

from medfilip.io import atomic_path, folder_lock, part_file_name, write_text_atomic


def test_atomic_write_has_the_usual_permissions(tmp_path: Path):
    import medfilip.io

    path = write_text_atomic("x", tmp_path / "a.txt")
    # the process umask applies, not mkstemp's owner-only 0600
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~medfilip.io._UMASK
    if medfilip.io._UMASK == 0o022:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_failed_atomic_write_leaves_the_old_file(tmp_path: Path):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:  # noqa: PT012 - a failure inside the block
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.txt"]


def _hold(root: str, seconds: float, stamps) -> None:
    with folder_lock(root):
        stamps.append(("in", time.monotonic()))
        time.sleep(seconds)
        stamps.append(("out", time.monotonic()))


def test_folder_lock_excludes_other_processes(tmp_path: Path):
    with multiprocessing.Manager() as manager:
        stamps = manager.list()
        procs = [multiprocessing.Process(target=_hold, args=(str(tmp_path / "cache"), 0.3, stamps)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(10)
        events = [kind for kind, _ in sorted(stamps, key=lambda e: e[1])]
    assert events == ["in", "out", "in", "out"]  # never two holders at once


def test_part_file_names_are_unique_and_ordered():
    names = [part_file_name() for _ in range(50)]
    assert len(set(names)) == 50 and names == sorted(names)
    assert part_file_name("compact").endswith("-compact.parquet")


def test_progress_bar_writes_about_ten_plain_lines_to_a_log():
    """Issue 12.9: a rule's log (not a terminal) gets about ten progress lines, never carriage returns."""
    import io

    from medfilip.io import progress_bar

    log = io.StringIO()
    bar = progress_bar(total=995, desc="extract rules shard 000", unit="report", stream=log)
    for _ in range(995):
        bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert 10 <= len(lines) <= 12
    assert lines[0].startswith("extract rules shard 000: 0/995 reports (0%)")
    assert lines[-1].startswith("extract rules shard 000: 995/995 reports (100%)")
    silent = io.StringIO()
    for _ in progress_bar(range(5), desc="x", stream=silent, disable=True):
        pass
    assert silent.getvalue() == ""
