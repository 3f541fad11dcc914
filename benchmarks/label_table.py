"""The training label table at MIMIC-CXR scale: the streamed read (medfilip.training.data) against the
list-of-dicts one it replaced, each in a fresh process, on the same generated labels.parquet.

The generated file has the layout `medfilip labels` writes (rows by report, then variant; the four
variants; 1M-row row groups): N reports (default 227,835, MIMIC-CXR's studies) with 1-5 findings each,
labels drawn from a vocabulary of a few thousand triplets, and an image index of ~1.66 images per
report (MIMIC-CXR's 377k images), 95 % of them in train, some without labels. Each side reads one
variant (triplet_explanation) and joins it to the images (`read_label_table` + `training_items`);
the benchmark prints wall time, peak RSS above the process's imports, and checks that both sides give
the same label ids per image, in the same order (a sha256 over the labels and the per-image lists).

    nice -n 10 python benchmarks/label_table.py [--reports 227835] [--keep DIR]

The join needs only the store's index table (report_id, split), so the images are an index table
here, not pixels.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VARIANT = "triplet_explanation"


def write_labels(root: Path, n_reports: int, seed: int = 0) -> tuple[int, int]:
    """labels.parquet and images.parquet (the index) under ``root``; returns (label rows, images)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from medfilip.labels.build import LABEL_SCHEMA, ROW_GROUP, label_key

    rng = np.random.default_rng(seed)
    categories = [f"finding{i}" for i in range(60)]
    severities = [None, "mild", "moderate", "severe", "small", "large"]
    locations = [None, "left base", "right base", "bilateral", "left apex", "right upper lobe", "retrocardiac"]
    combos = [(c, s, loc) for c in categories for s in severities for loc in locations]  # 2,520 triplets

    def texts(variant, c, s, loc, rid):
        if variant == "category":
            return c
        t = " ".join(x for x in (s, loc, c) if x)
        if variant == "triplet_explanation":
            return f"{t}, where {c} is an explanation of {c} from the knowledge dictionary"
        return t if variant == "triplet" else f"FINDINGS: {t}. IMPRESSION: report {rid} text."

    n_labels = rng.integers(1, 6, size=n_reports)
    columns = {name: [] for name in LABEL_SCHEMA.names}
    n_rows = 0
    with pq.ParquetWriter(root / "labels.parquet", LABEL_SCHEMA, compression="zstd") as writer:

        def flush():
            writer.write_table(pa.table(columns, schema=LABEL_SCHEMA), row_group_size=ROW_GROUP)
            for c in columns.values():
                c.clear()

        for r in range(n_reports):
            rid = f"s{50_000_000 + r}"
            picks = [combos[i] for i in rng.integers(0, len(combos), size=n_labels[r])]
            for variant in ("category", "triplet", "triplet_explanation", "report"):
                chosen = [(None, None, None)] if variant == "report" else picks
                for c, s, loc in chosen:
                    text = texts(variant, c or "", s, loc, rid)
                    row = {
                        "report_id": rid,
                        "variant": variant,
                        "label": text,
                        "label_key": label_key(text),
                        "category": c,
                        "severity": s,
                        "location": loc,
                        "polarity": "present",
                        "explanation": None if c is None else f"an explanation of {c}",
                        "fine_grained_key": None if c is None else f"{s or ''}|{c}",
                        "is_normal": False,
                    }
                    for k, v in row.items():
                        columns[k].append(v)
                    n_rows += 1
            if len(columns["report_id"]) >= ROW_GROUP:
                flush()
        flush()
    # images: 1 or 2 per study (MIMIC-CXR: 377k images for 228k studies); 2 % of studies without labels
    per = rng.choice([1, 2], p=[0.34, 0.66], size=n_reports)
    rids = np.repeat(np.arange(n_reports), per)
    report_id = [f"s{50_000_000 + r}" if r % 50 else f"s{90_000_000 + r}" for r in rids]
    split = np.where(rng.random(len(rids)) < 0.95, "train", "test")
    pq.write_table(pa.table({"report_id": report_id, "split": split.tolist()}), root / "images.parquet")
    return n_rows, len(rids)


class IndexOnly:
    """What training_items reads of an ImageStore: its index table and the rows of a split."""

    def __init__(self, path: Path):
        import numpy as np
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        self.root, self.index = path, pq.read_table(path)
        mask = pc.equal(self.index.column("split"), "train").to_numpy(zero_copy_only=False)
        self._train = np.flatnonzero(mask).astype(np.int64)

    def indices(self, split: str):
        assert split == "train"
        return self._train


