"""The real label files torchxrayvision ships, parsed; SIIM RLE; sampling; the datasets config."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from medfilip.datasets import sources
from medfilip.datasets.catalog import SPECS, enabled_datasets
from medfilip.datasets.rle import rle_area, rle_decode, rle_encode
from medfilip.datasets.sampling import (
    allocate,
    assign_splits,
    derived_seed,
    sample_balanced,
    sample_random,
)
from medfilip.datasets.settings import DatasetsConfig, NihSettings, RsnaSettings


# -- label files ------------------------------------------------------------------------------
def test_rsna_patients_from_the_shipped_labels():
    patients = sources.read_rsna_patients()
    assert len(patients) == 26_684
    assert int(patients["target"].sum()) == 6_012
    assert int(patients["boxes"].apply(len).sum()) == 9_555
    assert (patients.loc[patients["target"] == 0, "boxes"].apply(len) == 0).all()
    assert patients["view"].value_counts().to_dict() == {"PA": 14_511, "AP": 12_173}
    # boxes are in 1024-px coordinates
    boxes = np.array([b for bs in patients["boxes"] for b in bs])
    assert boxes[:, 0].min() >= 0 and (boxes[:, 0] + boxes[:, 2]).max() <= 1024


def test_nih_entries_and_boxes():
    entries = sources.read_nih_entries()
    assert len(entries) == 112_120
    assert int(entries["findings"].apply(lambda f: "Effusion" in f).sum()) == 13_317
    assert int(entries["findings"].apply(lambda f: "Hernia" in f).sum()) == 227
    assert int(entries["findings"].apply(len).eq(0).sum()) == 60_361  # "No Finding"
    boxes = sources.read_nih_boxes()
    assert len(boxes) == 984 and boxes["image_index"].nunique() == 880
    assert boxes["label"].value_counts()["Infiltration"] == 123  # spelled "Infiltrate" in the file
    assert set(boxes["label"]) <= set(SPECS["nih"].categories)
    assert boxes["image_index"].isin(set(entries["Image Index"])).all()


def test_vinbig_images_one_radiologist_per_class():
    images = sources.read_vinbig_images()
    assert len(images) == 15_000
    assert int(images["classes"].apply(len).eq(0).sum()) == 10_606
    assert int(images["classes"].apply(lambda c: "Aortic enlargement" in c).sum()) == 3_067
    assert (images["size"] >= sources.VINBIG_NOMINAL_SIZE).all() and images["size"].max() == 3_384
    raw = sources.read_vinbig_annotations()
    row = images.set_index("image_id").loc["0005e8e3701dfb1dd93d53e2ff537b6e"]
    # the boxes of each class come from one radiologist's rows of the file
    for class_name, boxes in row["boxes"].items():
        rows = raw[(raw.image_id == row.name) & (raw.class_name == class_name)]
        by_rad = {rad: set(zip(g.x_min, g.y_min, g.x_max, g.y_max)) for rad, g in rows.groupby("rad_id")}
        assert set(boxes) in by_rad.values()


def test_siim_images_merge_regions():
    rows = sources.read_siim_rle()
    assert len(rows) == 12_954
    images = sources.read_siim_images()
    assert len(images) == 12_047 and int(images["target"].sum()) == 2_669
    assert int(images["rles"].apply(len).max()) == 10


# -- RLE --------------------------------------------------------------------------------------
KNOWN_IMAGE = "1.2.276.0.7230010.3.1.4.8323329.13666.1517875247.117800"


def test_rle_decode_known_mask():
    rle = sources.read_siim_images().set_index("image_id").at[KNOWN_IMAGE, "rles"][0]
    mask = rle_decode(rle, 1024, 1024)
    assert mask.sum() == rle_area(rle) == 30_859
    rows, cols = np.nonzero(mask)
    # column-major runs: the region is a tall patch on the image's right (the patient's left) apex
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (125, 390, 544, 795)
    assert rle_encode(mask) == rle


def _reference_decode(rle: str, width: int, height: int) -> np.ndarray:
    """The challenge's mask_functions.rle2mask (as torchxrayvision copies it), then .T."""
    mask = np.zeros(width * height)
    array = np.asarray([int(x) for x in rle.split()])
    position = 0
    for start, length in zip(array[0::2], array[1::2]):
        position += start
        mask[position : position + length] = 1
        position += length
    return mask.reshape(width, height).T.astype(bool)


