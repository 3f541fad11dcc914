"""Config validation and the few helpers the rules share.

The config is checked twice before any job is planned: by the package's pydantic
models (the same messages the CLI gives, naming each bad key path) and by the
JSON schema (snakemake's own check; the schema is generated from the models by
`python -m medfilip.pipeline.schema --write`, and `make lint` checks it is current). Then the
effective config (merged from every --configfile and --config, defaults filled
in, paths resolved) is written to EFFECTIVE_CONFIG and that file is what every
job hands to the CLI, so a job always sees exactly the config the DAG was
built from. (workflow.configfiles alone would not do: it lists the command-line
files first and config/config.yaml last, and misses --config overrides.)

Each invocation's effective config is its own file, named by a hash of its content
(results/config/effective-<hash>.yaml): two snakemake runs with different configs on one
folder never overwrite each other's, so a running job can never pick up another run's
settings. The rules' `config` param is the constant string
"results/config/effective-$MEDFILIP_CONFIG_ID.yaml", which the job's shell expands from
this invocation's environment: a constant, so changing a key that no rule's params
name re-runs nothing.
"""

import hashlib
import os
import sys
from pathlib import Path

import yaml
from pydantic import BaseModel
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from medfilip.pipeline import paths
from medfilip.pipeline.config import settings_param, validate_config
from medfilip.configbase import ConfigError
from medfilip.reports.settings import shard_names
from medfilip.names import ReportSource
from medfilip.pipeline.config_checks import check_paths
from medfilip.extraction.vocabulary import FILES as VOCABULARY_FILES

# the rules' GPUs and DDP launch
from medfilip.pipeline.workflow_resources import (
    gpus,
    training_gpus,
    training_launch,
    training_nodes,
)

# The folder holding workflow/ and resources/: relative config paths that do not
# exist in the working directory are looked up here (see config/README.md).
REPO_ROOT = Path(workflow.basedir).parent
EFFECTIVE_CONFIG = paths.EFFECTIVE_CONFIG
# what the conda env's post-deploy script installs (it runs from a copy in the conda prefix, in
# the working directory: neither is the checkout); snakemake runs it with this environment
os.environ["MEDFILIP_SOURCE_DIR"] = str(REPO_ROOT.resolve())

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
EFFECTIVE_TEXT = yaml.safe_dump(SETTINGS, sort_keys=False)
os.environ["MEDFILIP_CONFIG_ID"] = hashlib.sha256(EFFECTIVE_TEXT.encode("utf-8")).hexdigest()[:16]
EFFECTIVE_FILE = os.path.expandvars(EFFECTIVE_CONFIG)
CFG = validate_config(SETTINGS, source=EFFECTIVE_FILE)
# Every path and model the config names exists and is the right kind, before any job is planned
# (so no job's outputs are removed for a run that cannot finish).
try:
    check_paths(CFG, source=" + ".join(map(str, workflow.configfiles)) or "config")
except ConfigError as err:
    raise WorkflowError(str(err)) from None
# Rules, report captions and --report see the same complete config as the CLI.
config.update(SETTINGS)


# Cluster jobs get the invocation's config id too (local jobs inherit the environment).
envvars:
    "MEDFILIP_CONFIG_ID",


# Written only when jobs are about to run (not by a dry-run or --lint). The name is the content's
# hash, so a file of that name always holds exactly this text: another invocation never changes it.
onstart:
    write_if_changed(EFFECTIVE_FILE, EFFECTIVE_TEXT)


BACKEND = CFG.extraction.backend

# LLM calls share the account's per-minute limits across the whole run: llm_requests (at most that
# many extraction jobs at once) is 1 unless --resources / the profile sets it, and each job paces
# itself to 1/llm_requests of extraction.openai's limits. Cluster jobs re-read the Snakefile without
# --resources, so the count reaches them through the environment, like the config id.
if workflow.is_main_process:
    from medfilip.pipeline.workflow_resources import llm_jobs

    if "llm_requests" not in workflow.global_resources:
        workflow.register_resource("llm_requests", 1)
    os.environ["MEDFILIP_LLM_JOBS"] = str(llm_jobs(workflow.global_resources))


envvars:
    "MEDFILIP_LLM_JOBS",
    "MEDFILIP_SOURCE_DIR",


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
    from medfilip.extraction.openai.prompt import load_prompt, prompt_categories
    from medfilip.extraction.openai.version import generation_settings

    o = CFG.extraction.openai
    # + the model file's sha256 (a new GGUF re-runs extraction) and a closed category list's hash
    categories = prompt_categories(load_prompt(o.prompt), CFG.extraction.rules.vocabulary_dir)
    return generation_settings(o, categories)


def report_corpus():
    """The corpus files the report rule reads, as its input (a folder counts by its mtime)."""
    reports = CFG.reports
    if reports.source == ReportSource.iu_xray:
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
    from medfilip.pipeline.workflows.datasets import dataset_targets

    targets = [paths.ENTITIES]
    if CFG.reports.source == ReportSource.iu_xray:
        # only IU-Xray carries the MeSH annotations that quality is scored against
        targets += [paths.EXTRACTION_QUALITY_TABLE, paths.EXTRACTION_QUALITY_FIGURE]
    targets += [
        paths.LABELS,
        paths.LABEL_STATS,
        paths.SSM_HEATMAP,
        paths.PHANTOM_GALLERY,
        paths.CORPUS_STORE_INDEX,
        *dataset_targets(CFG),
        paths.TRAIN_CURVES,
        paths.ZEROSHOT_TABLE,
        paths.ZEROSHOT_PER_CLASS,
        paths.ZEROSHOT_FIGURE,
        paths.RETRIEVAL_TABLE,
        paths.CASE_STUDY_FIGURE,
        paths.CASE_STUDY_TABLE,
        # Table VI's shape (targets helper); rows without a run of training.runs say so in `note`
        paths.ABLATION_TABLE,
        # means over seeds with paired intervals (one seed in the embedded default)
        paths.SEEDS_TABLE,
    ]
    from medfilip.pipeline.workflows.segmentation import segmentation_targets

    targets += segmentation_targets(CFG)
    from medfilip.pipeline.workflows.probe import probe_targets

    targets += probe_targets(CFG)  # linear probe (Table II): table, per-class table, figure
    return targets
