"""The semantic-similarity soft-label target of a batch (paper eqs. 4–5).

Image i carries c_i >= 1 structured labels; the batch's texts are M label strings. The target is

    S[i, j] = max_{l in labels(i)} cos(v_l, v_{t_j})

with v the E_sim embeddings of the label strings, precomputed once (medfilip.embeddings) and
held as L2-normalised rows of an (L, D) tensor. Per batch this is a gather, one matmul over the
batch's sum(c_i) labels, and a segment max (scatter_reduce "amax") back to the N images, on the
device of ``vectors``. The reference code's variant keeps a similarity only where the image
label's category equals the text's category (``variant="same_category"``) and zeroes it
elsewhere, before the max.

Three corrections make the target a sound one (issue 11):

- **Polarity.** With ``labels.negated: keep`` a negated label ("no pneumothorax") and a stated
  one ("large apical pneumothorax, where ...") are opposites, however close their embeddings:
  given ``negated`` (L,) bool, a pair of labels of different polarity scores 0 in every variant.
- **Calibration.** Raw E_sim cosines of unrelated findings are high (MiniLM: median 0.38 across
  categories, 0.94 within one), so a row-normalised target spreads most of its mass over texts
  that are not the image's. :class:`Calibration` maps a cosine s to a target monotonically, with
  1 kept at 1: ``floor`` ``clamp((s - c) / (1 - c), 0, 1)``, ``temperature`` ``exp((s - 1) / t)``.
  Its parameter comes from label statistics alone (:mod:`medfilip.embeddings.calibration`).
  It is applied before the max, which it commutes with.
- **Own texts are 1.** ``positives`` (N, M) marks each image's own texts; they get exactly 1
  even when the text column was made from another image's label (two labels masked to the same
  string) -- without it the image's own target would be cos(its label, the other label).

A control (target ``ssm_shuffled``, issue 19): :func:`shuffle_non_positives` permutes each row's
values over its non-positive columns -- the SSM's amount of smoothing, none of its structure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch

from medfilip.names import CalibrationMethod, values

VARIANTS = ("paper", "same_category")


@dataclass(frozen=True)
class Calibration:
    """A monotone map of SSM cosines to targets, 1 -> 1 (see the module docstring).

    ``floor``: cosines at or under ``floor`` become 0, the rest are stretched linearly to [0, 1].
    ``temperature``: ``exp((s - 1) / temperature)``. ``stats`` records how the parameter was derived
    (label statistics only), for the file written beside the embeddings.
    """

    method: str = "none"
    floor: float | None = None
    temperature: float | None = None
    stats: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if self.method not in values(CalibrationMethod):
            raise ValueError(
                f"ssm calibration: method {self.method!r} is not one of {', '.join(values(CalibrationMethod))}"
            )
        if self.method == "floor" and (self.floor is None or not -1.0 <= self.floor < 1.0):
            raise ValueError(f"ssm calibration: floor must be in [-1, 1), got {self.floor!r}")
        if self.method == "temperature" and (self.temperature is None or not self.temperature > 0):
            raise ValueError(f"ssm calibration: temperature must be > 0, got {self.temperature!r}")

    def apply(self, sims: torch.Tensor) -> torch.Tensor:
        """The calibrated target of cosines ``sims`` (any shape; same dtype and device)."""
        if self.method == "floor":
            return ((sims - self.floor) / (1.0 - self.floor)).clamp(0.0, 1.0)
        if self.method == "temperature":
            return torch.exp((sims.clamp(-1.0, 1.0) - 1.0) / self.temperature)
        return sims

    def describe(self) -> str:
        if self.method == "floor":
            return f"floor {self.floor:.3f}"
        if self.method == "temperature":
            return f"temperature {self.temperature:.4f}"
        return "uncalibrated"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "calibration") -> Calibration:
        unknown = set(data) - {"method", "floor", "temperature", "stats"}
        if unknown:
            raise ValueError(f"{source}: unknown fields {sorted(unknown)}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from err


LabelIds = Sequence[Sequence[int]] | Sequence[torch.Tensor]


def _flatten(image_label_ids: LabelIds, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(label ids of all images concatenated, owning image index of each), both long on ``device``."""
    if len(image_label_ids) == 0:
        raise ValueError("ssm: the batch has no images")
    counts = [len(ids) for ids in image_label_ids]
    empty = [i for i, c in enumerate(counts) if c == 0]
    if empty:
        raise ValueError(
            f"ssm: image #{empty[0]} of the batch has no label (each image needs c_i >= 1; "
            f"give a report without findings its normal label)"
        )
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
    *,
    negated: torch.Tensor | None = None,
    calibration: Calibration | None = None,
    positives: torch.Tensor | None = None,
    similarity: torch.Tensor | None = None,
) -> torch.Tensor:
    """The (N, M) soft-label target: S[i, j] = max over image i's labels l of v_l · v_{text_j}.

    ``image_label_ids``: per image, its label ids (rows of ``vectors``; duplicates allowed).
    ``text_label_ids``: (M,) label id of each batch text. ``vectors``: (L, D), rows L2-normalised.
    ``categories``: (L,) long category id of each label, needed by ``variant="same_category"``.
    ``negated``: (L,) bool, a label's polarity: pairs of different polarity score 0.
    ``calibration``: applied to every cosine (before the max). ``positives``: (N, M) bool, each
    image's own texts, set to exactly 1. The result has the dtype and device of ``vectors``.
    ``similarity``: (L, L) label similarities that replace the cosines ``v_l · v_m`` (the controlled
    worlds' oracle, ``medfilip.worlds``); ``vectors`` then only gives L, the dtype and the device.
    """
    if variant not in VARIANTS:
        raise ValueError(f"ssm: variant {variant!r} is not one of {', '.join(VARIANTS)}")
    device = vectors.device
    flat, owner = _flatten(image_label_ids, device)
    text = torch.as_tensor(text_label_ids, dtype=torch.long, device=device).reshape(-1)
    _check_ids(flat, vectors.shape[0], "image label")
    _check_ids(text, vectors.shape[0], "text label")

    if similarity is None:
        sims = vectors.index_select(0, flat) @ vectors.index_select(0, text).T  # (sum c_i, M)
    else:
        similarity = torch.as_tensor(similarity, dtype=vectors.dtype, device=device)
        if similarity.shape != (vectors.shape[0], vectors.shape[0]):
            raise ValueError(f"ssm: similarity of shape {tuple(similarity.shape)} for {vectors.shape[0]} labels")
        sims = similarity.index_select(0, flat).index_select(1, text)
    if variant == "same_category":
        if categories is None:
            raise ValueError("ssm: variant 'same_category' needs the category id of every label (categories=)")
        categories = torch.as_tensor(categories, device=device)
        if categories.shape[0] != vectors.shape[0]:
            raise ValueError(f"ssm: {categories.shape[0]} categories for {vectors.shape[0]} label vectors")
        same = categories.index_select(0, flat)[:, None] == categories.index_select(0, text)[None, :]
        sims = torch.where(same, sims, torch.zeros((), dtype=sims.dtype, device=device))
    if calibration is not None:
        sims = calibration.apply(sims)
    if negated is not None:
        negated = torch.as_tensor(negated, dtype=torch.bool, device=device)
        if negated.shape[0] != vectors.shape[0]:
            raise ValueError(f"ssm: {negated.shape[0]} polarities for {vectors.shape[0]} label vectors")
        agree = negated.index_select(0, flat)[:, None] == negated.index_select(0, text)[None, :]
        sims = torch.where(agree, sims, torch.zeros((), dtype=sims.dtype, device=device))

    target = sims.new_zeros((len(image_label_ids), text.shape[0]))
    # every image owns >= 1 row of sims, so include_self=False leaves no zero-initialised cell behind
    target.scatter_reduce_(0, owner[:, None].expand_as(sims), sims, reduce="amax", include_self=False)
    if positives is not None:
        positives = torch.as_tensor(positives, dtype=torch.bool, device=device)
        if positives.shape != target.shape:
            raise ValueError(f"ssm: positives of shape {tuple(positives.shape)} for a target of {tuple(target.shape)}")
        target = target.masked_fill(positives, 1.0)
    return target


