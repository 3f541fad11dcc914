"""Label embeddings, computed once per (model, text) and kept in a Parquet cache.

The cache is a folder of part files (``part-*.parquet``: key, text, vector), each written
atomically, so a run killed at any moment keeps every part it flushed and the re-run embeds only
what is missing. ``key = sha256(model_id + "\\n" + text)[:32]``: the same text under another model
is another key. Snakemake deletes a job's outputs before running it, so the cache is not a rule
output; the output is a file with the vectors of exactly the current labels
(``write_label_embeddings``), which training reads with ``load_embeddings`` / ``read_embeddings``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from medfilip.embeddings.model import ModelRef, resolve_model
from medfilip.io import (
    cache_parts,
    folder_lock,
    part_file_name,
    progress_bar,
    read_cache_parts,
    write_parquet_atomic,
)

log = logging.getLogger(__name__)

EMBEDDING_SCHEMA = pa.schema([("key", pa.string()), ("text", pa.string()), ("vector", pa.list_(pa.float32()))])


class MissingEmbeddingError(ValueError):
    """A text asked for has no vector in the file."""


@dataclass(frozen=True)
class EmbedSummary:
    n_unique: int  # distinct texts asked for
    n_new: int  # of them, embedded by this call (the rest were cached)
    seconds: float
    dim: int | None  # vector size (None when nothing was asked for and the cache is empty)


def embedding_key(model_id: str, text: str) -> str:
    return hashlib.sha256(f"{model_id}\n{text}".encode()).hexdigest()[:32]


def unique_texts(texts: Iterable[str]) -> list[str]:
    """Distinct texts in order of first appearance; a non-string is an error naming its position."""
    seen: dict[str, None] = {}
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"text #{i} is {type(t).__name__} ({t!r}), not a string")  # noqa: TRY004 (bad data: exit 1)
        seen.setdefault(t, None)
    return list(seen)


def embedding_table(keys: Sequence[str], texts: Sequence[str], vectors: np.ndarray) -> pa.Table:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    offsets = pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32))
    column = pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1)), type=pa.list_(pa.float32()))
    return pa.table(
        [pa.array(list(keys), pa.string()), pa.array(list(texts), pa.string()), column], schema=EMBEDDING_SCHEMA
    )


def vectors_of(table: pa.Table) -> np.ndarray:
    """The vector column as an (n, dim) float32 matrix (all vectors must have one length)."""
    if table.num_rows == 0:
        return np.zeros((0, 0), np.float32)
    column = table.column("vector").combine_chunks()
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if lengths.min() != lengths.max():
        raise ValueError(f"vectors of different lengths ({lengths.min()} and {lengths.max()}) in one embedding file")
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=True)  # writable (torch.from_numpy)
    return flat.reshape(table.num_rows, int(lengths[0]))


class EmbeddingCache:
    """A folder of Parquet parts keyed by ``embedding_key``; duplicate keys (same model, same text) are equal."""

    def __init__(self, root: str | Path, compact_above: int = 32):
        self.root = Path(root)
        self.compact_above = compact_above

    def parts(self) -> list[Path]:
        return cache_parts(self.root)

    def read(self, columns: list[str] | None = None) -> pa.Table:
        return read_cache_parts(self.root, EMBEDDING_SCHEMA, columns)

    def keys(self) -> set[str]:
        return set(self.read(["key"]).column("key").to_pylist())

    def dim(self, key: str) -> int | None:
        """Length of the vector stored under ``key`` (None if absent)."""
        for p in self.parts():
            table = pq.read_table(p, columns=["vector"], filters=[("key", "=", key)])
            if table.num_rows:
                return len(table.column("vector")[0])
        return None

    def append(self, table: pa.Table) -> Path | None:
        if table.num_rows == 0:
            return None
        self.root.mkdir(parents=True, exist_ok=True)
        name = part_file_name()
        return write_parquet_atomic(table, self.root / name)

    def compact(self, force: bool = False) -> int:
        """Merge the parts into one when there are many; returns the number of parts merged."""
        with folder_lock(self.root):
            parts = self.parts()
            if len(parts) <= 1 or (not force and len(parts) <= self.compact_above):
                return 0
            table = dedupe_keys(pa.concat_tables([pq.read_table(p) for p in parts]))
            write_parquet_atomic(table, self.root / part_file_name("compact"))
            for p in parts:  # the merged file is in place before any part goes
                p.unlink(missing_ok=True)
            log.info("compacted %d embedding cache parts in %s (%d vectors)", len(parts), self.root, table.num_rows)
            return len(parts)


def dedupe_keys(table: pa.Table) -> pa.Table:
    """First row of each key (rows of one key hold the same vector)."""
    if table.num_rows == 0:
        return table
    keys = table.column("key").to_numpy(zero_copy_only=False)
    _, first = np.unique(keys, return_index=True)
    return table.take(pa.array(np.sort(first)))


def embed_texts(
    texts: Iterable[str],
    model: str | os.PathLike | None,
    cache_path: str | Path,
    *,
    batch_size: int = 64,
    max_length: int = 128,
    device: str = "cpu",
    progress: bool = True,
    flush_every: int = 16,
) -> EmbedSummary:
    """Embed the texts not yet in the cache (folder ``cache_path``); texts already there cost nothing.

    New texts go through the model in batches sorted by token length (less padding); every
    ``flush_every`` batches the vectors are written as a new part, so a killed run resumes from the
    last flush. The model is loaded only when there is something to embed.
    """
    t0 = time.perf_counter()
    wanted = unique_texts(texts)
    ref = resolve_model(model)
    cache = EmbeddingCache(cache_path)
    cached = cache.keys()
    keys = {t: embedding_key(ref.model_id, t) for t in wanted}
    new = [t for t in wanted if keys[t] not in cached]
    if not new:
        log.info("%d texts, all cached in %s", len(wanted), cache.root)
        dim = cache.dim(keys[wanted[0]]) if wanted else None
        return EmbedSummary(len(wanted), 0, time.perf_counter() - t0, dim)
    log.info("%d texts: %d cached, %d to embed with %s", len(wanted), len(wanted) - len(new), len(new), ref.source)
    dim = _embed_new(
        new,
        keys,
        ref,
        cache,
        batch_size=batch_size,
        max_length=max_length,
        device=device,
        progress=progress,
        flush_every=flush_every,
    )
    cache.compact()
    return EmbedSummary(len(wanted), len(new), time.perf_counter() - t0, dim)


def _embed_new(
    new: list[str],
    keys: dict[str, str],
    ref: ModelRef,
    cache: EmbeddingCache,
    *,
    batch_size: int,
    max_length: int,
    device: str,
    progress: bool,
    flush_every: int,
) -> int:
    from medfilip.embeddings.model import TextEncoder

    encoder = TextEncoder(ref, device=device, max_length=max_length, progress=progress)
    lengths = encoder.token_lengths(new)
    order = sorted(range(len(new)), key=lambda i: (-lengths[i], new[i]))  # longest first: memory peaks early
    pending_texts: list[str] = []
    pending_vectors: list[np.ndarray] = []
    dim = 0

    def flush() -> None:
        if pending_texts:
            cache.append(
                embedding_table([keys[t] for t in pending_texts], pending_texts, np.concatenate(pending_vectors))
            )
            pending_texts.clear()
            pending_vectors.clear()

    with progress_bar(total=len(new), desc="embed labels", unit="text", disable=not progress) as bar:
        try:
            for n_batch, start in enumerate(range(0, len(order), batch_size), start=1):
                batch = [new[i] for i in order[start : start + batch_size]]
                vectors = encoder.encode(batch)
                dim = vectors.shape[1]
                pending_texts.extend(batch)
                pending_vectors.append(vectors)
                if n_batch % flush_every == 0:
                    flush()
                bar.update(len(batch))
        finally:  # on Ctrl-C too: what was embedded is kept
            flush()
    return dim


def write_label_embeddings(
    texts: Iterable[str], model: str | os.PathLike | None, cache_path: str | Path, out: str | Path
) -> pa.Table:
    """The vectors of exactly these texts (distinct, first-appearance order) from the cache, written to ``out``."""
    wanted = unique_texts(texts)
    ref = resolve_model(model)
    keys = [embedding_key(ref.model_id, t) for t in wanted]
    table = _select(EmbeddingCache(cache_path).read(), keys, wanted, "key", cache_path)
    write_parquet_atomic(table, out)
    return table


def _select(table: pa.Table, values: list, texts: list[str], column: str, path) -> pa.Table:
    """Rows of ``table`` whose ``column`` equals each value, in order; a missing one is an error naming its text."""
    table = dedupe_keys(table)
    index = {v: i for i, v in enumerate(table.column(column).to_pylist())}
    missing = [t for t, v in zip(texts, values) if v not in index]
    if missing:
        shown = "; ".join(repr(t[:80]) for t in missing[:3])
        raise MissingEmbeddingError(
            f"{path}: no vector for {len(missing)} of {len(texts)} texts (e.g. {shown}); run `medfilip embed` for them"
        )
    return table.take(pa.array([index[v] for v in values], pa.int64()))


def load_embeddings(
    cache_path: str | Path, texts: Sequence[str], model: str | os.PathLike | None | type[Ellipsis] = ...
) -> np.ndarray:
    """(len(texts), dim) float32 vectors of ``texts`` in their order, from an embedding file or cache folder.

    Texts are looked up by text; pass ``model`` to look up by key instead (needed only for a cache
    folder holding vectors of more than one model). A text with no vector is a ``MissingEmbeddingError``.
    """
    path = Path(cache_path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no embedding file or cache folder (run `medfilip embed`)")
    table = EmbeddingCache(path).read() if path.is_dir() else pq.read_table(path)
    texts = list(texts)
    if model is not ...:
        ref = resolve_model(model)
        return vectors_of(_select(table, [embedding_key(ref.model_id, t) for t in texts], texts, "key", path))
    table = dedupe_keys(table)
    text_column = table.column("text").to_pylist()
    if len(set(text_column)) != len(text_column):
        raise ValueError(f"{path}: holds vectors of more than one model for the same text; pass model= to choose")
    return vectors_of(_select(table, texts, texts, "text", path))


def read_embeddings(path: str | Path) -> tuple[list[str], np.ndarray]:
    """All texts of an embedding file and their (n, dim) float32 vectors (row i belongs to text i)."""
    table = pq.read_table(path)
    return table.column("text").to_pylist(), vectors_of(table)
