"""Config validation: a wrong value fails before any work, naming the key path, the value and what is allowed."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from medfilip.configbase import ConfigError
from medfilip.pipeline.config import load_config, validate_config
from medfilip.reports.settings import shard_names


def test_embedded_default_is_valid(repo):
    cfg = load_config(repo / "config" / "config.yaml")
    assert cfg.reports.source == "iu_xray"
    assert cfg.extraction.backend == "rules"
    assert cfg.reports.n_shards >= 1


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"reports": {"n_shards": 0}}, r"reports\.n_shards = 0: Input should be greater than or equal to 1"),
        (
            {"reports": {"source": "chexpert"}},
            r"reports\.source = 'chexpert': Input should be 'iu_xray' or 'mimic_cxr'",
        ),
        ({"extraction": {"backend": "gpt"}}, r"extraction\.backend = 'gpt': Input should be 'rules'"),
        ({"reports": {"n_shard": 3}}, r"reports\.n_shard = 3: unknown key"),
        (
            {"reports": {"iu_xray": {"split_fractions": {"train": 0.9, "validate": 0.2, "test": 0.1}}}},
            r"reports\.iu_xray\.split_fractions: Value error, train \+ validate \+ test must sum to 1, got 1\.2",
        ),
        ({"reports": {"source": "mimic_cxr"}}, r"reports\.mimic_cxr\.root and split_csv not set"),
        (
            {"extraction": {"flush_every": "often"}},
            r"extraction\.flush_every = 'often': Input should be a valid integer",
        ),
    ],
)
def test_errors_name_key_value_and_rule(data, expected):
    with pytest.raises(ConfigError, match=expected):
        validate_config(data, "my.yaml")


def test_all_errors_reported_at_once():
    with pytest.raises(ConfigError) as err:
        validate_config({"reports": {"n_shards": -1, "limit": 0}}, "my.yaml")
    msg = str(err.value)
    assert msg.startswith("my.yaml: invalid configuration (2 errors)")
    assert "reports.n_shards = -1" in msg and "reports.limit = 0" in msg


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("reports: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listy)


def test_shard_names_are_zero_padded_and_sortable():
    assert shard_names(3) == ["000", "001", "002"]
    names = shard_names(1500)
    assert names[0] == "0000" and names[-1] == "1499" and names == sorted(names)


def test_cli_reports_config_error_without_traceback(tmp_path, repo):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"reports": {"n_shards": 0}}))
    proc = subprocess.run(
        [sys.executable, "-m", "medfilip", "-c", str(cfg), "config"],
        capture_output=True,
        text=True,
        cwd=repo,
    )
    assert proc.returncode == 2
    assert "reports.n_shards = 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def _merged(base: dict, over: dict) -> dict:
    """snakemake's --configfile merge: nested mappings updated key by key."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.mark.parametrize("name", ["paper.yaml", "ablation.yaml", "simulation.yaml"])
def test_shipped_variant_configs_are_valid_over_the_default(repo, name):
    base = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    over = yaml.safe_load((repo / "config" / name).read_text())
    cfg = validate_config(_merged(base, over), source=name)
    if name == "paper.yaml":
        assert cfg.images.size == 448 and cfg.training.model.image_arch == "resnet50"
        assert cfg.training.optimiser.lr == pytest.approx(1e-4) and cfg.training.epochs == 20
    elif name == "simulation.yaml":
        # five arms x 10 seeds: the default's four runs are seed 0 of theirs
        assert len(cfg.training.runs) == 50
        assert sorted(r.seed or 0 for r in cfg.training.runs.values()) == sorted(list(range(10)) * 5)
        assert cfg.training.text_cache and cfg.training.masked_targets == "entailment"
        assert cfg.embeddings.calibration.split == "train" and cfg.labels.severity_scale == "three_level"
        assert cfg.evaluation.primary_endpoint.methods == ("medfilip", "no_ssm")
    else:
        # merged into the default's four runs: Table VI's five rows (medfilip is the last) x 5 seeds
        rows = {"abl_report", "abl_entity", "abl_fg", "abl_ssm", "medfilip"}
        assert set(cfg.training.runs) == {"no_ssm", "medclip", "convirt"} | rows | {
            f"{r}_s{k}" for r in rows for k in range(1, 5)
        }
        assert cfg.embeddings.calibration.split == "train" and cfg.training.masked_targets == "entailment"


@pytest.mark.parametrize("section", ["linear_probe", "segmentation"])
@pytest.mark.parametrize(
    "fractions, message", [([0.1, 0.1], "listed twice"), ([0.0, 0.5], "(0, 1]"), ([1.5], "(0, 1]")]
)
def test_data_fractions_are_checked_with_the_key_path(section, fractions, message):
    with pytest.raises(ConfigError) as err:
        validate_config({"evaluation": {section: {"fractions": fractions}}})
    assert f"evaluation.{section}.fractions" in str(err.value) and message in str(err.value)
    ok = validate_config({"evaluation": {section: {"fractions": [1.0, 0.01]}}})
    assert getattr(ok.evaluation, section).fractions == [0.01, 1.0]


def test_sections_live_with_their_stages():
    import medfilip.extraction.settings as extraction
    import medfilip.pipeline.config as config
    import medfilip.reports.settings as reports

    # each section's model is the class its stage defines; the config assembles them and re-exports none
    cfg = config.PipelineConfig()
    assert type(cfg.reports) is reports.ReportsConfig and type(cfg.quality) is extraction.QualityConfig
    assert type(cfg.extraction.openai) is extraction.OpenAIBackendConfig
    assert not hasattr(config, "OpenAIBackendConfig") and not hasattr(config, "SplitFractions")


def test_vocabularies_are_one_enum_each_and_the_config_stores_their_values():
    from medfilip.labels import templates
    from medfilip.names import ClassTextVariant, LabelVariant, LossKind, TargetKind, values
    from medfilip.training import loss, settings

    assert settings.LabelVariantName is LabelVariant is templates.LabelVariant
    assert settings.TargetKind is TargetKind and settings.LossKind is LossKind
    assert loss.LOSS_KINDS == values(LossKind) == ("mse_ce", "mse_bce", "infonce")
    assert set(values(ClassTextVariant)) < set(values(LabelVariant))
    cfg = validate_config({"training": {"runs": {"m": {"target": TargetKind.multi_hot, "loss": "infonce"}}}})
    run = cfg.training.runs["m"]
    # plain strings, so YAML dumps, CSV cells and hashes read "multi_hot", not "TargetKind.multi_hot"
    assert type(run.target) is str and type(run.loss) is str and type(cfg.labels.variants[0]) is str
    assert yaml.safe_dump(cfg.model_dump(mode="python")["training"]["runs"]["m"], sort_keys=True) == (
        "eval_text: null\nlabel_variant: triplet_explanation\nloss: infonce\nseed: null\ntarget: multi_hot\n"
    )
