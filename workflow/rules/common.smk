"""Config validation and the few helpers the rules share.

The config is checked twice before any job is planned: by the package's pydantic
models (the same messages the CLI gives, naming each bad key path) and by the
JSON schema (snakemake's own check, which also catches a schema that drifted
from the models). Then the
effective config (merged from every --configfile and --config, defaults filled
in, paths resolved) is written to EFFECTIVE_CONFIG and that file is what every
job hands to the CLI, so a job always sees exactly the config the DAG was
built from. (workflow.configfiles alone would not do: it lists the command-line
files first and config/config.yaml last, and misses --config overrides.)
"""

import os
import sys
from pathlib import Path

import yaml
from pydantic import BaseModel
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from medfilip.config import ConfigError, shard_names, validate_config
from medfilip.extraction.vocabulary import FILES as VOCABULARY_FILES


# The folder holding workflow/ and resources/: relative config paths that do not
# exist in the working directory are looked up here (see config/README.md).
REPO_ROOT = Path(workflow.basedir).parent
EFFECTIVE_CONFIG = "results/config/effective.yaml"

# Jobs call the `medfilip` CLI of the Python environment running snakemake, even when
# that environment is not activated (.venv/bin/snakemake); under --use-conda the rule's
# env is activated in the job and its bin/ comes first.
_bin = str(Path(sys.executable).parent)
if _bin not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ.update(PATH=os.pathsep.join([_bin, os.environ.get("PATH", "")]))

try:
    # pydantic first: its message names the key path (reports.n_shards = 0: ...)
    checked = validate_config(config, source=" + ".join(map(str, workflow.configfiles)) or "config")
except ConfigError as err:
    raise WorkflowError(str(err)) from None


def locate(path):
    """A relative path is taken in the working directory if it exists there, else in the repository."""
    path = Path(path).expanduser()
    if path.is_absolute() or path.exists() or not (REPO_ROOT / path).exists():
        return path
    return REPO_ROOT / path


def resolved(model):
    """The config model as plain data, every path field passed through locate()."""

    def plain(value):
        if isinstance(value, BaseModel):
            return resolved(value)
        if isinstance(value, Path):
            return str(locate(value))
        if isinstance(value, dict):  # e.g. extraction.prices: model -> ModelPrice
            return {k: plain(v) for k, v in value.items()}
        return value

    return {field.alias or name: plain(getattr(model, name)) for name, field in type(model).model_fields.items()}


def write_if_changed(path, text):
    """Atomic write that leaves the file (and its mtime) alone when the text is the same."""
    path = Path(path)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


SETTINGS = resolved(checked)
# The schema checks the values as pydantic read them: snakemake reads nested --config
# values as strings (--config 'reports={n_shards: 8}' gives "8"), which pydantic accepts.
validate(SETTINGS, "../schemas/config.schema.yaml")
CFG = validate_config(SETTINGS, source=EFFECTIVE_CONFIG)
# Rules, report captions and --report see the same complete config as the CLI.
config.update(SETTINGS)


# Written only when jobs are about to run, under snakemake's lock of the working
# directory: a dry-run, --lint, or a second snakemake refused by the lock never
# rewrites the config that running jobs read.
onstart:
    write_if_changed(EFFECTIVE_CONFIG, yaml.safe_dump(SETTINGS, sort_keys=False))


BACKEND = CFG.extraction.backend
SHARDS = shard_names(CFG.reports.n_shards)
VOCABULARY = [str(Path(CFG.extraction.rules.vocabulary_dir) / f) for f in VOCABULARY_FILES]


def extraction_inputs(wildcards):
    """What the extractor reads besides the shard: the vocabulary (rules) or the prompt file (openai)."""
    if BACKEND == "openai":
        return {"prompt": str(CFG.extraction.openai.prompt)}
    return {"vocabulary": VOCABULARY}


def extraction_settings():
    """The settings that change what the LLM answers (model id first): a param, so a change re-runs
    extraction. The endpoint, key, limits and retries change how it is asked, not the answer."""
    if BACKEND != "openai":
        return {}
    o = CFG.extraction.openai
    return {"model": o.model, "temperature": o.temperature, "max_output_tokens": o.max_output_tokens,
            "structured_output": o.structured_output}


def report_corpus():
    """The corpus files the report rule reads, as its input (a folder counts by its mtime)."""
    reports = CFG.reports
    if reports.source == "iu_xray":
        if reports.iu_xray.path is None:
            from medfilip.reports.iu_xray import shipped_reports_path

            return [str(shipped_reports_path())]
        return [str(reports.iu_xray.path)]
    m = reports.mimic_cxr
    return [str(p) for p in (m.root, m.split_csv, m.metadata_csv) if p is not None]


def parent_dir(wildcards, output):
    """Folder of the first output, for CLI options that take a folder rather than files."""
    return str(Path(output[0]).parent)


def get_final_output():
    """Every table and figure (and what they are built from) of the configured run."""
    from medfilip.datasets.workflow import dataset_targets

    targets = ["results/entities.parquet"]
    if CFG.reports.source == "iu_xray":
        # only IU-Xray carries the MeSH annotations that quality is scored against
        targets += ["results/tables/extraction_quality.csv", "results/figures/extraction_quality.png"]
    targets += [
        "results/labels.parquet",
        "results/tables/label_stats.csv",
        "results/figures/ssm_heatmap.png",
        "results/figures/phantom_gallery.png",
        "results/images/corpus/index.parquet",
        *dataset_targets(CFG),
        "results/figures/train_curves.png",
        "results/tables/zeroshot.csv",
        "results/tables/zeroshot_per_class.csv",
        "results/figures/zeroshot.png",
        # Table VI's shape (targets helper); rows without a run of training.runs say so in `note`
        "results/tables/ablation.csv",
        # means over seeds with paired intervals (one seed in the embedded default)
        "results/tables/seeds.csv",
    ]
    return targets
