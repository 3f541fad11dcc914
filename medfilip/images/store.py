"""The uint8 image store: decoded, resized images as memory-mapped array shards plus a Parquet index.

Layout of a store folder (``results/images/{dataset}/``)::

    index.parquet        one row per image: image_id, report_id, path, view, split, shard (int32),
                         offset (int32) plus dataset columns (corpus: ``findings``; downstream:
                         ``labels`` list<float32> of 1/0/NaN aligned with meta label_names, ``boxes``)
    arrays/000.npy       uint8 (n, S, S), read with np.load(mmap_mode="r")
    rejects.parquet      path, image_id, reason: files that could not be decoded
    meta.json            {dataset, size, n_images, n_rejects, label_names, ...}

Stores are written by :class:`ImageStoreWriter` into a temporary folder beside the target and
renamed into place by ``close()``, so a killed writer never leaves a half store. Readers
(:class:`ImageStore`) open the memory maps lazily, once per process, so a store pickles cheaply
into DataLoader workers.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

INDEX = "index.parquet"
REJECTS = "rejects.parquet"
META = "meta.json"
ARRAYS = "arrays"
FORMAT_VERSION = 1

FINDING_TYPE = pa.struct([("category", pa.string()), ("location", pa.string()), ("severity", pa.string())])
BOX_TYPE = pa.struct(
    [("category", pa.string()), ("x0", pa.float32()), ("y0", pa.float32()), ("x1", pa.float32()), ("y1", pa.float32())]
)
# Columns every index has, and the Arrow types of the dataset columns we know about
# (any other keyword column passed to add() gets the type Arrow infers).
BASE_TYPES: dict[str, pa.DataType] = {
    "image_id": pa.string(),
    "report_id": pa.string(),
    "path": pa.string(),
    "view": pa.string(),
    "split": pa.string(),
    "shard": pa.int32(),
    "offset": pa.int32(),
}
KNOWN_TYPES: dict[str, pa.DataType] = {
    "findings": pa.list_(FINDING_TYPE),
    "labels": pa.list_(pa.float32()),
    "boxes": pa.list_(BOX_TYPE),
    "width": pa.int32(),  # original pixels, before the letterbox (see medfilip.images.preprocess)
    "height": pa.int32(),
}
REJECT_SCHEMA = pa.schema([("path", pa.string()), ("image_id", pa.string()), ("reason", pa.string())])


class ImageStoreError(ValueError):
    """A store folder that cannot be read, or a record that cannot be written; the message names the file."""


def shard_file(root: Path, shard: int) -> Path:
    return Path(root) / ARRAYS / f"{shard:03d}.npy"


class ImageStore:
    """Read access to a finished store: ``len``, ``store[i]`` (S, S) uint8, ``get_batch``, labels, splits."""

    def __init__(self, root: Path, index: pa.Table, meta: dict[str, Any]):
        self.root = Path(root)
        self.index = index
        self.meta = meta
        self._shards = np.asarray(index.column("shard").to_numpy(zero_copy_only=False), dtype=np.int64)
        self._offsets = np.asarray(index.column("offset").to_numpy(zero_copy_only=False), dtype=np.int64)
        self._arrays: dict[int, np.ndarray] = {}
        self._pid = os.getpid()

    # -- opening ----------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | Path) -> ImageStore:
        """Open and check a store folder (files present, meta and index agree, offsets inside the arrays)."""
        root = Path(root)
        if not root.is_dir():
            raise ImageStoreError(f"{root}: image store folder not found")
        for name in (INDEX, META):
            if not (root / name).is_file():
                raise ImageStoreError(f"{root / name}: missing (not a finished image store)")
        try:
            meta = json.loads((root / META).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ImageStoreError(f"{root / META}: unreadable ({err})") from None
        for key in ("dataset", "size", "n_images"):
            if key not in meta:
                raise ImageStoreError(f"{root / META}: missing key {key!r}")
        try:
            index = pq.read_table(root / INDEX)
        except Exception as err:  # noqa: BLE001 - pyarrow raises several types for bad files
            raise ImageStoreError(f"{root / INDEX}: unreadable ({err})") from None
        missing = [c for c in ("image_id", "shard", "offset") if c not in index.column_names]
        if missing:
            raise ImageStoreError(f"{root / INDEX}: missing column(s) {', '.join(missing)}")
        if index.num_rows != meta["n_images"]:
            raise ImageStoreError(
                f"{root / INDEX}: {index.num_rows} rows but {root / META} says n_images = {meta['n_images']}"
            )
        store = cls(root, index, meta)
        store._check_arrays()
        return store

    def _check_arrays(self) -> None:
        size = self.size
        for shard in np.unique(self._shards):
            path = shard_file(self.root, int(shard))
            if not path.is_file():
                raise ImageStoreError(f"{path}: missing (referenced by {self.root / INDEX})")
            try:
                shape, dtype = _npy_header(path)
            except (OSError, ValueError) as err:
                raise ImageStoreError(f"{path}: not a readable .npy file ({err})") from None
            if dtype != np.uint8 or len(shape) != 3 or shape[1:] != (size, size):
                raise ImageStoreError(f"{path}: expected uint8 (n, {size}, {size}), found {dtype} {shape}")
            rows = self._offsets[self._shards == shard]
            if rows.size and (rows.min() < 0 or rows.max() >= shape[0]):
                raise ImageStoreError(
                    f"{self.root / INDEX}: offset {int(rows.max())} in shard {int(shard)} beyond {path} ({shape[0]} images)"
                )

    # -- pickling: memory maps are reopened lazily in each process ----------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def _array(self, shard: int) -> np.ndarray:
        if self._pid != os.getpid():  # forked worker: own maps, not the parent's
            self._arrays, self._pid = {}, os.getpid()
        arr = self._arrays.get(shard)
        if arr is None:
            arr = self._arrays[shard] = np.load(shard_file(self.root, shard), mmap_mode="r")
        return arr

    # -- access ---------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return int(self.meta["size"])

    @property
    def dataset(self) -> str:
        return str(self.meta["dataset"])

    @property
    def label_names(self) -> list[str]:
        return list(self.meta.get("label_names") or [])

    @property
    def image_ids(self) -> list[str]:
        return self.index.column("image_id").to_pylist()

    def __len__(self) -> int:
        return self.index.num_rows

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"image {i} out of range for {self.root} ({n} images)")
        i %= n
        return np.array(self._array(int(self._shards[i]))[self._offsets[i]])

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Images at ``indices`` as one (B, S, S) uint8 array, in the order asked; reads are sorted per shard."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = np.empty((idx.size, self.size, self.size), dtype=np.uint8)
        if idx.size == 0:
            return out
        n = len(self)
        if idx.min() < -n or idx.max() >= n:
            raise IndexError(f"indices out of range for {self.root} ({n} images)")
        idx = idx % n
        shards, offsets = self._shards[idx], self._offsets[idx]
        for shard in np.unique(shards):
            pos = np.flatnonzero(shards == shard)
            order = np.argsort(offsets[pos], kind="stable")
            pos = pos[order]
            out[pos] = self._array(int(shard))[offsets[pos]]
        return out

    def labels(self) -> np.ndarray:
        """float32 (N, K) of 1 / 0 / NaN aligned with ``label_names``; (N, 0) for a store without labels."""
        k = len(self.label_names)
        if "labels" not in self.index.column_names:
            return np.full((len(self), k), np.nan, dtype=np.float32)
        out = np.full((len(self), k), np.nan, dtype=np.float32)
        for i, row in enumerate(self.index.column("labels").to_pylist()):
            if row is None:
                continue
            if len(row) != k:
                raise ImageStoreError(f"{self.root / INDEX}: row {i} has {len(row)} labels, meta names {k}")
            out[i] = [np.nan if v is None else v for v in row]
        return out

    def indices(self, split: str) -> np.ndarray:
        """Row numbers of the images in ``split`` (train / validate / test), ascending."""
        if "split" not in self.index.column_names:
            return np.empty(0, dtype=np.int64)
        mask = pc.fill_null(pc.equal(self.index.column("split"), split), False)
        return np.flatnonzero(mask.to_numpy(zero_copy_only=False)).astype(np.int64)

    def rejects(self) -> pa.Table:
        path = self.root / REJECTS
        return pq.read_table(path) if path.exists() else REJECT_SCHEMA.empty_table()

    def __repr__(self) -> str:
        return f"ImageStore({str(self.root)!r}, dataset={self.dataset!r}, n={len(self)}, size={self.size})"


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    return tuple(shape), np.dtype(dtype)


class ImageStoreWriter:
    """Builds a store in a temporary folder beside ``out_dir``; ``close()`` renames it into place.

    Images go to disk as they are added (one open shard file at a time), so memory stays at one
    image whatever the shard size. Use as a context manager: an exception discards the temporary
    folder and leaves any previous store untouched.
    """

    def __init__(
        self,
        out_dir: str | Path,
        size: int,
        dataset: str = "images",
        shard_size: int = 2048,
        label_names: Sequence[str] | None = None,
        column_types: dict[str, pa.DataType] | None = None,
    ):
        if size < 1 or shard_size < 1:
            raise ValueError(f"size and shard_size must be positive (got {size}, {shard_size})")
        self.out_dir = Path(out_dir)
        self.size = int(size)
        self.dataset = dataset
        self.shard_size = int(shard_size)
        self.label_names = list(label_names) if label_names is not None else None
        # base columns keep their types; then the caller's (e.g. the source table's), then the known ones
        self.column_types = {**KNOWN_TYPES, **(column_types or {})}
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_dir = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.", suffix=".tmp", dir=self.out_dir.parent))
        (self.tmp_dir / ARRAYS).mkdir()
        self._rows: list[dict[str, Any]] = []
        self._ids: set[str] = set()
        self._paths: dict[str, Any] = {}
        self._rejects: list[dict[str, str | None]] = []
        self._shard = 0
        self._in_shard = 0
        self._part: Any = None
        self._closed = False

    # -- adding ---------------------------------------------------------------------------
    def add(self, image_id: str, array: np.ndarray, **columns: Any) -> bool:
        """One image (uint8 (S, S)) and its index columns (report_id, path, view, split, findings, labels ...).

        An image_id already in the store (``x.png`` and ``x.jpg`` both give ``x``) is not added: it
        becomes a reject row naming the file that has the id, and False is returned.
        """
        self._check_open()
        if image_id in self._ids:
            first = self._paths.get(image_id)
            self.add_reject(
                columns.get("path"),
                image_id,
                f"duplicate image_id: {image_id!r} is already taken by "
                f"{first if first is not None else 'an earlier image'}; this file is left out "
                "(rename one of them to keep both)",
            )
            log.warning(
                "%s: image_id %r given twice (%s and %s); the second is a reject",
                self.out_dir,
                image_id,
                first,
                columns.get("path"),
            )
            return False
        array = np.asarray(array)
        if array.dtype != np.uint8 or array.shape != (self.size, self.size):
            raise ImageStoreError(
                f"{self.out_dir}: image {image_id!r} is {array.dtype} {array.shape}, expected uint8 ({self.size}, {self.size})"
            )
        labels = columns.get("labels")
        if labels is not None and self.label_names is not None and len(labels) != len(self.label_names):
            raise ImageStoreError(
                f"{self.out_dir}: image {image_id!r} has {len(labels)} labels, expected {len(self.label_names)}"
            )
        if self._part is None:
            self._part = open(self._part_path(self._shard), "wb")  # noqa: SIM115 - kept open across add() calls
        self._part.write(np.ascontiguousarray(array).tobytes())
        self._rows.append({"image_id": image_id, **columns, "shard": self._shard, "offset": self._in_shard})
        self._ids.add(image_id)
        self._paths[image_id] = columns.get("path")
        self._in_shard += 1
        if self._in_shard == self.shard_size:
            self._finish_shard()
        return True

    def add_reject(self, path: str | Path | None, image_id: str | None, reason: str) -> None:
        self._check_open()
        self._rejects.append({"path": None if path is None else str(path), "image_id": image_id, "reason": reason})

    @property
    def n_images(self) -> int:
        return len(self._rows)

    @property
    def n_rejects(self) -> int:
        return len(self._rejects)

    def _part_path(self, shard: int) -> Path:
        return self.tmp_dir / ARRAYS / f"{shard:03d}.part"

    def _finish_shard(self) -> None:
        """The raw bytes of the shard behind an .npy header for its final image count."""
        if self._part is None:
            return
        self._part.close()
        self._part = None
        part = self._part_path(self._shard)
        final = shard_file(self.tmp_dir, self._shard)
        with open(final, "wb") as out, open(part, "rb") as raw:
            header = {"descr": "|u1", "fortran_order": False, "shape": (self._in_shard, self.size, self.size)}
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(raw, out, length=16 << 20)
        part.unlink()
        self._shard += 1
        self._in_shard = 0

    # -- finishing ------------------------------------------------------------------------
    def _index_table(self) -> pa.Table:
        names = list(BASE_TYPES)
        for row in self._rows:
            names.extend(k for k in row if k not in names)
        fields = []
        for name in names:
            typ = BASE_TYPES.get(name) or self.column_types.get(name)
            if typ is None:
                typ = pa.array([r.get(name) for r in self._rows]).type if self._rows else pa.null()
            fields.append(pa.field(name, typ))
        schema = pa.schema(fields)
        columns = {name: [r.get(name) for r in self._rows] for name in names}
        try:
            return pa.table({n: pa.array(columns[n], type=schema.field(n).type) for n in names}, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise ImageStoreError(f"{self.out_dir}: index columns do not fit their types ({err})") from None

    def close(self, extra_meta: dict[str, Any] | None = None) -> Path:
        """Write index, rejects and meta, then move the folder to ``out_dir`` (replacing an old store)."""
        self._check_open()
        self._finish_shard()
        index = self._index_table()
        pq.write_table(index, self.tmp_dir / INDEX, compression="zstd")
        pq.write_table(
            pa.Table.from_pylist(self._rejects, schema=REJECT_SCHEMA), self.tmp_dir / REJECTS, compression="zstd"
        )
        meta = {
            "format_version": FORMAT_VERSION,
            "dataset": self.dataset,
            "size": self.size,
            "n_images": len(self._rows),
            "n_rejects": len(self._rejects),
            "label_names": self.label_names or [],
            "shard_size": self.shard_size,
            "n_shards": self._shard,
            **(extra_meta or {}),
        }
        (self.tmp_dir / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        _replace_dir(self.tmp_dir, self.out_dir)
        self._closed = True
        log.info(
            "%s: %d images, %d rejected, %d shard(s) of %d px",
            self.out_dir,
            meta["n_images"],
            meta["n_rejects"],
            meta["n_shards"],
            self.size,
        )
        return self.out_dir

    def abort(self) -> None:
        """Discard everything written so far (the target folder is not touched)."""
        if self._part is not None:
            self._part.close()
            self._part = None
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise ImageStoreError(f"{self.out_dir}: writer already closed")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; an existing ``dst`` is moved aside first and removed after.

    Between the two renames ``dst`` is briefly absent, never half written.
    """
    old = None
    if dst.exists() or dst.is_symlink():
        if dst.is_dir() and not dst.is_symlink():
            old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
            os.replace(dst, old)
        else:
            dst.unlink()
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_store(
    out_dir: str | Path,
    images: Iterable[tuple[str, np.ndarray, dict[str, Any]]],
    *,
    size: int,
    dataset: str,
    shard_size: int = 2048,
    label_names: Sequence[str] | None = None,
) -> ImageStore:
    """Convenience for fixtures: (image_id, array, columns) triples → a finished store."""
    with ImageStoreWriter(out_dir, size, dataset, shard_size=shard_size, label_names=label_names) as writer:
        for image_id, array, columns in images:
            writer.add(image_id, array, **columns)
    return ImageStore.open(out_dir)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # no second copy of the pixels (same file system)
    except OSError:
        shutil.copyfile(src, dst)