def shuffle_non_positives(target: torch.Tensor, positives: torch.Tensor, seed: int) -> torch.Tensor:
    """The shuffled-SSM control: each row's values permuted across its non-positive columns.

    Row i keeps its multiset of values and its positives (their columns and values); the values of
    the other columns are put back in a random order, so the smoothing is the SSM's but which text
    gets which similarity is not. The permutation is drawn from ``torch.Generator().manual_seed(seed)``
    on the CPU (the same seed gives the same permutation on any device)."""
    positives = torch.as_tensor(positives, dtype=torch.bool, device=target.device)
    if positives.shape != target.shape:
        raise ValueError(f"ssm: positives of shape {tuple(positives.shape)} for a target of {tuple(target.shape)}")
    n, m = target.shape
    keys = torch.rand((n, m), generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    keys = keys.to(target.device)
    inf = torch.full((), float("inf"), dtype=torch.float64, device=target.device)
    columns = torch.arange(m, dtype=torch.float64, device=target.device).expand(n, m)
    # non-positive columns first (in column order / in random order), positives last in column order
    natural = torch.argsort(torch.where(positives, inf, columns), dim=1, stable=True)
    shuffled = torch.argsort(torch.where(positives, inf, keys), dim=1, stable=True)
    return target.scatter(1, natural, target.gather(1, shuffled))


def batch_texts(
    image_label_ids: LabelIds, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
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
