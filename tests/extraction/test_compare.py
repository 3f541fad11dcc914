"""Agreement between two backends' extraction shards: hand-built shards with known answers."""

from __future__ import annotations

import csv

import pyarrow as pa
import pytest

from medfilip.extraction.compare import cohen_kappa, compare_extractions, compare_paths
from medfilip.extraction.runner import SHARD_SCHEMA
from medfilip.extraction.vocabulary import Vocabulary
from medfilip.io import write_parquet_atomic
from medfilip.pipeline.cli import main


@pytest.fixture(scope="module")
def vocab(repo):
    return Vocabulary.load(repo / "resources" / "vocabulary")


def t(category, polarity="present", severity=None, location=None):
    return {"severity": severity, "location": location, "category": category, "polarity": polarity, "sentence": ""}


# A: the reference (rules-like raw categories); B: an LLM's own words
A = {
    "r1": [t("cardiomegaly", severity="mild"), t("pleural effusion", "negated")],
    "r2": [t("pleural effusion", severity="small", location="left"), t("atelectasis", location="left lower lobe")],
    "r3": [t("pneumothorax", "negated")],
    "r4": [t("cardiomegaly")],
    "r5": [],
    "r6": [t("atelectasis", "uncertain", location="right base")],
    "r7": [t("cardiomegaly")],  # only in A
    "r8": [t("cardiomegaly")],  # B failed on it
}
B = {
    "r1": [t("enlarged heart", severity="moderate"), t("effusion", "negated")],
    "r2": [t("left pleural effusion", severity="tiny", location="left"), t("atelectasis", location="left lung base")],
    "r3": [t("pneumothorax", "negated"), t("foo bar")],  # 'foo bar' has no canonical name
    "r4": [],
    "r5": [t("cardiomegaly")],
    "r6": [t("atelectasis", location="right lung base")],
    "r9": [t("pneumothorax")],  # only in B
}
FAILED_B = {"r8"}


def write_side(path, backend, side, failed=()):
    rows = []
    for rid in sorted(set(side) | set(failed)):
        ok = rid not in failed
        rows.append(
            {
                "report_id": rid,
                "cache_key": f"k-{rid}",
                "backend": backend,
                "model": "m",
                "prompt_version": "v",
                "status": "ok" if ok else "failed",
                "error": None if ok else "reply did not validate",
                "triplets": side.get(rid, []) if ok else [],
                "dropped_uncategorised": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "latency_s": 0.0,
            }
        )
    # two shards per side, to check that a folder stands for all of its shards
    half = len(rows) // 2
    path.mkdir(parents=True)
    write_parquet_atomic(pa.Table.from_pylist(rows[:half], schema=SHARD_SCHEMA), path / "000.parquet")
    write_parquet_atomic(pa.Table.from_pylist(rows[half:], schema=SHARD_SCHEMA), path / "001.parquet")


EXPECTED = {
    # category: both, only_a, only_b, neither, kappa, precision_b, recall_b, f1_b,
    #           polarity (pairs, agreement), severity (pairs, agreement), location (pairs, agreement)
    "cardiomegaly": (1, 1, 1, 3, 0.25, 0.5, 0.5, 0.5, 1, 1.0, 1, 0.0, 0, None),
    "atelectasis": (1, 0, 1, 4, 0.5714, 0.5, 1.0, 0.6667, 2, 0.5, 0, None, 2, 0.5),
    "pleural effusion": (1, 0, 0, 5, 1.0, 1.0, 1.0, 1.0, 2, 1.0, 1, 1.0, 1, 1.0),
    "pneumothorax": (0, 0, 0, 6, None, None, None, None, 1, 1.0, 0, None, 0, None),
    "micro-average": (3, 1, 2, 18, 0.5909, 0.6, 0.75, 0.6667, 6, 0.8333, 2, 0.5, 3, 0.6667),
}
FIELDS = [
    "both",
    "only_a",
    "only_b",
    "neither",
    "kappa",
    "precision_b",
    "recall_b",
    "f1_b",
    "polarity_pairs",
    "polarity_agreement",
    "severity_pairs",
    "severity_agreement",
    "location_pairs",
    "location_agreement",
]


