"""Retrieval: P@K and R@K against a brute-force count, the image selection, the table with intervals."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from medfilip.evaluation.retrieval import (
    evaluate_retrieval,
    image_texts,
    precision_recall_at_k,
    retrieval_images,
    write_table,
)
from medfilip.evaluation.settings import BootstrapSettings
from medfilip.images.store import ImageStore, write_store

torch.set_num_threads(1)
SIZE = 24
CATS = ["cardiomegaly", "atelectasis", "pleural effusion", "pneumothorax"]


def brute_force(sim, qkeys, gkeys, k):
    p, r = [], []
    for i in range(sim.shape[0]):
        ranked = sorted(range(sim.shape[1]), key=lambda j: (-sim[i, j], j))[:k]
        hits = sum(gkeys[j] == qkeys[i] for j in ranked)
        total = sum(g == qkeys[i] for g in gkeys)
        p.append(hits / k)
        r.append(hits / total if total else float("nan"))
    return np.array(p), np.array(r)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_precision_recall_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    q, g = 17, 23
    sim = np.round(rng.random((q, g)), 1)  # ties: broken by gallery order in both
    gkeys = rng.choice(["a", "b", "c", "d"], g)
    qkeys = rng.choice(["a", "b", "c", "e"], q)  # 'e' has no relevant item: recall NaN
    got = precision_recall_at_k(sim, qkeys, gkeys, [1, 5, 10, 30])
    for k in (1, 5, 10, 30):
        p, r = brute_force(sim, qkeys, gkeys, k)
        np.testing.assert_allclose(got[k][0], p)
        np.testing.assert_allclose(got[k][1], r, equal_nan=True)
    with pytest.raises(ValueError, match="queries"):
        precision_recall_at_k(sim, qkeys[:-1], gkeys, [1])


def test_perfect_similarity_gives_precision_one_and_full_recall():
    keys = np.array(["a", "a", "b", "b", "b"])
    sim = (keys[:, None] == keys[None, :]).astype(float)
    out = precision_recall_at_k(sim, keys, keys, [1, 2, 3])
    assert out[1][0].tolist() == [1.0] * 5
    assert out[2][0].tolist() == [1.0] * 5 and out[2][1].tolist() == [1.0, 1.0, 2 / 3, 2 / 3, 2 / 3]
    assert out[3][1].tolist() == [1.0] * 5 and out[3][0].tolist() == pytest.approx([2 / 3, 2 / 3, 1, 1, 1])


def image_of(category: str | None) -> np.ndarray:
    img = np.zeros((SIZE, SIZE), dtype=np.uint8)
    if category is not None:
        k = CATS.index(category)
        img[:, k * 6 : (k + 1) * 6] = 255
    return img


class StripeEncoder:
    """Image dim k = brightness of stripe k; a text's vector = e_k of the category it names."""

    def eval(self):
        return self

    def encode_image(self, images):
        x = images.float() / 255.0
        f = torch.stack([x[:, :, k * 6 : (k + 1) * 6].mean(dim=(1, 2)) for k in range(len(CATS))], dim=1) + 1e-3
        return torch.nn.functional.normalize(f, dim=1)

    def encode_text(self, texts):
        out = torch.zeros(len(texts), len(CATS))
        for i, t in enumerate(texts):
            out[i, next(k for k, c in enumerate(CATS) if c in t)] = 1.0
        return out


class BlindEncoder(StripeEncoder):
    """Sees nothing in the images: every image embeds to the same vector."""

    def encode_image(self, images):
        return torch.nn.functional.normalize(torch.ones(images.shape[0], len(CATS)), dim=1)


