"""Each settings model says which of its keys re-run which rule (``rerun_keys``), and the rules' ``settings``
params are derived from those declarations (medfilip.pipeline.config.rule_settings): changing a key changes
a rule's params exactly when it is declared, with no copy of the key lists to keep equal."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import pytest

from medfilip.configbase import reruns
from medfilip.pipeline.config import (
    PipelineConfig,
    key_reruns,
    rerun_patterns,
    rerun_rules,
    rule_settings,
    settings_param,
)

SETTINGS = PipelineConfig().model_dump(mode="json", by_alias=True)
# the wildcards of the rules whose patterns name one
WILDCARDS = {
    "train": {"run": "medfilip"},
    "dataset_twin": {"dataset": "rsna"},
    "preprocess_dataset": {"dataset": "siim"},
}


def leaves(node: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Key paths of every value that is not a non-empty mapping (a list is one value)."""
    if isinstance(node, dict) and node:
        return [leaf for key, sub in node.items() for leaf in leaves(sub, (*path, key))]
    return [path]


def changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "_x"
    if isinstance(value, list):
        return [*value, value[-1] if value else "x"]
    if isinstance(value, dict):
        return {**value, "x": "x"}
    return "x"  # None


def with_change(settings: dict, path: tuple[str, ...]) -> dict:
    out = copy.deepcopy(settings)
    *parents, last = path
    node = out
    for key in parents:
        node = node[key]
    node[last] = changed(node[last])
    return out


@pytest.mark.parametrize("rule", sorted(rerun_rules()))
def test_a_rules_settings_change_exactly_with_its_declared_keys(rule: str):
    wildcards = WILDCARDS.get(rule, {})
    base = rule_settings(SETTINGS, rule, **wildcards)
    paths = leaves(SETTINGS)
    assert len(paths) > 200
    actual = {".".join(p) for p in paths if rule_settings(with_change(SETTINGS, p), rule, **wildcards) != base}
    declared = {".".join(p) for p in paths if key_reruns(rule, ".".join(p), **wildcards)}
    assert actual, f"{rule}: no key changes its settings"
    assert actual == declared


def test_rule_settings_pick_the_keys_by_path():
    zeroshot = rule_settings(SETTINGS, "zeroshot")
    assert zeroshot["evaluation.text_variant"] == SETTINGS["evaluation"]["text_variant"]
    assert zeroshot["evaluation.bootstrap.n_resamples"] == SETTINGS["evaluation"]["bootstrap"]["n_resamples"]
    assert all(k.startswith("evaluation.") for k in zeroshot)
    assert not {"evaluation.batch_size", "evaluation.device"} & set(zeroshot)
    settings = copy.deepcopy(SETTINGS)
    settings["training"]["runs"] = {"a": {"seed": 1}, "b": {"seed": 2}}
    train_a = rule_settings(settings, "train", run="a")
    assert train_a["training.runs.a.seed"] == 1 and "training.runs.b.seed" not in train_a
    assert "training.epochs" in train_a and "training.checkpoint_every" not in train_a
    twin = rule_settings(SETTINGS, "dataset_twin", dataset="rsna")
    assert "datasets.rsna.n_train" in twin and "datasets.nih.n_train" not in twin
    assert not {"datasets.rsna.root", "datasets.rsna.enabled"} & set(twin)


def test_settings_param_is_a_function_of_the_wildcards_where_the_patterns_name_one():
    assert settings_param(SETTINGS, "zeroshot") == rule_settings(SETTINGS, "zeroshot")
    of_job = settings_param(SETTINGS, "train")
    assert callable(of_job)
    assert of_job(SimpleNamespace(run="medfilip")) == rule_settings(SETTINGS, "train", run="medfilip")
    assert settings_param(SETTINGS, "dataset_twin")(SimpleNamespace(dataset="nih")) == rule_settings(
        SETTINGS, "dataset_twin", dataset="nih"
    )


def test_patterns():
    run = ("*", "!runs", "runs.{run}", "!log_every")
    assert reruns(run, "model.embed_dim", run="a")
    assert reruns(run, "runs.a.loss", run="a")
    assert not reruns(run, "runs.b.loss", run="a")
    assert not reruns(run, "log_every", run="a")
    assert not reruns(("corpus",), "corpus_x")  # a key, not a prefix of a word
    assert reruns(("corpus",), "corpus.enabled")
    assert rerun_patterns("report_shards") == ("reports.*",)
    # a key nobody declares re-runs no rule: quality.mesh_mapping is a file (an input), not a param
    assert not any(key_reruns(rule, "quality.mesh_mapping") for rule in rerun_rules())
    assert key_reruns("embed_labels", "training.masked_targets")
    # which variants are embedded is the rule's derived `variants` param: adding a run of an embedded
    # variant re-embeds nothing
    assert not key_reruns("embed_labels", "training.runs.medfilip.target")


LIST_PARAMS = r"""
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

root, workdir = Path(sys.argv[1]), Path(sys.argv[2])
with SnakemakeApi(OutputSettings()) as api:
    workflow = api.workflow(
        resource_settings=ResourceSettings(cores=1),
        config_settings=ConfigSettings(configfiles=[root / "config" / "config.yaml"]),
        snakefile=root / "workflow" / "Snakefile",
        workdir=workdir,
    )._workflow
    print(json.dumps({rule.name: sorted(rule.params.keys()) for rule in workflow.rules}))
"""


def test_every_rule_with_settings_params_declares_its_keys(tmp_path):
    """A rule whose params hold more than the effective config's file name is re-run by some keys: the
    settings models must say which (a new rule, or a new param, without a declaration fails here)."""
    import json
    import subprocess
    import sys

    from medfilip.pipeline.config import ROOT

    proc = subprocess.run(
        [sys.executable, "-c", LIST_PARAMS, str(ROOT), str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    params = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"report_shards", "train", "zeroshot", "all"} <= set(params)
    # params that name where a rule writes or reads, set by the rule itself, not by the config
    fixed = {"config", "out_dir", "cache_dir", "runs_dir", "png_dir", "size"}
    with_settings = {rule for rule, names in params.items() if set(names) - fixed}
    assert sorted(with_settings - rerun_rules()) == []
    assert sorted(rerun_rules() - set(params)) == [], "declared for rules the workflow does not have"
    # every declared rule takes its keys as the derived `settings` param; extraction's param is the
    # backend's generation settings (its cache key: the model file's sha256 and the category list too)
    assert sorted(r for r in rerun_rules() - {"extract_triplets"} if "settings" not in params[r]) == []
