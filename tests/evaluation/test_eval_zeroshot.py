"""Zero-shot scoring on tiny image stores with a deterministic encoder, the sets, the table and the figure."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from medfilip.evaluation.report import write_figure, write_per_class, write_table
from medfilip.evaluation.sets import (
    corpus_sets,
    downstream_set,
    load_eval_sets,
)
from medfilip.evaluation.settings import BootstrapSettings, CorpusSetsSettings, EvaluationConfig
from medfilip.evaluation.zeroshot import class_texts, evaluate_run, evaluate_runs, zero_shot_scores
from medfilip.images.store import write_store
from medfilip.pipeline.workflows.evaluation import configured_run_dirs, configured_set_dirs

torch.set_num_threads(1)

SIZE = 24
VOCAB = ["cardiomegaly", "atelectasis", "pleural effusion", "pneumonia", "covid-19 pneumonia", "normal"]


def image_with(classes: list[str]) -> np.ndarray:
    """A stripe per vocabulary entry; a class present makes its stripe bright ('normal' draws nothing)."""
    img = np.zeros((SIZE, SIZE), dtype=np.uint8)
    width = SIZE // len(VOCAB)
    for c in classes:
        if c != "normal":
            k = VOCAB.index(c)
            img[:, k * width : (k + 1) * width] = 255
    return img


class StripeEncoder:
    """Deterministic dual encoder: image dim k = brightness of stripe k (+ a constant 'normal' dim);
    the text of class k is the unit vector e_k. Images of class k thus align with class k's text."""

    logit_scale = 10.0

    def eval(self):
        return self

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        assert images.dtype == torch.uint8 and images.ndim == 3
        width = SIZE // len(VOCAB)
        x = images.float() / 255.0
        feats = [x[:, :, k * width : (k + 1) * width].mean(dim=(1, 2)) for k in range(len(VOCAB) - 1)]
        feats.append(torch.full((images.shape[0],), 0.3))
        return torch.nn.functional.normalize(torch.stack(feats, dim=1), dim=1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), len(VOCAB))
        for i, text in enumerate(texts):
            head = text.split(",")[0].strip()
            # longest name first: "covid-19 pneumonia" is not "pneumonia"
            name = max((n for n in VOCAB if head == n or head.endswith(" " + n)), key=len)
            out[i, VOCAB.index(name)] = 1.0
        return out


def explain(category: str) -> str:
    return f"a test pattern of stripes ({len(category)} letters)"


def multi_label_store(root: Path):
    rng = np.random.default_rng(0)
    names = ["cardiomegaly", "atelectasis", "pleural effusion"]
    items = []
    for i in range(40):
        present = [n for n in names if rng.random() < 0.4] or [names[i % 3]]
        labels = [float(n in present) for n in names]
        if i % 7 == 0:
            labels[1] = float("nan")  # not stated
        items.append((f"img{i:03d}", image_with(present), {"split": "test" if i % 2 else "validate", "labels": labels}))
    return write_store(root, items, size=SIZE, dataset="nih", label_names=names)


def covid_store(root: Path):
    names = ["covid-19 pneumonia", "pneumonia", "normal"]
    items = []
    for i in range(30):
        cls = names[i % 3]
        items.append(
            (
                f"c{i:03d}",
                image_with([cls]),
                {"split": "test" if i % 2 else "validate", "labels": [float(n == cls) for n in names]},
            )
        )
    return write_store(root, items, size=SIZE, dataset="covid", label_names=names)


def finding(category: str, severity: str | None = None) -> dict:
    return {"category": category, "location": None, "severity": severity}


CORPUS = [  # (findings, split) per image
    ([], "test"),
    ([], "validate"),
    ([], "test"),
    ([], "validate"),
    ([finding("cardiomegaly", "mild")], "test"),
    ([finding("cardiomegaly", "mild")], "validate"),
    ([finding("cardiomegaly", "mild")], "test"),
    ([finding("cardiomegaly", "mild")], "validate"),
    ([finding("cardiomegaly", "severe")], "test"),
    ([finding("cardiomegaly", "severe")], "validate"),
    ([finding("cardiomegaly")], "test"),  # severity unstated: unknown for the fine-grained pairs
    ([finding("atelectasis", "mild")], "test"),
    ([finding("atelectasis", "mild")], "validate"),
    ([finding("atelectasis"), finding("cardiomegaly", "mild")], "test"),  # two listed classes: not single-label
    ([finding("atelectasis"), finding("scoliosis")], "validate"),  # scoliosis is not listed: still single-label
    ([finding("pleural effusion", "small")], "train"),  # training images are never evaluated
]


