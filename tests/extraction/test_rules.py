"""The rules backend: categories, polarity scopes, severity and location on real report phrasing."""

from __future__ import annotations

import shutil

import pytest

from medfilip.extraction.backend import ReportText
from medfilip.extraction.rules import RulesBackend, split_sentences
from medfilip.extraction.vocabulary import Vocabulary, VocabularyError


def facts(extractor, text):
    """(canonical category, polarity, severity, location) of every triplet."""
    vocab = extractor.vocab
    return [
        (vocab.normalise(t.category), t.polarity.value, t.severity, t.location) for t in extractor.extract_text(text)
    ]


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "No pleural effusion or pneumothorax.",
            [("pleural effusion", "negated", None, "pleura"), ("pneumothorax", "negated", None, "pleura")],
        ),
        (
            "No focal consolidation, pneumothorax, or large pleural effusion.",
            [
                ("consolidation", "negated", None, "lung"),
                ("pneumothorax", "negated", None, "pleura"),
                ("pleural effusion", "negated", "large", "pleura"),
            ],
        ),
        ("Mild cardiomegaly.", [("cardiomegaly", "present", "mild", "heart")]),
        ("Heart size is mildly enlarged.", [("cardiomegaly", "present", "mild", "heart")]),
        (
            "There is a small left pleural effusion and right basilar atelectasis.",
            [("pleural effusion", "present", "small", "left pleura"), ("atelectasis", "present", None, "right base")],
        ),
        ("Pneumonia cannot be excluded.", [("pneumonia", "uncertain", None, "lung")]),
        ("Findings may represent early pneumonia.", [("pneumonia", "uncertain", None, "lung")]),
        ("Questionable right lower lobe infiltrate.", [("infiltrate", "uncertain", None, "right lower lobe")]),
        ("The right effusion has resolved.", [("pleural effusion", "negated", None, "right pleura")]),
        ("Pleural effusion is not seen.", [("pleural effusion", "negated", None, "pleura")]),
        # "no change" is not a negation
        (
            "No change in the small calcified right upper lobe nodule.",
            [
                ("calcification", "present", "small", "right upper lobe"),
                ("nodule", "present", None, "right upper lobe"),
            ],
        ),
        # the scope of "no" ends at "but"
        (
            "No pneumothorax but there is a moderate right effusion.",
            [("pneumothorax", "negated", None, "pleura"), ("pleural effusion", "present", "moderate", "right pleura")],
        ),
        # longest match wins across categories
        ("Calcified granuloma in the left upper lobe.", [("granuloma", "present", None, "left upper lobe")]),
        (
            "Subcutaneous emphysema in the right chest wall.",
            [("subcutaneous emphysema", "present", None, "right chest wall")],
        ),
        # a finding inside another's words still counts when the vocabulary says so
        ("Bibasilar airspace opacities.", [("opacity", "present", None, "bilateral base")]),
        ("Lung volumes are low.", [("hypoinflation", "present", None, "lung")]),
        (
            "The lungs are hyperexpanded, consistent with emphysema.",
            [("hyperinflation", "present", None, "lung"), ("emphysema", "present", None, "lung")],
        ),
        ("Degenerative changes of the thoracic spine.", [("degenerative changes", "present", None, "spine")]),
        ("Heart size and pulmonary vascularity are within normal limits.", []),
        ("The lungs are clear.", []),
    ],
)
def test_sentences(extractor, text, expected):
    assert facts(extractor, text) == expected


def test_post_negation_reaches_back_only_a_few_words(extractor):
    # "within normal limits" negates what is right before it, not a finding far back in a run-on sentence
    text = "Left axillary surgical clips unchanged and the visualized osseous structures of the chest are within normal limits."
    assert ("support devices", "present") in [(c, p) for c, p, _, _ in facts(extractor, text)]


