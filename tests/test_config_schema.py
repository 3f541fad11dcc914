"""The workflow's JSON schema is generated from the pydantic models, and both judge a config alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from medfilip.configbase import ConfigError
from medfilip.pipeline.config import ROOT, PipelineConfig, load_config, validate_config
from medfilip.pipeline.schema import SCHEMA_PATH, config_schema, main, schema_text

# the pipeline's configs; config/worlds.yaml is the controlled worlds' own file (WorldsConfig,
# validated in tests/worlds)
SHIPPED = sorted(p for p in (ROOT / "config").glob("*.yaml") if p.name != "worlds.yaml")


def snakemake_validate(data: dict) -> dict:
    """What workflow/rules/common.smk does: snakemake's validate, which also fills the schema's defaults."""
    validate(data, str(SCHEMA_PATH))
    return data


def test_committed_schema_is_the_generated_one():
    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_text(), "run: python -m medfilip.pipeline.schema --write"


def test_check_and_write(tmp_path: Path, capsys):
    stale = tmp_path / "stale.yaml"
    stale.write_text(schema_text().replace("maximum: 100000", "maximum: 99"), encoding="utf-8")
    assert main(["--check", "--path", str(stale)]) == 1
    assert "python -m medfilip.pipeline.schema --write" in capsys.readouterr().err
    fresh = tmp_path / "fresh.yaml"
    assert main(["--write", "--path", str(fresh)]) == 0
    assert main(["--check", "--path", str(fresh)]) == 0
    assert yaml.safe_load(fresh.read_text(encoding="utf-8")) == config_schema()


def test_every_key_has_a_description_and_forbids_unknown_keys():
    def nodes(node: dict, path: str):
        for key, sub in node.get("properties", {}).items():
            yield f"{path}{key}", sub
            yield from nodes(sub, f"{path}{key}.")
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):  # a mapping of names to sections (training.runs, extraction.prices)
            yield from nodes(extra, f"{path}*.")

    schema = config_schema()
    found = list(nodes(schema, ""))
    assert len(found) > 200
    assert [p for p, sub in found if not sub.get("description")] == []
    assert [p for p, sub in found if "properties" in sub and sub.get("additionalProperties") is not False] == []
    # YAML names, not Python names: the split key is `validate`, the field `validate_`
    fractions = schema["properties"]["reports"]["properties"]["iu_xray"]["properties"]["split_fractions"]
    assert list(fractions["properties"]) == ["train", "validate", "test"]


def test_snakemake_fills_the_pydantic_defaults():
    assert snakemake_validate({}) == PipelineConfig().model_dump(mode="json", by_alias=True)
    partial = {"reports": {"n_shards": 8}, "training": {"runs": {"solo": {"loss": "infonce"}}}}
    expected = validate_config(partial).model_dump(mode="json", by_alias=True)
    assert snakemake_validate(partial) == expected
    assert expected["training"]["runs"]["solo"] == {
        "label_variant": "triplet_explanation",
        "target": "ssm",
        "loss": "infonce",
        "seed": None,
        "eval_text": None,
    }


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_and_their_effective_form_validate(path: Path):
    validator = Draft202012Validator(config_schema())
    validator.validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    # the effective config the workflow validates: every key filled in, paths as strings
    effective = load_config(path).model_dump(mode="json", by_alias=True)
    validator.validate(effective)
    assert snakemake_validate(effective) == load_config(path).model_dump(mode="json", by_alias=True)


BAD = {
    "bound": {"reports": {"n_shards": 0}},
    "unknown key": {"reports": {"shards": 4}},
    "unknown label variant": {"labels": {"variants": ["sentence"]}},
    "repeated label variant": {"labels": {"variants": ["triplet", "triplet"]}},
    "unknown target": {"training": {"runs": {"m": {"target": "soft"}}}},
    "unknown loss": {"training": {"runs": {"m": {"loss": "ce"}}}},
    "run name not a folder name": {"training": {"runs": {"a/b": {}}}},
    "no run": {"training": {"runs": {}}},
    "mimic without its paths": {"reports": {"source": "mimic_cxr"}},
    "mimic without split_csv": {"reports": {"source": "mimic_cxr", "mimic_cxr": {"root": "m"}}},
    "unknown class": {"datasets": {"siim": {"classes": ["Pneumothorax", "Cardiomegaly"]}}},
    "unknown class text": {"evaluation": {"text_variant": "report"}},
    "one-value literal": {"extraction": {"openai": {"batch": {"completion_window": "1h"}}}},
    "repeated K": {"evaluation": {"retrieval": {"ks": [1, 1]}}},
}


@pytest.mark.parametrize("data", BAD.values(), ids=BAD.keys())
def test_both_reject(data: dict):
    with pytest.raises(ConfigError):
        validate_config(data)
    with pytest.raises(WorkflowError):
        snakemake_validate(yaml.safe_load(yaml.safe_dump(data)))


GOOD = {
    "aliased key": {"reports": {"iu_xray": {"split_fractions": {"train": 0.7, "validate": 0.2, "test": 0.1}}}},
    "mimic with its paths": {"reports": {"source": "mimic_cxr", "mimic_cxr": {"root": "m", "split_csv": "s.csv"}}},
    "optional bound": {"reports": {"limit": None}, "training": {"grad_clip": None, "max_pairs": 3}},
    "enum values": {
        "labels": {"variants": ["report", "category"]},
        "training": {"runs": {"convirt": {"label_variant": "report", "target": "identity", "loss": "infonce"}}},
        "evaluation": {"text_variant": "category"},
    },
}


@pytest.mark.parametrize("data", GOOD.values(), ids=GOOD.keys())
def test_both_accept(data: dict):
    expected = validate_config(data).model_dump(mode="json", by_alias=True)
    assert snakemake_validate(yaml.safe_load(yaml.safe_dump(data))) == expected


@pytest.mark.parametrize(
    "key, value",
    [
        ("fractions", [0.0, 0.5]),
        ("thresholds", [0.5, 1.0]),
        ("min_area", [-0.1]),
        ("decoder_channels", [8, 8, 8, 8, 0]),
    ],
)
def test_list_items_are_bounded_in_both(key: str, value: list):
    data = {"evaluation": {"segmentation": {key: value}}}
    with pytest.raises(ConfigError):
        validate_config(data)
    with pytest.raises(WorkflowError):
        snakemake_validate(data)
