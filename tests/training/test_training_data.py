"""Label table, masking, the resumable rank-sharded sampler and the batch targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfilip.images.store import ImageStore
from medfilip.training.data import (
    BatchCollator,
    EpochBatchSampler,
    PretrainingDataset,
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
        items.append({"image": torch.zeros(4, 4, dtype=torch.uint8), "label_ids": [idx[c] for c in cats], "texts": texts})
    return items, idx


def test_collator_targets(table, tokenizer):
    labels, _ = table
    items, idx = _items(table, [
        (["atelectasis", "cardiomegaly"], ["atelectasis", "moderate cardiomegaly"]),
        (["pneumonia"], ["pneumonia"]),
        (["atelectasis"], ["atelectasis"]),  # the same masked text as image 0: one column
    ])
    vectors = torch.nn.functional.normalize(torch.randn(len(labels), 8, generator=torch.Generator().manual_seed(0)), dim=1)
    categories = labels.category_ids()
    kwargs = {"vectors": vectors, "categories": categories}
    ssm = BatchCollator("ssm", tokenizer, 16, **kwargs)(items)
    assert ssm.texts == ["atelectasis", "moderate cardiomegaly", "pneumonia"]
    assert ssm.text_label_ids.tolist() == [idx["atelectasis"], idx["cardiomegaly"], idx["pneumonia"]]
    assert ssm.images.shape == (3, 4, 4) and ssm.input_ids.shape[0] == 3
    sims = vectors @ vectors.T
    a, c, p = idx["atelectasis"], idx["cardiomegaly"], idx["pneumonia"]
    expected = torch.tensor([
        [1.0, 1.0, max(sims[a, p], sims[c, p])],
        [sims[p, a], sims[p, c], 1.0],
        [1.0, sims[a, c], sims[a, p]],
    ])
    assert torch.allclose(ssm.target, expected, atol=1e-6)
    same = BatchCollator("ssm_same_category", tokenizer, 16, **kwargs)(items).target
    assert torch.allclose(same, torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]), atol=1e-6)
    hot = BatchCollator("multi_hot", tokenizer, 16, **kwargs)(items).target
    assert torch.allclose(hot, same, atol=1e-6)
    ident = BatchCollator("identity", tokenizer, 16)(items).target
    assert torch.equal(ident, torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="needs the label vectors"):
        BatchCollator("ssm", tokenizer, 16)
