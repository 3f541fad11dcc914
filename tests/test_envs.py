"""The conda environment files stay in step with pyproject.toml, and every rule names one.

conda itself is not available to the tests, so this checks the files, not an install.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
ENV_FILES = [ROOT / "environment.yml", ROOT / "workflow" / "envs" / "medfilip.yaml"]
RULE_FILES = [ROOT / "workflow" / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]


def project_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    return {canonicalize_name(r.name): r for r in reqs}


def pip_requirements(env_file: Path) -> dict[str, Requirement]:
    env = yaml.safe_load(env_file.read_text(encoding="utf-8"))
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, f"{env_file}: expected one pip section"
    reqs = [Requirement(r) for r in pip_sections[0] if not r.startswith("-")]
    return {canonicalize_name(r.name): r for r in reqs}


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_file_pins_match_pyproject(env_file: Path):
    env = yaml.safe_load(env_file.read_text(encoding="utf-8"))
    assert env["channels"][0] == "conda-forge"
    conda_deps = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "pip" in conda_deps and any(d.startswith("python") for d in conda_deps)
    have = pip_requirements(env_file)
    for name, want in project_requirements().items():
        assert name in have, f"{env_file.name}: {want} from pyproject.toml is missing"
        assert have[name].specifier == want.specifier, f"{env_file.name}: {have[name]} but pyproject.toml has {want}"
        assert have[name].marker == want.marker and have[name].extras == want.extras, f"{env_file.name}: {have[name]} vs {want}"


def test_workflow_env_installs_the_package():
    # a relative path (or $(dirname $0)) would not work: snakemake runs a copy of the script from the
    # conda prefix; it installs the checkout the workflow exports (tests/test_cluster.py runs it)
    script = ROOT / "workflow" / "envs" / "medfilip.post-deploy.sh"
    assert script.exists()
    assert re.search(r'pip install --no-deps --editable "\$source_dir"', script.read_text())
    assert "dirname" not in script.read_text()


def rule_blocks(text: str) -> dict[str, str]:
    """Rule name -> its body (the indented lines after `rule NAME:`)."""
    blocks = {}
    for m in re.finditer(r"^(?:local)?rule (\w+):\n((?:[ \t]+.*\n|\n)*)", text, flags=re.M):
        blocks[m.group(1)] = m.group(2)
    return blocks


def test_every_rule_that_runs_something_declares_conda():
    seen = []
    for path in RULE_FILES:
        for name, body in rule_blocks(path.read_text(encoding="utf-8")).items():
            seen.append(name)
            runs = re.search(r"^\s+(shell|run|script|notebook|wrapper):", body, flags=re.M)
            if not runs:
                assert name == "all", f"{path.name}: rule {name} runs nothing"
                continue
            conda = re.search(r"^\s+conda:\s*\n\s+\"([^\"]+)\"", body, flags=re.M)
            assert conda, f"{path.name}: rule {name} declares no conda env"
            assert (path.parent / conda.group(1)).resolve() == (ROOT / "workflow" / "envs" / "medfilip.yaml")
    assert {"all", "report_shards", "extract_triplets", "entities", "extraction_quality"} <= set(seen)
