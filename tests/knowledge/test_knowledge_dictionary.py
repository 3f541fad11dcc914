"""The IKI knowledge dictionary: the shipped file's coverage and wording, synonym resolution,
every validation error (named file + category), and the `medfilip knowledge` command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from medfilip.extraction.vocabulary import Vocabulary
from medfilip.knowledge import KnowledgeError, load_knowledge, normalise_name
from medfilip.names import CategoryNames
from medfilip.pipeline.cli import main

REPO = Path(__file__).resolve().parents[2]
DICTIONARY = REPO / "resources" / "knowledge" / "dictionary.yaml"
VOCABULARY_DIR = REPO / "resources" / "vocabulary"
EXTRA = [
    "covid-19 pneumonia",
    "lung mass",
    "pneumomediastinum",
    "lung opacity",
    "lung lesion",
    "aortic enlargement",
    "normal",
]

# What a radiograph shows: brightness, shape or texture words. Every explanation must use some.
APPEARANCE = re.compile(
    r"\b(opaci\w*|opaque|lucen\w*|dens\w*|dark\w*|white\w*|bright\w*|grey|haz\w*|shadows?|silhouette|"
    r"outlines?|contours?|borders?|margin\w*|lines?|linear|streak\w*|band|ring|round\w*|nodul\w*|"
    r"reticul\w*|air|gas|calci\w*|metal|bulg\w*|wid\w*|enlarged|curv\w*)\b"
)
# Where on the film: every explanation places the finding.
ANATOMY = re.compile(
    r"\b(lungs?|zones?|bases?|basal|ap(ex|ices)|hil(um|a|ar)|heart|cardiac|mediastin\w*|trachea|diaphragm|"
    r"hemidiaphragms?|hemithorax|pleura\w*|chest|ribs?|spine|vertebra\w*|clavicle|aort\w*|costophrenic|"
    r"fissures?|lobes?|airways?|bronch\w*|bones?|cortex|sternum|cardiophrenic|periphery|peripheral|neck|"
    r"abdomen|liver|stomach|midline|soft tissues?|shoulders?|arter\w*)\b"
)


@pytest.fixture(scope="module")
def vocabulary() -> list[str]:
    return list(Vocabulary.load(VOCABULARY_DIR).by_name)


@pytest.fixture(scope="module")
def knowledge(vocabulary):
    return load_knowledge(DICTIONARY, required=vocabulary)


def write(tmp_path: Path, categories: dict, name: str = "dictionary.yaml", **top) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"categories": categories, **top}, sort_keys=False), encoding="utf-8")
    return path


def entry(explanation="a round white opacity in the lung", context="Something.", synonyms=()):
    return {"explanation": explanation, "context": context, "synonyms": list(synonyms)}


# -- the shipped dictionary ----------------------------------------------------------------
def test_covers_every_vocabulary_category_and_the_test_time_extras(knowledge, vocabulary):
    assert len(vocabulary) == 64
    assert knowledge.categories == vocabulary + EXTRA  # vocabulary order, then the extras
    assert {"tuberculosis", "pneumoperitoneum"} <= set(knowledge.categories)


def test_every_entry_has_visual_text_that_reads_after_where_x_is(knowledge):
    for cat in knowledge.categories:
        e = knowledge.entry(cat)
        assert e.category == cat
        assert e.explanation.strip() and e.context.strip() and e.synonyms, cat
        text = e.explanation
        assert text[0].islower() and not text.endswith("."), f"{cat}: must read on after '{cat}, where {cat} is'"
        assert 12 <= len(text.split()) <= 60, f"{cat}: {len(text.split())} words"
        assert APPEARANCE.search(text), f"{cat}: explanation names no radiographic appearance"
        assert ANATOMY.search(text), f"{cat}: explanation does not say where the finding is"
        assert "\n" not in e.context and len(e.context) < 200, f"{cat}: context is one line"
    # no two categories share an explanation (they would get the same label text)
    assert len({knowledge.explanation(c) for c in knowledge.categories}) == len(knowledge)


def test_synonyms_are_unique_and_never_name_another_category(knowledge):
    names = {normalise_name(c) for c in knowledge.categories}
    seen: dict[str, str] = {}
    for cat in knowledge.categories:
        for synonym in knowledge.entry(cat).synonyms:
            key = normalise_name(synonym)
            assert key not in names, f"{cat}: synonym {synonym!r} is a category name"
            assert seen.setdefault(key, cat) == cat, f"{synonym!r} in {cat} and {seen[key]}"


@pytest.mark.parametrize(
    "name, canonical",
    [
        ("pleural effusion", "pleural effusion"),
        ("Pleural_Thickening", "pleural thickening"),  # ChestX-ray14 spelling
        ("Effusion", "pleural effusion"),
        ("Infiltration", "infiltrate"),
        ("Hernia", "hiatal hernia"),
        ("Edema", "pulmonary edema"),
        ("No Finding", "normal"),
        ("ILD", "interstitial lung disease"),  # VinDr-CXR
        ("Nodule/Mass", "nodule"),  # as the dataset catalog says (issue 12.8)
        ("Aortic enlargement", "aortic enlargement"),
        ("Lung_Opacity", "lung opacity"),  # COVID-19 Radiography folder name
        ("COVID", "covid-19 pneumonia"),
        ("covid 19", "covid-19 pneumonia"),
        ("Viral Pneumonia", "pneumonia"),
        ("post surgical changes", "post-surgical changes"),
        ("Pulmonary Disease, Chronic Obstructive", "copd"),  # IU-Xray MeSH head
        ("  ENLARGED   heart ", "cardiomegaly"),
        ("TB", "tuberculosis"),
        ("Enlarged Cardiomediastinum", "enlarged cardiomediastinum"),
    ],
)
def test_resolve_names_synonyms_and_dataset_spellings(knowledge, name, canonical):
    assert knowledge.resolve(name) == canonical
    assert knowledge.entry(name).category == canonical
    assert name in knowledge


def test_unknown_names_resolve_to_none_and_entry_suggests(knowledge):
    assert knowledge.resolve("pleural other") is None
    assert knowledge.resolve("") is None
    with pytest.raises(
        KeyError, match=r"dictionary.yaml: no entry for category 'pleral efusion' \(did you mean 'pleural effusion'"
    ):
        knowledge.entry("pleral efusion")


def test_the_name_index_ranks_names_over_synonyms_and_suggests_categories():
    # the one index behind KnowledgeDictionary.resolve and the library's ClassKnowledge.resolve
    names = CategoryNames(
        {"pleural effusion": ["Effusion", "fluid"], "edema": ["fluid", "Pleural_Effusion"], "fluid": []}
    )
    assert names.resolve("PLEURAL-effusion") == names.resolve("effusion") == "pleural effusion"
    assert names.resolve("fluid") == "fluid"  # a category's own name wins over the synonyms of others
    assert names.resolve("pleural effusion") == "pleural effusion"  # ... even when listed after them
    names = CategoryNames({"pleural effusion": ["fluid"], "edema": ["fluid"]})
    assert names.resolve("fluid") == "pleural effusion" and "Fluid" in names  # the first to list a synonym keeps it
    assert names.resolve("ascites") is None and "ascites" not in names and 3 not in names
    # close spellings of a name or a synonym name the canonical category, once, closest first
    assert names.close_matches("pleral efusion") == ["pleural effusion"]
    assert names.close_matches("flud") == ["pleural effusion"]
    assert names.did_you_mean("edemma") == " (did you mean 'edema'?)"
    assert names.did_you_mean("xyz") == ""


def test_the_dictionary_resolves_through_its_name_index(knowledge):
    assert isinstance(knowledge.names, CategoryNames)
    for category in knowledge.categories:
        for name in (category, *knowledge.entry(category).synonyms):
            assert knowledge.names.resolve(name) == knowledge.resolve(name) == category


def test_version_is_the_file_hash(tmp_path, knowledge):
    import hashlib

    assert knowledge.version == hashlib.sha256(DICTIONARY.read_bytes()).hexdigest()[:16]
    copy = tmp_path / "copy.yaml"
    copy.write_bytes(DICTIONARY.read_bytes())
    assert load_knowledge(copy).version == knowledge.version
    copy.write_bytes(DICTIONARY.read_bytes().replace(b"a symmetric, globular", b"a flask-shaped"))
    edited = load_knowledge(copy)
    assert edited.version != knowledge.version
    assert edited.explanation("pericardial effusion").startswith("a flask-shaped enlargement")


def test_folded_text_is_cleaned(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text(
        "categories:\n  nodule:\n    explanation: >-\n      a round\n      opacity   in the lung\n"
        "    context: '  Small.  '\n",
        encoding="utf-8",
    )
    k = load_knowledge(path, required=["nodule"])
    assert k.explanation("nodule") == "a round opacity in the lung"
    assert k.entry("nodule").context == "Small."
    assert k.entry("nodule").synonyms == ()


# -- validation errors ----------------------------------------------------------------------
def test_missing_required_category_names_file_and_category(tmp_path):
    path = write(tmp_path, {"nodule": entry()})
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(path, required=["nodule", "pleural effusion", "mass"])
    msg = str(err.value)
    assert f"{path}: no entry for category 'pleural effusion' (the vocabulary can emit it)" in msg
    assert f"{path}: no entry for category 'mass'" in msg
    assert "2 problems" in msg  # all reported at once


def test_a_required_category_spelled_differently_is_an_error(tmp_path):
    path = write(tmp_path, {"Pleural_Effusion": entry()})
    with pytest.raises(KnowledgeError, match=r"category 'Pleural_Effusion' must be spelled 'pleural effusion'"):
        load_knowledge(path, required=["pleural effusion"])


@pytest.mark.parametrize("field, value", [("explanation", ""), ("explanation", "   \n "), ("context", "")])
def test_empty_text_names_category_and_field(tmp_path, field, value):
    path = write(tmp_path, {"nodule": entry(), "mass": {**entry(), field: value}})
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(path)
    assert str(err.value) == f"{path}: category 'mass': field {field!r} is empty"


def test_missing_field_and_unknown_key_are_reported_together(tmp_path):
    path = write(
        tmp_path,
        {
            "nodule": {"explanation": "a round opacity", "synonyms": []},
            "mass": {**entry(), "explaination": "typo"},
            "cyst": entry(synonyms=["  "]),
        },
    )
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(path)
    msg = str(err.value)
    assert "3 problems" in msg
    assert f"{path}: category 'nodule': field 'context' is missing" in msg
    assert f"{path}: category 'mass': unknown key 'explaination'" in msg
    assert f"{path}: category 'cyst': field 'synonyms' has an empty synonym" in msg


def test_wrong_types_are_reported(tmp_path):
    path = write(tmp_path, {"nodule": {**entry(), "synonyms": "just one"}, "mass": ["not", "a", "mapping"]})
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(path)
    msg = str(err.value)
    assert f"{path}: category 'nodule': field 'synonyms'" in msg
    assert f"{path}: category 'mass': expected a mapping" in msg


def test_duplicate_synonym_across_entries(tmp_path):
    path = write(tmp_path, {"nodule": entry(synonyms=["round lesion"]), "mass": entry(synonyms=["Round_Lesion"])})
    with pytest.raises(
        KnowledgeError, match=r"category 'mass': synonym 'Round_Lesion' is also a synonym of category 'nodule'"
    ) as err:
        load_knowledge(path)
    assert str(path) in str(err.value)


def test_synonym_naming_another_category_even_a_later_one(tmp_path):
    path = write(tmp_path, {"opacity": entry(synonyms=["Lung Opacity"]), "lung opacity": entry()})
    with pytest.raises(
        KnowledgeError,
        match=rf"{re.escape(str(path))}: category 'opacity': synonym 'Lung Opacity' "
        r"is the name of category 'lung opacity'",
    ):
        load_knowledge(path)


def test_synonym_repeating_its_own_category_or_itself(tmp_path):
    path = write(tmp_path, {"pleural thickening": entry(synonyms=["Pleural_Thickening", "plaque", "PLAQUE"])})
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(path)
    msg = str(err.value)
    assert "synonym 'Pleural_Thickening' is the category's own name" in msg
    assert "synonym 'PLAQUE' is listed twice" in msg


def test_category_given_twice(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text(
        "categories:\n  nodule: {explanation: a, context: b}\n  nodule: {explanation: c, context: d}\n",
        encoding="utf-8",
    )
    with pytest.raises(
        KnowledgeError,
        match=rf"^{re.escape(str(path))}: not valid YAML \(line 3, column 3\): key 'nodule' appears twice$",
    ):
        load_knowledge(path)
    path = write(tmp_path, {"lung mass": entry(), "Lung_Mass": entry()})
    with pytest.raises(KnowledgeError, match=r"category 'Lung_Mass' is the same name as category 'lung mass'"):
        load_knowledge(path)


def test_yaml_syntax_error_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("categories:\n  nodule: {explanation: [unclosed\n", encoding="utf-8")
    with pytest.raises(KnowledgeError, match=rf"^{re.escape(str(path))}: not valid YAML"):
        load_knowledge(path)


@pytest.mark.parametrize("text", ["", "- a list\n", "categories: [nodule]\n", "nodules: {}\n"])
def test_wrong_top_level_shape(tmp_path, text):
    path = tmp_path / "shape.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(KnowledgeError, match=rf"^{re.escape(str(path))}: expected a top-level mapping 'categories"):
        load_knowledge(path)


def test_unknown_top_level_key(tmp_path):
    path = write(tmp_path, {"nodule": entry()}, version=2)
    with pytest.raises(KnowledgeError, match=r"unknown top-level key 'version'"):
        load_knowledge(path)


def test_file_not_found(tmp_path):
    with pytest.raises(
        KnowledgeError, match=rf"{re.escape(str(tmp_path / 'nope.yaml'))}: knowledge dictionary not found"
    ):
        load_knowledge(tmp_path / "nope.yaml")
    assert issubclass(KnowledgeError, ValueError)


# -- the command -------------------------------------------------------------------------------
def config_file(tmp_path: Path, dictionary: Path) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "extraction": {"rules": {"vocabulary_dir": str(VOCABULARY_DIR)}},
                "knowledge": {"path": str(dictionary)},
            }
        ),
        encoding="utf-8",
    )
    return cfg


def test_cli_summary_and_check(tmp_path, capsys, knowledge):
    cfg = config_file(tmp_path, DICTIONARY)
    assert main(["-q", "-c", str(cfg), "knowledge"]) == 0
    out = capsys.readouterr().out
    assert "OK, 71 entries (64 vocabulary categories, 7 knowledge-only)" in out
    assert f"version {knowledge.version}" in out
    assert main(["-q", "-c", str(cfg), "knowledge", "--check"]) == 0
    assert "knowledge-only categories: covid-19 pneumonia, lung mass" in capsys.readouterr().out


def test_cli_show_resolves_a_dataset_spelling(tmp_path, capsys, knowledge):
    cfg = config_file(tmp_path, DICTIONARY)
    assert main(["-q", "-c", str(cfg), "knowledge", "--show", "Pleural_Effusion"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("pleural effusion  (resolved from 'Pleural_Effusion')")
    assert "pleural effusion, where pleural effusion is a dependent" in " ".join(out.split())
    assert main(["-q", "-c", str(cfg), "knowledge", "--show", "pleral efusion"]) == 1
    assert "did you mean 'pleural effusion'" in capsys.readouterr().err


def test_cli_fails_when_a_vocabulary_category_has_no_entry(tmp_path, capsys):
    data = yaml.safe_load(DICTIONARY.read_text(encoding="utf-8"))
    del data["categories"]["pleural effusion"]
    bad = write(tmp_path, data["categories"], name="without_effusion.yaml")
    assert main(["-q", "-c", str(config_file(tmp_path, bad)), "knowledge", "--check"]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: no entry for category 'pleural effusion' (the vocabulary can emit it)" in err
    assert main(["-q", "-c", str(config_file(tmp_path, tmp_path / "missing.yaml")), "knowledge"]) == 1
    assert "knowledge dictionary not found" in capsys.readouterr().err