def corpus(root: Path):
    items = []
    for i in range(48):
        cat = CATS[i % 4]
        findings = [{"category": cat, "severity": ("mild", "severe")[i // 4 % 2], "location": "left"}]
        if i % 12 == 11:
            findings.append({"category": "nodule", "severity": None, "location": None})  # two findings: out
        if i % 16 == 15:
            findings = []  # no finding: out
        split = ("train", "validate", "test")[i % 3]
        items.append(
            (
                f"r{i:03d}",
                image_of(cat if findings else None),
                {"report_id": f"R{i}", "split": split, "findings": findings},
            )
        )
    return write_store(root, items, size=SIZE, dataset="corpus")


def test_retrieval_images_and_texts(tmp_path: Path):
    store = corpus(tmp_path / "corpus")
    images = retrieval_images(store, max_images=1000)
    split = store.index.column("split").to_pylist()
    assert all(split[r] in ("validate", "test") for r in images.rows)
    expected = [i for i in range(48) if i % 3 and i % 12 != 11 and i % 16 != 15]
    assert images.rows.tolist() == expected and images.n_eligible == len(expected)
    f = images.findings[0]
    assert (
        image_texts(
            images,
            "baseline",
            explain=str,
            text_variant="triplet_explanation",
            baseline_prompt="This is an X-ray image of {category}",
        )[0]
        == f"This is an X-ray image of {f['category']}"
    )
    assert (
        image_texts(
            images, "template", explain=lambda c: "big", text_variant="triplet_explanation", baseline_prompt=""
        )[0]
        == f"{f['severity']} left {f['category']}, where {f['category']} is big"
    )
    few = retrieval_images(store, max_images=5, seed=1)
    assert len(few) == 5 and few.n_eligible == len(expected) and set(few.rows) <= set(expected)
    assert few.rows.tolist() == retrieval_images(store, max_images=5, seed=1).rows.tolist()


def test_evaluate_retrieval_table(tmp_path: Path):
    corpus(tmp_path / "corpus")
    models = {"medfilip": StripeEncoder(), "convirt": BlindEncoder()}
    rows = evaluate_retrieval(
        [tmp_path / "medfilip", tmp_path / "convirt"],
        ImageStore.open(tmp_path / "corpus"),
        str,
        load_model=lambda d, dev: models[Path(d).name],
        device="cpu",
        bootstrap=BootstrapSettings(n_resamples=200),
        ks=(1, 5, 10),
    )
    assert len(rows) == 2 * 2 * 2 * 2  # run x prompt x direction x relevance
    by = {(r["run"], r["prompt"], r["direction"], r["relevance"]): r for r in rows}
    perfect = by[("medfilip", "template", "image_to_text", "category")]
    # every category has at most 10 images: all of them come first (pneumothorax has 3, so P@5 < 1)
    assert perfect["p_at_1"] == perfect["r_at_10"] == 1.0 and perfect["p_at_1_low"] == 1.0
    assert perfect["p_at_5"] < 1.0
    assert perfect["n_categories"] == 4 and perfect["n_images"] == perfect["n_eligible"]
    # fine-grained: the stripes do not show severity, so precision falls to about the severity share
    fine = by[("medfilip", "template", "image_to_text", "severity_category")]
    assert fine["p_at_5"] < 1.0
    blind = by[("convirt", "baseline", "image_to_text", "category")]
    assert blind["delta_p_at_5_vs_medfilip"] < 0 and blind["delta_p_at_5_vs_medfilip_high"] < 0
    assert blind["delta_p_at_5_vs_medfilip_low"] <= blind["delta_p_at_5_vs_medfilip"]
    assert "delta_p_at_1_vs_medfilip" not in perfect
    out = write_table(rows, tmp_path / "retrieval.csv")
    with open(out, newline="") as fh:
        header = next(csv.reader(fh))
    assert header[:4] == ["run", "prompt", "direction", "relevance"] and header[-1] == "note"


def test_no_eligible_image_gives_skip_rows(tmp_path: Path):
    items = [(f"r{i}", image_of(None), {"report_id": f"R{i}", "split": "test", "findings": []}) for i in range(3)]
    store = write_store(tmp_path / "corpus", items, size=SIZE, dataset="corpus")
    rows = evaluate_retrieval(
        [tmp_path / "medfilip"], store, str, load_model=lambda d, dev: StripeEncoder(), device="cpu"
    )
    assert rows == [
        {
            "run": "medfilip",
            "n_images": 0,
            "n_eligible": 0,
            "note": f"skipped: {store.root}: no held-out image with exactly one finding",
        }
    ]


def test_cli_embed_images_retrieval_and_case_study_with_a_tiny_trained_model(tmp_path: Path, capsys):
    """The real chain: a saved DualEncoder, its stored image embeddings, the real IKI dictionary, the CLI."""
    import yaml

    from medfilip.pipeline.cli import main
    from medfilip.training.model import build_model, save_trained
    from medfilip.training.settings import ModelSettings

    root = Path(__file__).resolve().parents[2]
    save_trained(
        build_model(ModelSettings(embed_dim=16, text_trainable_layers=0), SIZE, seed=0),
        tmp_path / "models" / "medfilip",
    )
    corpus(tmp_path / "images" / "corpus")
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump({"evaluation": {"device": "cpu", "batch_size": 8, "bootstrap": {"n_resamples": 100}}})
    )
    knowledge = str(root / "resources" / "knowledge" / "dictionary.yaml")
    common = ["-q", "-c", str(tmp_path / "config.yaml")]
    emb = tmp_path / "emb" / "medfilip.npz"
    assert (
        main(
            [
                *common,
                "embed-images",
                "--run",
                str(tmp_path / "models" / "medfilip" / "model.pt"),
                "--stores",
                str(tmp_path / "images" / "corpus"),
                "--out",
                str(emb),
                "--no-progress",
            ]
        )
        == 0
    )
    out = tmp_path / "retrieval.csv"
    assert (
        main(
            [
                *common,
                "retrieval",
                "--runs",
                str(tmp_path / "models" / "medfilip"),
                "--corpus",
                str(tmp_path / "images" / "corpus"),
                "--image-embeddings",
                str(emb),
                "--knowledge",
                knowledge,
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(out.open()))
    # template, baseline and the run's own text (its label variant, recorded in the run's config.yaml)
    assert len(rows) == 12 and all(0.0 <= float(r["p_at_1"]) <= 1.0 for r in rows)
    assert [r["prompt"] for r in rows].count("own") == 4
    assert {r["text_variant"] for r in rows if r["prompt"] == "own"} == {"triplet_explanation"}
    # its own form is the template: the same numbers under both prompts
    by = {(r["prompt"], r["direction"], r["relevance"]): r["p_at_1"] for r in rows}
    assert all(by[("own", d, rel)] == by[("template", d, rel)] for _, d, rel in by)
    assert (
        main(
            [
                *common,
                "case-study",
                "--runs",
                str(tmp_path / "models" / "medfilip"),
                "--corpus",
                str(tmp_path / "images" / "corpus"),
                "--image-embeddings",
                str(emb),
                "--knowledge",
                knowledge,
                "--figure",
                str(tmp_path / "case.png"),
                "--table",
                str(tmp_path / "case.csv"),
            ]
        )
        == 0
    )
    # test images with one finding show 3 categories (every test pneumothorax has a second finding)
    assert len(list(csv.DictReader((tmp_path / "case.csv").open()))) == 3 * 3
    # a run that was never trained: a named error before any work
    capsys.readouterr()
    assert (
        main(
            [
                *common,
                "retrieval",
                "--runs",
                str(tmp_path / "models" / "nothing"),
                "--corpus",
                str(tmp_path / "images" / "corpus"),
                "--knowledge",
                knowledge,
                "--out",
                str(tmp_path / "x.csv"),
            ]
        )
        == 1
    )
    assert "trained model not found" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()
