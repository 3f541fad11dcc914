"""The corpus store in parts: one job per report shard, merged by linking the pixels.

A run killed while decoding keeps the parts that finished (they are outputs): the re-run decodes
only the missing shard, and the merged store equals a store built in one go.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from workflow_helpers import job_counts, output_of, snakemake, write_corpus

from medfilip.images.store import ImageStore, ImageStoreError, merge_stores, write_store

ROOT = Path(__file__).resolve().parents[2]


def _store(root: Path, ids: list[str], seed: int, shard_size: int = 2) -> ImageStore:
    rng = np.random.default_rng(seed)
    return write_store(
        root,
        [(i, rng.integers(0, 256, (8, 8), dtype=np.uint8), {"path": f"{i}.png", "split": "train"}) for i in ids],
        size=8,
        dataset="corpus",
        shard_size=shard_size,
    )


def test_merge_links_pixels_and_keeps_order(tmp_path):
    a = _store(tmp_path / "a", ["x1", "x2", "x3"], seed=0)
    b = _store(tmp_path / "b", ["y1", "x2", "y2"], seed=1)  # x2 is taken by part a
    merged = merge_stores([tmp_path / "a", tmp_path / "b"], tmp_path / "all")
    assert merged.image_ids == ["x1", "x2", "x3", "y1", "y2"]
    assert merged.meta["n_images"] == 5 and merged.meta["n_shards"] == 4 and merged.meta["parts"] == 2
    want = [a[0], a[1], a[2], b[0], b[2]]
    for i, pixels in enumerate(want):
        np.testing.assert_array_equal(merged[i], pixels)
    (reject,) = merged.rejects().to_pylist()
    assert reject["image_id"] == "x2" and "already taken by x2.png" in reject["reason"]
    # linked, not copied: the part's array file and the merged one are the same file
    assert (tmp_path / "all" / "arrays" / "002.npy").stat().st_ino == (
        tmp_path / "b" / "arrays" / "000.npy"
    ).stat().st_ino


def test_merge_refuses_parts_that_disagree(tmp_path):
    _store(tmp_path / "a", ["x1"], seed=0)
    write_store(tmp_path / "b", [("y1", np.zeros((4, 4), np.uint8), {})], size=4, dataset="corpus")
    with pytest.raises(ImageStoreError, match=r"size = 4 .*parts of one store must agree"):
        merge_stores([tmp_path / "a", tmp_path / "b"], tmp_path / "all")
    assert not (tmp_path / "all").exists()


@pytest.mark.slow
def test_killed_corpus_store_resumes_from_its_finished_shards(tmp_path):
    write_corpus(tmp_path / "iu_reports")
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "reports": {"source": "iu_xray", "n_shards": 3, "iu_xray": {"path": "iu_reports"}},
                "images": {"size": 64},
            }
        )
    )
    # the "killed" run: parts 000 and 001 finished, 002 was never written
    first = ["results/images/corpus_parts/000/index.parquet", "results/images/corpus_parts/001/index.parquet"]
    proc = snakemake(tmp_path, "--cores", "2", *first, configfile=config)
    assert proc.returncode == 0, output_of(proc)
    assert job_counts(proc) == {"report_shards": 1, "corpus_images_part": 2}
    parts = tmp_path / "results" / "images" / "corpus_parts"
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in parts.glob("00[01]/**/*") if p.is_file()}
    assert before and not (parts / "002").exists()
    # and a half-written part 002 (a writer's temporary folder) left behind by the kill
    (parts / ".002.abc.tmp" / "arrays").mkdir(parents=True)
    (parts / ".002.abc.tmp" / "arrays" / "000.part").write_bytes(b"\0" * 100)

    proc = snakemake(tmp_path, "--cores", "2", "results/images/corpus/index.parquet", configfile=config)
    assert proc.returncode == 0, output_of(proc)
    assert job_counts(proc) == {"corpus_images_part": 1, "corpus_images": 1}  # only the missing shard decodes
    after = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in before}
    assert after == before  # finished parts untouched

    merged = ImageStore.open(tmp_path / "results" / "images" / "corpus")
    assert merged.meta["parts"] == 3
    # the same store as one job over every shard (the images, their pixels and index rows)
    shards = sorted((tmp_path / "results" / "reports" / "shards").glob("*.parquet"))
    sys.path.insert(0, str(ROOT))
    from medfilip.extraction.quality import MeshMapping
    from medfilip.extraction.vocabulary import configured_vocabulary
    from medfilip.images.corpus import build_corpus_store
    from medfilip.pipeline.config import load_config

    cfg = load_config(config)
    whole = build_corpus_store(
        shards,
        tmp_path / "whole",
        size=64,
        findings="mesh",
        mapping=MeshMapping.load(ROOT / cfg.quality.mesh_mapping, configured_vocabulary(cfg)),
        png_dir=tmp_path / "results" / "corpus" / "iu_xray" / "images",
        seed=cfg.images.corpus.seed,
        phantom_settings=cfg.phantom.model_dump(mode="json"),
        progress=False,
    )
    assert sorted(merged.image_ids) == sorted(whole.image_ids) and len(merged) > 0
    order = {image_id: i for i, image_id in enumerate(whole.image_ids)}
    for i, image_id in enumerate(merged.image_ids):
        np.testing.assert_array_equal(merged[i], whole[order[image_id]])
    cols = ["image_id", "report_id", "split", "view", "findings"]
    key = lambda row: row["image_id"]  # noqa: E731
    assert sorted(merged.index.select(cols).to_pylist(), key=key) == sorted(
        whole.index.select(cols).to_pylist(), key=key
    )
    shutil.rmtree(tmp_path / "whole")
