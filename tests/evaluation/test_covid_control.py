"""The unseen-class control as a 2 x 2: real / neutral class name x own / mismatched explanation,
scored on the COVID class alone (issue 19, item 6)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medfilip.evaluation.report import write_table
from medfilip.evaluation.sets import NEUTRAL_NAME, load_eval_sets
from medfilip.evaluation.settings import BootstrapSettings, EvaluationConfig
from medfilip.evaluation.zeroshot import class_texts, evaluate_run
from tests.evaluation.test_eval_zeroshot import StripeEncoder, covid_store

SETS = ["covid", "covid_mismatched", "covid_neutral", "covid_neutral_mismatched"]


def explain(category: str) -> str:
    return f"the pattern of {category}"


class NameReader(StripeEncoder):
    """Reads the class name; "condition x" is a stripe no COVID-set image has (cosine 0)."""

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return super().encode_text([t.replace(NEUTRAL_NAME, "cardiomegaly") for t in texts])


class ExplanationReader(StripeEncoder):
    """Reads the explanation only ("..., where ... is the pattern of {category}")."""

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return super().encode_text([t.rsplit("the pattern of ", 1)[-1] for t in texts])


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("covid")
    covid_store(root / "covid")
    return [s for s in load_eval_sets([root / "covid"], EvaluationConfig()) if s.name in SETS]


def test_the_four_texts_of_the_covid_class(sets):
    texts = {s.name: class_texts(s, explain, "triplet_explanation")[0] for s in sets}
    assert texts == {
        "covid": "covid-19 pneumonia, where covid-19 pneumonia is the pattern of covid-19 pneumonia",
        "covid_mismatched": "covid-19 pneumonia, where covid-19 pneumonia is the pattern of cardiomegaly",
        "covid_neutral": "condition x, where condition x is the pattern of covid-19 pneumonia",
        "covid_neutral_mismatched": "condition x, where condition x is the pattern of cardiomegaly",
    }
    # the other classes keep their real names and explanations in every cell
    assert len({tuple(class_texts(s, explain, "triplet_explanation")[1:]) for s in sets}) == 1
    assert all(s.focus == ("covid-19 pneumonia",) for s in sets)


@pytest.mark.parametrize(
    "encoder, expected",
    [
        # a model that reads the name: the neutral name leaves it at chance, whatever the explanation
        (NameReader(), {"covid": 1.0, "covid_mismatched": 1.0, "covid_neutral": 0.5, "covid_neutral_mismatched": 0.5}),
        # a model that reads the explanation: the mismatched explanation leaves it at chance
        (
            ExplanationReader(),
            {"covid": 1.0, "covid_mismatched": 0.5, "covid_neutral": 1.0, "covid_neutral_mismatched": 0.5},
        ),
    ],
)
def test_the_2x2_separates_name_from_explanation(sets, tmp_path: Path, encoder, expected):
    result = evaluate_run(
        encoder, "medfilip", sets, explain, single_label_score="cosine", bootstrap=BootstrapSettings(n_resamples=50)
    )
    (row,) = write_table(result.summaries, tmp_path / "t.csv")
    assert {name: row[f"{name}_class_auc"] for name in SETS} == expected
    for name in SETS:
        assert row[f"{name}_class_auc_low"] <= row[f"{name}_class_auc"] <= row[f"{name}_class_auc_high"]
    # the set's mean (the existing column) averages in the pneumonia class the control leaves alone
    assert row["covid_mismatched_auc"] != row["covid_mismatched_class_auc"] or expected["covid_mismatched"] == 1.0
