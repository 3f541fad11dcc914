"""The pretraining corpus images: one frontal image per report (optionally a lateral one too).

Three ways to the same store (``results/images/corpus/``):

- IU-Xray, no image folder configured (the embedded default): each chosen image is rendered with
  the phantom simulator from the report's positive findings, written as a PNG in the IU-Xray
  layout (``<png_dir>/CXR1000_IM-0003-1001.png``, the name the report shard lists), then the PNGs
  are preprocessed like real ones. The findings are the human MeSH annotations (default) or the
  extracted entities with polarity present (``images.corpus.findings``).
- IU-Xray with ``images.corpus.image_root``: the real PNGs under it are read instead.
- MIMIC-CXR: the real JPGs (``files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg`` under the image root).

The index carries report_id, split (the report's), view and ``findings`` (list of
{category, location, severity}): what was drawn for rendered images, what the report states for
real ones. Evaluation uses it as ground truth.

Rendering is resumable: each PNG carries a text chunk with a hash of everything that decides its
pixels (findings, seed, size, view, phantom settings); a PNG whose chunk matches is not rendered
again. PNGs are written atomically, so a killed run leaves whole files only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from medfilip.images.preprocess import preprocess_images
from medfilip.images.store import FINDING_TYPE, ImageStore
from medfilip.names import ReportSource

log = logging.getLogger(__name__)

FRONTAL_VIEWS = ("PA", "AP", "AP AXIAL", "PA LLD", "AP LLD", "AP RLD", "PA RLD")
LATERAL_VIEWS = ("LL", "RL", "LATERAL", "LARGE LATERAL", "LAO", "RAO", "LPO", "XTABLE LATERAL", "SWIMMERS")
SEVERITY_OF_LEVEL = {1: "mild", 2: "moderate", 3: "severe"}
PNG_KEY = "medfilip-render"

FindingTuple = tuple[str, str | None, str | None]  # (category, location, severity)


# -- findings ---------------------------------------------------------------------------
def mesh_findings(terms: Iterable[str] | None, mapping: Any) -> list[FindingTuple]:
    """IU-Xray MeSH terms → (category, location, severity); "normal" and unmapped terms give none.

    Lateralities left + right become "bilateral"; of several regions the most specific (first in
    the vocabulary's order, "lung" last) is kept; several severity levels give the highest.
    """
    from medfilip.extraction.quality import MeshLabel

    region_order = {r: i for i, r in enumerate(mapping.vocab.region_patterns)}
    out: list[FindingTuple] = []
    for term in terms or ():
        label = mapping.label(term)
        if not isinstance(label, MeshLabel):
            continue
        lats = set(label.lateralities)
        laterality = "bilateral" if "bilateral" in lats or {"left", "right"} <= lats else next(iter(lats), None)
        regions = sorted(label.regions, key=lambda r: (r == "lung", region_order.get(r, len(region_order)), r))
        location = " ".join(p for p in (laterality, regions[0] if regions else None) if p) or None
        severity = SEVERITY_OF_LEVEL.get(max(label.severity_levels)) if label.severity_levels else None
        finding = (label.category, location, severity)
        if finding not in out:
            out.append(finding)
    return out


def entity_findings(entities: pa.Table) -> dict[str, list[FindingTuple]]:
    """report_id → its present entities as (category, location, severity), in table order, deduplicated."""
    out: dict[str, list[FindingTuple]] = {}
    cols = [entities.column(c).to_pylist() for c in ("report_id", "category", "location", "severity", "polarity")]
    for rid, category, location, severity, polarity in zip(*cols):
        if polarity != "present" or not category:
            continue
        findings = out.setdefault(rid, [])
        finding = (category, location or None, severity or None)
        if finding not in findings:
            findings.append(finding)
    return out


# -- which images -------------------------------------------------------------------------
@dataclass(frozen=True)
class CorpusImage:
    image_id: str
    path: str  # relative, as the report shard lists it
    report_id: str
    split: str | None
    view: str  # the view rendered / stated: PA, AP or LATERAL
    findings: tuple[FindingTuple, ...] = field(default=())


def choose_views(images: Sequence[dict[str, Any]], second_view: bool) -> list[tuple[dict[str, Any], str]]:
    """(image, view) to use for one report: its first frontal image (PA/AP; else the first of unknown
    view), and with ``second_view`` its first lateral image. A report listing only lateral images
    gets no frontal image: its file names belong to laterals, and the store keeps names true."""

    def kind(view: str | None) -> str:
        v = (view or "").strip().upper()
        if v in FRONTAL_VIEWS:
            return "frontal"
        if v in LATERAL_VIEWS or "LAT" in v:
            return "lateral"
        return "unknown"

    frontal = next((im for im in images if kind(im.get("view")) == "frontal"), None)
    if frontal is None:
        frontal = next((im for im in images if kind(im.get("view")) == "unknown"), None)
    chosen: list[tuple[dict[str, Any], str]] = []
    if frontal is not None:
        view = (frontal.get("view") or "").strip().upper()
        chosen.append((frontal, "AP" if view.startswith("AP") else "PA"))
    if second_view:
        lateral = next((im for im in images if kind(im.get("view")) == "lateral"), None)
        if lateral is not None:
            chosen.append((lateral, "LATERAL"))
    return chosen


def corpus_images(
    reports: pa.Table,
    *,
    findings: Literal["mesh", "entities"],
    mapping: Any = None,
    entities: pa.Table | None = None,
    second_view: bool = False,
) -> tuple[list[CorpusImage], Counter[str]]:
    """The images of the corpus (one frontal per report, plus laterals) and counts of skipped reports."""
    if findings == "mesh" and mapping is None:
        raise ValueError("findings = mesh needs the MeSH mapping")
    if findings == "entities" and entities is None:
        raise ValueError("findings = entities needs the entities table (results/entities.parquet)")
    by_report = entity_findings(entities) if findings == "entities" else {}
    skipped: Counter[str] = Counter()
    seen: set[str] = set()
    out: list[CorpusImage] = []
    cols = {c: reports.column(c).to_pylist() for c in ("report_id", "split", "images")}
    annotations = reports.column("annotations").to_pylist() if "annotations" in reports.column_names else None
    for i, rid in enumerate(cols["report_id"]):
        images = cols["images"][i] or []
        if not images:
            skipped["no image listed"] += 1
            continue
        chosen = choose_views(images, second_view)
        if not any(view != "LATERAL" for _, view in chosen):
            skipped["no frontal image listed"] += 1
        if not chosen:
            continue
        if findings == "mesh":
            drawn = mesh_findings(annotations[i] if annotations is not None else None, mapping)
        else:
            drawn = by_report.get(rid, [])
        for image, view in chosen:
            if image["image_id"] in seen:
                skipped["image listed by two reports"] += 1
                continue
            seen.add(image["image_id"])
            out.append(CorpusImage(image["image_id"], image["path"], rid, cols["split"][i], view, tuple(drawn)))
    return out, skipped


def read_report_shards(paths: Sequence[str | Path]) -> pa.Table:
    columns = ["report_id", "source", "split", "images", "annotations"]
    tables = []
    for p in paths:
        schema = pq.read_schema(p)
        missing = [c for c in ("report_id", "split", "images") if c not in schema.names]
        if missing:
            raise ValueError(f"{p}: report shard without column(s) {', '.join(missing)}")
        tables.append(pq.read_table(p, columns=[c for c in columns if c in schema.names]))
    return pa.concat_tables(tables, promote_options="default") if tables else pa.table({c: [] for c in columns})


# -- rendering ------------------------------------------------------------------------------
def image_seed(image_id: str, seed: int = 0) -> int:
    """A stable 31-bit seed from the image id (the same image always looks the same)."""
    digest = hashlib.sha256(f"{seed}\x00{image_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def render_key(image: CorpusImage, *, size: int, seed: int, phantom_settings: dict[str, Any]) -> str:
    spec = {
        "findings": [list(f) for f in image.findings],
        "seed": image_seed(image.image_id, seed),
        "size": size,
        "view": image.view,
        "phantom": phantom_settings,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:32]


def stored_render_key(path: Path) -> str | None:
    """The render key in a PNG's text chunk (read without decoding the pixels), or None."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.info.get(PNG_KEY)
    except Exception:  # noqa: BLE001 - an unreadable file is simply rendered again
        return None


@dataclass(frozen=True)
class RenderTask:
    image: CorpusImage
    out_path: str
    size: int
    seed: int
    key: str
    phantom_settings: dict[str, Any]


def _render_one(task: RenderTask) -> tuple[str, str]:
    """'rendered' | 'kept' | 'skipped: <reason>' (no lateral view) | 'failed: <error>' for one PNG."""
    out = Path(task.out_path)
    if out.exists() and stored_render_key(out) == task.key:
        return task.image.image_id, "kept"
    try:
        pixels = _render(task)
    except NotImplementedError as err:
        return task.image.image_id, f"skipped: {err}"
    except Exception as err:  # noqa: BLE001 - one image the renderer fails on must not stop the corpus
        return task.image.image_id, f"failed: render_phantom raised {type(err).__name__}: {err}"
    _write_png(pixels, out, task.key)
    return task.image.image_id, "rendered"


def _render(task: RenderTask):
    from medfilip.phantom import Finding, render_phantom

    findings = [Finding(category=c, location=loc, severity=sev) for c, loc, sev in task.image.findings]
    kwargs: dict[str, Any] = {
        "size": task.size,
        "seed": image_seed(task.image.image_id, task.seed),
        "view": task.image.view,
    }
    if task.phantom_settings:
        from medfilip.phantom.settings import PhantomConfig

        kwargs["settings"] = PhantomConfig(**task.phantom_settings)
    try:
        return render_phantom(findings, **kwargs)
    except ValueError as err:
        if task.image.view == "LATERAL":  # a renderer without a lateral view: no second image
            raise NotImplementedError(f"the phantom has no lateral view ({err})") from None
        raise


def _write_png(pixels, out: Path, key: str) -> None:
    from PIL import Image, PngImagePlugin

    out.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_KEY, key)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        Image.fromarray(pixels, mode="L").save(tmp, format="PNG", pnginfo=info, compress_level=3)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def render_corpus_pngs(
    images: Sequence[CorpusImage],
    png_dir: str | Path,
    *,
    size: int,
    seed: int = 0,
    workers: int = 1,
    phantom_settings: dict[str, Any] | None = None,
    progress: bool = True,
) -> tuple[list[CorpusImage], Counter[str]]:
    """Render the PNGs that are missing or out of date; returns the images that exist and the counts."""
    from medfilip.io import progress_bar

    png_dir = Path(png_dir)
    settings = dict(phantom_settings or {})
    tasks = [
        RenderTask(
            im,
            str(png_dir / im.path),
            size,
            seed,
            render_key(im, size=size, seed=seed, phantom_settings=settings),
            settings,
        )
        for im in images
    ]
    counts: Counter[str] = Counter()
    status: dict[str, str] = {}
    workers = max(1, min(int(workers), len(tasks) or 1))
    if workers == 1:
        results: Iterable[tuple[str, str]] = map(_render_one, tasks)
        pool = None
    else:
        pool = mp.get_context().Pool(workers)
        results = pool.imap(_render_one, tasks, chunksize=max(1, min(16, len(tasks) // (workers * 8))))
    try:
        for image_id, outcome in progress_bar(
            results, total=len(tasks), desc="render corpus", unit="img", disable=not progress, mininterval=2.0
        ):
            status[image_id] = outcome
            counts[outcome.split(":")[0]] += 1
            if outcome.startswith("skipped") and counts["skipped"] == 1:
                log.warning("%s: %s", image_id, outcome)
            elif outcome.startswith("failed") and counts["failed"] <= 5:
                log.error("%s: %s", image_id, outcome)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    log.info(
        "%s: %d rendered, %d up to date, %d skipped", png_dir, counts["rendered"], counts["kept"], counts["skipped"]
    )
    if counts["failed"]:
        log.error("%s: the renderer failed on %d image(s); they are left out of the store", png_dir, counts["failed"])
    return [im for im in images if status[im.image_id] in ("rendered", "kept")], counts


# -- the stage ---------------------------------------------------------------------------------
def images_table(images: Sequence[CorpusImage], root: str | Path) -> pa.Table:
    """The table preprocess_images reads: image_id, path (under root), report_id, split, view, findings."""
    root = Path(root)
    return pa.table(
        {
            "image_id": pa.array([im.image_id for im in images], pa.string()),
            "path": pa.array([str(root / im.path) for im in images], pa.string()),
            "report_id": pa.array([im.report_id for im in images], pa.string()),
            "view": pa.array([im.view for im in images], pa.string()),
            "split": pa.array([im.split for im in images], pa.string()),
            "findings": pa.array(
                [[{"category": c, "location": loc, "severity": sev} for c, loc, sev in im.findings] for im in images],
                pa.list_(FINDING_TYPE),
            ),
        }
    )


def build_corpus_store(
    report_shards: Sequence[str | Path],
    out_dir: str | Path,
    *,
    size: int,
    findings: Literal["mesh", "entities"] = "mesh",
    mapping: Any = None,
    entities: pa.Table | None = None,
    second_view: bool = False,
    png_dir: str | Path | None = None,
    image_root: str | Path | None = None,
    seed: int = 0,
    workers: int = 1,
    shard_size: int = 2048,
    phantom_settings: dict[str, Any] | None = None,
    progress: bool = True,
) -> ImageStore:
    """Report shards → (rendered PNGs when no ``image_root``) → the corpus image store at ``out_dir``."""
    reports = read_report_shards(report_shards)
    sources = sorted({s for s in reports.column("source").to_pylist() if s}) if "source" in reports.column_names else []
    images, skipped = corpus_images(
        reports, findings=findings, mapping=mapping, entities=entities, second_view=second_view
    )
    if skipped:
        log.warning("%d report(s) without a usable image: %s", sum(skipped.values()), dict(skipped))
    rendered = image_root is None
    render_counts: Counter[str] = Counter()
    if rendered:
        if ReportSource.mimic_cxr.value in sources:
            raise ValueError(
                "MIMIC-CXR reports need their JPGs: set images.corpus.image_root or reports.mimic_cxr.image_root"
            )
        if png_dir is None:
            raise ValueError("no image_root and no png_dir: nowhere to render the corpus")
        from medfilip.phantom.findings import complete_findings

        # every drawn finding gets a severity and a location (the phantom's documented defaults),
        # and the store's findings records say what was drawn
        images = [replace(im, findings=complete_findings(im.findings, image_seed(im.image_id, seed))) for im in images]
        images, render_counts = render_corpus_pngs(
            images, png_dir, size=size, seed=seed, workers=workers, phantom_settings=phantom_settings, progress=progress
        )
        root = Path(png_dir)
    else:
        root = Path(image_root)
        if not root.is_dir():
            raise ValueError(f"{root}: corpus image folder not found (images.corpus.image_root)")
    extra = {
        "corpus_sources": sources,
        "images": "rendered phantoms" if rendered else f"real files under {root}",
        "findings_source": findings,
        "second_view": second_view,
        "reports_without_image": dict(skipped),
        "rendered": dict(render_counts),
    }
    table = images_table(images, root)
    return preprocess_images(
        table,
        out_dir,
        size=size,
        workers=workers,
        dataset="corpus",
        shard_size=shard_size,
        progress=progress,
        extra_meta=extra,
    )


def merge_corpus_parts(parts: Sequence[str | Path], out_dir: str | Path) -> ImageStore:
    """The per-report-shard corpus stores (one job each, ``results/images/corpus_parts/{shard}``) → the
    corpus store. Their meta counts are summed (rendered, reports without image, seconds) and their
    corpus sources joined; the pixels are linked, not decoded again (see ``merge_stores``)."""
    from medfilip.images.store import merge_stores

    metas = [json.loads((Path(p) / "meta.json").read_text(encoding="utf-8")) for p in parts]

    def summed(key: str) -> dict[str, int]:
        total: Counter[str] = Counter()
        for meta in metas:
            total.update(meta.get(key) or {})
        return dict(total)

    extra = {
        "corpus_sources": sorted({s for meta in metas for s in meta.get("corpus_sources") or []}),
        "reports_without_image": summed("reports_without_image"),
        "rendered": summed("rendered"),
        "seconds": round(sum(float(meta.get("seconds") or 0.0) for meta in metas), 3),
    }
    return merge_stores(parts, out_dir, extra_meta=extra)