def old_read_label_table(path, variant):
    """The list-of-dicts implementation before issue 13 (verbatim but for the checks)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from medfilip.training.data import LabelTable

    table = pq.read_table(path)
    needed = {
        "report_id",
        "variant",
        "label",
        "label_key",
        "category",
        "severity",
        "location",
        "polarity",
        "explanation",
    }
    table = table.filter(pc.equal(table.column("variant"), variant))
    rows = table.select(sorted(needed)).to_pylist()
    first: dict[str, dict] = {}
    for row in rows:
        first.setdefault(row["label_key"], row)
    keys = sorted(first)
    key_id = {k: i for i, k in enumerate(keys)}
    labels = LabelTable(
        variant=variant,
        texts=[first[k]["label"] for k in keys],
        keys=keys,
        categories=[first[k]["category"] for k in keys],
        severities=[first[k]["severity"] for k in keys],
        locations=[first[k]["location"] for k in keys],
        explanations=[first[k]["explanation"] for k in keys],
        polarities=[first[k]["polarity"] for k in keys],
    )
    by_report: dict[str, list[int]] = {}
    for row in rows:
        ids = by_report.setdefault(row["report_id"], [])
        lid = key_id[row["label_key"]]
        if lid not in ids:
            ids.append(lid)
    return labels, by_report


def old_training_items(store, by_report, split="train"):
    import numpy as np

    positions = store.indices(split)
    report_ids = store.index.column("report_id").to_pylist()
    kept, ids, dropped = [], [], 0
    for pos in positions:
        label_ids = by_report.get(report_ids[int(pos)])
        if not label_ids:
            dropped += 1
            continue
        kept.append(int(pos))
        ids.append(label_ids)
    return np.asarray(kept, dtype=np.int64), ids, dropped


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(side: str, root: Path) -> None:
    """One side in this process; prints a JSON line (seconds, RSS after imports, peak RSS, digest)."""
    from medfilip.training.data import read_label_table, training_items

    store = IndexOnly(root / "images.parquet")
    base = _rss_mb("VmRSS")
    t0 = time.perf_counter()
    if side == "new":
        labels, by_report = read_label_table(root / "labels.parquet", VARIANT)
        positions, ids, dropped = training_items(store, by_report)
    else:
        labels, by_report = old_read_label_table(root / "labels.parquet", VARIANT)
        positions, ids, dropped = old_training_items(store, by_report)
    seconds = time.perf_counter() - t0
    peak = _rss_mb("VmHWM")
    h = hashlib.sha256(
        json.dumps(
            [
                labels.keys,
                labels.texts,
                labels.categories,
                labels.severities,
                labels.locations,
                labels.explanations,
                labels.polarities,
            ]
        ).encode()
    )
    h.update(positions.tobytes())
    for i in range(len(ids)):
        h.update(json.dumps(list(ids[i])).encode())
    print(
        json.dumps(
            {
                "side": side,
                "seconds": seconds,
                "base_mb": base,
                "peak_mb": peak,
                "images": len(positions),
                "dropped": dropped,
                "labels": len(labels),
                "reports": len(by_report),
                "digest": h.hexdigest(),
            }
        )
    )


def run(side: str, root: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", side, str(root)],
        check=True,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reports", type=int, default=227_835)
    ap.add_argument("--keep", type=Path, default=None, help="work here and keep the files (default: a temp folder)")
    ap.add_argument("--worker", nargs=2, metavar=("SIDE", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], Path(args.worker[1]))
        return
    root = args.keep or Path(tempfile.mkdtemp(prefix="medfilip-labels-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        n_rows, n_images = write_labels(root, args.reports)
        size = (root / "labels.parquet").stat().st_size / 2**20
        print(
            f"generated labels.parquet: {args.reports} reports, {n_rows} label rows (4 variants), {size:.0f} MB; "
            f"{n_images} images ({time.perf_counter() - t0:.0f} s, not measured)",
            flush=True,
        )
        results = [run(side, root) for side in ("old", "new")]
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    old, new = results
    print(
        f"read_label_table({VARIANT}) + training_items: {new['labels']} unique labels, {new['reports']} reports, "
        f"{new['images']} training images ({new['dropped']} without labels)"
    )
    print(f"  {'side':28s} {'wall s':>8s} {'peak RSS MB':>12s} {'above imports MB':>17s}")
    for name, r in (("old (lists of dicts)", old), ("new (streamed, pyarrow)", new)):
        print(f"  {name:28s} {r['seconds']:8.1f} {r['peak_mb']:12.0f} {r['peak_mb'] - r['base_mb']:17.0f}")
    same = old["digest"] == new["digest"]
    print(f"  identical labels and per-image label ids: {'yes' if same else 'NO'}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
