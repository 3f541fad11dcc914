"""The uint8 image store: writer → open round trip, memory maps, splits, labels, atomicity, errors."""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from medfilip.images.store import (
    ImageStore,
    ImageStoreError,
    ImageStoreWriter,
    write_store,
)

SIZE = 16


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8) for _ in range(n)]


def _write(tmp_path: Path, n: int = 7, shard_size: int = 3) -> tuple[Path, list[np.ndarray]]:
    arrays = _images(n)
    out = tmp_path / "store"
    splits = ["train", "validate", "test"]
    with ImageStoreWriter(out, SIZE, "nih", shard_size=shard_size, label_names=["a", "b"]) as w:
        for i, a in enumerate(arrays):
            labels = [1.0, float("nan")] if i % 2 else [0.0, None]
            w.add(f"img{i}", a, report_id=None, path=f"/x/{i}.png", view="PA", split=splits[i % 3], labels=labels)
        w.add_reject("/x/bad.png", "bad", "truncated PNG")
    return out, arrays


def test_round_trip_arrays_columns_and_shards(tmp_path):
    out, arrays = _write(tmp_path)
    store = ImageStore.open(out)
    assert len(store) == 7 and store.size == SIZE and store.dataset == "nih"
    assert sorted(p.name for p in (out / "arrays").iterdir()) == ["000.npy", "001.npy", "002.npy"]
    for i, a in enumerate(arrays):
        np.testing.assert_array_equal(store[i], a)
    np.testing.assert_array_equal(store[-1], arrays[-1])
    assert store.index.column("shard").to_pylist() == [0, 0, 0, 1, 1, 1, 2]
    assert store.index.column("offset").to_pylist() == [0, 1, 2, 0, 1, 2, 0]
    assert store.index.column("path").to_pylist()[2] == "/x/2.png"
    assert store.index.schema.field("labels").type.value_type == pa.float32()
    # shards are plain .npy files, memory-mapped
    arr = np.load(out / "arrays" / "001.npy", mmap_mode="r")
    assert isinstance(arr, np.memmap) and arr.shape == (3, SIZE, SIZE)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["n_images"] == 7 and meta["n_rejects"] == 1 and meta["label_names"] == ["a", "b"]
    assert store.rejects().to_pylist() == [{"path": "/x/bad.png", "image_id": "bad", "reason": "truncated PNG"}]
    with pytest.raises(IndexError):
        store[7]


def test_get_batch_keeps_requested_order(tmp_path):
    out, arrays = _write(tmp_path)
    store = ImageStore.open(out)
    order = [6, 0, 4, 4, 2, 3]
    np.testing.assert_array_equal(store.get_batch(order), np.stack([arrays[i] for i in order]))
    assert store.get_batch([]).shape == (0, SIZE, SIZE)


def test_labels_nan_and_splits(tmp_path):
    out, _ = _write(tmp_path)
    store = ImageStore.open(out)
    labels = store.labels()
    assert labels.dtype == np.float32 and labels.shape == (7, 2)
    np.testing.assert_array_equal(labels[:, 0], [0, 1, 0, 1, 0, 1, 0])
    assert np.isnan(labels[:, 1]).all()
    assert store.label_names == ["a", "b"]
    assert store.indices("train").tolist() == [0, 3, 6]
    assert store.indices("test").tolist() == [2, 5]
    assert store.indices("nope").size == 0


def test_pickled_store_reopens_its_maps(tmp_path):
    out, arrays = _write(tmp_path)
    store = ImageStore.open(out)
    _ = store[4]  # opens a memory map in this process
    blob = pickle.dumps(store)
    assert len(blob) < 20_000
    clone = pickle.loads(blob)
    assert clone._arrays == {}
    np.testing.assert_array_equal(clone[4], arrays[4])


