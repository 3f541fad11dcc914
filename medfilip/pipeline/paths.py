"""Where the pipeline writes: every ``results/…`` path and path pattern of the workflow, in one place.

The rules (``workflow/rules/*.smk``) and their helpers (``medfilip/pipeline/workflows/*.py``) take their paths
from here, so a rule's output and the input of the rule that reads it are the same constant.

Plain strings (what Snakemake wants), relative to the working directory. A pattern holds Snakemake
wildcards in braces -- ``{shard}``, ``{backend}``, ``{dataset}``, ``{run}``, ``{split}``,
``{baseline}``, ``{slug}``, ``{source}`` -- and is handed to a rule as it is, or filled with
``str.format`` / ``expand``. No imports beyond the standard library: the Snakefile imports this while
it is parsed.
"""

from __future__ import annotations

RESULTS = "results"

# -- config -------------------------------------------------------------------------------------
# each invocation's effective config (see workflow/rules/common.smk); the job's shell expands the
# variable, so the rules' param is a constant string
EFFECTIVE_CONFIG = f"{RESULTS}/config/effective-$MEDFILIP_CONFIG_ID.yaml"

# -- reports ------------------------------------------------------------------------------------
REPORT_SHARDS_DIR = f"{RESULTS}/reports/shards"
REPORT_SHARD = f"{REPORT_SHARDS_DIR}/{{shard}}.parquet"
REPORT_REJECTS = f"{RESULTS}/reports/rejects.parquet"

# -- extraction ---------------------------------------------------------------------------------
EXTRACTION_SHARD = f"{RESULTS}/extraction/{{backend}}/{{shard}}.parquet"
EXTRACTION_RUNS_DIR = f"{RESULTS}/extraction/runs"
# not a rule output: the cache outlives failed jobs (snakemake deletes a failed job's outputs)
EXTRACTION_CACHE_DIR = f"{RESULTS}/cache/extraction/{{backend}}"
ENTITIES = f"{RESULTS}/entities.parquet"
EXTRACTION_QUALITY_TABLE = f"{RESULTS}/tables/extraction_quality.csv"
EXTRACTION_QUALITY_FIGURE = f"{RESULTS}/figures/extraction_quality.png"
EXTRACTION_AGREEMENT_TABLE = f"{RESULTS}/tables/extraction_agreement.csv"  # medfilip compare

# -- labels and E_sim embeddings ----------------------------------------------------------------
LABELS = f"{RESULTS}/labels.parquet"
LABEL_STATS = f"{RESULTS}/tables/label_stats.csv"
# {slug}: medfilip.embeddings.model_slug(embeddings.model)
EMBEDDINGS = f"{RESULTS}/embeddings/{{slug}}.parquet"
SSM_CALIBRATION = f"{RESULTS}/embeddings/{{slug}}.calibration.json"
EMBEDDINGS_CACHE_DIR = f"{RESULTS}/cache/embeddings/{{slug}}"
SSM_HEATMAP = f"{RESULTS}/figures/ssm_heatmap.png"
SSM_STATS_DIR = f"{RESULTS}/embeddings/stats"  # medfilip ssm-stats: embeddings of the compared models

# -- images -------------------------------------------------------------------------------------
PHANTOM_GALLERY = f"{RESULTS}/figures/phantom_gallery.png"
# {dataset}: a downstream dataset (rsna, nih, ...) or "corpus"; a store is index.parquet + meta.json
# + arrays/ + rejects.parquet (medfilip.images.store)
IMAGE_STORE_DIR = f"{RESULTS}/images/{{dataset}}"
IMAGE_STORE_INDEX = f"{IMAGE_STORE_DIR}/index.parquet"
IMAGE_STORE_META = f"{IMAGE_STORE_DIR}/meta.json"
CORPUS_STORE_DIR = IMAGE_STORE_DIR.format(dataset="corpus")
CORPUS_STORE_INDEX = IMAGE_STORE_INDEX.format(dataset="corpus")
CORPUS_STORE_META = IMAGE_STORE_META.format(dataset="corpus")
# one store per report shard, linked into the corpus store by rule corpus_images
CORPUS_PART_DIR = f"{RESULTS}/images/corpus_parts/{{shard}}"
CORPUS_PART_INDEX = f"{CORPUS_PART_DIR}/index.parquet"
CORPUS_PART_META = f"{CORPUS_PART_DIR}/meta.json"
# {source}: reports.source; the rendered phantom PNGs, a cache (not an output)
RENDERED_PNG_DIR = f"{RESULTS}/corpus/{{source}}/images"
# a downstream dataset's phantom twin, in the real dataset's layout
TWIN_DIR = f"{RESULTS}/twins/{{dataset}}"
TWIN_MANIFEST = f"{TWIN_DIR}/manifest.json"

# -- training -----------------------------------------------------------------------------------
MODELS_DIR = f"{RESULTS}/models"
MODEL_DIR = f"{MODELS_DIR}/{{run}}"
MODEL = f"{MODEL_DIR}/model.pt"
TRAIN_LOG = f"{MODEL_DIR}/train_log.csv"
RUN_CONFIG = f"{MODEL_DIR}/config.yaml"
TRAIN_CURVES = f"{RESULTS}/figures/train_curves.png"
ABLATION_TABLE = f"{RESULTS}/tables/ablation.csv"
SEEDS_TABLE = f"{RESULTS}/tables/seeds.csv"