def merge_stores(
    parts: Sequence[str | Path],
    out_dir: str | Path,
    *,
    extra_meta: dict[str, Any] | None = None,
) -> ImageStore:
    """Finished stores (one per report shard, written by separate jobs) → one store at ``out_dir``.

    The parts' array files are hard-linked (copied across file systems) under new shard numbers;
    nothing is decoded again, so merging 377k images takes seconds. Index rows keep the parts'
    order; an image id already taken by an earlier part becomes a reject row naming both files.
    The store is built beside ``out_dir`` and renamed into place, like :class:`ImageStoreWriter`.
    """
    if not parts:
        raise ImageStoreError(f"{out_dir}: no part stores to merge")
    stores = [ImageStore.open(p) for p in parts]
    first = stores[0]
    for store in stores[1:]:
        for key in ("dataset", "size", "label_names"):
            if store.meta.get(key) != first.meta.get(key):
                raise ImageStoreError(
                    f"{store.root / META}: {key} = {store.meta.get(key)!r} but "
                    f"{first.root / META} has {first.meta.get(key)!r}; parts of one store must agree"
                )
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        (tmp_dir / ARRAYS).mkdir()
        indexes, rejects = [], []
        taken: dict[str, str | None] = {}
        next_shard = 0
        for store in stores:
            n_shards = int(store.meta.get("n_shards", 0) or 0)
            for k in range(n_shards):
                _link_or_copy(shard_file(store.root, k), shard_file(tmp_dir, next_shard + k))
            index = store.index
            ids = index.column("image_id").to_pylist()
            paths = index.column("path").to_pylist() if "path" in index.column_names else [None] * len(ids)
            keep = []
            for i, (image_id, path) in enumerate(zip(ids, paths)):
                if image_id in taken:
                    rejects.append(
                        {
                            "path": path,
                            "image_id": image_id,
                            "reason": f"duplicate image_id: {image_id!r} is already taken by {taken[image_id]} "
                            f"(in an earlier part than {store.root}); this file is left out",
                        }
                    )
                    continue
                taken[image_id] = path
                keep.append(i)
            if len(keep) != len(ids):
                index = index.take(pa.array(keep, pa.int64()))
            shard = pc.add(index.column("shard"), pa.scalar(next_shard, pa.int32())).cast(pa.int32())
            indexes.append(index.set_column(index.schema.get_field_index("shard"), "shard", shard))
            rejects.extend(store.rejects().to_pylist())
            next_shard += n_shards
        index = pa.concat_tables(indexes, promote_options="default")
        pq.write_table(index, tmp_dir / INDEX, compression="zstd")
        pq.write_table(pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA), tmp_dir / REJECTS, compression="zstd")
        meta = {
            **{k: v for k, v in first.meta.items() if k not in ("n_images", "n_rejects", "n_shards")},
            "n_images": index.num_rows,
            "n_rejects": len(rejects),
            "n_shards": next_shard,
            "parts": len(stores),
            **(extra_meta or {}),
        }
        (tmp_dir / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        _replace_dir(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    log.info("%s: %d images from %d part(s), %d rejected", out_dir, meta["n_images"], len(stores), meta["n_rejects"])
    return ImageStore.open(out_dir)
