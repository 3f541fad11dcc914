"""The stage CLIs chained on real IU-Xray reports (a slice of the corpus torchxrayvision ships), DuckDB queries,
and the common options every command takes (before or after its name), checked on every rule's command line."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from medfilip.pipeline.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def results(tmp_path_factory, repo):
    root = tmp_path_factory.mktemp("cli")
    cfg = root / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "reports": {"n_shards": 2, "limit": 60},
                "extraction": {"rules": {"vocabulary_dir": str(repo / "resources" / "vocabulary")}},
                "quality": {"mesh_mapping": str(repo / "resources" / "mesh" / "mesh_to_category.yaml")},
            }
        )
    )
    res = root / "results"
    shards = [res / "reports" / "shards" / f"00{i}.parquet" for i in range(2)]
    outs = [res / "extraction" / "rules" / f"00{i}.parquet" for i in range(2)]
    c = ["-q", "-c", str(cfg)]
    assert (
        main(
            c
            + [
                "reports",
                "--out-dir",
                str(res / "reports" / "shards"),
                "--rejects",
                str(res / "reports" / "rejects.parquet"),
            ]
        )
        == 0
    )
    assert (
        main(
            c
            + [
                "extract",
                "--shards",
                *map(str, shards),
                "--out",
                *map(str, outs),
                "--cache-dir",
                str(root / "cache"),
                "--runs-dir",
                str(res / "extraction" / "runs"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert main(c + ["entities", *map(str, outs), "--out", str(res / "entities.parquet")]) == 0
    assert (
        main(
            c
            + [
                "quality",
                "--reports",
                *map(str, shards),
                "--entities",
                str(res / "entities.parquet"),
                "--out",
                str(res / "tables" / "extraction_quality.csv"),
            ]
        )
        == 0
    )
    return res


def test_reports_are_sharded_with_the_contract_columns(results):
    table = pq.read_table(results / "reports" / "shards")
    assert table.num_rows == 60
    assert {"report_id", "source", "subject_id", "study_id", "findings", "impression", "text", "split"} <= set(
        table.column_names
    )
    assert set(table["split"].to_pylist()) <= {"train", "validate", "test"}
    assert all("XXXX" not in t for t in table["text"].to_pylist())


def test_query_answers_over_the_views(results, capsys):
    capsys.readouterr()
    assert (
        main(
            [
                "query",
                "--results",
                str(results),
                "--format",
                "json",
                "select count(*) as n, count(distinct report_id) as r from reports",
            ]
        )
        == 0
    )
    (row,) = json.loads(capsys.readouterr().out)
    assert row == {"n": 60, "r": 60}
    assert (
        main(
            [
                "query",
                "--results",
                str(results),
                "--format",
                "csv",
                "select e.polarity, count(*) as n from entities e join reports r using (report_id) group by 1 order by 1",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "polarity,n"
    assert {line.split(",")[0] for line in lines[1:]} <= {"present", "negated", "uncertain"}
    assert (
        main(
            [
                "query",
                "--results",
                str(results),
                "--format",
                "json",
                "select sum(n_reports) as n, sum(n_extracted) as x from extraction_runs",
            ]
        )
        == 0
    )
    (row,) = json.loads(capsys.readouterr().out)
    assert row["n"] == 60 and 0 < row["x"] <= 60


def test_query_error_is_a_message_not_a_traceback(results, capsys):
    assert main(["query", "--results", str(results), "select * from no_such_view"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("query failed:") and "no_such_view" in err


def _snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in files}


def test_query_is_read_only(results, tmp_path, capsys):
    """Statements that would write (DuckDB's COPY replaces a file, even the Parquet a view reads) are refused
    with exit code 2; nothing under results/ changes and no file appears anywhere."""
    entities = results / "entities.parquet"
    outside = tmp_path / "written.csv"
    before = _snapshot(results)
    writes = [
        ("COPY", f"copy (select 1 as report_id) to '{entities}' (format parquet)"),
        ("COPY", f"copy entities to '{outside}'"),
        ("EXPLAIN", f"explain analyze copy (select 1 as x) to '{outside}'"),  # EXPLAIN ANALYZE runs the COPY
        ("CREATE", "create table kept as select * from entities"),
        ("ATTACH", f"attach '{tmp_path / 'other.duckdb'}'"),
        ("DELETE", "delete from entities"),
        ("SET", "set enable_external_access = true"),
    ]
    for kind, sql in writes:
        capsys.readouterr()
        assert main(["query", "--results", str(results), sql]) == 2, sql
        err = capsys.readouterr().err
        assert err.startswith("query failed: medfilip query is read-only:") and f"{kind} statements" in err, err
    # a write hidden behind a read in one call is refused before anything runs
    assert main(["query", "--results", str(results), f"select 1; copy (select 1) to '{outside}'"]) == 2
    assert _snapshot(results) == before
    assert not outside.exists() and not (tmp_path / "other.duckdb").exists()
    # reads still work, SHOW / DESCRIBE included
    capsys.readouterr()
    assert main(["query", "--results", str(results), "--format", "json", "select count(*) as n from entities"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["n"] == pq.read_table(entities).num_rows > 0
    assert main(["query", "--results", str(results), "--format", "csv", "describe entities"]) == 0
    assert "report_id" in capsys.readouterr().out


# -- the common options --------------------------------------------------------------------------
DEFAULTS = {"config": None, "verbose": 0, "quiet": False, "no_progress": False, "workers": 0, "threads": 0}
GIVEN = (
    ["-c", "given.yaml", "-vv", "-q", "--no-progress", "--workers", "3", "--threads", "2"],
    {"config": Path("given.yaml"), "verbose": 2, "quiet": True, "no_progress": True, "workers": 3, "threads": 2},
)


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _required(command: argparse.ArgumentParser) -> list[str]:
    """A minimal valid argument list: one value for each positional and required option."""
    out = []
    for a in command._actions:
        if a.option_strings and not a.required:
            continue
        value = str(next(iter(a.choices))) if a.choices else "1"
        out += [a.option_strings[-1], value] if a.option_strings else [value]
    return out


def _common(ns: argparse.Namespace) -> dict:
    return {k: getattr(ns, k) for k in DEFAULTS}


def test_every_command_takes_the_common_options_before_or_after_its_name():
    parser = build_parser()
    commands = _commands(parser)
    some = {"config", "query", "extract", "train", "zeroshot", "llm-server", "twin", "segmentation", "probe-fit"}
    assert some <= set(commands)
    options, values = GIVEN
    for name, command in commands.items():
        required = _required(command)
        ns = parser.parse_args([name, *required])
        assert ns.command == name and callable(ns.func)
        assert _common(ns) == DEFAULTS, name
        assert _common(parser.parse_args([*options, name, *required])) == values, name
        assert _common(parser.parse_args([name, *required, *options])) == values, name
        # given on both sides: the one after the command wins; given before only: kept
        ns = parser.parse_args(["-c", "before.yaml", "--threads", "5", name, *required, "-c", "after.yaml"])
        assert (ns.config, ns.threads) == (Path("after.yaml"), 5), name
        # every command's help lists them under one heading
        assert "common options (before or after the command)" in command.format_help(), name


def test_the_config_is_loaded_once_by_main_for_the_commands_that_read_it(tmp_path, monkeypatch, capsys):
    import medfilip.pipeline.cli as cli

    loaded = []
    real = cli.load_config
    monkeypatch.setattr(cli, "load_config", lambda path: loaded.append(path) or real(path))
    assert main(["config"]) == 0
    assert loaded == [None]
    # a command that reads no config runs whatever the config file holds
    bad = tmp_path / "bad.yaml"
    bad.write_text("reports: {n_shards: 0}\n")
    assert main(["-c", str(bad), "query", "select 1 as one", "--results", str(tmp_path)]) == 0
    assert loaded == [None]
    assert main(["-c", str(bad), "config"]) == 2
    assert loaded == [None, bad] and "reports.n_shards" in capsys.readouterr().err


def test_common_options_reach_the_commands(tmp_path, repo, capsys):
    """The commands read the shared dests: -c after the command is the config the command loads."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("reports: {n_shards: 0}\n")
    good = repo / "config" / "config.yaml"
    assert main(["-q", "config", "-c", str(good)]) == 0
    assert main(["config", "-q", "-c", str(bad)]) == 2
    assert main(["-q", "-c", str(good), "config", "-c", str(bad)]) == 2
    assert main(["-q", "-c", str(bad), "config", "-c", str(good)]) == 0
    assert "n_shards" in capsys.readouterr().err


def _rule_command_lines(tmp_path: Path) -> list[list[str]]:
    """Every ``medfilip`` command line of a dry run of the whole workflow (embedded default config)."""
    (tmp_path / "iu").mkdir()
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump({"reports": {"source": "iu_xray", "n_shards": 2, "iu_xray": {"path": "iu"}}})
    )
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "workflow" / "Snakefile"),
        "--directory",
        str(tmp_path),
        "-n",
        "-p",
        "all",
        "--configfile",
        str(tmp_path / "config.yaml"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = []
    for line in (proc.stdout + proc.stderr).splitlines():
        if "medfilip " not in line or not line.startswith("Shell command:"):
            continue
        line = re.sub(r"\$\(dirname ([^)]+)\)", lambda m: str(Path(m.group(1)).parent), line)
        line = line.replace("$MEDFILIP_LLM_JOBS", "2").replace("$MEDFILIP_CONFIG_ID", "0123")
        words = shlex.split(line.removeprefix("Shell command:"))
        words = words[words.index("medfilip") + 1 :]
        lines.append(words[: words.index(">")] if ">" in words else words)
    return lines


def test_every_rule_command_line_parses(tmp_path):
    """The workflow's command lines, as snakemake runs them, parse unchanged: command, config and common options."""
    parser = build_parser()
    lines = _rule_command_lines(tmp_path)
    seen = set()
    for words in lines:
        ns = parser.parse_args(words)
        seen.add(ns.command)
        assert callable(ns.func)
        if words[0] == "-c":
            assert ns.config == Path(words[1]) and words[2] == ns.command
        for option, dest in (("--threads", "threads"), ("--workers", "workers")):
            assert getattr(ns, dest) == (int(words[words.index(option) + 1]) if option in words else 0), words
        assert ns.no_progress == ("--no-progress" in words)
    # the commands that read the common options are all among them
    assert {
        "extract",
        "twin",
        "preprocess-dataset",
        "corpus-images",
        "embed",
        "train",
        "embed-images",
        "zeroshot",
        "retrieval",
        "segmentation",
        "features",
        "probe-baseline",
    } <= seen, seen
    assert len(lines) > 40


def test_building_the_parser_imports_no_heavy_dependency():
    """`medfilip -h` (and `medfilip predict` in a core install) does not import the pipeline's heavy modules."""
    heavy = ["torch", "pyarrow", "duckdb", "snakemake", "openai", "pandas", "sklearn", "matplotlib"]
    code = (
        "import sys; from medfilip.pipeline.cli import build_parser; build_parser(); "
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# -- predict / export (medfilip.predict owns their arguments) -------------------------------------------
def test_predict_and_export_with_the_real_module(capsys):
    commands = _commands(build_parser())
    assert {"predict", "export"} <= set(commands)
    for name in ("predict", "export"):
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0
    assert "--model" in capsys.readouterr().out
