"""MIMIC-CXR scale: a generated corpus through reports -> extraction (rules) -> entities -> labels.

Writes N synthetic reports in the MIMIC-CXR layout (files/pXX/pNNNNNNNN/sNNNNNNNN.txt, one per
study, FINDINGS + IMPRESSION sections assembled from sentence templates of the findings the
vocabulary knows, with negations, severities and locations; plus mimic-cxr-2.0.0-split.csv and
-metadata.csv with two images per study), then runs each stage as the workflow's jobs do: the
`medfilip` CLI in a fresh process (one `extract` job per shard, run one after another), and prints
wall time and peak RSS (the process's ru_maxrss) per stage and per 10k reports.

Targets (issue 13): time linear in reports (compare the per-10k figures of two N), peak RSS
<= 4 GB at 227k reports.

    nice -n 10 python benchmarks/scale.py --reports 20000 50000 [--shards 16] [--keep DIR]

The texts are templates, not real reports: the figures are throughput and memory, not quality.
The last stage is the training job's read of labels.parquet (`read_label_table`, one variant);
benchmarks/label_table.py compares it with the list-of-dicts read it replaced on a MIMIC-sized table.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent

FINDINGS = [
    ("cardiomegaly", ["The heart is {sev} enlarged.", "There is {sev} cardiomegaly."], ["mild", "moderate", "severe"]),
    (
        "pleural effusion",
        ["There is a {sev} {side} pleural effusion.", "{Side} pleural effusion is {sev}."],
        ["small", "moderate", "large"],
    ),
    (
        "pneumothorax",
        ["There is a {sev} {side} pneumothorax.", "{Side} apical pneumothorax is {sev}."],
        ["small", "moderate", "large"],
    ),
    (
        "atelectasis",
        ["{Side} basilar atelectasis.", "There is {sev} {side} lower lobe atelectasis."],
        ["mild", "minimal", "moderate"],
    ),
    (
        "consolidation",
        ["Focal consolidation in the {side} lower lobe.", "{Side} upper lobe consolidation is {sev}."],
        ["patchy", "dense", "mild"],
    ),
    ("edema", ["There is {sev} pulmonary edema.", "Interstitial edema is {sev}."], ["mild", "moderate", "severe"]),
    ("nodule", ["A {sev} nodule projects over the {side} upper lobe."], ["small", "8 mm", "calcified"]),
    ("granuloma", ["Calcified granuloma in the {side} upper lobe."], ["small"]),
]
NEGATIONS = [
    "No pleural effusion or pneumothorax.",
    "No focal consolidation.",
    "No pneumothorax.",
    "The lungs are otherwise clear.",
    "No acute osseous abnormality.",
]
NORMAL = [
    "The heart size and mediastinal contours are normal.",
    "The lungs are clear.",
    "No acute cardiopulmonary process.",
]


def report_text(rng: random.Random) -> str:
    findings, impression = [], []
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
        _name, templates, severities = rng.choice(FINDINGS)
        side = rng.choice(["right", "left", "bilateral"])
        s = rng.choice(templates).format(sev=rng.choice(severities), side=side, Side=side.capitalize())
        findings.append(s)
        impression.append(s)
    findings += rng.sample(NEGATIONS, 2)
    if not impression:
        findings = rng.sample(NORMAL, 2) + findings
        impression = ["No acute cardiopulmonary process."]
    return (
        "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n"
        " INDICATION:  ___ with cough.\n\n FINDINGS:\n \n "
        + " ".join(findings)
        + "\n \n IMPRESSION:\n \n "
        + " ".join(impression)
        + "\n"
    )


def write_corpus(root: Path, n: int, seed: int = 0) -> float:
    """N studies in the MIMIC-CXR layout; returns the seconds it took."""
    t0 = time.perf_counter()
    rng = random.Random(seed)
    files = root / "files"
    with (
        open(root / "mimic-cxr-2.0.0-split.csv", "w", newline="") as fs,
        open(root / "mimic-cxr-2.0.0-metadata.csv", "w", newline="") as fm,
    ):
        split, meta = csv.writer(fs), csv.writer(fm)
        split.writerow(["dicom_id", "study_id", "subject_id", "split"])
        meta.writerow(["dicom_id", "study_id", "subject_id", "ViewPosition"])
        for i in range(n):
            subject = 10_000_000 + i // 3  # ~3 studies per patient, as in MIMIC-CXR
            study = 50_000_000 + i
            u = (subject * 2654435761 % 1000) / 1000
            part = "train" if u < 0.95 else ("validate" if u < 0.975 else "test")
            folder = files / f"p{str(subject)[:2]}" / f"p{subject}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"s{study}.txt").write_text(report_text(rng))
            for k, view in enumerate(("PA", "LATERAL")):
                dicom = f"{study:x}-{k}"
                split.writerow([dicom, study, subject, part])
                meta.writerow([dicom, study, subject, view])
    return time.perf_counter() - t0


def run_stage(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one CLI process."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.decode()[-3000:]}")
    return wall, usage.ru_maxrss / 1024


def bench(n: int, shards: int, work: Path) -> list[tuple[str, float, float]]:
    corpus = work / "mimic"
    corpus.mkdir(parents=True)
    gen_s = write_corpus(corpus, n)
    print(f"  generated {n} reports in {gen_s:.1f} s (not a pipeline stage)", flush=True)
    cfg = {
        "reports": {
            "source": "mimic_cxr",
            "n_shards": shards,
            "mimic_cxr": {
                "root": str(corpus),
                "split_csv": str(corpus / "mimic-cxr-2.0.0-split.csv"),
                "metadata_csv": str(corpus / "mimic-cxr-2.0.0-metadata.csv"),
            },
        },
        "extraction": {"backend": "rules"},
    }
    merged = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for key, value in cfg.items():
        merged.setdefault(key, {}).update(value)
    (work / "config.yaml").write_text(yaml.safe_dump(merged))
    (work / "resources").symlink_to(REPO / "resources")  # the config's relative resource paths
    cli = [sys.executable, "-m", "medfilip", "-q", "-c", str(work / "config.yaml")]
    # the shard naming of medfilip.pipeline.config.shard_names
    from medfilip.reports.settings import shard_names

    names = shard_names(shards)
    shard_files = [f"results/reports/shards/{s}.parquet" for s in names]
    extractions = [f"results/extraction/rules/{s}.parquet" for s in names]
    rows = []
    wall, rss = run_stage(
        [*cli, "reports", "--out-dir", "results/reports/shards", "--rejects", "results/reports/rejects.parquet"], work
    )
    rows.append(("reports", wall, rss))
    walls, peak = 0.0, 0.0
    for shard, out in zip(shard_files, extractions):
        w, r = run_stage(
            [
                *cli,
                "extract",
                "--shards",
                shard,
                "--out",
                out,
                "--no-progress",
                "--cache-dir",
                "results/cache/extraction/rules",
            ],
            work,
        )
        walls, peak = walls + w, max(peak, r)
    rows.append((f"extract ({shards} jobs, summed)", walls, peak))
    wall, rss = run_stage([*cli, "entities", *extractions, "--out", "results/entities.parquet"], work)
    rows.append(("entities", wall, rss))
    wall, rss = run_stage(
        [
            *cli,
            "labels",
            "--reports",
            *shard_files,
            "--entities",
            "results/entities.parquet",
            "--extractions",
            *extractions,
            "--out",
            "results/labels.parquet",
        ],
        work,
    )
    rows.append(("labels", wall, rss))
    # what a training job reads of labels.parquet (streamed; benchmarks/label_table.py compares it with
    # the list-of-dicts read it replaced, at MIMIC scale)
    read = (
        "from medfilip.training.data import read_label_table; "
        "read_label_table('results/labels.parquet', 'triplet_explanation')"
    )
    wall, rss = run_stage([sys.executable, "-c", read], work)
    rows.append(("training label table (read)", wall, rss))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reports", type=int, nargs="+", default=[20_000, 50_000])
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--keep", type=Path, default=None, help="work here and keep the files (default: a temp folder)")
    args = ap.parse_args()
    results = {}
    for n in args.reports:
        base = args.keep or Path(tempfile.mkdtemp(prefix="medfilip-scale-"))
        work = base / f"n{n}"
        if work.exists():
            shutil.rmtree(work)
        print(f"N = {n} reports, {args.shards} shards", flush=True)
        try:
            rows = bench(n, args.shards, work)
        finally:
            if args.keep is None:
                shutil.rmtree(base, ignore_errors=True)
        results[n] = rows
        print(f"  {'stage':34s} {'wall s':>8s} {'s / 10k':>8s} {'peak RSS MB':>12s}")
        for stage, wall, rss in rows:
            print(f"  {stage:34s} {wall:8.1f} {wall / n * 1e4:8.2f} {rss:12.0f}")
        total = sum(w for _, w, _ in rows)
        print(f"  {'total':34s} {total:8.1f} {total / n * 1e4:8.2f} {max(r for *_, r in rows):12.0f}", flush=True)
    if len(results) > 1:
        (n0, r0), (n1, r1) = min(results.items()), max(results.items())
        print(f"linearity: s/10k at N={n1} over s/10k at N={n0} (1.0 = linear)")
        for (stage, w0, _), (_, w1, _) in zip(r0, r1):
            print(f"  {stage:34s} {(w1 / n1) / (w0 / n0):6.2f}")


if __name__ == "__main__":
    main()
