"""What the workflow tests share: running snakemake on a working directory, reading its job table, and the
7-report OpenI corpus most of them run on. The `project` and `tiny_run` fixtures built from these live in
tests/conftest.py.

The runs use `--directory <workdir>`, so results/ is written there; the shipped resources/ are found in the
repository by the workflow's path fallback (config/README.md, "Paths").
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SNAKEFILE = ROOT / "workflow" / "Snakefile"

# (report id, FINDINGS, IMPRESSION, MeSH major terms); the last one has no text and is rejected
REPORTS = [
    (
        "CXR1",
        "The heart is mildly enlarged. No pleural effusion or pneumothorax.",
        "Mild cardiomegaly.",
        ["Cardiomegaly/mild"],
    ),
    (
        "CXR2",
        "There is a small right pleural effusion. The lungs are otherwise clear.",
        "Small right pleural effusion.",
        ["Pleural Effusion/right/small"],
    ),
    (
        "CXR3",
        "The heart size and mediastinal contours are normal. The lungs are clear.",
        "No acute disease.",
        ["normal"],
    ),
    (
        "CXR4",
        "Left basilar atelectasis. Calcified granuloma in the right upper lobe.",
        "Left basilar atelectasis.",
        ["Pulmonary Atelectasis/base/left", "Calcified Granuloma/lung/upper lobe/right"],
    ),
    ("CXR5", "Moderate right-sided pneumothorax.", "Moderate right pneumothorax.", ["Pneumothorax/right/moderate"]),
    (
        "CXR6",
        "Degenerative changes of the thoracic spine. No focal consolidation.",
        "No acute cardiopulmonary process.",
        ["Thoracic Vertebrae/degenerative"],
    ),
    ("CXR7", "", "", ["normal"]),
]


def openi_xml(report_id: str, findings: str, impression: str, mesh: list[str], n_images: int = 2) -> str:
    """One OpenI report file: the sections, the MeSH major terms and `n_images` images."""
    majors = "".join(f"<major>{m}</major>" for m in mesh)
    n = report_id.removeprefix("CXR")
    images = "".join(
        f'<parentImage id="{report_id}_IM-000{n}-{k}001"><figureId>F{k}</figureId></parentImage>'
        for k in range(1, n_images + 1)
    )
    return f"""<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="{report_id}"/>
   <pmcId id="{n}"/>
   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
      <Article PubModel="Electronic">
         <Abstract>
            <AbstractText Label="COMPARISON">None.</AbstractText>
            <AbstractText Label="INDICATION">Cough</AbstractText>
            <AbstractText Label="FINDINGS">{findings}</AbstractText>
            <AbstractText Label="IMPRESSION">{impression}</AbstractText>
         </Abstract>
      </Article>
   </MedlineCitation>
   <MeSH>{majors}</MeSH>
   {images}
</eCitation>
"""


def write_corpus(folder: Path, reports=REPORTS, n_images: int = 2) -> Path:
    """`reports` as OpenI files <n>.xml in `folder` (created)."""
    folder.mkdir(parents=True)
    for rid, findings, impression, mesh in reports:
        (folder / f"{rid.removeprefix('CXR')}.xml").write_text(
            openi_xml(rid, findings, impression, mesh, n_images), encoding="utf-8"
        )
    return folder


def snakemake(
    workdir: Path,
    *args: str,
    configfile: str | Path,
    env: dict[str, str] | None = None,
    timeout: float = 1800,
) -> subprocess.CompletedProcess:
    """`snakemake --directory workdir <args> --configfile configfile` with this interpreter; output captured.

    The timeout leaves room for trainings on a busy 2-core machine; pytest's own timeout still applies.
    """
    # --configfile takes several values, so it goes last, after the targets
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(workdir),
        *args,
        "--configfile",
        str(configfile),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def output_of(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def job_counts(proc: subprocess.CompletedProcess | str) -> dict[str, int]:
    """Rule -> number of jobs, from snakemake's "Job stats" table (of a finished process or its output)."""
    text = proc if isinstance(proc, str) else output_of(proc)
    start = text.find("Job stats:")
    if start < 0:
        return {}
    counts = {}
    for line in text[start:].splitlines()[3:]:
        m = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if not m or m.group(1) == "total":
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


