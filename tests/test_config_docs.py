"""The key tables of config/README.md are the ones the pydantic models' Field descriptions give."""

from __future__ import annotations

import pytest
from pydantic import Field, create_model

from medfilip.pipeline.config_docs import (
    README_PATH,
    ROOT_MODEL,
    ConfigDocsError,
    generate,
    main,
    stale_sections,
    table,
    type_text,
)


def changed_model(description: str):
    """The root model with reports.n_shards described otherwise (type, bounds and default unchanged)."""
    reports = ROOT_MODEL.model_fields["reports"].annotation
    shards = reports.model_fields["n_shards"]
    field = Field(shards.default, ge=1, le=100000, description=description)
    section = create_model("ChangedReports", __base__=reports, n_shards=(int, field))
    return create_model(
        "ChangedRoot", __base__=ROOT_MODEL, reports=(section, Field(section(), description="Reports, changed"))
    )


def without_table(text: str, section: str) -> str:
    start = text.index(f"<!-- BEGIN GENERATED {section} -->")
    end = text.index(f"<!-- END GENERATED {section} -->")
    return text[:start] + text[end:]


def test_committed_tables_are_the_generated_ones(capsys):
    text = README_PATH.read_text(encoding="utf-8")
    assert generate(text) == text, "run: python -m medfilip.pipeline.config_docs --write"
    assert main(["--check"]) == 0
    assert capsys.readouterr().err == ""


def test_a_changed_description_is_detected_and_rewritten(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(README_PATH.read_text(encoding="utf-8"), encoding="utf-8")
    model = changed_model("Shards of the corpus, described anew")
    assert stale_sections(readme.read_text(encoding="utf-8"), model) == ["reports"]
    assert main(["--check", "--path", str(readme)], model=model) == 1
    err = capsys.readouterr().err
    assert "reports" in err and "python -m medfilip.pipeline.config_docs --write" in err
    assert main(["--write", "--path", str(readme)], model=model) == 0
    written = readme.read_text(encoding="utf-8")
    assert "| `reports.n_shards` | integer 1 to 100000 | `4` | Shards of the corpus, described anew |" in written
    assert main(["--check", "--path", str(readme)], model=model) == 0
    # only the reports table changed; the hand-written prose around the tables is kept as it was
    assert without_table(written, "reports") == without_table(README_PATH.read_text(encoding="utf-8"), "reports")
    assert stale_sections(README_PATH.read_text(encoding="utf-8"), model) == ["reports"]


def test_a_table_edited_by_hand_is_stale(tmp_path):
    readme = tmp_path / "README.md"
    text = README_PATH.read_text(encoding="utf-8")
    readme.write_text(text.replace("| `images.size` | integer 32 to 2048 |", "| `images.size` | integer |"))
    assert stale_sections(readme.read_text(encoding="utf-8")) == ["images"]
    assert main(["--check", "--path", str(readme)]) == 1


def test_a_key_without_description_or_a_section_without_table_is_an_error(tmp_path, capsys):
    with pytest.raises(ConfigDocsError, match="reports.n_shards: the model's Field has no description"):
        generate(README_PATH.read_text(encoding="utf-8"), changed_model(""))
    readme = tmp_path / "README.md"
    text = README_PATH.read_text(encoding="utf-8")
    start, end = text.index("<!-- BEGIN GENERATED phantom -->"), text.index("<!-- END GENERATED phantom -->")
    readme.write_text(text[:start] + text[end + len("<!-- END GENERATED phantom -->") :], encoding="utf-8")
    assert main(["--check", "--path", str(readme)]) == 1
    assert "no table for the config section(s) phantom" in capsys.readouterr().err
    with pytest.raises(ConfigDocsError, match="'images.size', which is a key"):
        generate(text.replace("GENERATED images -->", "GENERATED images.size -->"))


def test_rows_read_types_defaults_and_nested_mappings():
    training = table("training", ["training"])
    assert "| `training.runs.<name>.loss` | `mse_ce`, `mse_bce`, `infonce` | `mse_ce` |" in training
    assert "| `training.grad_clip` | number > 0 or null | `1.0` |" in training
    assert "| `training.runs` | mapping name → section | entries `medfilip`, `no_ssm`, `medclip`, `convirt` |" in (
        training
    )
    evaluation = table("evaluation", ["evaluation", "evaluation.segmentation"])
    assert "`evaluation.segmentation." not in evaluation and "`evaluation.linear_probe.lr`" not in evaluation
    assert "| `evaluation.mismatched_explanation` | mapping name → string | `{covid-19 pneumonia: cardiomegaly}` |" in (
        evaluation
    )
    assert type_text({"type": "number", "exclusiveMinimum": 0, "maximum": 3600}, {}) == "number > 0, ≤ 3600"
    assert type_text({"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]}, {}) == "integer ≥ 1 or null"
    listed = {"type": "array", "items": {"type": "string", "format": "path"}, "uniqueItems": True}
    assert type_text(listed, {}) == "list of path (no repeats)"