def corpus_store(root: Path):
    items = [
        (
            f"r{i:03d}",
            image_with([f["category"] for f in fs if f["category"] in VOCAB]),
            {"report_id": f"R{i}", "split": split, "findings": fs},
        )
        for i, (fs, split) in enumerate(CORPUS)
    ]
    return write_store(root, items, size=SIZE, dataset="corpus")


CORPUS_SETTINGS = CorpusSetsSettings(
    single_label_classes=["normal", "cardiomegaly", "atelectasis"],
    multi_label_classes=["cardiomegaly", "atelectasis", "normal"],
    fine_grained_min_count=1,
)


def test_class_texts_follow_the_template_and_variants(tmp_path: Path):
    s = downstream_set(covid_store(tmp_path / "covid"))
    assert class_texts(s, explain, "triplet_explanation")[0] == (
        "covid-19 pneumonia, where covid-19 pneumonia is a test pattern of stripes (18 letters)"
    )
    assert class_texts(s, explain, "category") == ["covid-19 pneumonia", "pneumonia", "normal"]


def test_downstream_multi_label_scores_perfectly(tmp_path: Path):
    s = downstream_set(multi_label_store(tmp_path / "nih"))
    assert s.kind == "multi_label" and s.n("test") == 20 and s.n("validate") == 20
    result = evaluate_run(StripeEncoder(), "stripes", [s], explain, batch_size=7)
    assert {(r["class"], r["protocol"]) for r in result.per_class} == {
        (c, p) for c in s.class_names for p in ("test", "validate")
    }
    for r in result.per_class:
        assert r["auc"] == 1.0 and r["f1"] == 1.0 and r["accuracy"] == 1.0, r
    # the 'not stated' labels are left out of atelectasis
    ate = next(r for r in result.per_class if r["class"] == "atelectasis" and r["protocol"] == "test")
    assert ate["n"] == 20 - int(np.isnan(s.labels["test"][:, 1]).sum()) < 20
    summary = result.summaries[0]
    assert summary["test"]["auc"] == 1.0 and "top1" not in summary


def test_single_label_set_top1_softmax_and_by_category_copy(tmp_path: Path):
    covid_store(tmp_path / "covid")
    sets = load_eval_sets([tmp_path / "covid"], EvaluationConfig())
    assert [s.name for s in sets] == [
        "covid",
        "covid_by_category",
        "covid_mismatched",
        "covid_neutral",
        "covid_neutral_mismatched",
    ]
    sets = sets[:3]  # the stripe encoder reads class names only ("condition x": tests/evaluation/test_covid_control.py)
    assert sets[0].kind == "single_label" and sets[1].text_variant == "category"
    # the unseen-class control: covid's text carries cardiomegaly's explanation, the others keep theirs
    control = class_texts(sets[2], explain, "category")
    assert control[0] == "covid-19 pneumonia, where covid-19 pneumonia is a test pattern of stripes (12 letters)"
    assert control[1:] == class_texts(sets[0], explain, "triplet_explanation")[1:]
    assert "cardiomegaly" in sets[2].note
    result = evaluate_run(StripeEncoder(), "stripes", sets, explain, batch_size=8)
    for summary in result.summaries:
        assert summary["top1"] == 1.0 and summary["test"]["auc"] == 1.0
    # the by-category copy is reported beside the set but stays out of the means
    result.summaries[1]["test"]["auc"] = 0.25
    (row,) = write_table(result.summaries, tmp_path / "t.csv")
    assert row["covid_by_category_auc"] == 0.25 and row["mean_auc"] == row["downstream_mean_auc"] == 1.0
    assert "covid_mismatched" in row["note"] and row["covid_mismatched_auc"] == 1.0
    # softmax scores of single-label sets are probabilities over the classes
    img = StripeEncoder().encode_image(torch.from_numpy(np.stack([image_with(["pneumonia"])]))).numpy()
    txt = StripeEncoder().encode_text(["covid-19 pneumonia", "pneumonia", "normal"]).numpy()
    p = zero_shot_scores(img, txt, softmax=True, logit_scale=10.0)
    assert p.sum() == pytest.approx(1.0) and p.argmax() == 1