def test_uncertainty_is_a_polarity_not_a_severity(extractor):
    (t,) = extractor.extract_text("Possible small left effusion.")
    assert t.polarity.value == "uncertain"
    assert t.severity == "small"


def test_triplet_keeps_raw_words_and_evidence_sentence(extractor):
    text = "Heart size normal. Small bilateral pleural effusions."
    (t,) = extractor.extract_text(text)
    assert t.category == "pleural effusions"
    assert t.sentence == "Small bilateral pleural effusions."
    assert t.location == "bilateral pleura"


def test_sentence_splitting_keeps_measurements_and_numbered_items():
    text = "1. A 2.5 cm nodule in the right apex. 2. No effusion."
    assert split_sentences(text) == ["A 2.5 cm nodule in the right apex.", "No effusion."]


def test_backend_yields_one_ok_result_per_report(rules_backend):
    results = list(rules_backend.extract([ReportText("a", "Mild cardiomegaly."), ReportText("b", "")]))
    assert [r.report_id for r in results] == ["a", "b"]
    assert all(r.status == "ok" for r in results)
    assert len(results[0].triplets) == 1 and results[1].triplets == ()


def test_vocabulary_version_follows_file_content(tmp_path, repo):
    vocab_dir = tmp_path / "vocab"
    shutil.copytree(repo / "resources" / "vocabulary", vocab_dir)
    first = RulesBackend(vocab_dir)
    assert RulesBackend(vocab_dir).version == first.version
    key = first.cache_key("Mild cardiomegaly.")
    with open(vocab_dir / "categories.yaml", "a") as fh:
        fh.write("\n  - name: situs inversus\n    group: null\n    patterns: ['situs inversus']\n")
    second = RulesBackend(vocab_dir)
    assert second.version != first.version
    assert second.cache_key("Mild cardiomegaly.") != key
    assert facts(second.extractor, "Situs inversus.") == [("situs inversus", "present", None, None)]


def test_vocabulary_errors_name_the_file_and_entry(tmp_path, repo):
    vocab_dir = tmp_path / "vocab"
    shutil.copytree(repo / "resources" / "vocabulary", vocab_dir)
    with open(vocab_dir / "categories.yaml", "a") as fh:
        fh.write("\n  - name: broken\n    patterns: ['(unclosed']\n")
    with pytest.raises(VocabularyError, match=r"categories.yaml: categories\[\d+\] \(broken\): bad pattern"):
        Vocabulary.load(vocab_dir)
    (vocab_dir / "triggers.yaml").unlink()
    with pytest.raises(VocabularyError, match="triggers.yaml: vocabulary file not found"):
        Vocabulary.load(vocab_dir)


def test_normalise_maps_synonyms_and_returns_none_for_unknown(extractor):
    vocab = extractor.vocab
    assert vocab.normalise("Pleural Effusions") == "pleural effusion"
    assert vocab.normalise("enlarged cardiac silhouette") == "cardiomegaly"
    assert vocab.normalise("small left-sided hydrothorax") == "pleural effusion"
    assert vocab.normalise("situs inversus") is None
    assert vocab.normalise("") is None


def test_vocabulary_covers_the_chexpert_observations(extractor):
    groups = {g for g in extractor.vocab.groups.values() if g}
    assert groups >= {
        "Enlarged Cardiomediastinum",
        "Cardiomegaly",
        "Lung Opacity",
        "Lung Lesion",
        "Edema",
        "Consolidation",
        "Pneumonia",
        "Atelectasis",
        "Pneumothorax",
        "Pleural Effusion",
        "Pleural Other",
        "Fracture",
        "Support Devices",
    }
    names = set(extractor.vocab.category_names)
    assert names >= {
        "nodule",
        "mass",
        "granuloma",
        "calcification",
        "emphysema",
        "fibrosis",
        "scarring",
        "hiatal hernia",
        "fracture",
        "scoliosis",
        "support devices",
        "pulmonary congestion",
        "hyperinflation",
    }
