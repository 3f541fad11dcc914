"""Frozen features: extracted once per split from a saved run, pooled before the projection, checked
against the model's hash; a run folder without model.pt is a named error before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medfilip.evaluation.features import FeatureError, extract_features, load_features, pooled_features
from medfilip.images.store import write_store
from medfilip.training.model import ModelError, build_model, save_trained
from medfilip.training.settings import ModelSettings

SPLITS = {"train": 6, "validate": 3, "test": 4}


@pytest.fixture(scope="module")
def run_and_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    model = build_model(ModelSettings(embed_dim=16, max_length=16), image_size=32, seed=0)
    save_trained(model, root / "run")
    rng = np.random.default_rng(0)
    images = []
    for split, n in SPLITS.items():
        for i in range(n):
            images.append(
                (
                    f"{split}-{i}",
                    rng.integers(0, 255, (32, 32), dtype=np.uint8),
                    {"split": split, "labels": [float(i % 2), float(1 - i % 2)]},
                )
            )
    rng.shuffle(images)  # splits interleaved in the store, as in real stores
    store = write_store(root / "store", images, size=32, dataset="toy", label_names=["pneumonia", "normal"])
    return root, model, store


def test_features_are_the_pooled_backbone_output_of_each_split(run_and_store, tmp_path):
    root, model, store = run_and_store
    out = extract_features(root / "run", root / "store", tmp_path, batch_size=4)
    assert set(out) == set(SPLITS)
    model.eval()
    for split, n in SPLITS.items():
        f = load_features(tmp_path, split, model_file=root / "run" / "model.pt")
        assert f.vectors.shape == (n, model.image.feature_dim) == (n, 512)
        assert np.array_equal(f.rows, store.indices(split))
        assert f.image_ids == [store.image_ids[r] for r in f.rows] and all(i.startswith(split) for i in f.image_ids)
        with torch.inference_mode():
            expected = pooled_features(model, torch.from_numpy(store.get_batch(f.rows))).numpy()
            projected = model.image.proj(torch.from_numpy(f.vectors)).numpy()
            direct = model.image(model.prepare_images(torch.from_numpy(store.get_batch(f.rows)))).numpy()
        np.testing.assert_allclose(f.vectors, expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(projected, direct, rtol=1e-4, atol=1e-4)  # before the projection, nothing lost
        meta = json.loads((tmp_path / f"{split}.json").read_text())
        assert meta["label_names"] == ["pneumonia", "normal"] and len(meta["model_sha256"]) == 64


def test_stale_features_and_missing_model_are_named_errors(run_and_store, tmp_path):
    root, _, _ = run_and_store
    extract_features(root / "run", root / "store", tmp_path, splits=["test"])
    other = build_model(ModelSettings(embed_dim=16, max_length=16), image_size=32, seed=1)
    save_trained(other, tmp_path / "other")
    with pytest.raises(FeatureError, match="another model"):
        load_features(tmp_path, "test", model_file=tmp_path / "other" / "model.pt")
    with pytest.raises(FeatureError, match="no cached train features"):
        load_features(tmp_path, "train")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(ModelError, match="empty_run/model.pt: no trained model"):
        extract_features(tmp_path / "empty_run", root / "store", tmp_path / "x")
    assert not (tmp_path / "x").exists(), "nothing written before the error"
