"""Label table, masking, the resumable rank-sharded sampler and the batch targets."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from medfilip.images.store import ImageStore
from medfilip.training.data import (
    BatchCollator,
    EpochBatchSampler,
    LabelLists,
    LabelTable,
    PretrainingDataset,
    ReportLabels,
    TrainingDataError,
    augment_image,
    masked_text,
    read_label_table,
    training_items,
)
from medfilip.training.model import default_text_model


@pytest.fixture(scope="module")
def table(corpus):
    return read_label_table(corpus["labels"], "triplet_explanation")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_text_model())


def test_label_table_and_join_drop_images_without_labels(corpus, table):
    labels, by_report = table
    # 4 findings + the normal label; ids follow the sorted label keys
    assert len(labels) == 5 and labels.keys == sorted(labels.keys)
    assert set(labels.categories) == {"atelectasis", "pleural effusion", "cardiomegaly", "pneumonia", "normal"}
    store = ImageStore.open(corpus["images"])
    positions, ids, dropped = training_items(store, by_report)
    assert len(store.indices("train")) == 26 and dropped == 1 and len(positions) == 25
    assert all(ids_ for ids_ in ids)
    with pytest.raises(TrainingDataError, match="no rows of label variant 'triplet'"):
        read_label_table(corpus["labels"], "triplet")


def test_masking_drops_fields_but_never_the_category(table):
    labels, _ = table
    lid = labels.categories.index("atelectasis")
    full = labels.texts[lid]
    assert full == "mild left base atelectasis, where atelectasis is collapse of lung tissue"
    assert masked_text(labels, lid, 0.0, np.random.default_rng(0)) == full
    assert masked_text(labels, lid, 1.0, np.random.default_rng(0)) == "atelectasis"
    seen = {masked_text(labels, lid, 0.5, np.random.default_rng(s)) for s in range(200)}
    assert "left base atelectasis" in seen and "mild atelectasis, where atelectasis is collapse of lung tissue" in seen
    assert len(seen) == 8 and all("atelectasis" in s for s in seen)  # 2^3 keep/drop patterns


def test_items_are_a_function_of_seed_epoch_and_index(corpus, table):
    labels, by_report = table
    store = ImageStore.open(corpus["images"])
    positions, ids, _ = training_items(store, by_report)
    ds = PretrainingDataset(store, positions, ids, labels, mask_probability=0.5, augment=True, seed=3)
    a, b = ds[(1, 4)], ds[(1, 4)]
    assert torch.equal(a["image"], b["image"]) and a["texts"] == b["texts"]
    assert a["image"].dtype == torch.uint8 and a["image"].shape == (32, 32)
    other_epochs = [ds[(e, 4)] for e in range(2, 8)]
    assert any(not torch.equal(o["image"], a["image"]) for o in other_epochs)
    plain = PretrainingDataset(store, positions, ids, labels, mask_probability=0.0, augment=False, seed=3)
    assert torch.equal(plain[(0, 4)]["image"], torch.from_numpy(np.array(store[int(positions[4])])))
    image = np.array(store[0])
    moved = augment_image(image, np.random.default_rng(0))
    assert moved.dtype == np.uint8 and moved.shape == image.shape and not np.array_equal(moved, image)


def test_sampler_shards_ranks_and_resumes_mid_epoch():
    n, batch, world = 23, 3, 2
    ranks = [EpochBatchSampler(n, batch, seed=5, rank=r, world_size=world) for r in range(world)]
    assert ranks[0].batches_per_epoch == 3  # 23 // 6, the tail of 5 dropped
    for s in ranks:
        s.set_epoch(2)
    per_rank = [list(s) for s in ranks]
    flat = [i for batches in per_rank for b in batches for _, i in b]
    assert len(flat) == 18 and len(set(flat)) == 18  # disjoint across ranks
    assert all(e == 2 for batches in per_rank for b in batches for e, _ in b)
    assert [k for b in per_rank[0] for k in b] != [k for b in EpochBatchSampler(n, batch, seed=5) for k in b]
    resumed = EpochBatchSampler(n, batch, seed=5, rank=1, world_size=world)
    resumed.set_epoch(2, start=1)
    assert list(resumed) == per_rank[1][1:] and len(resumed) == 2
    with pytest.raises(TrainingDataError, match="cannot fill one batch"):
        EpochBatchSampler(5, 3, seed=0, world_size=2)


def _items(table, texts_of):
    labels, _ = table
    idx = {c: labels.categories.index(c) for c in ("atelectasis", "cardiomegaly", "pneumonia")}
    items = []
    for cats, texts in texts_of:
        items.append(
            {"image": torch.zeros(4, 4, dtype=torch.uint8), "label_ids": [idx[c] for c in cats], "texts": texts}
        )
    return items, idx


def test_collator_targets(table, tokenizer):
    labels, _ = table
    items, idx = _items(
        table,
        [
            (["atelectasis", "cardiomegaly"], ["atelectasis", "moderate cardiomegaly"]),
            (["pneumonia"], ["pneumonia"]),
            (["atelectasis"], ["atelectasis"]),  # the same masked text as image 0: one column
        ],
    )
    vectors = torch.nn.functional.normalize(
        torch.randn(len(labels), 8, generator=torch.Generator().manual_seed(0)), dim=1
    )
    categories = labels.category_ids()
    kwargs = {"vectors": vectors, "categories": categories}
    ssm = BatchCollator("ssm", tokenizer, 16, **kwargs)(items)
    assert ssm.texts == ["atelectasis", "moderate cardiomegaly", "pneumonia"]
    assert ssm.text_label_ids.tolist() == [idx["atelectasis"], idx["cardiomegaly"], idx["pneumonia"]]
    assert ssm.images.shape == (3, 4, 4) and ssm.input_ids.shape[0] == 3
    sims = vectors @ vectors.T
    a, c, p = idx["atelectasis"], idx["cardiomegaly"], idx["pneumonia"]
    expected = torch.tensor(
        [
            [1.0, 1.0, max(sims[a, p], sims[c, p])],
            [sims[p, a], sims[p, c], 1.0],
            [1.0, sims[a, c], sims[a, p]],
        ]
    )
    assert torch.allclose(ssm.target, expected, atol=1e-6)
    same = BatchCollator("ssm_same_category", tokenizer, 16, **kwargs)(items).target
    assert torch.allclose(same, torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]), atol=1e-6)
    hot = BatchCollator("multi_hot", tokenizer, 16, **kwargs)(items).target
    assert torch.allclose(hot, same, atol=1e-6)
    ident = BatchCollator("identity", tokenizer, 16)(items).target
    assert torch.equal(ident, torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="needs the label vectors"):
        BatchCollator("ssm", tokenizer, 16)


# -- the streamed label table equals the list-of-dicts one it replaced -----------------------------


def reference_read_label_table(path, variant):
    """The implementation before the streamed one (issue 13), kept verbatim as the reference."""
    table = pq.read_table(path)
    needed = {
        "report_id",
        "variant",
        "label",
        "label_key",
        "category",
        "severity",
        "location",
        "polarity",
        "explanation",
    }
    table = table.filter(pc.equal(table.column("variant"), variant))
    rows = table.select(sorted(needed)).to_pylist()
    first: dict[str, dict] = {}
    for row in rows:
        first.setdefault(row["label_key"], row)
    keys = sorted(first)
    key_id = {k: i for i, k in enumerate(keys)}
    labels = LabelTable(
        variant=variant,
        texts=[first[k]["label"] for k in keys],
        keys=keys,
        categories=[first[k]["category"] for k in keys],
        severities=[first[k]["severity"] for k in keys],
        locations=[first[k]["location"] for k in keys],
        explanations=[first[k]["explanation"] for k in keys],
        polarities=[first[k]["polarity"] for k in keys],
    )
    by_report: dict[str, list[int]] = {}
    for row in rows:
        ids = by_report.setdefault(row["report_id"], [])
        lid = key_id[row["label_key"]]
        if lid not in ids:
            ids.append(lid)
    return labels, by_report


def reference_training_items(store, by_report, split="train"):
    positions = store.indices(split)
    report_ids = store.index.column("report_id").to_pylist()
    kept, ids, dropped = [], [], 0
    for pos in positions:
        label_ids = by_report.get(report_ids[int(pos)])
        if not label_ids:
            dropped += 1
            continue
        kept.append(int(pos))
        ids.append(label_ids)
    return np.asarray(kept, dtype=np.int64), ids, dropped


def generated_labels(path, n_reports, seed=0, row_group_size=997):
    """A labels.parquet with what the streamed read must get right: several variants interleaved,
    reports in shuffled order whose rows straddle row groups, a label twice in one report, the same
    label key with different fields (the first row wins), non-ASCII keys, labels of one variant only."""
    rng = random.Random(seed)
    vocab = [f"finding {i}" for i in range(300)] + ["épanchement", "Zeichen ß", "a", "B", "0"]
    rows = []
    reports = [f"s{rng.randrange(10**8):08d}-{i}" for i in range(n_reports)]
    for rid in reports:
        for variant in ("triplet", "report", "triplet_explanation"):
            for _ in range(rng.choice([1, 1, 2, 3, 5])):
                text = rng.choice(vocab) + ("" if variant == "triplet" else f" ({variant})")
                if variant == "report" and rng.random() < 0.3:
                    text = f"report text of {rid}"
                key = text if rng.random() < 0.9 else text.upper()  # some keys shared by two texts
                rows.append(
                    {
                        "report_id": rid,
                        "variant": variant,
                        "label": text,
                        "label_key": key,
                        "category": None if variant == "report" else text.split(" (")[0],
                        "severity": rng.choice([None, "mild", "severe"]),
                        "location": rng.choice([None, "left"]),
                        "polarity": rng.choice(["present", "negated"]),
                        "explanation": rng.choice([None, "x"]),
                        "fine_grained_key": None,
                        "is_normal": False,
                    }
                )
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


@pytest.mark.parametrize("batch_size", [13, 65_536])
@pytest.mark.parametrize("variant", ["triplet", "report", "triplet_explanation"])
def test_streamed_label_table_equals_the_list_of_dicts_one(tmp_path, variant, batch_size):
    path = generated_labels(tmp_path / "labels.parquet", 1500)
    assert pq.ParquetFile(path).metadata.num_row_groups > 10
    want_labels, want_by_report = reference_read_label_table(path, variant)
    labels, by_report = read_label_table(path, variant, batch_size=batch_size)
    assert labels == want_labels
    assert list(by_report.items()) == list(want_by_report.items())  # same ids, same order, same report order
    assert isinstance(by_report.lists, LabelLists) and by_report.lists.values.dtype == np.int32
    assert len(want_by_report) == 1500 and any(len(v) > 1 for v in want_by_report.values())
    assert by_report.get("nope") is None and "nope" not in by_report


def test_training_join_and_items_equal_the_old_ones(corpus):
    store = ImageStore.open(corpus["images"])
    want_labels, want_by_report = reference_read_label_table(corpus["labels"], "triplet_explanation")
    labels, by_report = read_label_table(corpus["labels"], "triplet_explanation")
    assert labels == want_labels and dict(by_report) == want_by_report
    want_pos, want_ids, want_dropped = reference_training_items(store, want_by_report)
    for source in (by_report, want_by_report):  # the new join, given the new table or an old dict
        positions, ids, dropped = training_items(store, source)
        assert np.array_equal(positions, want_pos) and dropped == want_dropped == 1
        assert isinstance(ids, LabelLists) and ids == want_ids and ids.to_lists() == want_ids
    old = PretrainingDataset(store, want_pos, want_ids, want_labels, mask_probability=0.5, augment=True, seed=3)
    new = PretrainingDataset(store, positions, ids, labels, mask_probability=0.5, augment=True, seed=3)
    for key in [(0, 0), (1, 4), (2, len(new) - 1)]:
        a, b = old[key], new[key]
        assert torch.equal(a["image"], b["image"]) and a["texts"] == b["texts"] and a["label_ids"] == b["label_ids"]
        assert all(type(x) is int for x in b["label_ids"])


def test_label_lists_select_like_lists():
    lists = [[3, 1], [], [7], [2, 2, 9], [5]]
    ll = LabelLists.from_lists(lists)
    assert len(ll) == 5 and ll[0] == [3, 1] and ll[-1] == [5] and ll[1] == []
    assert ll.take([3, 0, 3]).to_lists() == [[2, 2, 9], [3, 1], [2, 2, 9]]
    assert ll[1:4].to_lists() == lists[1:4] and ll[np.array([4, 2])].to_lists() == [[5], [7]]
    assert ll.take([]).to_lists() == [] and list(ll) == lists
    assert pickle.loads(pickle.dumps(ll)) == ll  # what a DataLoader worker receives
    with pytest.raises(IndexError):
        ll[5]
    rl = ReportLabels.from_dict({"a": [1], "b": [2, 3]})
    assert rl["b"] == [2, 3] and list(rl) == ["a", "b"]
    assert rl.positions(pa.array(["b", "zz", "a"])).tolist() == [1, -1, 0]


def test_label_table_errors_name_the_file(tmp_path):
    with pytest.raises(TrainingDataError, match="no labels file"):
        read_label_table(tmp_path / "none.parquet", "triplet")
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"report_id": ["r"], "variant": ["triplet"]}), bad)
    with pytest.raises(TrainingDataError, match=r"bad.parquet: missing columns \['category'"):
        read_label_table(bad, "triplet")