def test_cohen_kappa_known_values():
    assert cohen_kappa(20, 5, 10, 15) == 0.4  # po 0.7, pe 0.5
    assert cohen_kappa(3, 0, 0, 3) == 1.0
    assert cohen_kappa(0, 3, 3, 0) == -1.0
    assert cohen_kappa(0, 0, 0, 5) is None  # both sides constant: chance agreement is 1
    assert cohen_kappa(0, 0, 0, 0) is None


def test_agreement_per_category_and_micro(vocab):
    a = dict(A.items())
    b = dict(B.items())
    a.pop("r8")  # as read_side gives it: failed reports are not in the ok mapping
    rows, diag = compare_extractions(a, b, vocab)
    assert [r["category"] for r in rows] == list(EXPECTED)  # by number of present decisions, micro last
    for row in rows:
        assert tuple(row[f] for f in FIELDS) == EXPECTED[row["category"]], row["category"]
        assert row["n_reports"] == (24 if row["category"] == "micro-average" else 6)
    assert rows[0]["chexpert_group"] == vocab.groups["cardiomegaly"]
    assert diag["n_compared"] == 6 and diag["unmapped_b"] == {"foo bar": 1} and diag["unmapped_a"] == {}


def test_present_beats_uncertain_beats_negated_within_a_report(vocab):
    a = {"r": [t("atelectasis", "negated"), t("atelectasis", "present", location="left base")]}
    b = {"r": [t("atelectasis", "negated"), t("atelectasis", "uncertain", location="bibasilar")]}
    rows, _ = compare_extractions(a, b, vocab)
    row = rows[0]
    assert (row["both"], row["only_a"], row["only_b"]) == (0, 1, 0)
    assert (row["polarity_pairs"], row["polarity_agreement"]) == (1, 0.0)
    assert (row["location_pairs"], row["location_agreement"]) == (1, 0.0)  # left vs bilateral


def test_compare_paths_and_cli_write_the_table(tmp_path, vocab, repo):
    results = tmp_path / "results"
    write_side(results / "extraction" / "rules", "rules", A)
    write_side(results / "extraction" / "openai", "openai", B, failed=FAILED_B)
    out = tmp_path / "agreement.csv"
    rows, diag = compare_paths([results / "extraction" / "rules"], [results / "extraction" / "openai"], vocab, out)
    assert (diag["a"], diag["b"]) == ("rules", "openai")
    assert (diag["n_compared"], diag["n_only_in_a"], diag["n_only_in_b"], diag["n_failed_a"], diag["n_failed_b"]) == (
        6,
        1,
        1,
        0,
        1,
    )

    out2 = tmp_path / "tables" / "extraction_agreement.csv"
    code = main(
        [
            "-q",
            "-c",
            str(repo / "config" / "config.yaml"),
            "compare",
            "--a",
            "rules",
            "--b",
            "openai",
            "--results",
            str(results),
            "--out",
            str(out2),
        ]
    )
    assert code == 0
    assert out2.read_text() == out.read_text()
    with open(out2, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["category"] for r in table] == list(EXPECTED)
    micro = table[-1]
    assert (micro["both"], micro["kappa"], micro["f1_b"], micro["location_agreement"]) == (
        "3",
        "0.5909",
        "0.6667",
        "0.6667",
    )
    assert table[3]["kappa"] == ""  # undefined kappa is an empty cell


def test_compare_errors_name_the_problem(tmp_path, vocab):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        compare_paths([tmp_path / "nowhere"], [tmp_path], vocab, tmp_path / "x.csv")
    write_side(tmp_path / "a", "rules", {"r1": [t("cardiomegaly")]})
    write_side(tmp_path / "b", "openai", {"r2": [t("cardiomegaly")]})
    with pytest.raises(ValueError, match="no report was extracted successfully by both"):
        compare_paths([tmp_path / "a"], [tmp_path / "b"], vocab, tmp_path / "x.csv")
