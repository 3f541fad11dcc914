"""Write requirements.lock: the installed version of every distribution `.[pipeline,dev,cluster]` needs.

    make lock          # = .venv/bin/python tools/lock.py --out requirements.lock

Run it with the Python of an environment where the project is installed with those extras (make venv).
It walks pyproject.toml's requirements (the core dependencies and the locked extras) through each
installed distribution's own requirements, markers evaluated for this interpreter and the extras
asked for, and pins each distribution reached at its installed version. `make venv` installs with
the file as pip constraints (`pip install -c requirements.lock -e '.[pipeline,dev,cluster]'`), so
a fresh clone gets the versions the tests passed with. The `llm` extra (a source build of
llama.cpp) is not locked.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCKED_EXTRAS = ("pipeline", "dev", "cluster")


class LockError(RuntimeError):
    """A required distribution is not installed (the message names it and what needs it)."""


def project_requirements(pyproject: Path, extras: Iterable[str] = LOCKED_EXTRAS) -> list[Requirement]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    optional = project.get("optional-dependencies", {})
    missing = [e for e in extras if e not in optional]
    if missing:
        raise LockError(f"{pyproject}: [project.optional-dependencies] has no {missing}")
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in optional[extra]]
    return reqs


def applies(req: Requirement, extras: Iterable[str]) -> bool:
    """The requirement's marker holds for this interpreter, for no extra or one of `extras`."""
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": extra}) for extra in ("", *extras))


def closure(
    roots: Iterable[Requirement],
    version_of: Callable[[str], str | None],
    requires_of: Callable[[str], list[str]],
) -> dict[str, str]:
    """Canonical name -> installed version of every distribution the roots need, transitively.

    version_of(name) is None when the distribution is not installed; requires_of(name) lists its
    Requires-Dist strings (markers and extras included)."""
    pins: dict[str, str] = {}
    seen_extras: dict[str, set[str]] = {}
    todo = [(req, "pyproject.toml") for req in roots if applies(req, ())]
    while todo:
        req, needed_by = todo.pop()
        name = canonicalize_name(req.name)
        extras = set(req.extras)
        if name in seen_extras and extras <= seen_extras[name]:
            continue
        version = version_of(name)
        if version is None:
            raise LockError(f"{req} (needed by {needed_by}) is not installed in {sys.prefix}")
        pins[name] = version
        seen_extras[name] = seen_extras.get(name, set()) | extras
        for text in requires_of(name):
            child = Requirement(text)
            if applies(child, seen_extras[name]):
                todo.append((child, f"{name}=={version}"))
    return pins


def installed() -> tuple[Callable[[str], str | None], Callable[[str], list[str]]]:
    dists = {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions()}

    def version_of(name: str) -> str | None:
        return dists[name].version if name in dists else None

    def requires_of(name: str) -> list[str]:
        return list(dists[name].requires or [])

    return version_of, requires_of


def render(pins: dict[str, str], extras: Iterable[str] = LOCKED_EXTRAS) -> str:
    head = (
        f"# The resolved versions of medfilip[{','.join(extras)}] (pip constraints): written by `make lock`\n"
        "# (tools/lock.py) from the environment it ran in; `make venv` installs with it.\n"
        f"# Python {sys.version_info.major}.{sys.version_info.minor}, {sys.platform}.\n"
    )
    return head + "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    parser.add_argument("--out", type=Path, default=ROOT / "requirements.lock")
    args = parser.parse_args(argv)
    try:
        pins = closure(project_requirements(args.pyproject), *installed())
    except LockError as err:
        print(f"lock: {err}; run `make venv` (pip install -e '.[pipeline,dev,cluster]') first", file=sys.stderr)
        return 1
    pins.pop("medfilip", None)
    args.out.write_text(render(pins), encoding="utf-8")
    print(f"lock: {len(pins)} distributions pinned in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
