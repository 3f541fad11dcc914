"""medfilip.pipeline.paths is the one place that names the results/ paths: the rules and their helpers use it."""

from __future__ import annotations

import ast
import re
import string
import sys
from pathlib import Path

from medfilip.pipeline import paths
from medfilip.pipeline.config import validate_config
from medfilip.pipeline.workflows import probe as probe_wf
from medfilip.pipeline.workflows import segmentation as segmentation_wf
from medfilip.pipeline.workflows.images import corpus_params

ROOT = Path(__file__).resolve().parent.parent
RULE_FILES = [ROOT / "workflow" / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
WILDCARDS = {"shard", "backend", "dataset", "run", "split", "baseline", "slug", "source"}


def constants() -> dict[str, str]:
    return {k: v for k, v in vars(paths).items() if k.isupper() and isinstance(v, str)}


def test_paths_imports_nothing_but_the_standard_library():
    # the Snakefile imports it while parsing; the library must not pull in the pipeline through it
    tree = ast.parse((ROOT / "medfilip" / "pipeline" / "paths.py").read_text(encoding="utf-8"))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_every_path_is_under_results_and_uses_known_wildcards():
    consts = constants()
    assert len(consts) > 40
    for name, value in consts.items():
        assert value == paths.RESULTS or value.startswith(f"{paths.RESULTS}/"), name
        fields = {f for _, f, _, _ in string.Formatter().parse(value) if f}
        assert fields <= WILDCARDS, f"{name}: unknown wildcard {fields - WILDCARDS}"
    # two outputs never share a path (patterns filled alike would collide in the DAG)
    values = [v for k, v in consts.items() if not k.endswith("_DIR") and k != "RESULTS"]
    assert len(values) == len(set(values)), sorted(v for v in values if values.count(v) > 1)


def test_patterns_fill_to_the_files_the_cli_and_readme_name():
    assert paths.REPORT_SHARD.format(shard="003") == "results/reports/shards/003.parquet"
    assert paths.EXTRACTION_SHARD.format(backend="rules", shard="000") == "results/extraction/rules/000.parquet"
    assert paths.MODEL.format(run="medfilip") == "results/models/medfilip/model.pt"
    assert paths.model_dir("convirt") == "results/models/convirt"
    assert paths.store_dir("rsna") == "results/images/rsna"
    assert paths.CORPUS_STORE_INDEX == "results/images/corpus/index.parquet"
    assert paths.feature_file("test", ".json") == "results/features/{run}/{dataset}/test.json"
    assert paths.FEATURES.format(run="r", dataset="nih", split="train") == "results/features/r/nih/train.npy"
    assert paths.log("train", "{run}") == "results/logs/train/{run}.log"
    assert paths.log("zeroshot") == "results/logs/zeroshot/zeroshot.log"
    assert paths.benchmark("extract_triplets", "{backend}/{shard}") == (
        "results/benchmarks/extract_triplets/{backend}/{shard}.tsv"
    )


def test_workflow_helpers_name_paths_constants():
    assert probe_wf.TABLE == paths.LINEAR_PROBE_TABLE and segmentation_wf.STORE == "results/images/siim"


def test_workflow_helpers_build_their_paths_from_paths():
    cfg = validate_config({"training": {"runs": {"a": {}, "b": {}}}})
    assert segmentation_wf.run_folders(cfg) == [
        "results/segmentation/runs/a",
        "results/segmentation/runs/b",
        paths.SEGMENTATION_BASELINE_DIR,
    ]
    assert probe_wf.feature_files("a", "nih")["validate"] == "results/features/a/nih/validate.npy"
    entities = validate_config({"images": {"corpus": {"findings": "entities"}}})
    params = corpus_params(entities)
    assert params["png_dir"] == "results/corpus/iu_xray/images"
    assert params["entities_arg"] == "--entities results/entities.parquet"


def test_rules_spell_no_results_path_themselves():
    # a path literal in a rule could drift from the helper (or the other rule) that reads it
    offenders = []
    for path in RULE_FILES:
        in_docstring = False
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.count('"""') % 2:
                in_docstring = not in_docstring
                continue
            code = line.split("#", 1)[0]
            if not in_docstring and re.search(r"""["']results/""", code):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
