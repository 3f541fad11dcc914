"""The phantom renderer: findings change pixels only in their region, severity scales them,
seeds are deterministic, sides are the patient's, overrides are respected, sizes agree."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from medfilip.extraction.vocabulary import Vocabulary
from medfilip.phantom import APPEARANCE, Finding, finding_region, phantom_scene, render_phantom
from medfilip.phantom.anatomy import PATIENT_LEFT, PATIENT_RIGHT
from medfilip.phantom.regions import parse_location

EXTRAS = [
    "covid-19 pneumonia",
    "lung mass",
    "pneumomediastinum",
    "lung opacity",
    "lung lesion",
    "aortic enlargement",
    "normal",
]
SIZE = 128


def dilate(mask: np.ndarray, k: int = 1) -> np.ndarray:
    out = mask.copy()
    for axis in (0, 1):
        for shift in range(1, k + 1):
            out |= np.roll(mask, shift, axis) | np.roll(mask, -shift, axis)
    return out


def changed(findings, *, size=SIZE, seed=5, threshold=0):
    base = render_phantom([], size=size, seed=seed).astype(int)
    image = render_phantom(findings, size=size, seed=seed).astype(int)
    return np.abs(image - base) > threshold


def test_every_vocabulary_category_and_extra_has_an_appearance():
    vocab = Vocabulary.load("resources/vocabulary")
    missing = sorted((set(vocab.by_name) | set(EXTRAS)) - set(APPEARANCE))
    assert missing == []


@pytest.mark.parametrize("category", sorted(APPEARANCE))
def test_category_renders_and_changes_pixels_only_inside_its_region(category):
    for severity in ("mild", "severe"):
        finding = Finding(category, severity=severity)
        image = render_phantom([finding], size=SIZE, seed=11)
        assert image.dtype == np.uint8 and image.shape == (SIZE, SIZE)
        diff = changed([finding], seed=11)
        region = finding_region(finding, phantom_scene([finding], size=SIZE, seed=11))
        outside = diff & ~dilate(region)
        assert outside.sum() == 0, f"{category} ({severity}) changed {outside.sum()} pixels outside its region"
        if category != "normal":
            assert diff.any(), f"{category} ({severity}) changed nothing"


@pytest.mark.parametrize(
    "category",
    [
        "consolidation",
        "pleural effusion",
        "pneumothorax",
        "nodule",
        "cardiomegaly",
        "pulmonary edema",
        "atelectasis",
        "covid-19 pneumonia",
        "fibrosis",
        "emphysema",
    ],
)
def test_severity_scales_the_changed_area(category):
    areas = {
        sev: changed([Finding(category, severity=sev)], threshold=6).sum() for sev in ("minimal", "mild", "severe")
    }
    assert areas["severe"] > areas["mild"] >= areas["minimal"] > 0, areas


def test_same_seed_same_bytes_other_seed_other_image():
    findings = [
        Finding("pneumonia", "right lower lobe", "moderate"),
        Finding("pleural effusion", "left", "small"),
        Finding("support devices"),
    ]
    a = render_phantom(findings, size=SIZE, seed=3)
    assert a.tobytes() == render_phantom(findings, size=SIZE, seed=3).tobytes()
    assert not np.array_equal(a, render_phantom(findings, size=SIZE, seed=4))


@pytest.mark.parametrize("category", ["consolidation", "pleural effusion", "pneumothorax", "nodule", "atelectasis"])
def test_patient_left_is_the_image_right(category):
    left = changed([Finding(category, "left lower lobe", "severe")], threshold=4)
    right = changed([Finding(category, "right lower lobe", "severe")], threshold=4)
    half = SIZE // 2
    assert left[:, half:].sum() > 5 * left[:, :half].sum() and left.sum() > 0
    assert right[:, :half].sum() > 5 * right[:, half:].sum() and right.sum() > 0


def test_box_override_bounds_the_finding():
    box = (0.2, 0.3, 0.42, 0.62)
    for category in ("pneumonia", "cardiomegaly", "nodule", "pneumothorax"):
        diff = changed([Finding(category, "left apex", "severe", box=box)])
        inside = np.zeros_like(diff)
        inside[int(0.3 * SIZE) : int(0.62 * SIZE) + 1, int(0.2 * SIZE) : int(0.42 * SIZE) + 1] = True
        assert diff.any() and not (diff & ~inside).any(), category


def test_mask_override_is_resized_and_bounds_the_finding():
    mask = np.zeros((40, 30), bool)
    mask[10:25, 3:12] = True  # the image left lung (patient right), any shape is resized
    diff = changed([Finding("pneumothorax", "left", "severe", mask=mask)])
    resized = np.kron(mask, np.ones((1, 1)))  # reference: nearest-neighbour resize done here
    rows = np.minimum(((np.arange(SIZE) + 0.5) * 40 / SIZE).astype(int), 39)
    cols = np.minimum(((np.arange(SIZE) + 0.5) * 30 / SIZE).astype(int), 29)
    resized = mask[np.ix_(rows, cols)]
    assert diff.any() and not (diff & ~resized).any()


def measured_ctr(scene) -> float:
    """Widest heart (mediastinum below the hila) over the widest inner thorax, from the masks."""
    heart_rows = scene.heart > 0.5
    heart_width = max(np.ptp(np.nonzero(r)[0]) + 1 if r.any() else 0 for r in heart_rows)
    thorax = (scene.hemithorax[PATIENT_RIGHT] > 0.5) | (scene.hemithorax[PATIENT_LEFT] > 0.5)
    thorax_width = max(np.ptp(np.nonzero(r)[0]) + 1 if r.any() else 0 for r in thorax)
    return heart_width / thorax_width


def test_cardiomegaly_raises_the_cardiothoracic_ratio_above_half():
    size = 256
    for seed in range(4):
        normal = phantom_scene([], size=size, seed=seed)
        assert measured_ctr(normal) < 0.5
        for severity, floor in (("minimal", 0.5), ("mild", 0.52), ("severe", 0.58)):
            scene = phantom_scene([Finding("cardiomegaly", severity=severity)], size=size, seed=seed)
            assert scene.anatomy.cardiothoracic_ratio > floor
            assert measured_ctr(scene) > floor
    # the image shows it: the heart rows are brighter across a wider span
    image = render_phantom([Finding("cardiomegaly", severity="severe")], size=size, seed=0).astype(float)
    base = render_phantom([], size=size, seed=0).astype(float)
    assert image.mean() > base.mean()


def test_effusion_brightens_the_base_and_pneumothorax_darkens_the_apex():
    size = 128
    scene = phantom_scene([], size=size, seed=2)
    base = render_phantom([], size=size, seed=2).astype(float)
    effusion = render_phantom([Finding("pleural effusion", "right", "moderate")], size=size, seed=2).astype(float)
    t = (scene.y - scene.anatomy.apex_y) / (
        scene.anatomy.dome_top(PATIENT_RIGHT) + scene.anatomy.dome_depth - scene.anatomy.apex_y
    )
    right_base = (scene.lungs[PATIENT_RIGHT] > 0.5) & (t > 0.8)
    assert effusion[right_base].mean() > base[right_base].mean() + 30
    left_lung = scene.lungs[PATIENT_LEFT] > 0.5
    assert np.abs(effusion[left_lung] - base[left_lung]).max() == 0

    ptx = render_phantom([Finding("pneumothorax", "left", "large")], size=size, seed=2).astype(float)
    rim = (
        (scene.lung_outline(PATIENT_LEFT) > 0)
        & (scene.lung_outline(PATIENT_LEFT) < 0.03)
        & (scene.lateral(PATIENT_LEFT) > 0.15)
        & (t < 0.6)
    )
    assert ptx[rim].mean() < base[rim].mean() - 3


def test_sizes_give_the_same_picture():
    findings = [
        Finding("consolidation", "right lower lobe", "severe"),
        Finding("cardiomegaly"),
        Finding("pleural effusion", "left", "moderate"),
    ]
    small = render_phantom(findings, size=128, seed=9).astype(float)
    large = render_phantom(findings, size=512, seed=9).astype(float).reshape(128, 4, 128, 4).mean(axis=(1, 3))
    assert np.corrcoef(small.ravel(), large.ravel())[0, 1] > 0.9


def test_negated_uncertain_and_unknown_findings_are_not_drawn(caplog):
    base = render_phantom([], size=64, seed=1)
    assert np.array_equal(base, render_phantom([Finding("pneumonia", polarity="negated")], size=64, seed=1))
    assert np.array_equal(base, render_phantom([Finding("pneumonia", polarity="uncertain")], size=64, seed=1))
    with caplog.at_level(logging.WARNING):
        assert np.array_equal(base, render_phantom([Finding("dragon scales")], size=64, seed=1))
        render_phantom([Finding("dragon scales")], size=64, seed=1)
    assert sum("dragon scales" in r.message for r in caplog.records) == 1


def test_location_strings():
    assert parse_location("right upper lobe") == ((PATIENT_RIGHT,), "upper")
    assert parse_location("bilateral lung") == ((PATIENT_RIGHT, PATIENT_LEFT), "lung")
    assert parse_location("left costophrenic angle") == ((PATIENT_LEFT,), "costophrenic angle")
    assert parse_location("retrocardiac") == (None, "retrocardiac")
    assert parse_location(None) == (None, None)
    assert parse_location("left") == ((PATIENT_LEFT,), "lung")
    # every location of the vocabulary renders
    for region in ("upper lobe", "middle lobe", "lower lobe", "lingula", "base", "apex", "hilum", "retrocardiac", "costophrenic angle",
                   "mediastinum", "pleura", "heart", "aorta", "spine", "ribs", "clavicle", "shoulder", "diaphragm", "sternum",
                   "chest wall", "breast", "lung", "abdomen", "neck", "trachea", "svc"):  # fmt: skip
        assert parse_location(f"left {region}")[1] is not None
        render_phantom([Finding("nodule", f"left {region}", "large")], size=48, seed=0)
