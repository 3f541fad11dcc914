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
    image_features, text_features, label_ids = gather_batch(image_features, text_features, label_ids)
    target = targets(label_ids)                                      # (N x N) from the global ids
    loss = sum(loss_fn(image_features, text_features, logit_scale, target).values())
    loss.backward()                                                  # DDP averages: no rescaling

Every rank must feed batches of the same size (a DistributedSampler with drop_last, or the
last batch padded); :func:`gather_batch` checks it. Outside a process group it returns its
inputs unchanged, so the single-process path is the same code.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _check_sizes(local: torch.Tensor, what: str) -> None:
    sizes = [torch.zeros(1, dtype=torch.long, device=local.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([local.shape[0]], dtype=torch.long, device=local.device))
    got = [int(s.item()) for s in sizes]
    if len(set(got)) != 1:
        raise ValueError(f"gather_batch: {what} batch sizes differ across ranks {got}; every rank needs the same "
                         "batch size (DistributedSampler with drop_last=True)")


def gather_with_grad(local: torch.Tensor) -> torch.Tensor:
    """All ranks' ``local`` concatenated in rank order; the gradient flows back to every rank's piece."""
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(local.contiguous()), dim=0)


def gather_no_grad(local: torch.Tensor) -> torch.Tensor:
    """All ranks' ``local`` (ids, masks: no gradient) concatenated in rank order."""
    pieces = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(pieces, local.contiguous())
    return torch.cat(pieces, dim=0)


def gather_batch(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    *extras: torch.Tensor,
    check_sizes: bool = True,
) -> tuple[torch.Tensor, ...]:
    """(image features, text features, *extras) of the whole global batch, in rank order.

    Features keep their gradient (see the module docstring for why no loss rescaling is needed);
    ``extras`` (label ids, report ids as ints ...) are gathered without one. ``check_sizes`` costs
    one tiny all_gather (a host sync): turn it off in the hot loop once the sampler guarantees it.
    """
    if not is_distributed():
        return (image_features, text_features, *extras)
    if check_sizes:
        _check_sizes(image_features, "image")
    return (gather_with_grad(image_features), gather_with_grad(text_features), *(gather_no_grad(e) for e in extras))
