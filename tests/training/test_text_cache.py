"""The frozen-prefix text cache (training.text_cache): the same loss and gradients as the uncached
forward, and the frozen layers not run again for a string already seen."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medfilip.training.loss import ImageTextMatchingLoss, total_loss
from medfilip.training.model import ModelError, build_model
from medfilip.training.settings import ModelSettings, TrainingConfig
from medfilip.training.train import train_run

torch.set_num_threads(1)
SETTINGS = ModelSettings(embed_dim=32, max_length=48, text_trainable_layers=2)
FIRST = ["pleural effusion", "mild left base atelectasis, where the lung collapses", "cardiomegaly"]
# two strings seen in FIRST (padded there to another width) and two new ones of other lengths
SECOND = [
    "cardiomegaly",
    "large right pneumothorax, where air lies between the lung and the chest wall and the lung edge shows",
    "pleural effusion",
    "no finding",
]


@pytest.fixture(scope="module")
def model():
    model = build_model(SETTINGS, image_size=32, seed=0)
    return model.train()


def _step(model, images: torch.Tensor, texts: list[str], seed: int = 0) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and the gradient of every trained parameter of one training step (dropout seeded)."""
    model.zero_grad(set_to_none=True)
    tokens = model.tokenize(texts)
    torch.manual_seed(seed)  # the same dropout masks in the trained layers for both paths
    out = model(images, tokens["input_ids"], tokens["attention_mask"])
    target = torch.eye(len(images), len(texts))
    loss = total_loss(
        ImageTextMatchingLoss("mse_ce")(out["image_features"], out["text_features"], out["logit_scale"], target)
    )
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return float(loss.detach()), grads


def _layer_rows(model) -> tuple[list[list[int]], list]:
    """Per text layer, the batch size of each call (forward hooks), and the hook handles."""
    calls: list[list[int]] = [[] for _ in model.text.transformer_layers()]
    handles = [
        layer.register_forward_hook(lambda m, args, out, k=k: calls[k].append(int(args[0].shape[0])))
        for k, layer in enumerate(model.text.transformer_layers())
    ]
    return calls, handles


def test_cached_loss_and_gradients_equal_the_uncached_ones(model):
    images = torch.randint(0, 256, (4, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    reference = {}
    for i, texts in enumerate((FIRST, SECOND)):
        reference[i] = _step(model, images[: len(texts)], texts, seed=i)
    cache = model.text.enable_cache()
    try:
        assert len(cache) == 0  # the self-check leaves nothing behind
        # fill (every string new: the frozen layers run on this very batch, so bit for bit the same);
        # then hits mixed with misses and all hits, whose cached states were computed in a batch of
        # another width (float32 rounding of the frozen part: ~1e-6 of a gradient's scale)
        for i, texts in enumerate((FIRST, SECOND, SECOND)):
            loss, grads = _step(model, images[: len(texts)], texts, seed=min(i, 1))
            ref_loss, ref_grads = reference[min(i, 1)]
            assert grads.keys() == ref_grads.keys() and any(n.startswith("text.model.") for n in grads)
            tol = {"rtol": 0.0, "atol": 0.0} if i == 0 else {"rtol": 1e-4, "atol": 1e-5}
            assert loss == pytest.approx(ref_loss, rel=tol["rtol"], abs=tol["atol"] / 10)
            for name, grad in grads.items():
                torch.testing.assert_close(grad, ref_grads[name], **tol, msg=name)
        assert len(cache) == 5 and cache.hits == 2 + 4 and cache.misses == 3 + 2
    finally:
        model.text.cache = None


def test_frozen_layers_do_not_run_for_cached_strings(model):
    n_layers = len(model.text.transformer_layers())
    cache = model.text.enable_cache()
    calls, handles = _layer_rows(model)
    try:
        with torch.no_grad():
            model.encode_text(FIRST)
            frozen_first = [calls[k][:] for k in range(n_layers - 2)]
            for c in calls:
                c.clear()
            model.encode_text(SECOND)  # two of four strings are new
    finally:
        for h in handles:
            h.remove()
        model.text.cache = None
    assert cache.n_frozen == n_layers - 2
    assert all(rows == [3] for rows in frozen_first)
    # the frozen layers ran once, for the two new strings only; the trained layers for all four
    assert calls[: n_layers - 2] == [[2]] * (n_layers - 2)
    assert calls[n_layers - 2 :] == [[4], [4]]
    # and the layer list is whole again after each forward
    assert len(model.text.transformer_layers()) == n_layers


def test_cache_needs_a_frozen_prefix():
    everything = build_model(ModelSettings(embed_dim=16, max_length=16, text_trainable_layers=99), 32)
    with pytest.raises(ModelError, match="no frozen prefix"):
        everything.text.enable_cache()


def test_training_with_the_cache_ends_at_the_uncached_weights(corpus, tmp_path: Path):
    cfg = TrainingConfig(
        model=ModelSettings(embed_dim=16, max_length=32, text_trainable_layers=1),
        epochs=1,
        batch_size=8,
        num_workers=0,
        device="cpu",
        mask_probability=0.5,
    )
    weights = {}
    for cached in (False, True):
        result = train_run(
            "medfilip",
            cfg.model_copy(update={"text_cache": cached}),
            images_dir=corpus["images"],
            labels_path=corpus["labels"],
            embeddings_path=corpus["embeddings"],
            out_dir=tmp_path / str(cached),
            progress=False,
            return_model=True,
        )
        weights[cached] = {n: p.detach() for n, p in result.model.named_parameters() if p.requires_grad}
    assert result.steps == 3
    for name, w in weights[True].items():
        torch.testing.assert_close(w, weights[False][name], rtol=1e-4, atol=1e-5, msg=name)
    facts = (tmp_path / "True" / "config.yaml").read_text()
    assert "text_cache:" in facts and "from the cache" in facts