# -- zero-shot, retrieval, case study -----------------------------------------------------------
IMAGE_EMBEDDINGS_DIR = f"{RESULTS}/evaluation/image_embeddings"
IMAGE_EMBEDDINGS = f"{IMAGE_EMBEDDINGS_DIR}/{{run}}.npz"
ZEROSHOT_TABLE = f"{RESULTS}/tables/zeroshot.csv"
ZEROSHOT_PER_CLASS = f"{RESULTS}/tables/zeroshot_per_class.csv"
ZEROSHOT_FIGURE = f"{RESULTS}/figures/zeroshot.png"
RETRIEVAL_TABLE = f"{RESULTS}/tables/retrieval.csv"
CASE_STUDY_FIGURE = f"{RESULTS}/figures/case_study.png"
CASE_STUDY_TABLE = f"{RESULTS}/tables/case_study.csv"

# -- linear probe -------------------------------------------------------------------------------
FEATURES_DIR = f"{RESULTS}/features/{{run}}/{{dataset}}"
FEATURES = f"{FEATURES_DIR}/{{split}}.npy"
PROBE_RUN_SCORES = f"{RESULTS}/probe/runs/{{run}}/{{dataset}}/scores.npz"
PROBE_RUN_META = f"{RESULTS}/probe/runs/{{run}}/{{dataset}}/scores.json"
PROBE_BASELINE_SCORES = f"{RESULTS}/probe/baselines/{{baseline}}/{{dataset}}/scores.npz"
PROBE_BASELINE_META = f"{RESULTS}/probe/baselines/{{baseline}}/{{dataset}}/scores.json"
LINEAR_PROBE_TABLE = f"{RESULTS}/tables/linear_probe.csv"
LINEAR_PROBE_PER_CLASS = f"{RESULTS}/tables/linear_probe_per_class.csv"
LINEAR_PROBE_FIGURE = f"{RESULTS}/figures/linear_probe.png"

# -- segmentation -------------------------------------------------------------------------------
SEGMENTATION_STORE_DIR = IMAGE_STORE_DIR.format(dataset="siim")
SEGMENTATION_STORE_INDEX = f"{SEGMENTATION_STORE_DIR}/index.parquet"
SEGMENTATION_RUNS_DIR = f"{RESULTS}/segmentation/runs"
# one fine-tuning job's folder: a pretrained run's, or the random-init baseline's
SEGMENTATION_RUN_DIR = f"{SEGMENTATION_RUNS_DIR}/{{run}}"
SEGMENTATION_BASELINE_DIR = f"{RESULTS}/segmentation/baseline/random_init"
# the files of a job's folder
SEGMENTATION_RUN_SCORES = f"{SEGMENTATION_RUN_DIR}/scores.parquet"
SEGMENTATION_RUN_SUMMARY = f"{SEGMENTATION_RUN_DIR}/summary.json"
SEGMENTATION_RUN_EXAMPLES = f"{SEGMENTATION_RUN_DIR}/examples.npz"
SEGMENTATION_BASELINE_SCORES = f"{SEGMENTATION_BASELINE_DIR}/scores.parquet"
SEGMENTATION_BASELINE_SUMMARY = f"{SEGMENTATION_BASELINE_DIR}/summary.json"
SEGMENTATION_BASELINE_EXAMPLES = f"{SEGMENTATION_BASELINE_DIR}/examples.npz"
SEGMENTATION_TABLE = f"{RESULTS}/tables/segmentation.csv"
SEGMENTATION_LONG_TABLE = f"{RESULTS}/tables/segmentation_long.csv"
SEGMENTATION_FIGURE = f"{RESULTS}/figures/segmentation.png"

# -- controlled worlds (medfilip world, workflow/rules/worlds.smk) ------------------------------------
WORLDS_DIR = f"{RESULTS}/worlds"
WORLDS_RUNS = f"{WORLDS_DIR}/runs.csv"
WORLDS_RUNS_PARTIAL = f"{WORLDS_DIR}/runs.partial.csv"  # runs accumulate here (a sweep resumes)
WORLDS_TEXTS = f"{WORLDS_DIR}/texts.npz"  # the worlds' E_sim label vectors
WORLDS_TABLE = f"{RESULTS}/tables/worlds.csv"
WORLDS_PREDICTIONS = f"{RESULTS}/tables/worlds_predictions.csv"
WORLDS_FIGURE = f"{RESULTS}/figures/worlds.png"
WORLD_SHOW = f"{RESULTS}/figures/world_show.png"

# -- the local LLM server (medfilip llm-server): its pid file and log ------------------------------
LLM_SERVER_DIR = f"{RESULTS}/llm-server"

# -- logs and benchmarks ------------------------------------------------------------------------
LOGS_DIR = f"{RESULTS}/logs"
BENCHMARKS_DIR = f"{RESULTS}/benchmarks"


def log(rule: str, name: str | None = None) -> str:
    """A job's log: ``results/logs/<rule>/<name>.log`` (name: the rule's name, or a wildcard pattern)."""
    return f"{LOGS_DIR}/{rule}/{name or rule}.log"


def benchmark(rule: str, name: str | None = None) -> str:
    """A job's benchmark table: ``results/benchmarks/<rule>/<name>.tsv``."""
    return f"{BENCHMARKS_DIR}/{rule}/{name or rule}.tsv"


def feature_file(split: str, suffix: str = ".npy") -> str:
    """One split's features (``.npy``) or their ids (``.json``), the {run} and {dataset} wildcards kept."""
    return f"{FEATURES_DIR}/{split}{suffix}"


def store_dir(dataset: str) -> str:
    """The image store of a downstream dataset or of the corpus (``results/images/<dataset>``)."""
    return IMAGE_STORE_DIR.format(dataset=dataset)


def model_dir(run: str) -> str:
    """A trained run's folder (``results/models/<run>``)."""
    return MODEL_DIR.format(run=run)
