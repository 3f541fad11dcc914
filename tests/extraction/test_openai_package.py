"""The ``openai`` backend's package (medfilip/extraction/openai/): its layout, and cache keys that the
move out of openai_backend.py left unchanged."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from medfilip.extraction.openai.backend import OpenAIBackend
from medfilip.extraction.openai.prompt import load_prompt
from medfilip.extraction.openai.version import backend_version
from medfilip.extraction.settings import OpenAIBackendConfig

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "medfilip" / "extraction" / "openai"
MODULES = sorted(PACKAGE.glob("*.py"))
SETTINGS = {"model": "gpt-4o-mini", "temperature": 0.0, "max_output_tokens": 1024, "structured_output": "json_schema"}


def function_level_imports(path: Path) -> list[str]:
    """``file:line module`` of every import statement inside a function or class body."""
    found = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if nested and isinstance(child, (ast.Import, ast.ImportFrom)):
                names = child.module if isinstance(child, ast.ImportFrom) else ", ".join(a.name for a in child.names)
                found.append(f"{path.name}:{child.lineno} {names}")
            visit(child, nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def test_the_package_has_its_modules():
    names = {p.stem for p in MODULES}
    assert {
        "prompt",
        "request",
        "version",
        "reply",
        "accounting",
        "credentials",
        "endpoint",
        "api_errors",
        "retry",
        "client",
        "backend",
        "batch",
        "batch_runner",
        "batch_store",
        "batch_lines",
        "batch_index",
        "batch_input",
        "batch_steps",
        "batch_server",
        "batch_results",
        "completion",
        "output_format",
        "report_call",
        "loop_thread",
    } <= names


def long_parts(path: Path, max_module: int = 250, max_class: int = 200) -> list[str]:
    """``file`` (a module over ``max_module`` lines) and ``file:Class`` (a class over ``max_class``)."""
    text = path.read_text(encoding="utf-8")
    found = [path.name] if len(text.splitlines()) > max_module else []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > max_class:
            found.append(f"{path.name}:{node.name}")
    return found


def test_no_module_or_class_of_the_package_is_long():
    """The package is cut along what its code does: no module over 250 lines, no class over 200."""
    assert [hit for path in MODULES for hit in long_parts(path)] == []


def test_the_length_check_finds_a_long_class(tmp_path):
    long = tmp_path / "long.py"
    long.write_text("class Big:\n" + "    x = 1\n" * 200 + "\n\nclass Small:\n    y = 2\n")
    assert long_parts(long) == ["long.py:Big"]
    assert long_parts(long, max_module=100) == ["long.py", "long.py:Big"]


def test_no_module_of_the_package_imports_inside_a_function():
    found = [hit for path in MODULES for hit in function_level_imports(path)]
    assert found == []


def test_the_check_finds_an_import_inside_a_function(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os\n\ndef f():\n    from medfilip.extraction.openai import reply\n\nclass C:\n"
        "    def g(self):\n        import openai\n"
    )
    assert function_level_imports(bad) == ["bad.py:4 medfilip.extraction.openai", "bad.py:8 openai"]


def test_prompt_and_version_load_without_the_openai_sdk():
    """The Snakefile's extraction_settings() imports them while it parses: no SDK, no tenacity."""
    code = (
        "import sys; import medfilip.extraction.openai.prompt, medfilip.extraction.openai.version; "
        "print(sorted(m for m in ('openai', 'tenacity', 'medfilip.extraction.openai.backend') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "settings, expected_version, expected_key",
    [
        ({}, "pinned-v1+3a969adebf87", "22950320bbd8d81e30adffc3166a12469718f958ed9e120c80e5d76290a1d89e"),
        (
            {"structured_output": "auto", "temperature": 0.2, "max_output_tokens": 300},
            "pinned-v1+c6109f7be7fa",
            "2f7f13badce209cb54d50b8596093aa253df3113722fc6948464ee741ccaaeac",
        ),
        (
            {"model_file": "m.gguf"},
            "pinned-v1+f4505e5da959",
            "0119810282bcbc740e0e0d7ccde2f1d44c25957aa3303810adb8e78427ed71f5",
        ),
    ],
)
def test_cache_keys_are_those_of_openai_backend_py_before_the_split(tmp_path, settings, expected_version, expected_key):
    """Values computed by the single-module backend (commit e5bda6a): a changed key re-asks every report."""
    (tmp_path / "p.yaml").write_bytes(b"version: pinned-v1\nsystem: List the findings.\nuser: 'Report: {report}'\n")
    (tmp_path / "m.gguf").write_bytes(b"GGUF" + bytes(range(64)))
    settings = {**SETTINGS, **settings}
    if "model_file" in settings:
        settings["model_file"] = str(tmp_path / settings["model_file"])
    cfg = OpenAIBackendConfig(prompt=str(tmp_path / "p.yaml"), **settings)
    b = OpenAIBackend(cfg, api_key="k", vocabulary_dir=None)
    assert b.version == expected_version == backend_version(load_prompt(cfg.prompt), cfg)
    assert b.cache_key("Mild cardiomegaly.") == expected_key
