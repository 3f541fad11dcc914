"""The semantic-similarity soft-label target of a batch (paper eqs. 4–5).

Image i carries c_i >= 1 structured labels; the batch's texts are M label strings. The target is

    S[i, j] = max_{l in labels(i)} cos(v_l, v_{t_j})

with v the E_sim embeddings of the label strings, precomputed once (medfilip.embeddings) and
held as L2-normalised rows of an (L, D) tensor. Per batch this is a gather, one matmul over the
batch's sum(c_i) labels, and a segment max (scatter_reduce "amax") back to the N images, on the
device of ``vectors``. The reference code's variant keeps a similarity only where the image
label's category equals the text's category (``variant="same_category"``) and zeroes it
elsewhere, before the max.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

VARIANTS = ("paper", "same_category")

LabelIds = Sequence[Sequence[int]] | Sequence[torch.Tensor]


def _flatten(image_label_ids: LabelIds, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(label ids of all images concatenated, owning image index of each), both long on ``device``."""
    if len(image_label_ids) == 0:
        raise ValueError("ssm: the batch has no images")
    counts = [len(ids) for ids in image_label_ids]
    empty = [i for i, c in enumerate(counts) if c == 0]
    if empty:
        raise ValueError(f"ssm: image #{empty[0]} of the batch has no label (each image needs c_i >= 1; "
                         f"give a report without findings its normal label)")
    if all(isinstance(ids, torch.Tensor) for ids in image_label_ids):
        flat = torch.cat([ids.reshape(-1) for ids in image_label_ids]).to(device=device, dtype=torch.long)
    else:
        flat = torch.tensor([int(x) for ids in image_label_ids for x in ids], dtype=torch.long, device=device)
    owner = torch.repeat_interleave(torch.arange(len(counts), device=device), torch.tensor(counts, device=device))
    return flat, owner


def _check_ids(ids: torch.Tensor, n_labels: int, what: str) -> None:
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= n_labels):
        raise IndexError(f"ssm: {what} id out of range [0, {n_labels}): min {int(ids.min())}, max {int(ids.max())}")


def ssm_target(
    image_label_ids: LabelIds,
    text_label_ids: torch.Tensor | Sequence[int],
    vectors: torch.Tensor,
    categories: torch.Tensor | None = None,
    variant: str = "paper",
) -> torch.Tensor:
    """The (N, M) soft-label target: S[i, j] = max over image i's labels l of v_l · v_{text_j}.

    ``image_label_ids``: per image, its label ids (rows of ``vectors``; duplicates allowed).
    ``text_label_ids``: (M,) label id of each batch text. ``vectors``: (L, D), rows L2-normalised.
    ``categories``: (L,) long category id of each label, needed by ``variant="same_category"``.
    The result has the dtype and device of ``vectors``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"ssm: variant {variant!r} is not one of {', '.join(VARIANTS)}")
    device = vectors.device
    flat, owner = _flatten(image_label_ids, device)
    text = torch.as_tensor(text_label_ids, dtype=torch.long, device=device).reshape(-1)
    _check_ids(flat, vectors.shape[0], "image label")
    _check_ids(text, vectors.shape[0], "text label")

    sims = vectors.index_select(0, flat) @ vectors.index_select(0, text).T  # (sum c_i, M)
    if variant == "same_category":
        if categories is None:
            raise ValueError("ssm: variant 'same_category' needs the category id of every label (categories=)")
        categories = torch.as_tensor(categories, device=device)
        if categories.shape[0] != vectors.shape[0]:
            raise ValueError(f"ssm: {categories.shape[0]} categories for {vectors.shape[0]} label vectors")
        same = categories.index_select(0, flat)[:, None] == categories.index_select(0, text)[None, :]
        sims = torch.where(same, sims, torch.zeros((), dtype=sims.dtype, device=device))

    target = sims.new_zeros((len(image_label_ids), text.shape[0]))
    # every image owns >= 1 row of sims, so include_self=False leaves no zero-initialised cell behind
    return target.scatter_reduce_(0, owner[:, None].expand_as(sims), sims, reduce="amax", include_self=False)


def batch_texts(image_label_ids: LabelIds, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's texts and which image each belongs to.

    Returns ``(text_label_ids, positives)``: the distinct label ids of the batch in order of first
    appearance (M,), and the (N, M) bool mask of positives[i, j] = text j is one of image i's labels.
    """
    if device is None:
        first = image_label_ids[0] if len(image_label_ids) else None
        device = first.device if isinstance(first, torch.Tensor) else torch.device("cpu")
    flat, owner = _flatten(image_label_ids, torch.device(device))
    unique, inverse = torch.unique(flat, sorted=True, return_inverse=True)
    position = torch.arange(flat.shape[0], device=flat.device)
    first_seen = torch.full((unique.shape[0],), flat.shape[0], dtype=torch.long, device=flat.device)
    first_seen.scatter_reduce_(0, inverse, position, reduce="amin")
    order = torch.argsort(first_seen)  # unique ids by first appearance
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.shape[0], device=flat.device)
    positives = torch.zeros((len(image_label_ids), unique.shape[0]), dtype=torch.bool, device=flat.device)
    positives[owner, rank[inverse]] = True
    return unique[order], positives
