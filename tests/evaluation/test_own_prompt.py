"""Each run scored with the text form it trained on, beside the common template (issue 19, item 2)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml

from medfilip.evaluation.report import write_per_class, write_table
from medfilip.evaluation.sets import downstream_set
from medfilip.evaluation.settings import BootstrapSettings
from medfilip.evaluation.zeroshot import evaluate_runs, run_eval_text_of_folder
from medfilip.labels.templates import eval_text, report_sentence, run_eval_text
from medfilip.training.settings import RunSettings
from tests.evaluation.test_eval_zeroshot import StripeEncoder, explain, multi_label_store


class SentenceOnlyEncoder(StripeEncoder):
    """Reads only report-style sentences ("There is mild cardiomegaly."): any other text is the same
    vector (a stripe no NIH image has: cosine 0 with every image), so a template cannot tell its
    classes apart (a report-text run scored in the template's language)."""

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), 6)
        for i, text in enumerate(texts):
            if text.startswith("There is ") and text.endswith("."):
                out[i] = super().encode_text([text.removeprefix("There is ").removesuffix(".")])[0]
            else:
                out[i, 4] = 1.0
        return out


def test_report_sentence_and_eval_text_forms():
    assert report_sentence("cardiomegaly", "mild", "heart") == "There is mild heart cardiomegaly."
    assert report_sentence("pleural effusion") == "There is pleural effusion."
    assert report_sentence("pneumothorax", negated=True) == "No pneumothorax."
    assert eval_text("atelectasis", "mild", "left base", "x", "triplet") == "mild left base atelectasis"
    assert eval_text("atelectasis", "mild", None, "collapse", "triplet_explanation") == (
        "mild atelectasis, where atelectasis is collapse"
    )
    assert eval_text("atelectasis", "mild", None, "collapse", "category") == "atelectasis"
    with pytest.raises(ValueError):
        eval_text("atelectasis", variant="report")  # the report text itself is no class text


@pytest.mark.parametrize(
    "settings, expected",
    [
        ({"label_variant": "triplet_explanation"}, "triplet_explanation"),
        ({"label_variant": "triplet"}, "triplet"),
        ({"label_variant": "category"}, "category"),
        ({"label_variant": "report"}, "report_sentence"),
        ({"label_variant": "report", "eval_text": "triplet"}, "triplet"),
    ],
)
def test_run_eval_text_follows_the_label_variant_unless_overridden(settings, expected):
    assert run_eval_text(settings) == expected
    assert run_eval_text(RunSettings(**settings)) == expected


def test_run_eval_text_of_a_folder_reads_the_config_then_the_run_record(tmp_path: Path):
    runs = {"convirt": RunSettings(label_variant="report")}
    assert run_eval_text_of_folder(tmp_path / "convirt", runs) == "report_sentence"
    folder = tmp_path / "other"
    folder.mkdir()
    assert run_eval_text_of_folder(folder, runs) is None  # no settings anywhere: no own text
    (folder / "config.yaml").write_text(yaml.safe_dump({"settings": {"run": {"label_variant": "triplet"}}}))
    assert run_eval_text_of_folder(folder, runs) == "triplet"


def test_own_text_columns_beside_unchanged_common_ones(tmp_path: Path):
    s = downstream_set(multi_label_store(tmp_path / "nih"))
    runs = [tmp_path / "models" / "medfilip", tmp_path / "models" / "convirt"]

    def load(run_dir: Path, device: str):
        return StripeEncoder() if run_dir.name == "medfilip" else SentenceOnlyEncoder()

    common_kw = {
        "load_model": load,
        "device": "cpu",
        "batch_size": 8,
        "progress": False,
        "bootstrap": BootstrapSettings(n_resamples=100),
    }
    plain = evaluate_runs(runs, [s], explain, **common_kw)
    both = evaluate_runs(runs, [s], explain, own_texts=["triplet_explanation", "report_sentence"], **common_kw)
    old = write_table(plain.summaries, tmp_path / "old.csv")
    new = write_table(both.summaries, tmp_path / "new.csv")
    # the common template's columns keep their values; the own text's come after them
    for a, b in zip(old, new):
        assert {k: v for k, v in b.items() if not k.startswith("own_")} == a
    with open(tmp_path / "new.csv", newline="") as fh:
        header = list(next(csv.reader(fh)))
    assert header.index("own_text_variant") > header.index("mean_auc") and header[-1] == "note"
    medfilip, convirt = new
    # the report-text run cannot read the template (every class text is one vector): chance
    assert convirt["nih_auc"] == 0.5 and convirt["own_nih_auc"] == 1.0
    assert convirt["own_text_variant"] == "report_sentence" and medfilip["own_text_variant"] == "triplet_explanation"
    # a run whose own text is the template: the same numbers under both names
    assert medfilip["own_nih_auc"] == medfilip["nih_auc"] == 1.0
    assert medfilip["own_downstream_mean_auc"] == medfilip["downstream_mean_auc"]
    # the paired difference in the run's own language
    assert convirt["own_delta_nih_auc_vs_medfilip"] == 0.0 and convirt["delta_nih_auc_vs_medfilip"] == -0.5
    # the per-class table keeps the common rows only
    per_class = write_per_class(both.per_class, tmp_path / "per_class.csv")
    assert len(per_class) == len(plain.per_class)
