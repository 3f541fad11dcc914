"""Severity measured as severity (issue 19, item 3): corpus_severity and Kendall tau.

A tiny corpus store whose cardiomegaly is drawn at a brightness that grows with its severity, the
reports' stated severities in a labels.parquet (words as written: small, moderate, large), and
images whose severity the report does not state (the phantom draws those at "moderate")."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from scipy import stats

from medfilip.evaluation.report import write_per_class, write_table
from medfilip.evaluation.sets import load_eval_sets, stated_severities
from medfilip.evaluation.settings import BootstrapSettings, CorpusSetsSettings, EvaluationConfig
from medfilip.evaluation.zeroshot import evaluate_runs, kendall_tau
from medfilip.extraction.vocabulary import load_severity_scale
from medfilip.images.store import write_store

torch.set_num_threads(1)

SIZE = 8
VOCABULARY = Path(__file__).resolve().parents[2] / "resources" / "vocabulary"
BRIGHTNESS = {"mild": 85, "moderate": 170, "severe": 255}
WORD = {"mild": "small", "moderate": "moderate", "severe": "large"}  # as a report writes them
N = 22  # test images per stated severity (and as many validate)


def corpus(root: Path) -> tuple[Path, Path]:
    """The store and its labels.parquet."""
    items, labels = [], []
    k = 0

    def add(split: str, drawn: str | None, stated: str | None, other: bool = False) -> None:
        nonlocal k
        img = np.zeros((SIZE, SIZE), dtype=np.uint8)
        findings = []
        if drawn is not None:
            img[:, : SIZE // 2] = BRIGHTNESS[drawn]
            findings.append({"category": "cardiomegaly", "location": "heart", "severity": drawn})
            labels.append({"report_id": f"R{k}", "category": "cardiomegaly", "severity": stated, "polarity": "present"})
        if other:
            img[:, SIZE // 2 :] = 255
            findings.append({"category": "atelectasis", "location": None, "severity": "moderate"})
            labels.append({"report_id": f"R{k}", "category": "atelectasis", "severity": None, "polarity": "present"})
        items.append((f"i{k:04d}", img, {"report_id": f"R{k}", "split": split, "findings": findings}))
        k += 1

    for split in ("test", "validate"):
        for severity in ("mild", "moderate", "severe"):
            for _ in range(N):
                add(split, severity, WORD[severity])
        for _ in range(10):
            add(split, "moderate", None)  # unstated: drawn at "moderate", not stated moderate
            add(split, None, None, other=True)  # another category, no cardiomegaly
            add(split, None, None)  # normal
    add("train", "severe", "large")
    write_store(root, items, size=SIZE, dataset="corpus")
    path = root.parent / "labels.parquet"
    pq.write_table(pa.Table.from_pylist(labels), path)
    return root, path


class Encoder:
    """Image: (cardiomegaly present, signed severity (brightness - 170) / 85, atelectasis). Text: the
    category's direction, plus the severity's sign (severe +1, mild -1) when ``sees_severity``."""

    logit_scale = 10.0

    def __init__(self, sees_severity: bool):
        self.sees_severity = sees_severity

    def eval(self):
        return self

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        left, right = x[:, :, : SIZE // 2].mean(dim=(1, 2)), x[:, :, SIZE // 2 :].mean(dim=(1, 2))
        present = (left > 0).float()
        severity = torch.where(left > 0, (left - 170.0) / 85.0, torch.zeros_like(left)) * float(self.sees_severity)
        return torch.nn.functional.normalize(torch.stack([present, severity, right / 255.0], dim=1), dim=1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), 3)
        for i, text in enumerate(texts):
            head = text.split(",")[0]
            if "cardiomegaly" in head:
                out[i, 0] = 1.0
                if self.sees_severity:
                    out[i, 1] = 1.0 if "severe" in head else -1.0 if "mild" in head else 0.0
            else:
                out[i, 2] = 1.0
        return torch.nn.functional.normalize(out, dim=1)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("severity")
    store, labels = corpus(root / "corpus")
    stated = stated_severities(labels, load_severity_scale(VOCABULARY))
    settings = EvaluationConfig(corpus=CorpusSetsSettings(fine_grained_min_count=1))
    sets = load_eval_sets([store], settings, stated)
    return root, sets, stated


def test_the_severity_set_uses_stated_severities_on_one_scale(built):
    _, sets, stated = built
    s = next(s for s in sets if s.name == "corpus_severity")
    # small -> mild, large -> severe; an unstated severity is None, not moderate
    assert stated["R0"] == {"cardiomegaly": "mild"} and stated[f"R{2 * N}"] == {"cardiomegaly": "severe"}
    assert stated[f"R{3 * N}"] == {"cardiomegaly": None}
    assert s.class_names == ["mild cardiomegaly", "moderate cardiomegaly", "severe cardiomegaly"]
    # images: stated cardiomegaly only (the 10 unstated, 10 atelectasis and 10 normal test images are out)
    assert s.n("test") == 3 * N and not s.in_means
    # negatives are the same category at another stated severity only
    assert (np.nansum(s.labels["test"], axis=0) == N).all() and not np.isnan(s.labels["test"]).any()
    assert sorted(np.unique(s.ordinal["test"]["cardiomegaly"]).tolist()) == [0.0, 1.0, 2.0]


def test_too_few_images_are_skipped_with_a_note(built):
    root, _, stated = built
    settings = EvaluationConfig(corpus=CorpusSetsSettings(fine_grained_min_count=1, severity_min_count=N + 1))
    s = next(s for s in load_eval_sets([root / "corpus"], settings, stated) if s.name == "corpus_severity")
    assert not s.classes and s.note.startswith("skipped: no class has 23 test images and 23 negatives")
    assert "mild cardiomegaly (22 test images, 44 negatives)" in s.note
    # Kendall tau asks for 23 stated images of the category (it has 66): still measured
    assert list(s.ordinal["test"]) == ["cardiomegaly"]


def test_kendall_tau_is_scipys_and_zero_for_a_constant_scorer():
    rng = np.random.default_rng(0)
    truth, score = rng.integers(0, 3, 50).astype(float), rng.normal(size=50)
    assert kendall_tau(truth, score) == pytest.approx(stats.kendalltau(truth, score).statistic, abs=1e-12)
    assert kendall_tau(truth, np.full(50, 0.3)) == 0.0  # scipy gives NaN: no pair is ordered
    assert kendall_tau(truth, truth * 2.0 + 1.0) == pytest.approx(1.0)
    assert kendall_tau(truth, -truth) == pytest.approx(-1.0)


@pytest.mark.parametrize("sees_severity, auc, tau", [(False, 0.5, 0.0), (True, 1.0, 1.0)])
def test_a_severity_blind_scorer_gets_chance_and_a_perfect_one_gets_one(built, sees_severity, auc, tau):
    root, sets, _ = built
    result = evaluate_runs(
        [root / "models" / "medfilip"],
        sets,
        lambda c: f"what {c} looks like",
        load_model=lambda run_dir, device: Encoder(sees_severity),
        device="cpu",
        progress=False,
        bootstrap=BootstrapSettings(n_resamples=50),
        own_texts=["category"],
    )
    rows = write_table(result.summaries, root / f"zeroshot_{sees_severity}.csv")
    row = rows[0]
    assert row["corpus_severity_auc"] == auc and row["corpus_severity_tau"] == pytest.approx(tau)
    assert row["corpus_severity_tau_low"] == pytest.approx(tau) and row["corpus_severity_tau_high"] == pytest.approx(
        tau
    )
    # the set is left out of the means, which equal the means over the other corpus sets
    others = [row[f"{n}_auc"] for n in ("corpus_single", "corpus_multi", "corpus_fine", "corpus_fg")]
    assert row["mean_auc"] == pytest.approx(np.mean(others), abs=1e-4)
    # the bare category name carries no severity: tau is exactly 0 whatever the model sees
    assert row["own_corpus_severity_tau"] == 0.0
    per_class = write_per_class(result.per_class, root / "per_class.csv")
    taus = [r for r in per_class if r["protocol"] == "kendall_tau"]
    assert [(r["class"], r["n"]) for r in taus] == [("cardiomegaly", 3 * N)] and taus[0]["kendall_tau"] == tau
    with open(root / "per_class.csv", newline="") as fh:
        assert next(csv.reader(fh))[-1] == "kendall_tau"
