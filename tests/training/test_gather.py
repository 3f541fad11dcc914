"""DDP with gathered features trains the objective of one large batch: two gloo ranks, each with half
the batch, give the loss and the parameter gradients of one process on the concatenated batch.
Without the gather (each rank's loss on its own shard) they do not: the test can tell."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from medfilip.training.gather import gather_batch
from medfilip.training.loss import ImageTextMatchingLoss, total_loss

N, N_LABELS, DIM = 8, 5, 6


class Tiny(nn.Module):
    """An image tower (linear on pixels) and a text tower (embedding of label ids) + logit scale."""

    def __init__(self):
        super().__init__()
        self.image = nn.Sequential(nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, DIM))
        self.text = nn.Sequential(nn.Embedding(N_LABELS, 12), nn.Linear(12, DIM))
        self.logit_scale = nn.Parameter(torch.tensor(2.5))

    def forward(self, images, text_ids):
        img = nn.functional.normalize(self.image(images), dim=-1)
        txt = nn.functional.normalize(self.text(text_ids), dim=-1)
        return img, txt, self.logit_scale.exp()


# each rank's images with their label ids, and its batch's distinct label texts (3 and 4 of them:
# ranks hold different numbers of texts, as batches of real label tables do)
IMAGE_IDS = [[0, 1, 2, 1], [3, 4, 0, 2]]
TEXT_IDS = [[0, 1, 2], [3, 4, 0, 2]]


def batch():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(N, 16, generator=g)
    a = torch.rand(N_LABELS, N_LABELS, generator=g)
    ssm = (a + a.T) / 2
    ssm.fill_diagonal_(1.0)
    return images, ssm


def target_of(image_ids, text_ids, ssm, kind):
    if kind == "infonce":
        return (image_ids[:, None] == text_ids[None, :]).float()
    return ssm[image_ids][:, text_ids]


def model():
    torch.manual_seed(0)
    return Tiny()


def single_process(kind):
    images, ssm = batch()
    image_ids = torch.tensor(IMAGE_IDS[0] + IMAGE_IDS[1])
    text_ids = torch.tensor(TEXT_IDS[0] + TEXT_IDS[1])  # the concatenated batch's texts
    m = model()
    img, txt, scale = m(images, text_ids)
    loss = total_loss(ImageTextMatchingLoss(kind)(img, txt, scale, target_of(image_ids, text_ids, ssm, kind)))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}


def _rank(rank, world, store, out, kind, gather):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        images, ssm = batch()
        half = N // world
        mine = slice(rank * half, (rank + 1) * half)
        image_ids, text_ids = torch.tensor(IMAGE_IDS[rank]), torch.tensor(TEXT_IDS[rank])
        m = DDP(model())
        img, txt, scale = m(images[mine], text_ids)
        if gather:
            img, txt, image_ids, text_ids = gather_batch(img, txt, image_ids, text_ids, image_extras=1)
        loss = total_loss(ImageTextMatchingLoss(kind)(img, txt, scale, target_of(image_ids, text_ids, ssm, kind)))
        loss.backward()
        torch.save(
            {
                "loss": loss.detach(),
                "grads": {n.removeprefix("module."): p.grad.clone() for n, p in m.named_parameters()},
            },
            out / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def two_ranks(tmp_path: Path, kind: str, gather: bool):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_rank, args=(2, tmp_path / "store", tmp_path, kind, gather), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]


@pytest.mark.parametrize("kind", ["mse_ce", "infonce", "mse_bce"])
def test_gathered_ddp_equals_one_process_on_the_concatenated_batch(tmp_path, kind):
    want_loss, want_grads = single_process(kind)
    ranks = two_ranks(tmp_path, kind, gather=True)
    for got in ranks:
        torch.testing.assert_close(got["loss"], want_loss, rtol=1e-5, atol=1e-6)
        assert set(got["grads"]) == set(want_grads)
        for name, grad in want_grads.items():
            torch.testing.assert_close(got["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=f"{kind}: {name}")


def test_per_rank_loss_without_gather_is_another_objective(tmp_path):
    want_loss, want_grads = single_process("mse_ce")
    got = two_ranks(tmp_path, "mse_ce", gather=False)[0]
    assert not torch.allclose(got["grads"]["image.0.weight"], want_grads["image.0.weight"], rtol=1e-3, atol=1e-5)


def test_gather_batch_is_the_identity_in_one_process():
    x, y, ids = torch.randn(3, 2), torch.randn(5, 2), torch.arange(3)
    a, b, c = gather_batch(x, y, ids, image_extras=1)
    assert a is x and b is y and c is ids


def test_joined_batch_tables_are_the_table_of_the_concatenated_batch():
    from medfilip.training.data import batch_text_table
    from medfilip.training.gather import join_batch_tables

    rank_items = [
        [{"label_ids": [0, 1], "texts": ["a", "b"]}, {"label_ids": [2], "texts": ["c"]}],
        [
            {"label_ids": [1, 3], "texts": ["b", "d"]},
            {"label_ids": [4], "texts": ["a2"]},
            {"label_ids": [0], "texts": ["a"]},
        ],
    ]
    tables = []
    for items in rank_items:
        texts, sources, own = batch_text_table(items)
        tables.append(([it["label_ids"] for it in items], own, texts, sources))
    image_sizes, text_sizes, ids, own, keep, kept_ids = join_batch_tables(tables)
    want_texts, want_sources, want_own = batch_text_table([it for items in rank_items for it in items])
    all_texts = [t for table in tables for t in table[2]]
    assert [all_texts[k] for k in keep] == want_texts and kept_ids == want_sources and own == want_own
    assert ids == [it["label_ids"] for items in rank_items for it in items]
    assert image_sizes == [2, 3] and text_sizes == [3, 4]
