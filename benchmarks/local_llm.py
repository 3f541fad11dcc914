"""GPT-IE with a real local LLM, measured: a seeded sample of annotated IU-Xray reports of one split.

Extracts the same sample with the ``rules`` backend and with the ``openai`` backend configured in
``--config`` (default config/local_llm.yaml: xllamacpp's llama.cpp server, the model of
``extraction.local_llm.model`` or ``--model``), then prints

  * micro/macro F1 of both against the MeSH annotations (medfilip.extraction.quality, the scorer of
    the pipeline's extraction_quality table), on the same reports;
  * F1 on negated findings: the (report, category) pairs the LLM calls negated against those the rules
    call negated (MeSH annotates no negation, so the rules extractor is the reference here);
  * agreement of the LLM with rules (medfilip.extraction.compare: Cohen's kappa, F1 of B against A,
    polarity agreement), as ``medfilip compare`` prints it, and the ten most common kinds of
    disagreement (category, rules' polarity, the LLM's polarity);
  * the share of replies that failed validation, by reason;
  * reports/s and output tokens/s (from each report's latency: one request in flight) with the
    load averages before and after the run (the CPU may be shared: the figures say so).

``--split validate`` is the development split (the prompt was tuned there); ``--split test`` (the
default) is held out. The server is started (``llm_server.start`` on the config's port) unless one
already answers there, and stopped at the end if this script started it. Results are cached in
``--out-dir``: a killed run resumes, and a re-run of the same sample with the same model asks nothing again.

    nice -n 5 python benchmarks/local_llm.py [--model qwen2.5-coder-1.5b] [--split test] [--n 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import random
import secrets
import time
from pathlib import Path

import pyarrow.parquet as pq

from medfilip.extraction import llm_server
from medfilip.extraction.cache import ExtractionCache
from medfilip.extraction.compare import MICRO, _by_category, _Normaliser, compare_paths, read_side
from medfilip.extraction.entities import build_entities
from medfilip.extraction.openai.backend import OpenAIBackend
from medfilip.extraction.quality import MeshMapping, read_reports, score_extraction
from medfilip.extraction.rules import RulesBackend
from medfilip.extraction.runner import extract_shard
from medfilip.extraction.vocabulary import configured_vocabulary
from medfilip.io import write_parquet_atomic, write_text_atomic
from medfilip.pipeline.config import load_config
from medfilip.reports.iu_xray import read_iu_xray
from medfilip.reports.records import Report
from medfilip.reports.shards import reports_table

REPO = Path(__file__).resolve().parent.parent


def annotated(r: Report) -> bool:
    return bool(r.annotations) and not any(a.strip().lower() == "no indexing" for a in r.annotations)


def sample_reports(n: int, seed: int, split: str = "test") -> list[Report]:
    """A seeded sample of the annotated reports of one patient-level split (reports.split_seed 0)."""
    reports = sorted(
        (
            r
            for r in read_iu_xray()
            if isinstance(r, Report) and annotated(r) and r.text.strip() and (split == "all" or r.split == split)
        ),
        key=lambda r: r.report_id,
    )
    return sorted(random.Random(seed).sample(reports, min(n, len(reports))), key=lambda r: r.report_id)


def _polarities(path: Path, norm: _Normaliser) -> dict[str, dict[str, str]]:
    """report_id -> category -> polarity (present > uncertain > negated) of the reports extracted ok."""
    ok, _, _ = read_side([path])
    unmapped: collections.Counter = collections.Counter()
    return {rid: {c: m.polarity for c, m in _by_category(t, norm, unmapped).items()} for rid, t in ok.items()}


def _prf(tp: int, fp: int, fn: int) -> dict:
    p = tp / (tp + fp) if tp + fp else None
    r = tp / (tp + fn) if tp + fn else None
    f1 = 2 * p * r / (p + r) if p and r else (0.0 if p is not None and r is not None else None)
    return {"precision": p, "recall": r, "f1": f1}


def disagreements(rules_out: Path, llm_out: Path, vocab) -> tuple[dict, list[dict]]:
    """F1 of the LLM's negated (report, category) pairs against the rules', and the ten most common
    disagreements (category, rules' polarity or 'absent', the LLM's), on the reports both extracted."""
    norm = _Normaliser(vocab)
    a, b = _polarities(rules_out, norm), _polarities(llm_out, norm)
    tp = fp = fn = 0
    kinds: collections.Counter = collections.Counter()
    for rid in sorted(set(a) & set(b)):
        for cat in set(a[rid]) | set(b[rid]):
            pa, pb = a[rid].get(cat, "absent"), b[rid].get(cat, "absent")
            tp += pa == "negated" and pb == "negated"
            fp += pa != "negated" and pb == "negated"
            fn += pa == "negated" and pb != "negated"
            if pa != pb:
                kinds[(cat, pa, pb)] += 1
    neg = {**_prf(tp, fp, fn), "rules": tp + fn, "llm": tp + fp}
    top = [{"category": c, "rules": pa, "llm": pb, "n": n} for (c, pa, pb), n in kinds.most_common(10)]
    return neg, top


def error_kind(error: str) -> str:
    for word in ("truncated", "malformed", "schema", "empty", "timed out", "connection"):
        if word in error:
            return word
    return "other"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=REPO / "config" / "local_llm.yaml")
    ap.add_argument("--n", type=int, default=200, help="reports in the sample")
    ap.add_argument(
        "--split",
        choices=["test", "validate", "train", "all"],
        default="test",
        help="the split sampled: validate = development (prompt tuning), test = held out",
    )
    ap.add_argument("--model", default=None, help="the packaged model (default: extraction.local_llm.model)")
    ap.add_argument("--engine", default=None, help="default: extraction.local_llm.engine")
    ap.add_argument("--prompt", type=Path, default=None, help="override extraction.openai.prompt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--limit",
        type=int,
        default=None,
        help="extract only the first K reports of the sample (by id), when the machine is too slow "
        "for all of it; timings then extrapolate to the whole sample",
    )
    ap.add_argument(
        "--threads", type=int, default=None, help="server CPU threads (default: extraction.local_llm.threads)"
    )
    ap.add_argument(
        "--max-output-tokens",
        type=int,
        default=None,
        help="override extraction.openai.max_output_tokens (a base model that rambles to the cap costs "
        "two capped replies: the reply and the corrective retry)",
    )
    ap.add_argument("--out-dir", type=Path, default=REPO / "results" / "local_llm_eval")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.chdir(REPO)  # the config's relative paths (prompt, vocabulary) are the repository's
    cfg = load_config(args.config)
    local = cfg.extraction.local_llm
    model = args.model or local.model
    update = {"model": model}
    if (o_file := cfg.extraction.openai.model_file) and llm_server.packaged_name(o_file) is not None:
        update["model_file"] = f"{llm_server.PACKAGED}:{model}"
    if args.max_output_tokens:
        update["max_output_tokens"] = args.max_output_tokens
    if args.prompt:
        update["prompt"] = args.prompt
    o = cfg.extraction.openai.model_copy(update=update)
    cfg = cfg.model_copy(update={"extraction": cfg.extraction.model_copy(update={"openai": o})})
    threads = args.threads or local.threads
    engine = args.engine or local.engine
    out = args.out_dir / f"{args.split}-n{args.n}-seed{args.seed}"
    cache = out / "cache"  # one cache per sample: --limit K reuses the answers of a longer run
    out.mkdir(parents=True, exist_ok=True)

    sample = sample_reports(args.n, args.seed, args.split)
    if args.limit:
        sample = sample[: args.limit]
        out = out / f"first{args.limit}"
        out.mkdir(parents=True, exist_ok=True)
    shard = out / "sample.parquet"
    write_parquet_atomic(reports_table(sample), shard)
    print(
        f"sample: {len(sample)} annotated IU-Xray {args.split}-split reports (the first {len(sample)} of {args.n}, "
        f"seed {args.seed}), "
        f"{sum(len(r.text) for r in sample) / len(sample):.0f} characters on average"
    )

    vocab = configured_vocabulary(cfg)
    rules_out = out / "rules" / "sample.parquet"
    extract_shard(
        shard,
        RulesBackend(cfg.extraction.rules.vocabulary_dir),
        ExtractionCache(cache / "rules"),
        rules_out,
        progress=False,
    )

    started = None
    key = os.environ.get(o.api_key_env) or secrets.token_hex(16)
    os.environ[o.api_key_env] = key
    if llm_server._ready(o.base_url, api_key=key):
        raise SystemExit(f"a server already answers on {o.base_url}: stop it (its model may not be {model})")
    t = time.perf_counter()
    started = llm_server.start(
        o.model_file,
        state_dir=out / "server" / model,
        port=llm_server.port_of(o.base_url),
        alias=o.model,
        n_ctx=local.n_ctx,
        n_threads=threads,
        api_key=key,
        engine=engine,
    )
    print(f"server ({engine}, {threads} threads) started in {time.perf_counter() - t:.1f}s: {started.model_file}")
    try:
        backend = OpenAIBackend.from_config(cfg)
        llm_out = out / "openai" / model / "sample.parquet"
        load_before = os.getloadavg()
        t = time.perf_counter()
        run = extract_shard(
            shard, backend, ExtractionCache(cache / "openai"), llm_out, progress=True, flush_every=1
        )  # every answer kept: a killed run resumes
        wall = time.perf_counter() - t
        load_after = os.getloadavg()
    finally:
        if started is not None:
            llm_server.stop(out / "server" / model)

    rows = pq.read_table(llm_out).to_pylist()
    n = len(rows)
    failed = [r for r in rows if r["status"] != "ok"]
    latency = sum(r["latency_s"] for r in rows)
    completion = sum(r["completion_tokens"] for r in rows)
    prompt = sum(r["prompt_tokens"] for r in rows)
    kinds = collections.Counter(error_kind(r["error"] or "") for r in failed)

    mapping = MeshMapping.load(cfg.quality.mesh_mapping, vocab)
    truth = read_reports([shard])
    scores = {}
    for name, path in (("rules", rules_out), ("openai", llm_out)):
        entities = build_entities([path], vocab, out / f"entities_{name}.parquet")
        table, diag = score_extraction(truth, entities, mapping)
        scores[name] = {r["category"]: r for r in table if r["category"] in ("micro-average", "macro-average")}
        scores[name]["n_reports_scored"] = diag["n_reports_scored"]
    agreement, adiag = compare_paths([rules_out], [llm_out], vocab, out / f"agreement_{model}.csv")
    micro = next(r for r in agreement if r["category"] == MICRO)
    negated, kinds_of_disagreement = disagreements(rules_out, llm_out, vocab)

    summary = {
        "sample": f"first {n} of {args.n} annotated IU-Xray reports, seed {args.seed}",
        "extrapolated_hours_for_sample": round(args.n * latency / n / 3600, 2) if latency else None,
        "model": o.model,
        "model_file": o.model_file,
        "engine": engine,
        "threads": threads,
        "n_ctx": local.n_ctx,
        "split": args.split,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "cpu_count": os.cpu_count(),
        "max_output_tokens": o.max_output_tokens,
        "prompt_version": backend.version,
        "structured_output": backend.structured_output,
        "n_reports": n,
        "seed": args.seed,
        "n_extracted_this_run": run.n_extracted,
        "wall_s_this_run": round(wall, 1),
        "failed": len(failed),
        "failed_share": round(len(failed) / n, 4),
        "failed_by_reason": dict(kinds),
        "reports_per_s": round(n / latency, 4) if latency else None,
        "output_tokens_per_s": round(completion / latency, 2) if latency else None,
        "mean_prompt_tokens": round(prompt / n, 1),
        "mean_completion_tokens": round(completion / n, 1),
        "mean_latency_s": round(latency / n, 2),
        "triplets_per_ok_report": round(
            sum(len(r["triplets"]) for r in rows if r["status"] == "ok") / max(1, n - len(failed)), 2
        ),
        "quality": scores,
        "agreement_with_rules": {k: micro[k] for k in ("kappa", "f1_b", "polarity_agreement")},
        "negated_vs_rules": negated,
        "disagreements_with_rules_top10": kinds_of_disagreement,
        "agreement_reports_compared": adiag["n_compared"],
    }
    write_text_atomic(json.dumps(summary, indent=2, default=str) + "\n", out / f"summary_{model}.json")
    q = {k: scores[k]["micro-average"] for k in scores}
    f = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    print(
        f"{o.model} ({backend.structured_output}): {n} reports, {len(failed)} failed validation "
        f"({100 * len(failed) / n:.0f}%: {dict(kinds)}); {summary['reports_per_s']} reports/s, "
        f"{summary['output_tokens_per_s']} output tokens/s; {summary['mean_prompt_tokens']:.0f} prompt + "
        f"{summary['mean_completion_tokens']:.0f} completion tokens a report; "
        f"{summary['triplets_per_ok_report']} triplets per ok report"
    )
    for name in ("rules", "openai"):
        print(
            f"  {name:6s} vs MeSH ({scores[name]['n_reports_scored']} reports): micro P={q[name]['precision']:.3f} "
            f"R={q[name]['recall']:.3f} F1={q[name]['f1']:.3f}; macro F1 "
            f"{f(scores[name]['macro-average']['f1'])}"
        )
    print(
        f"  openai vs rules ({adiag['n_compared']} reports both ok): kappa {f(micro['kappa'])}, "
        f"F1 {f(micro['f1_b'])}, polarity agreement {f(micro['polarity_agreement'])}"
    )
    print(
        f"  negated findings vs rules: P={f(negated['precision'])} R={f(negated['recall'])} F1={f(negated['f1'])} "
        f"({negated['rules']} rules, {negated['llm']} LLM); load average {summary['load_average_before']} -> "
        f"{summary['load_average_after']} on {os.cpu_count()} CPUs"
    )
    print("  most common disagreements (category: rules -> LLM, count):")
    for row in kinds_of_disagreement:
        print(f"    {row['category']}: {row['rules']} -> {row['llm']}: {row['n']}")
    print(f"-> {out / f'summary_{model}.json'}")


if __name__ == "__main__":
    main()