def test_replacing_a_store_and_empty_store(tmp_path):
    out, _ = _write(tmp_path)
    store = write_store(out, [], size=SIZE, dataset="nih")
    assert len(store) == 0 and store.labels().shape == (0, 0)
    assert not (out / "arrays" / "000.npy").exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_writer_rejects_wrong_arrays_and_duplicates(tmp_path):
    w = ImageStoreWriter(tmp_path / "s", SIZE, "x")
    with pytest.raises(ImageStoreError, match="'a'.*expected uint8"):
        w.add("a", np.zeros((SIZE, SIZE + 1), np.uint8))
    with pytest.raises(ImageStoreError, match="'b'.*expected uint8"):
        w.add("b", np.zeros((SIZE, SIZE), np.float32))
    w.add("c", np.zeros((SIZE, SIZE), np.uint8))
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_image_id_collision_is_a_reject_row_and_the_store_is_written(tmp_path):
    """Issue 12.6: x.png and x.jpg both give the id x: the second is a reject with the reason, the
    stage goes on, and the previous store is replaced only by the finished new one."""
    out, _ = _write(tmp_path)
    old = ImageStore.open(out)
    with ImageStoreWriter(out, SIZE, "x") as w:
        assert w.add("x", np.full((SIZE, SIZE), 1, np.uint8), path="imgs/x.png")
        assert ImageStore.open(out).image_ids == old.image_ids  # the old store is whole meanwhile
        assert not w.add("x", np.full((SIZE, SIZE), 2, np.uint8), path="imgs/x.jpg")
        assert w.add("y", np.full((SIZE, SIZE), 3, np.uint8), path="imgs/y.png")
    store = ImageStore.open(out)
    assert store.image_ids == ["x", "y"] and int(store[0][0, 0]) == 1
    (reject,) = store.rejects().to_pylist()
    assert reject["path"] == "imgs/x.jpg" and reject["image_id"] == "x"
    assert "duplicate image_id" in reject["reason"] and "imgs/x.png" in reject["reason"]
    assert store.meta["n_rejects"] == 1


def test_exception_inside_writer_leaves_old_store(tmp_path):
    out, arrays = _write(tmp_path)
    with pytest.raises(RuntimeError), ImageStoreWriter(out, SIZE, "nih") as w:  # noqa: PT012 - a failure inside the writer
        w.add("new", np.zeros((SIZE, SIZE), np.uint8))
        raise RuntimeError("stop")
    store = ImageStore.open(out)
    assert len(store) == 7
    np.testing.assert_array_equal(store[0], arrays[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_killed_writer_leaves_no_store(tmp_path):
    out = tmp_path / "store"
    script = textwrap.dedent(f"""
        import os, signal, numpy as np
        from medfilip.images.store import ImageStoreWriter
        w = ImageStoreWriter({str(out)!r}, {SIZE}, "x", shard_size=2)
        for i in range(5):
            w.add(f"i{{i}}", np.full(({SIZE}, {SIZE}), i, np.uint8))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, check=False)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    with pytest.raises(ImageStoreError, match="not found"):
        ImageStore.open(out)


def test_open_names_what_is_wrong(tmp_path):
    out, _ = _write(tmp_path)
    (out / "arrays" / "002.npy").unlink()
    with pytest.raises(ImageStoreError, match=r"arrays/002\.npy: missing"):
        ImageStore.open(out)

    out, _ = _write(tmp_path / "b")
    np.save(out / "arrays" / "002.npy", np.zeros((0, SIZE, SIZE), np.uint8))
    with pytest.raises(ImageStoreError, match=r"offset 0 in shard 2 beyond .*002\.npy \(0 images\)"):
        ImageStore.open(out)

    out, _ = _write(tmp_path / "c")
    np.save(out / "arrays" / "000.npy", np.zeros((3, SIZE, SIZE), np.float32))
    with pytest.raises(ImageStoreError, match=r"000\.npy: expected uint8"):
        ImageStore.open(out)

    out, _ = _write(tmp_path / "d")
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "n_images": 9}))
    with pytest.raises(ImageStoreError, match="7 rows but .*n_images = 9"):
        ImageStore.open(out)

    out, _ = _write(tmp_path / "e")
    (out / "index.parquet").unlink()
    with pytest.raises(ImageStoreError, match=r"index\.parquet: missing"):
        ImageStore.open(out)


def test_image_stage_goes_on_past_a_stem_collision(tmp_path):
    """x.png and x.jpg in one folder, both read as image x: one image, one reject, no abort."""
    import pyarrow as pa
    from PIL import Image

    from medfilip.images.preprocess import preprocess_images

    folder = tmp_path / "imgs"
    folder.mkdir()
    for name, value in (("x.png", 40), ("x.jpg", 200), ("z.png", 90)):
        Image.fromarray(np.full((32, 40), value, np.uint8)).save(folder / name)
    table = pa.table({"image_id": ["x", "x", "z"], "path": [str(folder / n) for n in ("x.png", "x.jpg", "z.png")]})
    store = preprocess_images(table, tmp_path / "store", size=SIZE, dataset="covid")
    assert store.image_ids == ["x", "z"]
    (reject,) = store.rejects().to_pylist()
    assert reject["path"].endswith("x.jpg") and "already taken by" in reject["reason"]
