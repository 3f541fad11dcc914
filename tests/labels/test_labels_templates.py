import pytest

from medfilip.configbase import ConfigError
from medfilip.labels.settings import LabelsConfig
from medfilip.labels.templates import VARIANTS, render_label
from medfilip.pipeline.config import validate_config

EXPL = "a dependent homogeneous opacity at the lung base with a concave meniscus."


def test_full_template_is_the_paper_equation():
    text = render_label("pleural effusion", "small", "left base", EXPL)
    assert text == (
        "small left base pleural effusion, where pleural effusion is "
        "a dependent homogeneous opacity at the lung base with a concave meniscus"
    )


@pytest.mark.parametrize(
    "variant, expected",
    [
        ("category", "atelectasis"),
        ("triplet", "mild right upper lobe atelectasis"),
        ("triplet_explanation", "mild right upper lobe atelectasis, where atelectasis is plate-like density"),
    ],
)
def test_variants(variant, expected):
    assert render_label("atelectasis", "mild", "right upper lobe", "plate-like density.", variant) == expected


def test_empty_fields_are_skipped_and_whitespace_normalised():
    assert render_label(" cardiomegaly ", None, "", None, "triplet") == "cardiomegaly"
    assert render_label("cardiomegaly", None, None, None, "triplet_explanation") == "cardiomegaly"
    assert render_label("nodule", "small", None, "a  round\n density", "triplet_explanation") == (
        "small nodule, where nodule is a round density"
    )


def test_negated_reads_no_category_in_every_entity_variant():
    for variant in ("category", "triplet", "triplet_explanation"):
        assert render_label("pneumothorax", "large", "left apex", EXPL, variant, negated=True) == "no pneumothorax"


def test_every_variant_renders_its_own_text():
    # each variant the config may list renders, and no two give the same text for one finding
    texts = {
        v: render_label(
            "atelectasis", "mild", "right upper lobe", "plate-like density.", v, report_text="Mild atelectasis."
        )
        for v in VARIANTS
    }
    assert len(set(texts.values())) == len(VARIANTS) == 4
    assert texts["report"] == "Mild atelectasis."
    # shortest to fullest: category < triplet < triplet_explanation, each containing the previous
    assert texts["category"] in texts["triplet"] in texts["triplet_explanation"]
    assert LabelsConfig().variants == list(VARIANTS)  # the default writes every variant
    with pytest.raises(ConfigError, match="variants"):
        validate_config({"labels": {"variants": ["sentence"]}})


def test_report_variant_and_errors():
    assert render_label("", variant="report", report_text="Heart size normal.\n No effusion.") == (
        "Heart size normal. No effusion."
    )
    with pytest.raises(ValueError, match="report text"):
        render_label("", variant="report")
    with pytest.raises(ValueError, match="category"):
        render_label("  ", variant="triplet")
    with pytest.raises(ValueError):
        render_label("nodule", variant="sentence")