def test_binary_single_label_set_averages_the_disease_class_only(tmp_path: Path):
    # RSNA-like: pneumonia vs normal, a third of the pneumonia images look normal (label noise)
    names = ["pneumonia", "normal"]
    items = []
    for i in range(36):
        cls = names[i % 2]
        drawn = "normal" if cls == "pneumonia" and i % 3 == 0 else cls
        items.append(
            (
                f"p{i:03d}",
                image_with([drawn]),
                {"split": ("test", "validate")[i % 4 // 2], "labels": [float(n == cls) for n in names]},
            )
        )
    s = downstream_set(write_store(tmp_path / "rsna", items, size=SIZE, dataset="rsna", label_names=names))
    assert s.kind == "single_label"
    result = evaluate_run(StripeEncoder(), "stripes", [s], explain)
    (summary,) = result.summaries
    assert summary["mean_over"] == ["pneumonia"]
    pneumonia = next(r for r in result.per_class if r["class"] == "pneumonia" and r["protocol"] == "test")
    normal = next(r for r in result.per_class if r["class"] == "normal" and r["protocol"] == "test")
    assert pneumonia["f1"] != normal["f1"]
    assert summary["test"]["f1"] == pneumonia["f1"] and summary["test"]["auc"] == pneumonia["auc"] < 1.0
    assert summary["top1"] == pytest.approx(1 - 3 / 18)  # test images 0, 12, 24: pneumonia drawn as normal


def test_corpus_sets_from_findings(tmp_path: Path):
    store = corpus_store(tmp_path / "corpus")
    single, multi, fine, _, severity = corpus_sets(store, CORPUS_SETTINGS)
    assert (single.name, multi.name, fine.name) == ("corpus_single", "corpus_multi", "corpus_fine")
    # multi-label: every held-out image, 'normal' = no finding at all
    assert multi.n("test") + multi.n("validate") == len(CORPUS) - 1
    normal_col = multi.labels["test"][:, 2]
    assert normal_col.tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    # single-label: image 13 (atelectasis + cardiomegaly) is out, image 14 (atelectasis + scoliosis) is in
    ids = store.image_ids
    kept = {ids[i] for split in ("test", "validate") for i in single.rows[split]}
    assert "r013" not in kept and "r014" in kept and "r015" not in kept
    assert (single.labels["test"].sum(axis=1) == 1).all()
    # fine-grained: pairs seen in both splits; unstated severity of the same category is unknown
    assert fine.class_names == ["mild atelectasis", "mild cardiomegaly", "severe cardiomegaly"]
    mild_cardio = fine.labels["test"][:, 1]
    test_ids = [ids[i] for i in fine.rows["test"]]
    assert mild_cardio[test_ids.index("r004")] == 1.0
    assert mild_cardio[test_ids.index("r008")] == 0.0  # severe: another severity
    assert np.isnan(mild_cardio[test_ids.index("r010")])  # severity unstated
    assert mild_cardio[test_ids.index("r000")] == 0.0  # normal
    assert class_texts(fine, explain, "triplet")[1] == "mild cardiomegaly"
    # without the reports' stated severities, corpus_severity is reported as skipped, not guessed
    assert severity.name == "corpus_severity" and not severity.classes and severity.keep_empty
    assert severity.note.startswith("skipped: no labels.parquet")
    # a higher minimum count drops the rare pairs
    strict = corpus_sets(store, CORPUS_SETTINGS.model_copy(update={"fine_grained_min_count": 2}))[2]
    assert strict.class_names == ["mild cardiomegaly"]


def test_fg_set_negatives_share_the_category(tmp_path: Path):
    store = corpus_store(tmp_path / "corpus")
    fg = corpus_sets(store, CORPUS_SETTINGS)[3]
    # atelectasis has one stated severity held out: nothing fine-grained; cardiomegaly has two
    assert fg.name == "corpus_fg" and fg.class_names == ["mild cardiomegaly", "severe cardiomegaly"]
    ids = store.image_ids
    assert [ids[i] for i in fg.rows["test"]] == ["r004", "r006", "r008", "r010", "r013"]  # only cardiomegaly images
    assert [ids[i] for i in fg.rows["validate"]] == ["r005", "r007", "r009"]
    np.testing.assert_array_equal(fg.labels["test"][:, 0], [1, 1, 0, np.nan, 1])
    np.testing.assert_array_equal(fg.labels["test"][:, 1], [0, 0, 1, np.nan, 0])
    # one category kept, one severity: a class grid of 1 x 2 is cut to the counts asked for
    one = corpus_sets(store, CORPUS_SETTINGS.model_copy(update={"fg_categories": 1, "fg_severities": 2}))[3]
    assert one.class_names == ["mild cardiomegaly", "severe cardiomegaly"]


def test_corpus_scoring_and_table_and_figure(tmp_path: Path):
    corpus_store(tmp_path / "corpus")
    multi_label_store(tmp_path / "nih")
    settings = EvaluationConfig(corpus=CORPUS_SETTINGS)
    sets = load_eval_sets([tmp_path / "nih", tmp_path / "corpus"], settings)
    assert [s.name for s in sets] == [
        "nih",
        "corpus_single",
        "corpus_multi",
        "corpus_fine",
        "corpus_fg",
        "corpus_severity",
    ]
    result = evaluate_runs(
        [tmp_path / "models" / "medfilip", tmp_path / "models" / "convirt"],
        sets,
        explain,
        load_model=lambda run_dir, device: StripeEncoder(),
        device="cpu",
        batch_size=5,
        progress=False,
        bootstrap=BootstrapSettings(n_resamples=200, seed=3),
    )
    by = {(s["run"], s["dataset"]): s for s in result.summaries}
    assert by[("medfilip", "corpus_multi")]["test"]["auc"] == 1.0
    assert by[("convirt", "corpus_single")]["top1"] == 1.0

    rows = write_table(result.summaries, tmp_path / "tables" / "zeroshot.csv")
    with open(tmp_path / "tables" / "zeroshot.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    header = list(table[0])
    assert [r["run"] for r in table] == ["medfilip", "convirt"]
    # accuracy and F1 lead, AUC beside; every metric with its interval
    assert header[:10] == [
        "run",
        "nih_acc",
        "nih_acc_low",
        "nih_acc_high",
        "nih_f1",
        "nih_f1_low",
        "nih_f1_high",
        "nih_auc",
        "nih_auc_low",
        "nih_auc_high",
    ]
    for column in ("nih_acc_valthr", "nih_f1_valthr", "nih_auc_neg", "nih_auc_comb", "corpus_single_top1", "mean_auc"):
        assert {column, f"{column}_low", f"{column}_high"} <= set(header), column
    assert "nih_top1" not in header and header[-1] == "note"
    assert float(table[0]["nih_auc"]) == 1.0 and float(table[0]["mean_auc"]) == rows[0]["mean_auc"]
    assert float(table[0]["downstream_mean_auc"]) == float(table[0]["nih_auc"])  # nih is the one downstream set
    # a perfect set has a degenerate interval; the paired difference of identical models is exactly 0
    assert float(table[0]["nih_auc_low"]) == float(table[0]["nih_auc_high"]) == 1.0
    assert not any(c.startswith("delta_") and table[0][c] for c in header)  # medfilip is the reference
    deltas = [c for c in header if c.startswith("delta_")]
    assert "delta_nih_auc_vs_medfilip" in deltas and "delta_mean_auc_vs_medfilip_low" in deltas
    assert all(float(table[1][c]) == 0.0 for c in deltas if table[1][c])
    # the intervals are reproducible from the seed
    again = evaluate_runs(
        [tmp_path / "models" / "medfilip"],
        sets,
        explain,
        load_model=lambda run_dir, device: StripeEncoder(),
        device="cpu",
        progress=False,
        bootstrap=BootstrapSettings(n_resamples=200, seed=3),
    )
    np.testing.assert_array_equal(again.summaries[2]["replicates"]["auc"], result.summaries[2]["replicates"]["auc"])

    long = write_per_class(result.per_class, tmp_path / "tables" / "zeroshot_per_class.csv")
    with open(tmp_path / "tables" / "zeroshot_per_class.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == [
            "run",
            "dataset",
            "class",
            "protocol",
            "auc",
            "f1",
            "acc",
            "precision",
            "recall",
            "threshold",
            "n_pos",
            "n",
            "auc_neg",
            "auc_comb",
            "kendall_tau",
        ]
        assert len(list(reader)) == len(long) == 2 * 2 * sum(len(s.classes) for s in sets)

    figure = write_figure(result.summaries, tmp_path / "figures" / "zeroshot.png")
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000


def test_configured_sets_and_runs():
    from medfilip.pipeline.config import validate_config

    cfg = validate_config({"evaluation": {"datasets": ["rsna", "covid"]}}, source="test")
    assert configured_set_dirs(cfg) == ["results/images/rsna", "results/images/covid", "results/images/corpus"]
    assert configured_run_dirs(cfg) == [f"results/models/{r}" for r in cfg.training.runs]
    cfg = validate_config({"evaluation": {"corpus": {"enabled": False}}}, source="test")
    enabled = [
        n for n in type(cfg.datasets).model_fields if getattr(getattr(cfg.datasets, n), "enabled", False) is True
    ]
    assert configured_set_dirs(cfg) == [f"results/images/{n}" for n in enabled]


def test_cli_with_a_tiny_trained_dual_encoder(tmp_path: Path, capsys):
    """The real chain: medfilip.training's DualEncoder saved and loaded, the real IKI dictionary, the CLI."""
    import yaml

    from medfilip.pipeline.cli import main
    from medfilip.training.model import build_model, save_trained
    from medfilip.training.settings import ModelSettings

    root = Path(__file__).resolve().parents[2]
    save_trained(
        build_model(ModelSettings(embed_dim=16, text_trainable_layers=0), SIZE, seed=0), tmp_path / "models" / "tiny"
    )
    covid_store(tmp_path / "images" / "covid")
    corpus_store(tmp_path / "images" / "corpus")
    config = {"evaluation": {"device": "cpu", "batch_size": 16, "corpus": CORPUS_SETTINGS.model_dump()}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    out = tmp_path / "tables" / "zeroshot.csv"
    code = main(
        [
            "-q",
            "-c",
            str(tmp_path / "config.yaml"),
            "zeroshot",
            "--runs",
            str(tmp_path / "models" / "tiny"),
            "--sets",
            str(tmp_path / "images" / "covid"),
            str(tmp_path / "images" / "corpus"),
            "--knowledge",
            str(root / "resources" / "knowledge" / "dictionary.yaml"),
            "--out",
            str(out),
            "--per-class",
            str(tmp_path / "tables" / "per_class.csv"),
            "--figure",
            str(tmp_path / "figures" / "zeroshot.png"),
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    with open(out, newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["run"] == "tiny"
    for name in ("covid", "covid_by_category", "corpus_single", "corpus_multi", "corpus_fine"):
        assert 0.0 <= float(row[f"{name}_auc"]) <= 1.0
    assert 0.0 <= float(row["covid_top1"]) <= 1.0
    assert (tmp_path / "figures" / "zeroshot.png").exists() and (tmp_path / "tables" / "per_class.csv").exists()
    assert "tiny: mean AUC" in capsys.readouterr().out


class BlindEncoder(StripeEncoder):
    """Sees nothing in the images: every image embeds to the same vector (chance everywhere)."""

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.ones(images.shape[0], len(VOCAB)), dim=1)


def test_negation_columns_and_a_paired_difference(tmp_path: Path):
    multi_label_store(tmp_path / "nih")
    sets = load_eval_sets([tmp_path / "nih"], EvaluationConfig())
    models = {"medfilip": StripeEncoder(), "blind": BlindEncoder()}
    result = evaluate_runs(
        [tmp_path / "medfilip", tmp_path / "blind"],
        sets,
        explain,
        load_model=lambda d, dev: models[Path(d).name],
        device="cpu",
        progress=False,
        bootstrap=BootstrapSettings(n_resamples=300, seed=0),
    )
    rows = {r["run"]: r for r in write_table(result.summaries, tmp_path / "z.csv")}
    # the stripe encoder reads "no cardiomegaly" as "cardiomegaly": negated texts score the positives
    # highest (AUC of minus their cosine = 0), and positive minus negated is flat (0.5)
    assert rows["medfilip"]["nih_auc"] == 1.0
    assert rows["medfilip"]["nih_auc_neg"] == 0.0 and rows["medfilip"]["nih_auc_comb"] == 0.5
    per_class = [r for r in result.per_class if r["run"] == "medfilip"]
    assert all(r["auc_neg"] == 0.0 for r in per_class)
    # the blind run is at chance; its paired difference to medfilip excludes 0
    blind = rows["blind"]
    assert blind["nih_auc"] == 0.5
    assert blind["delta_nih_auc_vs_medfilip"] == -0.5
    assert blind["delta_nih_auc_vs_medfilip_low"] <= -0.5 <= blind["delta_nih_auc_vs_medfilip_high"] < 0
    assert blind["nih_auc_low"] == blind["nih_auc_high"] == 0.5  # ties everywhere: 0.5 in every resample


class TextOnlyEncoder(StripeEncoder):
    """Fails when asked to encode an image: everything must come from the stored embeddings."""

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        raise AssertionError("an image was encoded again")


def test_stored_image_embeddings_are_read_not_recomputed(tmp_path: Path):
    from medfilip.evaluation.sets import EvaluationSetError
    from medfilip.evaluation.zeroshot import read_image_embeddings, write_image_embeddings
    from medfilip.images.store import ImageStore

    stores = [multi_label_store(tmp_path / "nih"), corpus_store(tmp_path / "corpus")]
    out = write_image_embeddings(StripeEncoder(), stores, tmp_path / "emb" / "medfilip.npz", batch_size=4)
    stored = read_image_embeddings(out, stores)
    rows, emb = stored[str(stores[1].root)]
    assert rows.tolist() == sorted(set(stores[1].indices("validate")) | set(stores[1].indices("test")))
    np.testing.assert_allclose(emb, StripeEncoder().encode_image(torch.from_numpy(stores[1].get_batch(rows))).numpy())

    sets = load_eval_sets([tmp_path / "nih", tmp_path / "corpus"], EvaluationConfig(corpus=CORPUS_SETTINGS))
    fresh = evaluate_runs(
        [tmp_path / "medfilip"],
        sets,
        explain,
        load_model=lambda d, dev: StripeEncoder(),
        device="cpu",
        progress=False,
        bootstrap=BootstrapSettings(n_resamples=50),
    )
    again = evaluate_runs(
        [tmp_path / "medfilip"],
        sets,
        explain,
        load_model=lambda d, dev: TextOnlyEncoder(),
        device="cpu",
        progress=False,
        bootstrap=BootstrapSettings(n_resamples=50),
        image_embeddings=[out],
    )
    assert write_table(fresh.summaries, tmp_path / "a.csv") == write_table(again.summaries, tmp_path / "b.csv")

    # a store rebuilt with other images is caught, naming the file
    items = [(f"x{i}", image_with([]), {"split": "test", "labels": [0.0, 1.0, 0.0]}) for i in range(4)]
    write_store(
        tmp_path / "nih",
        items,
        size=SIZE,
        dataset="nih",
        label_names=["cardiomegaly", "atelectasis", "pleural effusion"],
    )
    with pytest.raises(EvaluationSetError, match="medfilip.npz.*other images"):
        read_image_embeddings(out, [ImageStore.open(tmp_path / "nih")])
