"""Each settings model says which of its keys re-run which rule (``rerun_keys``); the workflow's
params helpers must agree: changing a key changes the rule's params exactly when it is declared."""

from __future__ import annotations

import copy
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from medfilip.configbase import reruns
from medfilip.pipeline.config import PipelineConfig, key_reruns, rerun_patterns, rerun_rules
from medfilip.pipeline.workflow_resources import training_launch
from medfilip.pipeline.workflows.datasets import preprocess_params, twin_params
from medfilip.pipeline.workflows.probe import baseline_params, fit_params
from medfilip.pipeline.workflows.segmentation import job_params, table_params
from medfilip.pipeline.workflows.training import run_params

SETTINGS = PipelineConfig().model_dump(mode="json", by_alias=True)


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


def namespace(node: Any) -> Any:
    return SimpleNamespace(**{k: namespace(v) for k, v in node.items()}) if isinstance(node, dict) else node


def train_params(settings: dict) -> Any:
    # the train rule's params: the run's settings and the DDP launcher (training.distributed)
    return run_params(settings, "medfilip"), training_launch(namespace(settings["training"]))


# rule -> (its params as the workflow computes them from the effective config, the rule's wildcards)
HELPERS: dict[str, tuple[Callable[[dict], Any], dict[str, str]]] = {
    "train": (train_params, {"run": "medfilip"}),
    "dataset_twin": (lambda s: twin_params(s, "rsna"), {"dataset": "rsna"}),
    "preprocess_dataset": (lambda s: preprocess_params(s, "siim"), {"dataset": "siim"}),
    "probe_fit": (fit_params, {}),
    "probe_baseline": (baseline_params, {}),
    "segmentation_run": (job_params, {}),
    "segmentation_baseline": (job_params, {}),
    "segmentation_table": (table_params, {}),
}


@pytest.mark.parametrize("rule", HELPERS)
def test_params_helper_follows_the_declared_keys(rule: str):
    helper, wildcards = HELPERS[rule]
    base = helper(SETTINGS)
    paths = leaves(SETTINGS)
    assert len(paths) > 200
    actual = {".".join(p) for p in paths if helper(with_change(SETTINGS, p)) != base}
    declared = {".".join(p) for p in paths if key_reruns(rule, ".".join(p), **wildcards)}
    assert actual, f"{rule}: no key changes its params"
    assert sorted(actual - declared) == [], f"{rule}: re-run by keys its settings models do not declare"
    assert sorted(declared - actual) == [], f"{rule}: declared keys that do not change its params"


def test_every_helper_rule_is_declared():
    assert set(HELPERS) <= rerun_rules()


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
    assert key_reruns("embed_labels", "training.runs.medfilip.target")
    assert not key_reruns("embed_labels", "training.runs.medfilip.loss")


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
