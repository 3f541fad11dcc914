"""The conda environment files stay in step with pyproject.toml, every rule names one, and the rules'
env's post-deploy script installs the workflow's checkout.

conda itself is not available to the tests: the env files are checked as files; the post-deploy
script runs for real against a plain Python environment.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
ENV_FILES = [ROOT / "environment.yml", ROOT / "workflow" / "envs" / "medfilip.yaml"]
RULE_FILES = [ROOT / "workflow" / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]


def project_requirements(*extras: str) -> dict[str, Requirement]:
    """The core dependencies and the named extras of pyproject.toml, by canonical name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return {canonicalize_name(r.name): r for r in reqs}


def pip_section(env_file: Path) -> list[str]:
    env = yaml.safe_load(env_file.read_text(encoding="utf-8"))
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, f"{env_file}: expected one pip section"
    return pip_sections[0]


def pip_requirements(env_file: Path) -> dict[str, Requirement]:
    reqs = [Requirement(r) for r in pip_section(env_file) if not r.startswith("-")]
    return {canonicalize_name(r.name): r for r in reqs}


# what each env file installs: the driver env everything `make venv` installs (and the package, editable,
# at the lock's versions); the rules' env what the rules' CLI imports (the package comes from the
# post-deploy script)
ENV_EXTRAS = {"environment.yml": ("pipeline", "dev", "cluster"), "medfilip.yaml": ("pipeline",)}
ENV_OPTIONS = {"environment.yml": ["-c requirements.lock", "-e ."], "medfilip.yaml": []}


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_file_requirements_match_pyproject(env_file: Path):
    env = yaml.safe_load(env_file.read_text(encoding="utf-8"))
    assert env["channels"][0] == "conda-forge"
    conda_deps = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "pip" in conda_deps
    (python,) = [d for d in conda_deps if d.startswith("python")]
    # the env's Python is one pyproject.toml allows and the one requirements.lock was resolved for
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    version = python.split("=")[-1]
    assert SpecifierSet(project["requires-python"]).contains(f"{version}.0"), f"{env_file.name}: {python}"
    assert f"# Python {version}," in (ROOT / "requirements.lock").read_text(encoding="utf-8")

    have = pip_requirements(env_file)
    want = project_requirements(*ENV_EXTRAS[env_file.name])
    assert set(have) == set(want), f"{env_file.name}: extra {set(have) - set(want)}, missing {set(want) - set(have)}"
    for name, req in want.items():
        assert have[name].specifier == req.specifier, f"{env_file.name}: {have[name]} but pyproject.toml has {req}"
        assert have[name].marker == req.marker and have[name].extras == req.extras, (
            f"{env_file.name}: {have[name]} vs {req}"
        )
    # pip options: relative paths only where conda runs pip in this folder (not for a rule's env,
    # which snakemake creates from a copy of the file)
    assert [r for r in pip_section(env_file) if r.startswith("-")] == ENV_OPTIONS[env_file.name]


@pytest.mark.slow
def test_post_deploy_script_installs_the_workflow_checkout_into_the_env(tmp_path):
    # what snakemake does after creating the rules' env: run a copy of the script from the conda
    # prefix, in the working directory, with the env's python first on PATH and MEDFILIP_SOURCE_DIR
    # set by the workflow. A real (empty) Python environment stands in for the conda env; the
    # running environment's site-packages lend it pip and setuptools (no index, no build isolation).
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, checkout / name)
    shutil.copytree(ROOT / "medfilip", checkout / "medfilip", ignore=shutil.ignore_patterns("__pycache__"))
    env_dir = tmp_path / "conda-prefix" / "0123abcd_"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "runner.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    script = env_dir.parent / "0123abcd_.post-deploy.sh"
    shutil.copy(ROOT / "workflow" / "envs" / "medfilip.post-deploy.sh", script)
    workdir = tmp_path / "workdir"
    workdir.mkdir()

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        PATH=f"{python.parent}{os.pathsep}{env['PATH']}",
        MEDFILIP_SOURCE_DIR=str(checkout),
        PIP_NO_INDEX="1",
        PIP_NO_BUILD_ISOLATION="0",
    )
    proc = subprocess.run(["bash", str(script)], cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # the env's python now imports medfilip from the checkout (editable: an edit there is seen at once)
    (checkout / "medfilip" / "_probe.py").write_text("WHERE = 'checkout'\n", encoding="utf-8")
    probe = (
        "import json, medfilip, medfilip._probe as p, importlib.metadata as m;"
        "url = json.loads(m.distribution('medfilip').read_text('direct_url.json'));"
        "print(json.dumps([medfilip.__file__, p.WHERE, url]))"
    )
    out = subprocess.run([python, "-c", probe], cwd=workdir, env=env, capture_output=True, text=True, check=True)
    where, marker, direct_url = json.loads(out.stdout)
    assert Path(where) == checkout / "medfilip" / "__init__.py"
    assert marker == "checkout"
    assert direct_url["dir_info"] == {"editable": True} and direct_url["url"] == checkout.as_uri()
    # only the package was installed into the env (its requirements come from medfilip.yaml)
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--path", purelib, "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert [d["name"] for d in json.loads(listed.stdout)] == ["medfilip"]


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
            if not runs:  # a target rule (all, worlds): inputs only, nothing to run or write
                assert not re.search(r"^\s+output:", body, flags=re.M), f"{path.name}: rule {name} runs nothing"
                continue
            conda = re.search(r"^\s+conda:\s*\n\s+\"([^\"]+)\"", body, flags=re.M)
            assert conda, f"{path.name}: rule {name} declares no conda env"
            assert (path.parent / conda.group(1)).resolve() == (ROOT / "workflow" / "envs" / "medfilip.yaml")
    assert {"all", "report_shards", "extract_triplets", "entities", "extraction_quality"} <= set(seen)
