"""SSM calibration: derived from label statistics only, by the documented rules, and stored beside
the embeddings by `medfilip embed`."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from medfilip.embeddings.calibration import (
    batch_statistics,
    calibration_path,
    compute_calibration,
    own_category_share,
    read_calibration,
    read_vocabulary,
)
from medfilip.ssm import Calibration

torch.set_num_threads(1)

CATS = ["atelectasis", "effusion", "cardiomegaly", "opacity"]


def write_labels(path, n_reports=60, seed=0, negated=True):
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n_reports):
        for c in sorted(set(rng.choice(len(CATS), size=1 + r % 2))):
            sev = ["mild", "moderate", "severe"][int(rng.integers(3))]
            rows.append(
                {
                    "report_id": f"r{r:03d}",
                    "variant": "triplet",
                    "label": f"{sev} {CATS[c]}",
                    "category": CATS[c],
                    "polarity": "present",
                }
            )
        if negated and r % 5 == 0:
            rows.append(
                {
                    "report_id": f"r{r:03d}",
                    "variant": "triplet",
                    "label": "no pneumothorax",
                    "category": "pneumothorax",
                    "polarity": "negated",
                }
            )
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def vectors_for(texts, seed=0):
    """Category centre + severity noise: labels of one category are close, others further."""
    rng = np.random.default_rng(seed)
    centres = {c: rng.normal(size=16) for c in CATS + ["pneumothorax"]}
    out = []
    for t in texts:
        cat = next(c for c in centres if t.endswith(c))
        out.append(centres[cat] + 0.3 * rng.normal(size=16) + 1.0)  # +1: a shared "template" direction
    v = np.array(out)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_floor_is_the_percentile_of_cross_category_cosines(tmp_path):
    vocab = read_vocabulary(write_labels(tmp_path / "labels.parquet"), "triplet")
    v = vectors_for(vocab.texts)
    cal = compute_calibration(v, vocab, "floor", percentile=90)
    # a direct loop over pairs of unique labels of different categories and the same polarity
    cross = [
        float(v[a] @ v[b])
        for a in range(len(v))
        for b in range(a + 1, len(v))
        if vocab.keys[a] != vocab.keys[b] and vocab.negated[a] == vocab.negated[b]
    ]
    assert cal.method == "floor" and cal.floor == pytest.approx(np.percentile(cross, 90), abs=1e-6)
    assert cal.stats["n_cross_pairs"] == len(cross)
    # calibrated: unrelated labels at 0, own label 1, same-category labels stay high
    s = cal.apply(torch.from_numpy(v @ v.T))
    assert torch.allclose(s.diagonal(), torch.ones(len(v), dtype=s.dtype))
    same = np.array([[a != b and vocab.keys[a] == vocab.keys[b] for b in range(len(v))] for a in range(len(v))])
    assert float(s.numpy()[same].mean()) > 0.3
    assert (s.numpy() >= 0).all() and (s.numpy() <= 1).all()


def test_temperature_reaches_the_share(tmp_path):
    vocab = read_vocabulary(write_labels(tmp_path / "labels.parquet"), "triplet")
    v = vectors_for(vocab.texts)
    cal = compute_calibration(v, vocab, "temperature", share=0.6)
    assert cal.method == "temperature" and cal.stats["achieved_share"] == pytest.approx(0.6, abs=1e-3)
    cos = np.clip(v @ v.T, -1, 1)
    cos = np.where(vocab.negated[:, None] == vocab.negated[None, :], cos, -1.0)
    same = np.array(vocab.keys, dtype=object)[:, None] == np.array(vocab.keys, dtype=object)[None, :]
    counts = vocab.counts.astype(float)
    assert own_category_share(cos, same, counts, cal) == pytest.approx(0.6, abs=1e-3)
    # raw cosines put much less of a row on the own category
    assert own_category_share(cos, same, counts, Calibration("none")) < 0.5


def test_calibration_sharpens_batch_targets(tmp_path):
    vocab = read_vocabulary(write_labels(tmp_path / "labels.parquet"), "triplet")
    v = vectors_for(vocab.texts)
    raw = batch_statistics(v, vocab, None, batch_size=16, n_batches=5)
    cal = batch_statistics(v, vocab, compute_calibration(v, vocab, "floor"), batch_size=16, n_batches=5)
    assert cal["own_category_share"] > raw["own_category_share"]
    assert cal["effective_texts"] < raw["effective_texts"]
    assert cal["cross_category_median"] == 0.0 < raw["cross_category_median"]


def test_bad_calibration_values_are_named():
    with pytest.raises(ValueError, match="floor must be in"):
        Calibration("floor", floor=1.0)
    with pytest.raises(ValueError, match="not one of none, floor, temperature"):
        Calibration("sharpen")


def test_embed_stores_the_calibration_from_label_statistics_only(tmp_path, capsys):
    """`medfilip embed` writes {stem}.calibration.json; it depends on labels and vectors alone, so
    configs that differ only in their evaluation settings give the same file."""
    from medfilip.pipeline.cli import main

    labels = write_labels(tmp_path / "labels.parquet")
    outs = []
    for k, evaluation in enumerate(
        [{}, {"datasets": ["rsna"], "text_variant": "category", "corpus": {"enabled": False}}]
    ):
        config = tmp_path / f"c{k}.yaml"
        config.write_text(
            yaml.safe_dump(
                {"embeddings": {"calibration": {"method": "floor", "percentile": 95}}, "evaluation": evaluation}
            )
        )
        out = tmp_path / f"e{k}" / "emb.parquet"
        assert (
            main(
                [
                    "-c",
                    str(config),
                    "embed",
                    "--labels",
                    str(labels),
                    "--cache",
                    str(tmp_path / "cache"),
                    "--out",
                    str(out),
                    "--threads",
                    "1",
                    "--no-progress",
                ]
            )
            == 0
        )
        assert "SSM calibration (label statistics only): triplet floor" in capsys.readouterr().out
        outs.append(calibration_path(out))
    assert outs[0].name == "emb.calibration.json"
    assert json.loads(outs[0].read_text()) == json.loads(outs[1].read_text())
    cal = read_calibration(outs[0], "triplet")
    assert cal.method == "floor" and 0 < cal.floor < 1
    with pytest.raises(ValueError, match="no SSM calibration of label variant 'category'"):
        read_calibration(outs[0], "category")


def test_train_split_calibration_is_not_moved_by_held_out_reports(tmp_path):
    """embeddings.calibration.split: train fits on the train reports' labels only: changing every
    held-out report's labels leaves it as it was (and moves the all-rows calibration)."""
    from medfilip.embeddings.calibration import train_report_ids
    from medfilip.embeddings.settings import CalibrationSettings
    from medfilip.pipeline.commands.embeddings import _calibrate

    shard = tmp_path / "000.parquet"
    ids = [f"r{r:03d}" for r in range(60)]
    splits = ["train" if r < 40 else ("validate" if r < 50 else "test") for r in range(60)]
    pq.write_table(pa.table({"report_id": ids, "split": splits, "text": [""] * 60}), shard)
    train = train_report_ids([shard])
    assert train == set(ids[:40])

    before = write_labels(tmp_path / "before.parquet")
    rows = pq.read_table(before).to_pylist()
    held_out = [r for r in rows if r["report_id"] not in train]
    extra = [
        {**r, "label": f"large {c}", "category": c, "polarity": "present"}
        for r in held_out
        for c in ("pneumothorax", "cardiomegaly")
    ]
    after = tmp_path / "after.parquet"
    pq.write_table(pa.Table.from_pylist([r for r in rows if r["report_id"] in train] + extra), after)

    texts = sorted({r["label"] for r in rows + extra})
    table = dict(zip(texts, vectors_for(texts)))

    def fit(labels, reports, method):
        vocab = read_vocabulary(labels, "triplet", reports)
        return compute_calibration(np.array([table[t] for t in vocab.texts]), vocab, method, percentile=90)

    for method in ("floor", "temperature"):
        assert fit(before, train, method) == fit(after, train, method)
        assert fit(before, None, method) != fit(after, None, method)
    assert read_vocabulary(after, "triplet", train).texts == read_vocabulary(before, "triplet", train).texts
    # asking for the train split without the report shards is a clear error
    with pytest.raises(ValueError, match="split is 'train': pass the report shards"):
        _calibrate(before, tmp_path / "emb.parquet", ["triplet"], CalibrationSettings(split="train"))
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"report_id": ["x"], "split": ["test"]}), empty)
    with pytest.raises(ValueError, match="no report of the train split"):
        train_report_ids([empty])


