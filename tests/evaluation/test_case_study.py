"""Case study: the images chosen, the three texts, the cosines (against a hand computation) and the figure."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from medfilip.evaluation.case_study import TEXT_KINDS, case_images, case_study_rows, case_texts, write_case_study
from medfilip.images.store import write_store

torch.set_num_threads(1)
SIZE = 24


class HashEncoder:
    """Deterministic: an image embeds to its normalised mean over rows; a text to a seeded vector of its own."""

    def eval(self):
        return self

    def encode_image(self, images):
        return torch.nn.functional.normalize(images.float().mean(dim=1) + 1.0, dim=1)

    def encode_text(self, texts):
        vecs = [np.random.default_rng(sum(map(ord, t))).standard_normal(SIZE) for t in texts]
        return torch.nn.functional.normalize(torch.tensor(np.stack(vecs), dtype=torch.float32), dim=1)


def store(root: Path):
    spec = [
        ("cardiomegaly", "mild"),
        ("atelectasis", "moderate"),
        ("cardiomegaly", "severe"),
        (None, None),
        ("pleural effusion", "small"),
        ("cardiomegaly", "mild"),
    ]
    rng = np.random.default_rng(0)
    items = []
    for i, (cat, sev) in enumerate(spec):
        findings = [] if cat is None else [{"category": cat, "severity": sev, "location": "left"}]
        items.append(
            (
                f"r{i}",
                rng.integers(0, 255, (SIZE, SIZE), dtype=np.uint8),
                {"report_id": f"R{i}", "split": "train" if i == 5 else "test", "findings": findings},
            )
        )
    return write_store(root, items, size=SIZE, dataset="corpus")


def test_case_images_one_per_category_most_common_first(tmp_path: Path):
    s = store(tmp_path / "corpus")
    chosen = case_images(s, 2)
    assert [(row, f["category"]) for row, f in chosen] == [(0, "cardiomegaly"), (1, "atelectasis")]
    texts = case_texts(chosen[0][1], lambda c: "a big heart", "This is an X-ray image of {category}")
    assert texts == {
        "template + category": "This is an X-ray image of cardiomegaly",
        "severity + category": "mild cardiomegaly",
        "explanation": "mild left cardiomegaly, where cardiomegaly is a big heart",
    }


def test_cosines_and_figure(tmp_path: Path):
    s = store(tmp_path / "corpus")
    enc = HashEncoder()
    rows = case_study_rows(
        [tmp_path / "medfilip", tmp_path / "convirt"],
        s,
        lambda c: "x",
        n_images=3,
        load_model=lambda d, dev: enc,
        device="cpu",
    )
    assert len(rows) == 3 * len(TEXT_KINDS) * 2
    r = rows[1]
    img = enc.encode_image(torch.from_numpy(s.get_batch(np.array([0])))).numpy()[0]
    txt = enc.encode_text([r["text"]]).numpy()[0]
    assert r["image_id"] == "r0" and r["text_kind"] == "severity + category"
    assert r["cosine"] == pytest.approx(float(img @ txt), abs=1e-4)
    fig = write_case_study(rows, s, tmp_path / "case_study.png", tmp_path / "case_study.csv")
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and fig.stat().st_size > 10_000
    assert len(list(csv.DictReader((tmp_path / "case_study.csv").open()))) == len(rows)
    empty = write_case_study([], s, tmp_path / "empty.png", tmp_path / "empty.csv")
    assert empty.exists()
