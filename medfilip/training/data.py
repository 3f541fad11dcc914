"""Pretraining data: corpus images joined to their report's labels, masked label texts, batch targets.

- :func:`read_label_table` reads one label variant of ``labels.parquet``, streamed a batch of rows
  at a time into numpy codes: the unique labels (by label_key, sorted, so ids are stable) and, per
  report, the ids of its labels (:class:`ReportLabels`); :func:`training_items` joins them to the
  store's images in Arrow. Lists of label ids are :class:`LabelLists` (offsets + values arrays),
  not one Python list per image.
- :class:`PretrainingDataset` items are keyed ``(epoch, i)``: image ``i`` of the training split as
  uint8 plus its label ids and label texts, where severity, location and explanation are each
  dropped with ``mask_probability`` and the text re-rendered (paper Fig. 3). All randomness of an
  item comes from ``np.random.default_rng((seed, epoch, i))``, so an item is the same whichever
  worker builds it and whenever a resumed run asks for it.
- :class:`EpochBatchSampler` is the distributed sampler: one seeded permutation per epoch, cut
  into global batches (the incomplete last one dropped), each rank taking its slice; it can start
  an epoch at any batch, which is what resuming needs.
- :class:`BatchCollator` stacks images, makes the batch's texts (distinct masked texts, in order
  of first appearance, each tied to the label it came from), tokenises them and builds the
  (N x M) target: SSM from the cached E_sim vectors of the unmasked labels (medfilip.ssm),
  category multi-hot, identity, or the shuffled-SSM control (each row's SSM values permuted over
  its non-positive texts, seeded by the run's seed and the batch's content).
- With ``training.masked_targets: entailment`` a :class:`TextTable` holds every masked form of
  every label (:func:`masked_forms`, at most 8 a label): a text's SSM target is computed from its
  own vector, and it is a positive of every image with a label that entails it (same category and
  polarity, every field the text states equal), not of its source image only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from medfilip.labels.templates import render_label

log = logging.getLogger(__name__)

MASKABLE_VARIANTS = ("triplet", "triplet_explanation")
TARGET_KINDS = ("ssm", "ssm_same_category", "multi_hot", "identity", "ssm_shuffled")


class TrainingDataError(ValueError):
    """Inputs that cannot make a training set; the message names the file and what is missing."""


@dataclass(frozen=True)
class LabelTable:
    """The unique labels of one variant; label id = row number."""

    variant: str
    texts: list[str]
    keys: list[str]
    categories: list[str | None]
    severities: list[str | None]
    locations: list[str | None]
    explanations: list[str | None]
    polarities: list[str | None]

    def __len__(self) -> int:
        return len(self.texts)

    def negated(self) -> torch.Tensor:
        """(L,) bool: the label is a negated finding ("no pneumothorax")."""
        return torch.tensor([p == "negated" for p in self.polarities], dtype=torch.bool)

    def category_keys(self) -> list[str | None]:
        """Per label, its category, with negated ones apart ("no pneumothorax" is not "pneumothorax")."""
        return [(f"no {c}" if p == "negated" else c) if c else None for c, p in zip(self.categories, self.polarities)]

    def category_ids(self) -> torch.Tensor:
        """(L,) long: an integer per distinct (category, polarity) (-1 for none), for same-category and
        multi-hot targets."""
        keys = self.category_keys()
        index = {c: i for i, c in enumerate(sorted({c for c in keys if c}))}
        return torch.tensor([index[c] if c else -1 for c in keys], dtype=torch.long)


LABEL_COLUMNS = (
    "report_id",
    "variant",
    "label",
    "label_key",
    "category",
    "severity",
    "location",
    "polarity",
    "explanation",
)
_INFO_COLUMNS = ["label_key", "label", "category", "severity", "location", "polarity", "explanation"]


class LabelLists(Sequence):
    """Lists of label ids held as two numpy arrays (CSR): list ``i`` is ``values[offsets[i]:offsets[i+1]]``.

    ``lists[i]`` is a ``list[int]`` (what the old list of lists held); ``lists[array or slice]`` and
    :meth:`take` select lists without leaving numpy. 377k images cost two arrays, not 377k Python lists
    (and a DataLoader worker receives two arrays when the dataset is pickled to it).
    """

    __slots__ = ("offsets", "values")

    def __init__(self, offsets: np.ndarray, values: np.ndarray):
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.values = np.asarray(values, dtype=np.int32)
        o = self.offsets
        if o.ndim != 1 or len(o) == 0 or o[0] != 0 or o[-1] != len(self.values):
            raise ValueError("offsets must start at 0 and end at len(values)")

    @classmethod
    def from_lists(cls, lists: Sequence[Sequence[int]]) -> LabelLists:
        lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        values = np.fromiter((v for x in lists for v in x), dtype=np.int32, count=int(offsets[-1]))
        return cls(offsets, values)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __getitem__(self, i):
        if isinstance(i, (int, np.integer)):
            n = len(self)
            j = int(i) + n if i < 0 else int(i)
            if not 0 <= j < n:
                raise IndexError(f"list {i} of {n}")
            return self.values[self.offsets[j] : self.offsets[j + 1]].tolist()
        return self.take(np.arange(len(self))[i])

    def take(self, indices: Sequence[int] | np.ndarray) -> LabelLists:
        """The lists at ``indices`` (in that order), as a new LabelLists."""
        idx = np.asarray(indices, dtype=np.int64)
        starts = self.offsets[:-1][idx]
        lengths = self.offsets[1:][idx] - starts
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        # each output slot k of list j reads values[starts[j] + (k - offsets[j])]
        gather = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        return LabelLists(offsets, self.values[gather])

    def to_lists(self) -> list[list[int]]:
        return [self[i] for i in range(len(self))]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LabelLists):
            return np.array_equal(self.offsets, other.offsets) and np.array_equal(self.values, other.values)
        if isinstance(other, Sequence):
            return len(other) == len(self) and all(list(a) == b for a, b in zip(other, self))
        return NotImplemented

    def __repr__(self) -> str:
        return f"LabelLists({len(self)} lists, {len(self.values)} ids)"


class ReportLabels(Mapping):
    """report_id -> label ids (file order, each once), as an Arrow string array of report ids (in order of
    first appearance in the file) beside a :class:`LabelLists`; a read-only mapping like the dict it
    replaces (``by_report.get(rid)``), and :meth:`positions` looks up many report ids at once in Arrow."""

    def __init__(self, report_ids: pa.Array, lists: LabelLists):
        if len(report_ids) != len(lists):
            raise ValueError("one list of label ids per report id")
        self.report_ids = report_ids
        self.lists = lists
        self._index: dict[str, int] | None = None

    @classmethod
    def from_dict(cls, by_report: Mapping[str, Sequence[int]]) -> ReportLabels:
        return cls(pa.array(list(by_report), pa.string()), LabelLists.from_lists(list(by_report.values())))

    def positions(self, report_ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Per report id, its row here, or -1 when it has no labels."""
        rows = pc.index_in(report_ids, value_set=self.report_ids)
        return np.asarray(pc.fill_null(rows, -1).to_numpy(zero_copy_only=False), dtype=np.int64)

    def __getitem__(self, report_id: str) -> list[int]:
        if self._index is None:  # built on first use only: the training join goes through positions()
            self._index = {rid: i for i, rid in enumerate(self.report_ids.to_pylist())}
        return self.lists[self._index[report_id]]

    def __iter__(self) -> Iterator[str]:
        return iter(self.report_ids.to_pylist())

    def __len__(self) -> int:
        return len(self.report_ids)


