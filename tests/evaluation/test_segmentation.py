"""Segmentation (paper Table IV): Dice definitions, masks from the store, fraction subsets, the
encoder -> UNet weight mapping, fine-tuning with choices on validate, the table and bad input."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import torchvision
from segmentation_fixtures import SOURCE_H, SOURCE_W, build_siim_store, ellipse

from medfilip.evaluation.segmentation.data import (
    SegmentationDataError,
    SegmentationSkip,
    example_rows,
    fraction_subsets,
    load_segmentation_data,
    mask_to_square,
    resize_mask_area,
    store_masks,
)
from medfilip.evaluation.segmentation.finetune import (
    batch_stream,
    check_steps,
    choose_on_validate,
    steps_for,
)
from medfilip.evaluation.segmentation.metrics import (
    dice_per_image,
    iou_per_image,
    mean_over_images,
    mean_over_positives,
)
from medfilip.evaluation.segmentation.settings import SegmentationSettings, fraction_label
from medfilip.evaluation.segmentation.unet import (
    EncoderMappingError,
    backbone_state,
    build_unet,
    load_encoder,
    unet_from_run,
)
from medfilip.evaluation.settings import BootstrapSettings
from medfilip.images.preprocess import letterbox_geometry
from medfilip.images.store import ImageStore
from medfilip.pipeline.config import validate_config

torch.set_num_threads(1)


# -- Dice and IoU ---------------------------------------------------------------------------------
def _mask(shape, pixels):
    m = np.zeros(shape, bool)
    for y, x in pixels:
        m[y, x] = True
    return m


def hand_cases():
    """Four 4x4 cases with their Dice and IoU worked out by hand."""
    s = (4, 4)
    truth = np.stack(
        [
            _mask(s, [(0, 0), (0, 1), (1, 0), (1, 1)]),  # A: 4 true pixels
            _mask(s, []),  # B: empty
            _mask(s, []),  # C: empty
            _mask(s, [(3, 3), (3, 2)]),  # D: 2 true pixels
        ]
    )
    pred = np.stack(
        [
            _mask(s, [(0, 0), (0, 1), (2, 2), (2, 3)]),  # A: 2 hits, 2 false positives
            _mask(s, []),  # B: empty on empty
            _mask(s, [(1, 1), (1, 2), (1, 3)]),  # C: 3 false positives on an empty truth
            _mask(s, []),  # D: missed entirely
        ]
    )
    # A: Dice 2*2/(4+4) = 0.5, IoU 2/6; B: 1, 1; C: 0, 0; D: 0, 0
    return pred, truth, np.array([0.5, 1.0, 0.0, 0.0]), np.array([1 / 3, 1.0, 0.0, 0.0])


def test_dice_and_iou_per_image_against_hand_computed_masks():
    pred, truth, dice, iou = hand_cases()
    np.testing.assert_allclose(dice_per_image(pred, truth), dice)
    np.testing.assert_allclose(iou_per_image(pred, truth), iou)
    # one 2-D mask is one image
    assert dice_per_image(pred[0], truth[0]).tolist() == [0.5]
    # symmetric, and a perfect prediction scores 1 whatever its size
    np.testing.assert_allclose(dice_per_image(truth, pred), dice)
    assert dice_per_image(truth, truth).tolist() == [1.0] * 4


def test_both_dice_definitions_including_empty_masks():
    pred, truth, _, _ = hand_cases()
    dice = dice_per_image(pred, truth)
    positive = truth.reshape(4, -1).any(axis=1)
    assert positive.tolist() == [True, False, False, True]
    # Kaggle / official code: mean over every image, the empty-on-empty image counts 1
    assert mean_over_images(dice) == pytest.approx((0.5 + 1 + 0 + 0) / 4)
    # over the images with pneumothorax only: C's false positives and B's 1 do not count
    assert mean_over_positives(dice, positive) == pytest.approx((0.5 + 0) / 2)
    iou = iou_per_image(pred, truth)
    assert mean_over_images(iou) == pytest.approx((1 / 3 + 1) / 4)
    assert mean_over_positives(iou, positive) == pytest.approx(1 / 6)
    # a test set without any pneumothorax: the positive-only Dice is undefined, not 0 or 1
    assert math.isnan(mean_over_positives(dice[1:3], positive[1:3]))
    # predicting nothing anywhere: Kaggle Dice = share of images without pneumothorax
    empty = np.zeros_like(truth)
    assert mean_over_images(dice_per_image(empty, truth)) == pytest.approx(0.5)
    assert mean_over_positives(dice_per_image(empty, truth), positive) == 0.0


def test_dice_rejects_non_boolean_or_mismatched_masks():
    with pytest.raises(TypeError, match="boolean"):
        dice_per_image(np.zeros((2, 4, 4), np.uint8), np.zeros((2, 4, 4), bool))
    with pytest.raises(ValueError, match="differ in shape"):
        dice_per_image(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 5), bool))


# -- settings ---------------------------------------------------------------------------------------
def test_settings_defaults_and_bad_values():
    s = SegmentationSettings()
    assert s.fractions == [0.01, 0.1, 1.0] and s.image_size % 32 == 0
    assert [fraction_label(f) for f in s.fractions] == ["1pct", "10pct", "100pct"]
    assert fraction_label(0.005) == "0.5pct"
    assert SegmentationSettings(fractions=[1.0, 0.1]).fractions == [0.1, 1.0]
    for bad in (
        {"fractions": [0.0]},
        {"fractions": [1.5]},
        {"fractions": [0.1, 0.1]},
        {"image_size": 48},
        {"thresholds": [1.0]},
        {"min_steps": 50, "max_steps": 10},
        {"decoder_channels": [8, 8]},
    ):
        with pytest.raises(ValueError):
            SegmentationSettings(**bad)
    # one field of evaluation:, validated with the whole config (key path in the message)
    from medfilip.configbase import ConfigError

    with pytest.raises(ConfigError, match="evaluation.segmentation.image_size"):
        validate_config({"evaluation": {"segmentation": {"image_size": 50}}})


# -- masks from the store ---------------------------------------------------------------------------
def test_store_masks_follow_the_letterboxed_images(tmp_path):
    store = ImageStore.open(build_siim_store(tmp_path / "siim", n_train=4, n_validate=2, n_test=2))
    rows = np.arange(len(store))
    masks = store_masks(store, rows)
    images = store.get_batch(rows)
    labels = store.labels()[:, 0]
    assert masks.shape == (8, 64, 64)
    assert (masks.reshape(8, -1).any(axis=1) == (labels == 1)).all()
    geo = letterbox_geometry(SOURCE_W, SOURCE_H, 64)
    assert geo.pad_y > 0 and geo.pad_x == 0  # the 96x80 source is padded top and bottom
    content = np.zeros((64, 64), bool)
    content[geo.pad_y : geo.pad_y + geo.height] = True
    for image, mask in zip(images, masks):
        assert not (mask & ~content).any()  # no mask in the padding
        if mask.any():
            # the dark ellipse of the image is where the mask is (interpolation blurs the rim)
            dark = (image < 95) & content
            assert (dark & mask).sum() / (dark | mask).sum() > 0.8
    # at the UNet's size the masks keep every image's status
    small = store_masks(store, rows, 32)
    assert (small.reshape(8, -1).any(axis=1) == masks.reshape(8, -1).any(axis=1)).all()


def test_mask_resize_by_area_never_empties_a_mask():
    tiny = np.zeros((64, 64), bool)
    tiny[10, 10] = True  # one pixel: 1/16 of a pixel at 16 px
    out = resize_mask_area(tiny, 16, 16)
    assert out.sum() == 1 and out[2, 2]
    half = np.zeros((4, 4), bool)
    half[:, :2] = True
    assert resize_mask_area(half, 2, 2).tolist() == [[True, False], [True, False]]
    square = mask_to_square(ellipse(SOURCE_H, SOURCE_W, 40, 48, 10, 10), 64)
    assert square.shape == (64, 64) and square.any()


def test_store_without_masks_is_a_named_error(tmp_path):
    root = build_siim_store(tmp_path / "siim", n_train=2, n_validate=2, n_test=2, with_masks=False)
    with pytest.raises(SegmentationDataError, match=r"index\.parquet: no mask column\(s\) mask_rle"):
        load_segmentation_data(root, 32)


def test_store_without_train_or_validate_split_is_a_documented_skip(tmp_path):
    with pytest.raises(SegmentationSkip, match="no train split"):
        load_segmentation_data(build_siim_store(tmp_path / "a", n_train=0, n_validate=2, n_test=2), 32)
    with pytest.raises(SegmentationSkip, match="no validate split"):
        load_segmentation_data(build_siim_store(tmp_path / "b", n_train=2, n_validate=0, n_test=2), 32)
    with pytest.raises(SegmentationDataError, match="no image in the test split"):
        load_segmentation_data(build_siim_store(tmp_path / "c", n_train=2, n_validate=2, n_test=0), 32)


# -- fraction subsets and schedule ---------------------------------------------------------------
def test_fraction_subsets_are_stratified_nested_and_seeded():
    positive = np.zeros(1000, bool)
    positive[np.random.default_rng(3).choice(1000, 220, replace=False)] = True
    subsets = fraction_subsets(positive, [0.01, 0.1, 1.0], seed=0)
    sizes = {f: rows.size for f, rows in subsets.items()}
    assert sizes == {0.01: 10, 0.1: 100, 1.0: 1000}
    assert [int(positive[subsets[f]].sum()) for f in (0.01, 0.1, 1.0)] == [2, 22, 220]
    assert set(subsets[0.01]) <= set(subsets[0.1]) <= set(subsets[1.0])
    assert all(
        np.array_equal(a, b) for a, b in zip(subsets.values(), fraction_subsets(positive, [0.01, 0.1, 1.0], 0).values())
    )
    assert not np.array_equal(subsets[0.1], fraction_subsets(positive, [0.01, 0.1, 1.0], seed=1)[0.1])
    # a rare class still gets one positive at 1 %, and a fraction never has fewer than 2 images
    rare = np.zeros(100, bool)
    rare[[5, 50]] = True
    small = fraction_subsets(rare, [0.01], seed=0)[0.01]
    assert small.size == 2 and rare[small].sum() == 1
    # no positive at all in train: the subsets are all negative (the fine-tuning skips them)
    assert fraction_subsets(np.zeros(50, bool), [0.1], seed=0)[0.1].size == 5


def test_steps_batches_and_checks():
    s = SegmentationSettings(epochs=10, min_steps=20, max_steps=40, batch_size=16)
    assert steps_for(10, s) == (20, 10)  # 1 batch an epoch -> raised to min_steps, batch = all 10 images
    assert steps_for(100, s) == (40, 16)  # 70 -> capped
    assert steps_for(1000, SegmentationSettings(max_steps=None, epochs=1, min_steps=1, batch_size=100)) == (10, 100)
    stream = batch_stream(10, 4, 6, seed=0)
    assert stream.shape == (6, 4)
    counts = np.bincount(stream.ravel(), minlength=10)
    assert counts.min() >= 2 and counts.max() <= 3  # shuffles in turn: every image seen about equally
    assert check_steps(40, 2) == [20, 40] and check_steps(3, 5) == [1, 2, 3]


def test_batches_oversample_positives_when_asked():
    positive = np.zeros(20, bool)
    positive[[3, 11]] = True  # 2 of 20
    stream = batch_stream(20, 8, 10, seed=0, positive=positive, positive_share=0.5)
    assert stream.shape == (10, 8)
    assert (positive[stream].sum(axis=1) == 4).all()  # half of every batch
    assert set(stream[:, 4:].ravel()) == set(np.flatnonzero(~positive))  # negatives cycle through all of theirs
    # a subset without negatives (or positives) is not forced
    assert batch_stream(5, 4, 3, 0, np.ones(5, bool), 0.5).shape == (3, 4)
    assert len(set(batch_stream(20, 4, 5, 0, np.zeros(20, bool), 0.5).ravel())) == 20
    assert np.array_equal(stream, batch_stream(20, 8, 10, seed=0, positive=positive, positive_share=0.5))


def test_threshold_and_min_area_are_chosen_to_maximise_validate_dice():
    truth = np.zeros((3, 8, 8), bool)
    truth[0, 2:6, 2:6] = True
    prob = np.full((3, 8, 8), 0.05, np.float32)
    prob[0, 2:6, 2:6] = 0.55  # the lesion: only thresholds below 0.55 find it
    prob[1, 0, 0] = 0.9  # a one-pixel false positive on an empty image: min area removes it
    score, threshold, min_area = choose_on_validate(prob, truth, [0.3, 0.5, 0.7], [0.0, 0.05])
    assert (threshold, min_area) == (0.3, 0.05) and score == pytest.approx(1.0)
    score, threshold, min_area = choose_on_validate(prob, truth, [0.3, 0.5, 0.7], [0.0])
    assert score == pytest.approx(2 / 3) and threshold == 0.3


def test_example_rows_come_from_the_truth_only():
    positive = np.array([True, False, True, True, False, True])
    areas = np.array([50, 0, 5, 40, 0, 30])
    rows = example_rows(positive, areas, 3, seed=0)
    assert rows.size == 3 and positive[rows].sum() == 2 and (~positive[rows]).sum() == 1
    assert set(rows[positive[rows]]) <= {0, 3, 5}  # the larger half of the masks
    assert np.array_equal(rows, example_rows(positive, areas, 3, seed=0))


# -- the encoder -> UNet weight mapping -------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from medfilip.training.model import build_model, save_trained
    from medfilip.training.settings import ModelSettings

    model = build_model(ModelSettings(embed_dim=16, max_length=16, image_channels=1), image_size=32, seed=3)
    with torch.no_grad():  # not an init any UNet would have: every tensor differs from a fresh one
        for p in model.image.backbone.parameters():
            p.add_(torch.randn_like(p) * 0.01)
        for b in model.image.backbone.buffers():
            if b.dtype.is_floating_point:
                b.add_(torch.rand_like(b) * 0.1)
    run = tmp_path_factory.mktemp("run")
    save_trained(model, run)
    return run, model


def test_every_encoder_tensor_of_the_unet_is_the_runs(trained_run):
    run, model = trained_run
    unet, info = unet_from_run(run, [32, 16, 8, 8, 8], seed=0)
    assert info == {"image_arch": "resnet18", "image_channels": 1, "pretrain_image_size": 32}
    encoder = unet.encoder.state_dict()
    backbone = {k: v for k, v in model.image.backbone.state_dict().items() if not k.startswith("fc.")}
    assert set(encoder) == set(backbone)  # every backbone weight loaded, nothing left over
    assert len(encoder) == 120  # resnet18 trunk: 20 convolutions + 20 BatchNorms x (weight, bias, 3 buffers)
    for key, tensor in backbone.items():
        assert torch.equal(encoder[key], tensor), key
    # and it computes the same: the deepest UNet features, pooled, are the run's image features
    x = torch.randn(2, 1, 64, 64)
    unet.eval()
    model.image.backbone.eval()
    with torch.no_grad():
        pooled = unet.encoder(x)[-1].mean(dim=(2, 3))
        assert torch.allclose(pooled, model.image.backbone(x), atol=1e-5)


def test_the_image_tower_read_from_model_pt_is_load_trained_s(trained_run):
    from medfilip.evaluation.segmentation.unet import load_image_encoder
    from medfilip.training.model import load_trained

    run, _ = trained_run
    image, settings, size = load_image_encoder(run)
    reference = load_trained(run).image.state_dict()
    assert set(image.state_dict()) == set(reference) and size == 32 and settings.image_channels == 1
    assert all(torch.equal(v, reference[k]) for k, v in image.state_dict().items())


def test_a_broken_model_pt_is_a_named_error(tmp_path):
    from medfilip.evaluation.segmentation.unet import load_image_encoder
    from medfilip.training.model import ModelError

    (tmp_path / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match=r"model\.pt: cannot read"):
        load_image_encoder(tmp_path)
    torch.save({"format": 99}, tmp_path / "model.pt")
    with pytest.raises(ModelError, match="model format 99"):
        load_image_encoder(tmp_path)


def test_the_decoder_is_the_same_for_every_encoder(trained_run):
    run, _ = trained_run
    pretrained, _ = unet_from_run(run, [32, 16, 8, 8, 8], seed=0)
    random_init = build_unet("resnet18", 1, [32, 16, 8, 8, 8], seed=0)
    for (k, a), (k2, b) in zip(pretrained.decoder.state_dict().items(), random_init.decoder.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    assert not torch.equal(pretrained.encoder.conv1.weight, random_init.encoder.conv1.weight)


def test_three_channel_torchvision_trunk_maps_and_a_wrong_depth_is_refused():
    tv = torchvision.models.resnet34(weights=None)
    state = {f"image.backbone.{k}": v for k, v in tv.state_dict().items()}  # as a DualEncoder stores it
    backbone = backbone_state({**state, "image.proj.weight": torch.zeros(1), "logit_scale_log": torch.zeros(())})
    assert not any(k.startswith("fc.") for k in backbone)
    unet = build_unet("resnet34", 3, [16, 16, 8, 8, 8], seed=0)
    assert load_encoder(unet, backbone, "tv34") == len(unet.encoder.state_dict())
    assert all(torch.equal(unet.encoder.state_dict()[k], v) for k, v in backbone.items())
    with pytest.raises(EncoderMappingError, match="tv34: .*missing"):
        load_encoder(build_unet("resnet18", 3, [16, 16, 8, 8, 8], seed=0), backbone, "tv34")
    with pytest.raises(EncoderMappingError, match=r"conv1.weight is \(64, 3, 7, 7\)"):
        load_encoder(build_unet("resnet34", 1, [16, 16, 8, 8, 8], seed=0), backbone, "tv34")
    with pytest.raises(EncoderMappingError, match="no smp UNet encoder"):
        build_unet("convnext_tiny", 1, [16, 16, 8, 8, 8], seed=0)


# -- fine-tuning end to end (tiny) -------------------------------------------------------------------
TINY = {
    "image_size": 32,
    "fractions": [0.25, 1.0],
    "decoder_channels": [32, 16, 16, 8, 8],
    "epochs": 4,
    "min_steps": 12,
    "max_steps": 24,
    "batch_size": 8,
    "checks": 2,
    "lr": 0.003,
    "examples": 3,
    "device": "cpu",
}


def tiny_config(**overrides):
    return validate_config({"evaluation": {"segmentation": {**TINY, **overrides}}})


def test_run_without_model_pt_is_a_named_error_before_work(tmp_path):
    from medfilip.evaluation.segmentation.run import run_segmentation
    from medfilip.training.model import ModelError

    (tmp_path / "models" / "ghost").mkdir(parents=True)
    with pytest.raises(ModelError, match=r"ghost/model\.pt: no trained model for run 'ghost'"):
        run_segmentation(
            "ghost", tmp_path / "no-store", tmp_path / "out", tiny_config(), run_dir=tmp_path / "models" / "ghost"
        )
    assert not (tmp_path / "out").exists()


def test_finetune_baseline_and_run_then_table_and_figure(tmp_path, trained_run):
    from medfilip.evaluation.segmentation.run import run_segmentation
    from medfilip.evaluation.segmentation.table import write_figure, write_tables

    run, _ = trained_run
    store = build_siim_store(tmp_path / "siim", n_train=24, n_validate=12, n_test=16)
    cfg = tiny_config()
    out = {"medfilip": tmp_path / "seg" / "medfilip", "random_init": tmp_path / "seg" / "random_init"}
    run_segmentation("medfilip", store, out["medfilip"], cfg, run_dir=run)
    run_segmentation("random_init", store, out["random_init"], cfg)

    summary = json.loads((out["random_init"] / "summary.json").read_text())
    assert [r["fraction"] for r in summary["fractions"]] == [0.25, 1.0]
    assert [r["n_train"] for r in summary["fractions"]] == [6, 24]
    assert [r["n_train_positive"] for r in summary["fractions"]] == [3, 12]
    for r in summary["fractions"]:
        assert r["status"] == "ok" and r["checkpoint_step"] in check_steps(r["steps"], 2)
        assert r["threshold"] in cfg.evaluation.segmentation.thresholds and r["min_area"] in (0.0, 0.005)
        assert r["train_images_per_s"] > 0
    assert summary["n_images"] == {"train": 24, "validate": 12, "test": 16}

    import pyarrow.parquet as pq

    scores = pq.read_table(out["random_init"] / "scores.parquet").to_pandas()
    assert len(scores) == 2 * 16 and set(scores["fraction"]) == {0.25, 1.0}
    assert scores["dice"].between(0, 1).all() and scores["iou"].between(0, 1).all()
    assert ((scores["truth_area"] > 0) == scores["image_id"].isin([f"img{i:03d}" for i in range(0, 52, 2)])).all()
    full = scores[scores["fraction"] == 1.0]
    # the dark ellipses are easy: a UNet trained on 24 images finds them
    assert full.loc[full["truth_area"] > 0, "dice"].mean() > 0.5, full

    # deterministic on CPU: the same settings give the same numbers
    run_segmentation("random_init", store, tmp_path / "again", cfg)
    again = pq.read_table(tmp_path / "again" / "scores.parquet").to_pandas()
    assert np.array_equal(again["dice"].to_numpy(), scores["dice"].to_numpy())

    table = tmp_path / "segmentation.csv"
    rows = write_tables([out["medfilip"], out["random_init"]], table, tmp_path / "long.csv", cfg)
    written = list(csv.DictReader(table.open()))
    assert [r["run"] for r in written] == ["medfilip", "random_init", "all_empty"]
    baseline = written[1]
    assert float(baseline["dice_100pct"]) == pytest.approx(full["dice"].mean(), abs=1e-4)
    assert float(baseline["dice_pos_100pct"]) == pytest.approx(
        full.loc[full["truth_area"] > 0, "dice"].mean(), abs=1e-4
    )
    for metric in ("dice", "dice_pos", "iou", "iou_pos"):
        for lab in ("25pct", "100pct"):
            low, est, high = (float(baseline[f"{metric}_{lab}{s}"]) for s in ("_low", "", "_high"))
            assert low <= est <= high
    delta = rows[1]["delta_dice_100pct_vs_medfilip"]
    assert delta == pytest.approx(rows[1]["dice_100pct"] - rows[0]["dice_100pct"])
    assert rows[1]["delta_dice_100pct_vs_medfilip_low"] <= delta <= rows[1]["delta_dice_100pct_vs_medfilip_high"]
    assert written[0]["delta_dice_100pct_vs_medfilip"] == ""  # the reference itself
    assert "reference run" in written[0]["note"]
    assert float(written[2]["dice_100pct"]) == pytest.approx(0.5) and float(written[2]["dice_pos_100pct"]) == 0.0
    assert_no_silent_blank(written)
    long = list(csv.DictReader((tmp_path / "long.csv").open()))
    assert len(long) == 4 and {r["status"] for r in long} == {"ok"}

    figure = tmp_path / "segmentation.png"
    write_figure([out["medfilip"], out["random_init"]], store, figure)
    assert figure.stat().st_size > 10_000


def assert_no_silent_blank(rows: list[dict]) -> None:
    """Every empty cell of a row is explained by its note."""
    for row in rows:
        blanks = [k for k, v in row.items() if v in ("", "nan", "NaN") and k != "note"]
        if blanks:
            assert row["note"], (row["run"], blanks)
        assert "nan" not in {v.lower() for v in row.values()}


def test_skipped_store_and_fraction_give_reason_rows_not_nan(tmp_path):
    from medfilip.evaluation.segmentation.run import run_segmentation
    from medfilip.evaluation.segmentation.table import write_figure, write_tables

    cfg = tiny_config(fractions=[0.1, 1.0], min_steps=2, max_steps=2, checks=1)
    # a store without a train split: every fraction skipped, with the reason
    no_train = build_siim_store(tmp_path / "no_train", n_train=0, n_validate=4, n_test=4)
    run_segmentation("random_init", no_train, tmp_path / "skip", cfg)
    summary = json.loads((tmp_path / "skip" / "summary.json").read_text())
    assert {r["status"] for r in summary["fractions"]} == {"skipped"}
    assert "no train split" in summary["fractions"][0]["reason"]
    rows = write_tables([tmp_path / "skip"], tmp_path / "t.csv", None, cfg)
    written = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert [r["run"] for r in written] == ["random_init"] and "no train split" in written[0]["note"]
    assert_no_silent_blank(written)
    assert rows[0]["n_test_positive"] is None
    write_figure([tmp_path / "skip"], no_train, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0

    # a train split without any pneumothorax: a fraction with no positive is skipped, named
    store = build_siim_store(tmp_path / "neg", n_train=6, n_validate=4, n_test=4, positive_every=7)
    # images 0 and 7 are positive: 0 is in train; keep train negative by moving the positive out
    run_segmentation("random_init", _without_train_positives(store, tmp_path), tmp_path / "neg_out", cfg)
    summary = json.loads((tmp_path / "neg_out" / "summary.json").read_text())
    assert [r["status"] for r in summary["fractions"]] == ["skipped", "skipped"]
    assert "no image with pneumothorax among the 2 train images" in summary["fractions"][0]["reason"]


def _without_train_positives(store_root, tmp_path):
    """The same store with its train positives relabelled as test images."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    index = pq.read_table(store_root / "index.parquet")
    splits = index.column("split").to_pylist()
    rles = index.column("mask_rle").to_pylist()
    splits = ["test" if s == "train" and r else s for s, r in zip(splits, rles)]
    pq.write_table(
        index.set_column(index.schema.get_field_index("split"), "split", pa.array(splits)), store_root / "index.parquet"
    )
    return store_root