def mtimes(paths) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in paths}


# -- a project: a working directory with a corpus and a config --------------------------------------
BASE_CONFIG = {
    "reports": {"source": "iu_xray", "n_shards": 2, "iu_xray": {"path": "iu_reports"}},
    # relative paths: found in the working directory; quality.mesh_mapping is left at its default,
    # which only exists in the repository
    "extraction": {"rules": {"vocabulary_dir": "vocabulary"}},
}


def make_project(root: Path, config: dict | None = None, reports=REPORTS, n_images: int = 2) -> Path:
    """`root` as a working directory: the OpenI corpus iu_reports/, an editable copy of the shipped vocabulary
    (vocabulary/) and config.yaml, BASE_CONFIG with `config`'s top-level sections replacing its own."""
    write_corpus(root / "iu_reports", reports, n_images)
    shutil.copytree(ROOT / "resources" / "vocabulary", root / "vocabulary")
    write_config(root / "config.yaml", {**BASE_CONFIG, **(config or {})})
    return root


def read_config(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


# -- the shared tiny pipeline run (fixture tiny_pipeline, tests/conftest.py) ------------------------
# (FINDINGS, IMPRESSION, MeSH): one image per report, drawn from its MeSH terms (one finding each)
KINDS = [
    ("The heart is mildly enlarged.", "Mild cardiomegaly.", ["Cardiomegaly/mild"]),
    ("The heart is severely enlarged.", "Severe cardiomegaly.", ["Cardiomegaly/severe"]),
    ("There is a small right pleural effusion.", "Small right pleural effusion.", ["Pleural Effusion/right/small"]),
    ("Left basilar atelectasis.", "Left basilar atelectasis.", ["Pulmonary Atelectasis/base/left"]),
    ("Moderate right-sided pneumothorax.", "Moderate right pneumothorax.", ["Pneumothorax/right/moderate"]),
]
TINY_REPORTS = [(f"CXR{n}", *KINDS[n % len(KINDS)]) for n in range(1, 61)]

TINY_CONFIG = {
    # 60 % of the 60 reports held out: enough images for the corpus evaluation sets and retrieval
    "reports": {
        "source": "iu_xray",
        "n_shards": 1,
        "iu_xray": {"path": "iu_reports", "split_fractions": {"train": 0.4, "validate": 0.3, "test": 0.3}},
    },
    "extraction": {"rules": {"vocabulary_dir": "vocabulary"}},
    "labels": {"variants": ["triplet_explanation", "report"]},
    "images": {"size": 32},
    "datasets": {
        "render_size": 64,
        # train splits where the linear probe (rsna, vinbig) and segmentation (siim) need them
        "rsna": {"n_test": 16, "n_validate": 8, "n_train": 20},
        "vinbig": {"n_test": 24, "n_validate": 12, "n_train": 30},
        "siim": {"n_test": 12, "n_validate": 8, "n_train": 16},
        "covid": {"n_test": 12, "n_validate": 8},
        "nih": {"enabled": False},
    },
    "training": {
        "epochs": 1,
        "batch_size": 4,
        "num_workers": 0,
        "checkpoint_every": 2,
        "model": {"embed_dim": 16, "max_length": 24},
        "runs": {
            "medfilip": {"label_variant": "triplet_explanation", "target": "ssm", "loss": "mse_ce"},
            "convirt": {"label_variant": "report", "target": "identity", "loss": "infonce"},
        },
    },
    "evaluation": {
        "batch_size": 16,
        "bootstrap": {"n_resamples": 200, "seed": 0},
        "corpus": {
            "single_label_classes": ["normal", "cardiomegaly", "pneumothorax"],
            "multi_label_classes": ["cardiomegaly", "pneumothorax"],
            "fine_grained_min_count": 1,
        },
        "retrieval": {"ks": [1, 5]},
        "case_study": {"n_images": 3},
        "linear_probe": {
            "fractions": [0.1, 1.0],
            "seeds": 2,
            "c_grid": [0.1, 1.0],
            "batch_size": 16,
            "baselines": {"image_size": 32, "epochs": 1, "batch_size": 8},
        },
        "segmentation": {
            "image_size": 32,
            "fractions": [0.5, 1.0],
            "min_steps": 2,
            "max_steps": 2,
            "checks": 1,
            "batch_size": 4,
            "decoder_channels": [16, 16, 8, 8, 8],
            "examples": 2,
            "device": "cpu",
        },
    },
}
ZEROSHOT_TARGETS = ("results/tables/zeroshot.csv", "results/figures/train_curves.png")
EVALUATION_TARGETS = ("results/tables/zeroshot.csv", "results/tables/retrieval.csv", "results/figures/case_study.png")
SEGMENTATION_TARGETS = (
    "results/tables/segmentation.csv",
    "results/tables/segmentation_long.csv",
    "results/figures/segmentation.png",
)
PROBE_TABLE = "results/tables/linear_probe.csv"
TINY_TARGETS = tuple(dict.fromkeys([*ZEROSHOT_TARGETS, *EVALUATION_TARGETS, *SEGMENTATION_TARGETS, PROBE_TABLE]))


@dataclass(frozen=True)
class TinyPipeline:
    """A finished tiny run of TINY_TARGETS, shared by the tests that read its outputs. Nothing may change
    it (the fixture checks, at the end of the session): `dry_run` plans with another config, written in
    the caller's folder, and never runs a job. A test that runs jobs builds its own project."""

    root: Path
    output: str  # the snakemake run's stdout + stderr

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def configfile(self) -> Path:
        return self.root / "config.yaml"

    def config(self) -> dict:
        """A fresh copy of the run's config, to edit."""
        return read_config(self.configfile)

    def counts(self) -> dict[str, int]:
        """Rule -> number of jobs of the run (which started from an empty folder)."""
        return job_counts(self.output)

    def dry_run(self, folder: Path, *targets: str, config: dict | None = None) -> subprocess.CompletedProcess:
        """`snakemake -n targets` on the finished run, with `config` (default: the run's) saved in `folder`."""
        configfile = self.configfile
        if config is not None:
            text = yaml.safe_dump(config)
            configfile = folder / f"config-{hashlib.sha256(text.encode()).hexdigest()[:12]}.yaml"
            configfile.write_text(text, encoding="utf-8")
        return snakemake(self.root, "-n", *targets, configfile=configfile)

    def snapshot(self) -> dict[str, int]:
        """Every file of the run (corpus, config, results; not snakemake's own records) -> its mtime."""
        files = (p for p in self.root.rglob("*") if p.is_file() and p.relative_to(self.root).parts[0] != ".snakemake")
        return {str(p.relative_to(self.root)): p.stat().st_mtime_ns for p in files}


def build_tiny_pipeline(root: Path) -> TinyPipeline:
    """Runs TINY_TARGETS from nothing in `root`: reports -> extraction -> labels -> embeddings -> the corpus
    store and the four enabled twins -> two training runs -> zero-shot, retrieval, case study, linear probe
    and segmentation tables. Fails with snakemake's output if the run fails."""
    make_project(root, TINY_CONFIG, TINY_REPORTS, n_images=1)
    # one thread per job, two jobs at once: the tiny jobs are mostly Python start-up, and most rules ask for
    # every core (threads: workflow.cores), which would run them one at a time (about 190 s instead of 250 s
    # for the whole run on 2 busy cores)
    proc = snakemake(
        root, "--cores", "2", "--max-threads", "1", *TINY_TARGETS, configfile=root / "config.yaml", timeout=3000
    )
    assert proc.returncode == 0, output_of(proc)
    return TinyPipeline(root, output_of(proc))
