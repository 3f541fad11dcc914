"""Features gathered across ranks, so DDP trains the objective of one large batch.

Without this, each rank computes its loss on its own shard only (N/W images x N/W texts): the
contrastive and SSM targets never pair an image with a text of another rank, which is a
different (and, for CLIP-style losses, weaker) objective than one batch of N.

The pattern is open_clip's ``gather_features`` with ``gather_with_grad=True``: every rank
all-gathers the image and text features of the whole batch through the differentiable
``torch.distributed.nn.functional.all_gather``, builds the (N x N) target from the gathered
label ids, and computes the same global loss. The backward of the gather sums, for each rank's
own features, the gradients every rank's copy of the loss sends to them (W identical copies:
W x dL/dx_own); DDP then averages the parameter gradients over the W ranks, so each rank holds
exactly dL/dtheta of the single-process loss on the concatenated batch.
(tests/training/test_gather.py checks loss and gradients against one process, 2 gloo ranks.)

Hook into the training step (medfilip/training/train.py), per batch::

    image_features, text_features = model(images, tokens)          # local shard (n of N)
    image_features, text_features, image_ids, text_ids = gather_batch(
        image_features, text_features, image_label_ids, text_label_ids, image_extras=1)
    target = targets(image_ids, text_ids)                            # (N x M) from the global ids
    loss = sum(loss_fn(image_features, text_features, logit_scale, target).values())
    loss.backward()                                                  # DDP averages: no rescaling

Ranks may hold different numbers of images and of texts (each batch's distinct label texts):
the pieces are padded for the collective and cut back. Outside a process group
:func:`gather_batch` returns its inputs unchanged, so the single-process path is the same code.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _padded(local: torch.Tensor, rows: int) -> torch.Tensor:
    if local.shape[0] == rows:
        return local.contiguous()
    pad = local.new_zeros((rows - local.shape[0], *local.shape[1:]))
    return torch.cat([local, pad], dim=0)  # differentiable: the gradient of the padding is dropped


def gather_with_grad(local: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """All ranks' ``local`` concatenated in rank order; the gradient flows back to every rank's piece.
    ``sizes`` (each rank's first dimension) allows pieces of different lengths (padded for the gather)."""
    from torch.distributed.nn.functional import all_gather

    if sizes is None or len(set(sizes)) == 1:
        return torch.cat(all_gather(local.contiguous()), dim=0)
    pieces = all_gather(_padded(local, max(sizes)))
    return torch.cat([piece[:n] for piece, n in zip(pieces, sizes)], dim=0)


def gather_no_grad(local: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """All ranks' ``local`` (ids, masks: no gradient) concatenated in rank order (lengths may differ
    when ``sizes`` is given)."""
    rows = max(sizes) if sizes else local.shape[0]
    pieces = [local.new_empty((rows, *local.shape[1:])) for _ in range(dist.get_world_size())]
    dist.all_gather(pieces, _padded(local.detach(), rows))
    return torch.cat([piece[:n] for piece, n in zip(pieces, sizes or [rows] * len(pieces))], dim=0)


def gather_batch(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    *extras: torch.Tensor,
    image_extras: int = 0,
) -> tuple[torch.Tensor, ...]:
    """(image features, text features, *extras) of the whole global batch, in rank order.

    Features keep their gradient (see the module docstring for why no loss rescaling is needed);
    ``extras`` (label ids ...) are gathered without one: the first ``image_extras`` of them have
    one row per image, the rest one row per text. Ranks may hold different numbers of texts (a
    batch's distinct label texts) and of images (a last, smaller batch): the pieces are padded
    for the collective and cut back, which costs one tiny all_gather of the sizes.
    """
    if not is_distributed():
        return (image_features, text_features, *extras)
    both = torch.tensor(
        [image_features.shape[0], text_features.shape[0]], dtype=torch.long, device=image_features.device
    )
    gathered = [torch.zeros_like(both) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, both)
    image_sizes = [int(g[0]) for g in gathered]
    text_sizes = [int(g[1]) for g in gathered]
    out = [gather_with_grad(image_features, image_sizes), gather_with_grad(text_features, text_sizes)]
    for k, extra in enumerate(extras):
        out.append(gather_no_grad(extra, image_sizes if k < image_extras else text_sizes))
    return tuple(out)


def global_batch_table(
    image_label_ids: list[list[int]],
    own: list[list[int]],
    texts: list[str],
    text_label_ids: list[int],
) -> tuple[list[int], list[int], list[list[int]], list[list[int]], list[int], list[int]]:
    """Every rank's batch table, joined as one batch of the concatenated items would be built.

    Returns (image sizes, text sizes, global image label ids, global own columns, the rows of the
    gathered text features to keep, their label ids): texts repeated across ranks are kept once
    (first appearance in rank order, as ``batch_text_table`` does for one batch), so the global
    target and loss are those of one process on the concatenated batch. One all_gather_object
    (a host sync) per step.
    """
    tables: list = [None] * dist.get_world_size()
    dist.all_gather_object(tables, (image_label_ids, own, texts, text_label_ids))
    return join_batch_tables(tables)


def join_batch_tables(
    tables: list[tuple[list[list[int]], list[list[int]], list[str], list[int]]],
) -> tuple[list[int], list[int], list[list[int]], list[list[int]], list[int], list[int]]:
    """The joining step of :func:`global_batch_table`: (image label ids, own columns, texts, text
    label ids) of every rank, in rank order -> the global batch table."""
    image_sizes = [len(t[0]) for t in tables]
    text_sizes = [len(t[2]) for t in tables]
    keep: list[int] = []
    kept_ids: list[int] = []
    column: dict[str, int] = {}
    all_images: list[list[int]] = []
    all_own: list[list[int]] = []
    row = 0
    for ids, own_r, texts_r, sources_r in tables:
        local = []
        for text, source in zip(texts_r, sources_r):
            if text not in column:
                column[text] = len(keep)
                keep.append(row)
                kept_ids.append(source)
            local.append(column[text])
            row += 1
        all_images.extend(ids)
        all_own.extend([[local[c] for c in cols] for cols in own_r])
    return image_sizes, text_sizes, all_images, all_own, keep, kept_ids