def test_table_rows_from_hand_made_scores():
    """Point estimates are the plain means; the paired delta uses the same resamples; a test set
    without pneumothorax leaves the positive-only columns empty with the reason; no medfilip run: no deltas."""
    from pathlib import Path

    from medfilip.evaluation.segmentation.table import RunScores, build_rows, table_columns

    ids = [f"t{i}" for i in range(6)]
    truth_area = np.array([0, 5, 0, 9, 0, 0])

    def run(name, dice, fractions=(1.0,)):
        arrays = {
            "dice": np.asarray(dice, float),
            "iou": np.asarray(dice, float) / 2,
            "truth_area": truth_area,
            "pred_area": truth_area,
        }
        summary = {
            "fractions": [{"fraction": f, "status": "ok"} for f in fractions]
            + [{"fraction": 0.1, "status": "skipped", "reason": "no image with pneumothorax among 2"}]
        }
        return RunScores(name, "enc", summary, ids, dict.fromkeys(fractions, arrays), Path("."))

    a = run("medfilip", [1, 0.5, 1, 0.25, 1, 0])
    b = run("no_ssm", [1, 0.75, 0, 0.25, 1, 1])
    rows = build_rows([a, b], [0.1, 1.0], bootstrap=BootstrapSettings(n_resamples=200, seed=0))
    assert [r["run"] for r in rows] == ["medfilip", "no_ssm", "all_empty"]
    assert rows[0]["dice_100pct"] == pytest.approx(3.75 / 6)
    assert rows[0]["dice_pos_100pct"] == pytest.approx(0.375)
    assert rows[1]["dice_pos_100pct"] == pytest.approx(0.5)
    assert rows[0]["iou_100pct"] == pytest.approx(3.75 / 12)
    assert rows[1]["delta_dice_100pct_vs_medfilip"] == pytest.approx(4 / 6 - 3.75 / 6)
    assert rows[1]["delta_dice_pos_100pct_vs_medfilip"] == pytest.approx(0.125)
    assert "delta_dice_100pct_vs_medfilip" not in rows[0]
    assert "10pct: skipped: no image with pneumothorax among 2" in rows[0]["note"]
    assert "dice_10pct" not in rows[0]
    assert rows[2]["dice_100pct"] == pytest.approx(4 / 6) and rows[2]["dice_pos_100pct"] == 0.0
    assert "delta_dice_pos_10pct_vs_medfilip" in table_columns([0.1, 1.0], "medfilip")
    # no positives in test; no medfilip run
    truth_area[:] = 0
    rows = build_rows([run("other", [1, 1, 1, 0, 1, 1])], [1.0], bootstrap=BootstrapSettings(n_resamples=50, seed=0))
    assert "dice_pos_100pct" not in rows[0] and "dice_pos and iou_pos undefined" in rows[0]["note"]
    assert "no run named medfilip" in rows[0]["note"] and "undefined" in rows[1]["note"]
