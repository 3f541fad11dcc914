"""Layering, by folder: imports point down only.

The library is a stack of layers, in pipeline order: the shared base modules, then one stage package
per folder (reports, extraction, ... evaluation, worlds), the inference face between training and
evaluation, and on top the application (``medfilip/pipeline/``: CLI, commands, config assembly,
``results/`` paths, workflow helpers). A module may import its own layer and the layers below it;
a stage module never imports the application. Read from the source with ast, so a lazy import
inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "medfilip"

# bottom to top; a stage package's layer is its folder under medfilip/ (sub-packages included)
LAYERS = (
    "base",
    "reports",
    "extraction",
    "knowledge",
    "labels",
    "embeddings",
    "phantom",
    "images",
    "datasets",
    "training",
    "face",
    "evaluation",
    "worlds",
    "pipeline",
)
# the modules directly under medfilip/ (not a folder): which layer each belongs to
TOP_LEVEL = {
    "medfilip": "base",
    "medfilip.names": "base",
    "medfilip.io": "base",
    "medfilip.configbase": "base",
    "medfilip.devices": "base",
    "medfilip.ssm": "base",
    "medfilip.inference": "face",
    "medfilip.pretrained": "face",
    "medfilip.predict": "face",
    "medfilip.__main__": "pipeline",
}
# The library modules allowed to import a higher layer (at most three), and what each may import:
# none (the validate probe of training.validate_every is evaluation's, handed to train_run by the CLI).
ALLOWED_UPWARD: dict[str, set[str]] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(name: str) -> str:
    """The layer of a medfilip module: its folder, or TOP_LEVEL's entry for a module of medfilip/ itself."""
    parts = name.split(".")
    if len(parts) > 1 and (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return TOP_LEVEL[".".join(parts[:2])]


def imported(path: Path) -> set[str]:
    """Every medfilip module the file imports (``from medfilip.x import y`` gives medfilip.x, and
    medfilip.x.y when y is a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if (PACKAGE.parent / full.replace(".", "/")).with_suffix(".py").is_file() or (
                    PACKAGE.parent / full.replace(".", "/")
                ).is_dir():
                    names.add(full)
    return {n for n in names if n == "medfilip" or n.startswith("medfilip.")}


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def upward_imports() -> dict[str, set[str]]:
    """Module -> the modules of a higher layer it imports."""
    found = {}
    for name, path in modules().items():
        rank = LAYERS.index(layer(name))
        up = {n for n in imported(path) if LAYERS.index(layer(n)) > rank}
        if up:
            found[name] = up
    return found


def test_every_module_has_a_layer():
    for name in modules():
        assert layer(name) in LAYERS, name
    # every stage folder is a layer (a new folder must be placed in the stack)
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= set(LAYERS), folders - set(LAYERS)


def test_the_rule_sees_the_layers_by_folder():
    assert layer("medfilip.pipeline.commands.training") == "pipeline"
    assert layer("medfilip.pipeline.config") == "pipeline" and layer("medfilip.configbase") == "base"
    assert layer("medfilip.evaluation.probe.fit") == "evaluation" and layer("medfilip.training.loss") == "training"
    assert LAYERS.index("training") < LAYERS.index("evaluation") < LAYERS.index("pipeline")
    # the check itself reads lazy imports too
    assert "medfilip.evaluation.metrics" in imported(PACKAGE / "evaluation" / "curve.py")


def test_no_stage_module_imports_the_application():
    bad = {
        name: sorted(n for n in imports if layer(n) == "pipeline")
        for name, imports in upward_imports().items()
        if layer(name) != "pipeline"
    }
    assert {k: v for k, v in bad.items() if v} == {}


def test_imports_point_down_but_for_at_most_three_named_modules():
    assert len(ALLOWED_UPWARD) <= 3
    unexpected = {
        name: sorted(up - ALLOWED_UPWARD.get(name, set()))
        for name, up in upward_imports().items()
        if up - ALLOWED_UPWARD.get(name, set())
    }
    assert unexpected == {}
    # an allowance no longer used is removed
    assert {name: found for name, found in upward_imports().items() if name in ALLOWED_UPWARD} == ALLOWED_UPWARD