def test_rle_matches_the_challenge_decoder_and_round_trips():
    rles = [r for rs in sources.read_siim_images()["rles"] for r in rs][:40]
    for rle in rles:
        mask = rle_decode(rle, 1024, 1024)
        assert np.array_equal(mask, _reference_decode(rle, 1024, 1024))
        assert rle_encode(mask) == rle
    rng = np.random.default_rng(0)
    for shape in [(7, 5), (32, 32), (16, 40)]:
        mask = rng.random(shape) > 0.6
        assert np.array_equal(rle_decode(rle_encode(mask), *shape), mask)
    assert rle_encode(np.zeros((4, 4), bool)) == "-1"
    assert not rle_decode("-1", 4, 4).any()
    with pytest.raises(ValueError, match="odd"):
        rle_decode("3 2 1", 4, 4)
    with pytest.raises(ValueError, match="past the end"):
        rle_decode("10 10", 4, 4)


# -- sampling ---------------------------------------------------------------------------------
def test_balanced_sample_tops_up_rare_classes():
    positives = np.zeros((1000, 3), bool)
    positives[:400, 0] = True  # common
    positives[400:430, 1] = True  # rare
    positives[430:440, 2] = True  # very rare: fewer than its share
    has_box = np.zeros(1000, bool)
    has_box[400:405] = True
    idx = sample_balanced(positives, 120, seed=3, has_box=has_box)
    assert len(idx) == 120 and len(set(idx)) == 120
    counts = positives[idx].sum(axis=0)
    # 60 abnormal images, spread evenly: all 10 of the very rare class, the rest shared
    assert positives[idx].any(axis=1).sum() == 60
    assert counts[2] == 10 and counts[1] == 25 and counts[0] == 25
    assert set(range(400, 405)) <= set(idx)  # boxed images first
    assert np.array_equal(idx, sample_balanced(positives, 120, seed=3, has_box=has_box))
    assert not np.array_equal(idx, sample_balanced(positives, 120, seed=4, has_box=has_box))


def test_splits_and_allocation():
    splits = assign_splits(16, n_test=12, n_validate=4, seed=0)
    assert list(splits).count("validate") == 4 and list(splits).count("test") == 12
    shrunk = assign_splits(30, n_test=40, n_validate=20, seed=0)  # fewer kept than asked: in proportion
    assert list(shrunk).count("validate") == 10
    assert len(sample_random(50, 10, seed=1)) == 10 and list(sample_random(5, 10, seed=1)) == [0, 1, 2, 3, 4]
    assert allocate({"a": 3616, "b": 10192, "c": 1345}, 16) == {"a": 4, "b": 11, "c": 1}
    assert derived_seed(0, "rsna", "x") == derived_seed(0, "rsna", "x") != derived_seed(1, "rsna", "x")


def test_sample_splits_draw_train_after_the_held_out_images():
    from medfilip.datasets.sampling import random_sampler, sample_splits

    groups = np.repeat(np.arange(50), 2)  # 50 patients with 2 images each
    idx, splits = sample_splits(100, 10, 4, 30, seed=0, dataset="x", sampler=random_sampler, groups=groups)
    held, train = idx[splits != "train"], idx[splits == "train"]
    assert len(held) == 14 and len(train) == 30 and len(set(idx)) == 44
    assert set(groups[train]).isdisjoint(groups[held])
    held0, splits0 = sample_splits(100, 10, 4, 0, seed=0, dataset="x", sampler=random_sampler)
    assert np.array_equal(held0, held) and list(splits0) == list(splits[splits != "train"])
    # more asked than there are free patients: every free image, no more
    idx, splits = sample_splits(100, 10, 4, 1000, seed=0, dataset="x", sampler=random_sampler, groups=groups)
    assert (splits == "train").sum() == 100 - 2 * len(set(groups[idx[splits != "train"]]))


# -- catalog and config -----------------------------------------------------------------------
def test_every_canonical_name_has_a_knowledge_entry():
    from medfilip.knowledge import load_knowledge

    knowledge = load_knowledge("resources/knowledge/dictionary.yaml")
    names = {c for spec in SPECS.values() for c in spec.categories.values()}
    assert names <= set(knowledge.categories)
    assert len(NihSettings().classes) == 10 and len(DatasetsConfig().vinbig.classes) == 8


def test_datasets_config_checks_classes():
    with pytest.raises(ValidationError, match="unknown nih class"):
        NihSettings(classes=["Effusion", "Pleural effusion"])
    with pytest.raises(ValidationError, match="at least 2 classes"):
        RsnaSettings(classes=["Lung Opacity"])
    with pytest.raises(ValidationError, match="duplicate"):
        NihSettings(classes=["Effusion", "Effusion"])
    cfg = DatasetsConfig(nih={"enabled": False})
    assert enabled_datasets(cfg) == ["rsna", "vinbig", "siim", "covid"]
    assert pd.Series(SPECS["nih"].label_names(cfg.nih.classes)).is_unique
