"""medfilip.evaluation.real on synthetic inputs whose answers are known (no pack needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medfilip.evaluation.real import gap
from medfilip.evaluation.real.notes import agreement, extract_notes, finding_group
from medfilip.evaluation.real.tables import RANDOM_INIT, own_text, precision_at_k, retrieval_rows
from medfilip.evaluation.sets import ClassSpec, EvalSet
from medfilip.evaluation.settings import BootstrapSettings


def test_histogram_and_its_distance():
    dark = np.full((3, 8, 8), 40, np.uint8)
    light = np.full((2, 8, 8), 80, np.uint8)
    h_dark, h_light = gap.intensity_histogram(dark), gap.intensity_histogram(light)
    assert h_dark.sum() == pytest.approx(1) and h_dark.argmax() == 40 // 4
    assert gap.histogram_distance(h_dark, h_light) == pytest.approx(40)  # every pixel moved 40 levels
    assert gap.histogram_distance(h_dark, h_dark) == 0
    with pytest.raises(ValueError, match="\\(N, H, W\\)"):
        gap.intensity_histogram(np.zeros((8, 8)))


def _power_law_images(alpha: float, n: int = 6, side: int = 64) -> np.ndarray:
    """Random images whose power spectrum falls as f^-alpha."""
    rng = np.random.default_rng(0)
    f = np.fft.fftfreq(side)
    radius = np.hypot(*np.meshgrid(f, f, indexing="ij"))
    radius[0, 0] = 1.0
    out = []
    for _ in range(n):
        spectrum = (rng.standard_normal((side, side)) + 1j * rng.standard_normal((side, side))) * radius ** (-alpha / 2)
        field = np.fft.ifft2(spectrum).real
        out.append((field - field.min()) / (field.max() - field.min()) * 255)
    return np.stack(out)


@pytest.mark.parametrize("alpha", [0.0, 2.0, 3.0])
def test_spectral_slope_recovers_a_power_law(alpha):
    freqs, power = gap.radial_power_spectrum(_power_law_images(alpha))
    assert gap.spectral_slope(freqs, power) == pytest.approx(-alpha, abs=0.35)


def test_lung_shape_of_two_boxes():
    mask = np.zeros((100, 100), bool)
    mask[20:80, 10:40] = True  # image-left lung
    mask[20:80, 60:90] = True  # image-right lung
    shape = gap.lung_shape(mask)
    assert shape.area == pytest.approx(0.36)
    assert shape.height == pytest.approx(0.6) and shape.width == pytest.approx(0.8)
    assert shape.ctr_proxy == pytest.approx(20 / 80)  # the 20-px gap over the 80-px thorax
    mask[60:75, 35:65] = False  # a wider heart in the lower band
    mask[60:75, 10:35] = True
    assert gap.lung_shape(mask).ctr_proxy == pytest.approx(30 / 80)
    with pytest.raises(ValueError, match="empty"):
        gap.lung_shape(np.zeros((4, 4), bool))


def test_phantom_masks_match_the_phantoms_own_heart():
    masks = gap.phantom_masks(12, 128)
    hemithorax = [gap.lung_shape(h) for h, _, _ in masks]
    lungs = [gap.lung_shape(m) for _, m, _ in masks]
    ctr = np.array([c for _, _, c in masks])
    assert all(0.15 < s.area < 0.35 for s in lungs)
    assert all(h.area > s.area for h, s in zip(hemithorax, lungs))  # the lung behind the heart
    # on the lungs less the heart the proxy measures the phantom's own heart (within 0.05 per patient)
    proxy = np.array([s.ctr_proxy for s in lungs])
    assert np.abs(proxy - ctr).max() < 0.05
    # on hemithorax masks (the ieee8023 masks' convention) the gap is the mediastinum only: narrower
    assert all(h.ctr_proxy < s.ctr_proxy - 0.1 for h, s in zip(hemithorax, lungs))


def test_gap_rows_and_figure(tmp_path):
    rng = np.random.default_rng(1)
    phantom = gap.image_stats("nih", rng.integers(0, 120, (4, 32, 32)).astype(np.uint8))
    real = gap.image_stats("nih", rng.integers(100, 255, (4, 32, 32)).astype(np.uint8))
    mask = np.zeros((32, 32), bool)
    mask[5:25, 3:13] = mask[5:25, 19:29] = True
    shapes = [gap.lung_shape(mask)]
    rows = gap.gap_rows([(phantom, real)], shapes, shapes, shapes, [0.45])
    by = {r["statistic"]: r for r in rows}
    assert by["image mean grey level"]["gap"] == pytest.approx(np.mean(phantom.mean) - np.mean(real.mean), abs=0.01)
    assert by["lung-field share of the image"]["gap"] == 0
    out = gap.gap_figure(
        [(phantom, real)], shapes, shapes, [("m", np.zeros((32, 32), np.uint8), mask)], tmp_path / "g.png"
    )
    assert out.stat().st_size > 1000


def test_precision_at_k_and_retrieval_rows():
    labels = np.array([[1, 0], [1, 0], [0, 1], [0, np.nan]], np.float32)
    sim = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.3], [0.2, 0.9]])
    # class 0: top-2 = rows 0, 1 (both positive); class 1: top-2 = rows 3 (NaN), 2 (positive)
    assert precision_at_k(sim, labels, 2).tolist() == [1.0, 0.5]
    assert precision_at_k(sim, labels, 10).tolist() == [0.5, 0.25]  # k clipped to the 4 images
    s = EvalSet("toy", "multi_label", [ClassSpec("a", "a"), ClassSpec("b", "b")], None, labels={"test": labels})
    # embeddings that make the similarity above: images and texts in 2-D, then normalised
    rows = retrieval_rows("run", s, sim, np.eye(2), [1, 2], bootstrap=BootstrapSettings(n_resamples=20, seed=0))
    assert [r["k"] for r in rows] == [1, 2]
    # normalised rows: class 0's top image is row 0 (positive), class 1's is row 3 (NaN: not positive)
    assert rows[0]["precision_at_k"] == 0.5 and rows[1]["precision_at_k"] == 0.75
    assert all(r["ci_low"] <= r["precision_at_k"] <= r["ci_high"] for r in rows)
    assert rows[0]["chance"] == pytest.approx(3 / 8)
    assert {r["text"] for r in rows} == {""}
    tagged = retrieval_rows("run", s, sim, np.eye(2), [1], bootstrap=BootstrapSettings(n_resamples=5), text="report")
    assert tagged[0]["text"] == "report"


def test_each_real_run_is_scored_in_the_text_form_it_trained_on(tmp_path):
    """A report-text run gets the report-style sentence, a label run its template, random_init the
    text of the run whose text tower it keeps (the first), a folder without a record the common one."""
    import yaml

    from medfilip.labels.templates import run_eval_text

    def run_folder(name: str, variant: str):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.yaml").write_text(yaml.safe_dump({"run": {"label_variant": variant, "eval_text": None}}))
        return folder

    report, labels = run_folder("convirt", "report"), run_folder("medfilip", "triplet_explanation")
    sentence, template = run_eval_text({"label_variant": "report"}), run_eval_text({"label_variant": "triplet"})
    assert sentence and sentence != "triplet_explanation" and template
    assert own_text(report, labels, "triplet_explanation") == sentence
    assert own_text(labels, labels, "triplet_explanation") == "triplet_explanation"
    assert own_text(tmp_path / RANDOM_INIT, report, "triplet_explanation") == sentence
    assert own_text(tmp_path / RANDOM_INIT, labels, "triplet_explanation") == "triplet_explanation"
    assert own_text(tmp_path / "unrecorded", labels, "triplet") == "triplet"
    # training.runs wins over the folder's record, as in the phantom zero-shot table
    runs = {"convirt": {"label_variant": "report", "eval_text": "category"}}
    assert own_text(report, labels, "triplet_explanation", runs) == "category"


def test_notes_through_the_rules_backend():
    from medfilip.extraction.rules import RulesBackend
    from medfilip.extraction.vocabulary import Vocabulary
    from medfilip.pipeline.config import ROOT

    vocab_dir = ROOT / "resources" / "vocabulary"
    backend, vocabulary = RulesBackend(vocab_dir), Vocabulary.load(vocab_dir)
    notes = pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "d"],
            "patientid": ["1", "2", "3", "4"],
            "finding": ["COVID-19", "Streptococcus", "No Finding", "COVID-19"],
            "clinical_notes": [
                "Bilateral patchy consolidation in both lower lobes.",
                "Right lower lobe pneumonia.",
                "No pneumothorax. No pleural effusion.",
                "",
            ],
        }
    )
    table = extract_notes(notes, backend, vocabulary.normalise)
    assert table["image_id"].tolist() == ["a", "b", "c"]  # the empty note is not a note
    assert table["pneumonia_like"].tolist() == [True, True, False]
    assert "consolidation" in table.loc[0, "present"]
    assert "pneumothorax" in table.loc[2, "negated"] and table.loc[2, "present"] == ""
    summary = agreement([table]).set_index("group")
    assert summary.loc["COVID-19", "pneumonia_like_share"] == 1.0
    assert summary.loc["No Finding", "no_entity_share"] == 1.0
    assert [finding_group(f) for f in ("COVID-19, ARDS", "ARDS", "Klebsiella")] == [
        "COVID-19",
        "ARDS",
        "other pneumonia",
    ]


def test_the_gap_rule_pairs_each_phantom_store_with_its_real_one():
    """real.smk's --phantom/--real arguments pass real-gap's check: the same set names, in order,
    the phantom side naming the twin's store and the real side the pack's."""
    from medfilip.pipeline.commands.real import _named
    from medfilip.pipeline.workflows import real as real_wf

    phantom, real = _named(real_wf.gap_named(0)), _named(real_wf.gap_named(1))
    assert list(phantom) == list(real) == ["nih", "covid"]
    for name in phantom:
        assert phantom[name].name == f"{name}_phantom"
        assert real[name].name == f"{name}_real"
