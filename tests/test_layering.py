"""Layering: stage modules (the library: models, readers, scoring, settings) never import the
application layer (CLI, config loading, Snakemake helpers, DuckDB queries, LLM backends).

Read from the source with ast, so a lazy import inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "medfilip"

# modules (dotted, under medfilip) of the application layer; a package name covers its submodules
APPLICATION_MODULES = {
    "medfilip.cli",
    "medfilip.config",
    "medfilip.config_checks",
    "medfilip.query",
    "medfilip.workflow_resources",
    "medfilip.schema",
    "medfilip.extraction.llm_server",
    "medfilip.extraction.openai",
}
APPLICATION_NAMES = {"cli", "workflow"}  # medfilip/*/cli.py, medfilip/*/workflow.py at any depth


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_application(name: str) -> bool:
    if name.split(".")[-1] in APPLICATION_NAMES and name.startswith("medfilip."):
        return True
    return any(name == m or name.startswith(m + ".") for m in APPLICATION_MODULES)


def imported(path: Path) -> set[str]:
    """Every medfilip module the file imports (``from medfilip.x import y`` gives medfilip.x and medfilip.x.y)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n == "medfilip" or n.startswith("medfilip.")}


def stage_modules() -> dict[str, Path]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: path for name, path in sorted(modules.items()) if not is_application(name)}


def test_the_rule_sees_both_layers():
    stages = stage_modules()
    assert "medfilip.training.model" in stages and "medfilip.labels.templates" in stages
    assert "medfilip.config" not in stages and "medfilip.training.cli" not in stages
    assert is_application("medfilip.evaluation.probe.workflow") and not is_application("medfilip.training.loss")
    assert is_application("medfilip.config") and not is_application("medfilip.configbase")


def test_no_stage_module_imports_the_application_layer():
    bad = {name: sorted(n for n in imported(path) if is_application(n)) for name, path in stage_modules().items()}
    assert {name: found for name, found in bad.items() if found} == {}