def test_ssm_stats_with_masking_on_use_entailment_targets(tmp_path):
    """Masked texts (as training masks them) scored by what they say: a text stripped to its category is
    a positive of every image of that category, so rows hold more positives than with full labels."""
    from medfilip.labels.build import label_key
    from medfilip.training.ssm_stats import masked_batch_statistics, masked_batch_texts

    rng = np.random.default_rng(1)
    rows = []
    for r in range(40):
        for c in sorted(set(rng.choice(len(CATS), size=1 + r % 2))):
            sev, loc = ["mild", "moderate", "severe"][int(rng.integers(3))], ["left base", "right base"][r % 2]
            label = f"{sev} {loc} {CATS[c]}, where {CATS[c]} is pattern {c}"
            rows.append(
                {
                    "report_id": f"r{r:03d}",
                    "variant": "triplet_explanation",
                    "label": label,
                    "label_key": label_key(label),
                    "category": CATS[c],
                    "severity": sev,
                    "location": loc,
                    "polarity": "present",
                    "explanation": f"pattern {c}",
                }
            )
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    labels, reports, texts = masked_batch_texts(path, "triplet_explanation")
    assert len(texts) > len(labels.texts) and set(labels.texts) <= set(texts)
    assert "atelectasis" in texts  # every field dropped
    # a text's vector: by the category it names (masked forms end with it once the explanation is gone)
    heads = [t.split(",")[0] for t in texts]
    vectors = dict(zip(texts, vectors_for(heads)))
    kw = {"batch_size": 16, "n_batches": 5, "seed": 0}
    cal = Calibration("floor", floor=0.5)
    unmasked = masked_batch_statistics(vectors, labels, reports, cal, mask_probability=0.0, **kw)
    masked = masked_batch_statistics(vectors, labels, reports, cal, mask_probability=0.5, **kw)
    # with no mask every text is a full label: positives are the image's own labels (1-2 a row)
    assert 1.0 <= unmasked["positives_per_row"] <= 2.0
    assert masked["positives_per_row"] > unmasked["positives_per_row"]
    assert masked == masked_batch_statistics(vectors, labels, reports, cal, mask_probability=0.5, **kw)