def read_label_table(
    labels_path: str | Path, variant: str, *, batch_size: int = 65_536
) -> tuple[LabelTable, ReportLabels]:
    """One variant of labels.parquet: (unique labels, report_id -> label ids in file order).

    Streamed: the file is read ``batch_size`` rows at a time with report_id and label_key as
    dictionary arrays (codes, never one Python string per row); what is kept per row is two int32
    codes. Label ids are the ranks of the sorted label keys; each label's fields come from its first
    row in the file; a report's ids are those of its rows in file order, each once. (The result is the
    one a list-of-dicts pass over the whole table gives; tests/training/test_training_data.py checks
    it against that reference.)
    """
    path = Path(labels_path)
    if not path.exists():
        raise TrainingDataError(f"{path}: no labels file (run `medfilip labels`)")
    missing = set(LABEL_COLUMNS) - set(pq.read_schema(path).names)
    if missing:
        raise TrainingDataError(f"{path}: missing columns {sorted(missing)}")
    parquet = pq.ParquetFile(path, read_dictionary=["report_id", "label_key"])
    # ids in order of first appearance in the file, as numpy codes per row; the strings once each
    report_index: dict[str, int] = {}
    key_index: dict[str, int] = {}
    report_codes, key_codes, firsts = [], [], []
    for batch in parquet.iter_batches(batch_size=batch_size, columns=list(LABEL_COLUMNS)):
        batch = batch.filter(pc.equal(batch.column("variant"), variant))
        if batch.num_rows == 0:
            continue
        keys, reports = batch.column("label_key"), batch.column("report_id")
        if keys.null_count or reports.null_count:
            raise TrainingDataError(f"{path}: null report_id or label_key in rows of variant {variant!r}")
        codes, new_rows = _first_appearance_codes(reports, report_index)
        report_codes.append(codes)
        codes, new_rows = _first_appearance_codes(keys, key_index)
        key_codes.append(codes)
        if len(new_rows):  # each label's fields: those of its first row in the file
            info = batch.select(_INFO_COLUMNS).take(pa.array(new_rows))
            firsts.append(info.set_column(0, "label_key", info.column(0).dictionary_decode()))
    if not report_codes:
        raise TrainingDataError(f"{path}: no rows of label variant {variant!r} (is it in labels.variants?)")

    # label id = rank of the label key among this variant's sorted keys
    seen_keys = list(key_index)
    del key_index
    order = sorted(range(len(seen_keys)), key=seen_keys.__getitem__)
    rank = np.empty(len(order), dtype=np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    label_ids = rank[np.concatenate(key_codes)]
    info = pa.Table.from_batches(firsts).take(pa.array(order, pa.int64()))
    labels = LabelTable(
        variant=variant,
        texts=info.column("label").to_pylist(),
        keys=info.column("label_key").to_pylist(),
        categories=info.column("category").to_pylist(),
        severities=info.column("severity").to_pylist(),
        locations=info.column("location").to_pylist(),
        explanations=info.column("explanation").to_pylist(),
        polarities=info.column("polarity").to_pylist(),
    )

    # per report (numbered in order of first appearance): its label ids in file order, each once
    reports = np.concatenate(report_codes)
    pair = reports.astype(np.int64) * len(order) + label_ids
    _, first_pair = np.unique(pair, return_index=True)
    del pair
    rows = np.sort(first_pair)
    reports, ids = reports[rows], label_ids[rows]
    counts = np.bincount(reports, minlength=len(report_index))
    lists = LabelLists(np.concatenate([[0], np.cumsum(counts)]), ids[np.argsort(reports, kind="stable")])
    return labels, ReportLabels(pa.array(list(report_index), pa.string()), lists)


def _first_appearance_codes(column: pa.DictionaryArray, index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """A batch's dictionary column -> (int32 id per row, ids numbered in order of first appearance across
    batches via ``index``, which grows; the rows of this batch where a new value first appears, in the
    order of their new ids). Only the values the batch uses become Python strings."""
    codes = column.indices.to_numpy(zero_copy_only=False)
    used, first = np.unique(codes, return_index=True)
    by_row = np.argsort(first, kind="stable")
    values = column.dictionary.take(pa.array(used[by_row])).to_pylist()
    n_before = len(index)
    ids = np.empty(len(used), dtype=np.int32)
    ids[by_row] = [index.setdefault(v, len(index)) for v in values]
    new_rows = first[by_row][ids[by_row] >= n_before]
    return ids[np.searchsorted(used, codes)], new_rows


def masked_text(labels: LabelTable, label_id: int, probability: float, rng: np.random.Generator) -> str:
    """The label's text with severity, location and explanation each dropped with ``probability``.

    Three draws per label whatever the variant, so the random stream does not depend on the data.
    Only present findings of the triplet variants are masked; other texts come back unchanged.
    """
    drop = rng.random(3) < probability
    if labels.variant not in MASKABLE_VARIANTS or probability <= 0 or not drop.any():
        return labels.texts[label_id]
    return _masked(labels, label_id, tuple(bool(d) for d in drop))


def _maskable(labels: LabelTable, label_id: int) -> bool:
    return (
        labels.variant in MASKABLE_VARIANTS
        and labels.polarities[label_id] in (None, "present")
        and bool(labels.categories[label_id])
    )


def _masked(labels: LabelTable, label_id: int, drop: tuple[bool, bool, bool]) -> str:
    """The label's text with the fields of ``drop`` (severity, location, explanation) left out."""
    if not any(drop) or not _maskable(labels, label_id):
        return labels.texts[label_id]
    return render_label(
        labels.categories[label_id],
        severity=None if drop[0] else labels.severities[label_id],
        location=None if drop[1] else labels.locations[label_id],
        explanation=None if drop[2] else labels.explanations[label_id],
        variant=labels.variant,
    )


DROP_PATTERNS = tuple((s, lo, e) for s in (False, True) for lo in (False, True) for e in (False, True))


def masked_forms(labels: LabelTable, label_id: int) -> list[tuple[str, tuple[bool, bool, bool]]]:
    """Every text :func:`masked_text` can make of a label (at most 8), each with its drop pattern
    (severity, location, explanation dropped); a string two patterns give is listed once (the first)."""
    out: dict[str, tuple[bool, bool, bool]] = {}
    for drop in DROP_PATTERNS:
        out.setdefault(_masked(labels, label_id, drop), drop)
    return list(out.items())


def stated_fields(labels: LabelTable, label_id: int, drop: tuple[bool, bool, bool] = (False, False, False)):
    """(severity, location, explanation) a text of this label states: None where dropped, absent, or not
    part of the variant's text (a triplet states no explanation; category and report texts no field)."""
    if labels.variant not in MASKABLE_VARIANTS:
        return (None, None, None)
    values = (labels.severities[label_id], labels.locations[label_id], labels.explanations[label_id])
    in_text = (True, True, labels.variant == "triplet_explanation")
    return tuple(v if (keep and not d and v) else None for v, keep, d in zip(values, in_text, drop))


@dataclass(frozen=True)
class TextTable:
    """The texts a run's batches can hold (every masked form of every label), for targets that follow
    what a text says (``training.masked_targets: entailment``).

    Row r is a distinct string with the category key (category, polarity) and the fields it states;
    :meth:`entailment` marks, per image and text, whether one of the image's labels entails the text:
    the same category and polarity, and every field the text states equal to the label's."""

    labels: LabelTable
    texts: list[str]
    index: dict[str, int]
    sources: list[int]  # per row, the (first) label it is a form of: its category and polarity
    fields: list[tuple[str | None, str | None, str | None]]

    @classmethod
    def build(cls, labels: LabelTable) -> TextTable:
        texts: list[str] = []
        index: dict[str, int] = {}
        sources, fields = [], []
        for lid in range(len(labels)):
            for text, drop in masked_forms(labels, lid):
                if text in index:
                    continue
                index[text] = len(texts)
                texts.append(text)
                sources.append(lid)
                fields.append(stated_fields(labels, lid, drop))
        return cls(labels, texts, index, sources, fields)

    def __len__(self) -> int:
        return len(self.texts)

    def ids(self, texts: Sequence[str]) -> list[int]:
        """Rows of these strings; one the table lacks is an error naming it."""
        try:
            return [self.index[t] for t in texts]
        except KeyError as err:
            raise TrainingDataError(
                f"text {err.args[0]!r} is no masked form of a label of variant {self.labels.variant!r}"
            ) from None

    def _codes(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(label category codes (L,), label field codes (L, 3), text category codes (R,), text field codes
        (R, 3)): one integer per distinct value, -1 for none / not stated."""
        cats: dict[str, int] = {}
        vals: list[dict[str, int]] = [{}, {}, {}]

        def cat(c):
            return -1 if c is None else cats.setdefault(c, len(cats))

        def val(k, v):
            return -1 if v is None else vals[k].setdefault(v, len(vals[k]))

        label_fields = [stated_fields(self.labels, lid) for lid in range(len(self.labels))]
        label_keys = self.labels.category_keys()
        lab_cat = torch.tensor([cat(c) for c in label_keys], dtype=torch.long)
        lab_f = torch.tensor([[val(k, f[k]) for k in range(3)] for f in label_fields], dtype=torch.long)
        txt_cat = torch.tensor([cat(label_keys[lid]) for lid in self.sources], dtype=torch.long)
        txt_f = torch.tensor([[val(k, f[k]) for k in range(3)] for f in self.fields], dtype=torch.long)
        return lab_cat, lab_f.reshape(-1, 3), txt_cat, txt_f.reshape(-1, 3)

    def entailment(self, image_label_ids: Sequence[Sequence[int]], text_rows: Sequence[int]) -> torch.Tensor:
        """(N, M) bool: one of image i's labels entails text row ``text_rows[j]``."""
        if not hasattr(self, "_cache"):
            object.__setattr__(self, "_cache", self._codes())
        lab_cat, lab_f, txt_cat, txt_f = self._cache
        rows = torch.as_tensor(list(text_rows), dtype=torch.long)
        flat = torch.tensor([int(x) for ids in image_label_ids for x in ids], dtype=torch.long)
        owner = torch.repeat_interleave(
            torch.arange(len(image_label_ids)), torch.tensor([len(ids) for ids in image_label_ids])
        )
        lc, lf, tc, tf = lab_cat[flat], lab_f[flat], txt_cat[rows], txt_f[rows]
        same = (lc[:, None] == tc[None, :]) & (lc[:, None] >= 0)
        stated = tf[None, :, :] >= 0
        agree = (lf[:, None, :] == tf[None, :, :]) | ~stated
        entails = same & agree.all(dim=2)  # (sum c_i, M)
        counts = torch.zeros((len(image_label_ids), len(rows)), dtype=torch.int32)
        return counts.index_add_(0, owner, entails.to(torch.int32)) > 0


def augment_image(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random resized crop (area 0.8-1, square) and rotation (+-5 degrees) of a uint8 (S, S) image."""
    size = image.shape[-1]
    scale = math.sqrt(rng.uniform(0.8, 1.0))
    angle = math.radians(rng.uniform(-5.0, 5.0))
    shift = (1.0 - scale) * rng.uniform(-1.0, 1.0, size=2)
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    theta = torch.tensor([[[cos, -sin, shift[0]], [sin, cos, shift[1]]]], dtype=torch.float32)
    x = torch.from_numpy(np.ascontiguousarray(image)).float()[None, None]
    grid = torch.nn.functional.affine_grid(theta, [1, 1, size, size], align_corners=False)
    out = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, 0].round_().clamp_(0, 255).to(torch.uint8).numpy()


class PretrainingDataset(torch.utils.data.Dataset):
    """Training images with their labels; ``dataset[(epoch, i)]`` -> dict(image, label_ids, texts)."""

    def __init__(
        self,
        store: Any,
        positions: np.ndarray,
        image_label_ids: Sequence[Sequence[int]],
        labels: LabelTable,
        *,
        mask_probability: float,
        augment: bool,
        seed: int,
    ):
        if len(positions) != len(image_label_ids):
            raise ValueError("one list of label ids per image position")
        self.store = store
        self.positions = np.asarray(positions, dtype=np.int64)
        self.image_label_ids = image_label_ids
        self.labels = labels
        self.mask_probability = float(mask_probability)
        self.augment = augment
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, i = key
        rng = np.random.default_rng((self.seed, int(epoch), int(i)))
        image = np.asarray(self.store[int(self.positions[i])])
        if self.augment:
            image = augment_image(image, rng)
        ids = self.image_label_ids[i]
        texts = [masked_text(self.labels, lid, self.mask_probability, rng) for lid in ids]
        return {"image": torch.from_numpy(np.array(image, dtype=np.uint8)), "label_ids": list(ids), "texts": texts}


def training_items(
    store: Any, by_report: Mapping[str, Sequence[int]], split: str = "train"
) -> tuple[np.ndarray, LabelLists, int]:
    """(store positions, label ids per position, number dropped) for the images of ``split`` whose
    report has labels. A join in Arrow/numpy: the store's report ids are looked up all at once."""
    positions = store.indices(split)
    if "report_id" not in store.index.column_names:
        raise TrainingDataError(f"{store.root}: index has no report_id column (not a corpus store)")
    if not isinstance(by_report, ReportLabels):
        by_report = ReportLabels.from_dict(by_report)
    rows = by_report.positions(store.index.column("report_id").take(pa.array(positions, pa.int64())))
    lengths = by_report.lists.lengths()
    keep = rows >= 0
    keep[keep] = lengths[rows[keep]] > 0
    return positions[keep].astype(np.int64), by_report.lists.take(rows[keep]), int((~keep).sum())


class EpochBatchSampler:
    """Seeded, resumable, rank-sharded batches of ``(epoch, i)`` keys.

    Epoch e's order is ``np.random.default_rng((seed, e)).permutation(n)``; global batch b is
    positions [b*G, (b+1)*G) of it (G = per-rank batch x world size, the incomplete tail dropped)
    and rank r takes [r*B, (r+1)*B) of that. ``set_epoch(e, start=b)`` starts at batch b.
    """

    def __init__(self, n_items: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1):
        self.n_items = int(n_items)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0
        self.start = 0
        if self.batches_per_epoch == 0:
            raise TrainingDataError(
                f"{n_items} training images cannot fill one batch of {batch_size} x {world_size} processes"
            )

    @property
    def batches_per_epoch(self) -> int:
        return self.n_items // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng((self.seed, int(epoch))).permutation(self.n_items)

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = self.order(self.epoch)
        g = self.batch_size * self.world_size
        for b in range(self.start, self.batches_per_epoch):
            chunk = order[b * g + self.rank * self.batch_size : b * g + (self.rank + 1) * self.batch_size]
            yield [(self.epoch, int(i)) for i in chunk]


@dataclass
class Batch:
    images: torch.Tensor  # uint8 (N, S, S)
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    target: torch.Tensor  # float32 (N, M)
    texts: list[str]
    text_label_ids: torch.Tensor  # (M,) the label each text was rendered from (entailment: L + its text row)
    # per image: its label ids and the columns of its own texts (to rebuild the target of the global
    # batch when DDP ranks gather their features, medfilip.training.gather)
    image_label_ids: list[list[int]] | None = None
    own: list[list[int]] | None = None

    def pin_memory(self) -> Batch:
        self.images = self.images.pin_memory()
        self.input_ids = self.input_ids.pin_memory()
        self.attention_mask = self.attention_mask.pin_memory()
        self.target = self.target.pin_memory()
        return self


def batch_text_table(items: Sequence[dict]) -> tuple[list[str], list[int], list[list[int]]]:
    """Distinct texts of a batch (first appearance), the label each came from, and per image the
    columns of its own texts."""
    texts: list[str] = []
    sources: list[int] = []
    column: dict[str, int] = {}
    own: list[list[int]] = []
    for item in items:
        cols = []
        for text, lid in zip(item["texts"], item["label_ids"]):
            if text not in column:
                column[text] = len(texts)
                texts.append(text)
                sources.append(int(lid))
            cols.append(column[text])
        own.append(cols)
    return texts, sources, own


def category_target(
    image_label_ids: list[list[int]], text_label_ids: torch.Tensor, categories: torch.Tensor
) -> torch.Tensor:
    """multi_hot: T[i, j] = 1 when text j's category is one of image i's categories."""
    text_cats = categories[text_label_ids]
    target = torch.zeros((len(image_label_ids), len(text_label_ids)), dtype=torch.float32)
    for i, ids in enumerate(image_label_ids):
        cats = categories[torch.as_tensor(ids, dtype=torch.long)]
        cats = cats[cats >= 0]
        target[i] = torch.isin(text_cats, cats).float()
    return target


def identity_target(own_columns: list[list[int]], n_texts: int) -> torch.Tensor:
    """identity: T[i, j] = 1 when text j is one of image i's own texts."""
    target = torch.zeros((len(own_columns), n_texts), dtype=torch.float32)
    for i, cols in enumerate(own_columns):
        target[i, cols] = 1.0
    return target


def batch_seed(seed: int, image_label_ids: Sequence[Sequence[int]], text_label_ids: Sequence[int], own) -> int:
    """A seed of this batch from the run's seed and the batch's content (its images' label ids, the
    label of each text, each image's own columns): the same batch gets the same seed in any worker,
    after a resume and, for the global batch of DDP ranks, on every rank."""
    import hashlib

    parts = [
        str(int(seed)),
        ";".join(",".join(str(int(x)) for x in ids) for ids in image_label_ids),
        ",".join(str(int(x)) for x in text_label_ids),
        ";".join(",".join(str(int(x)) for x in cols) for cols in own),
    ]
    return int.from_bytes(hashlib.sha256("|".join(parts).encode()).digest()[:8], "little") >> 1


def own_text_mask(own_columns: list[list[int]], n_texts: int) -> torch.Tensor:
    """(N, M) bool: text j is one of image i's own texts."""
    return identity_target(own_columns, n_texts).bool()


class BatchCollator:
    """Items -> :class:`Batch` (runs in the DataLoader workers)."""

    def __init__(
        self,
        target: str,
        tokenizer: Any,
        max_length: int,
        *,
        vectors: torch.Tensor | None = None,
        categories: torch.Tensor | None = None,
        negated: torch.Tensor | None = None,
        calibration: Any = None,
        seed: int = 0,
        text_table: TextTable | None = None,
    ):
        if target not in TARGET_KINDS:
            raise ValueError(f"target {target!r} is not one of {', '.join(TARGET_KINDS)}")
        if target.startswith("ssm") and vectors is None:
            raise ValueError(f"target {target!r} needs the label vectors")
        if target in ("ssm_same_category", "multi_hot") and categories is None:
            raise ValueError(f"target {target!r} needs the label categories")
        self.target = target
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.vectors = vectors
        self.categories = categories
        self.negated = negated
        self.calibration = calibration
        self.seed = int(seed)  # of the ssm_shuffled permutations (with each batch's content)
        # masked_targets: entailment -- texts are rows of the text table after the labels (id L + row):
        # vectors (L + R rows) come from the caller, categories and polarities from each row's label
        self.text_table = text_table
        if text_table is not None:
            self.n_labels = len(text_table.labels)
            rows = torch.tensor(text_table.sources, dtype=torch.long)
            if categories is not None:
                self.categories = torch.cat([categories, categories[rows]])
            if negated is not None:
                self.negated = torch.cat([negated, negated[rows]])
            if vectors is not None and vectors.shape[0] != self.n_labels + len(text_table):
                raise ValueError(
                    f"masked_targets entailment: {vectors.shape[0]} vectors for {self.n_labels} labels + "
                    f"{len(text_table)} texts"
                )

    def target_of(
        self, image_label_ids: list[list[int]], text_label_ids: torch.Tensor, own: list[list[int]], n_texts: int
    ) -> torch.Tensor:
        """The (N images x M texts) target of this collator's kind."""
        positives = own_text_mask(own, n_texts)
        if self.text_table is not None:  # a text is a positive of every image with a label that entails it
            rows = torch.as_tensor(text_label_ids, dtype=torch.long) - self.n_labels
            positives = positives | self.text_table.entailment(image_label_ids, rows.tolist())
        if self.target in ("ssm", "ssm_same_category", "ssm_shuffled"):
            from medfilip.ssm import shuffle_non_positives, ssm_target

            target = ssm_target(
                image_label_ids,
                text_label_ids,
                self.vectors,
                categories=self.categories,
                variant="same_category" if self.target == "ssm_same_category" else "paper",
                negated=self.negated,
                calibration=self.calibration,
                positives=positives,
            ).float()
            if self.target == "ssm_shuffled":
                seed = batch_seed(self.seed, image_label_ids, text_label_ids.tolist(), own)
                target = shuffle_non_positives(target, positives, seed)
            return target
        if self.target == "multi_hot":
            return category_target(image_label_ids, text_label_ids, self.categories).masked_fill(positives, 1.0)
        return positives.float()

    def __call__(self, items: Sequence[dict]) -> Batch:
        images = torch.stack([item["image"] for item in items])
        image_label_ids = [item["label_ids"] for item in items]
        texts, sources, own = batch_text_table(items)
        if self.text_table is not None:
            sources = [self.n_labels + r for r in self.text_table.ids(texts)]
        text_label_ids = torch.tensor(sources, dtype=torch.long)
        target = self.target_of(image_label_ids, text_label_ids, own, len(texts))
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return Batch(
            images, tokens["input_ids"], tokens["attention_mask"], target, texts, text_label_ids, image_label_ids, own
        )
