"""A local OpenAI-compatible LLM server for the ``openai`` backend: llama.cpp through xllamacpp
(the default engine, a prebuilt wheel) or llama-cpp-python (built from source).

``medfilip -c config/local_llm.yaml llm-server start`` runs the server on 127.0.0.1 with the GGUF
named by ``extraction.openai.model_file`` (``packaged``: the model ``extraction.local_llm.model``
names, assembled from its PyPI part packages and checked against its sha256 by
:mod:`medfilip.extraction.llm_models`) on the port of ``extraction.openai.base_url`` (or a free one),
writes a pid file beside its log, and returns once ``GET /v1/models`` answers. ``stop`` ends the
process it started (checked by pid *and* command line), ``status`` says whether it runs.

Engines (``extraction.local_llm.engine``):

* ``xllamacpp`` -- :mod:`medfilip.extraction.xllamacpp_server` in a child process: llama.cpp's own
  server (``xllamacpp.CommonParams`` + ``xllamacpp.Server``), one slot with the prompt cache, the
  API key handed over in the environment (never on the command line);
* ``llama-cpp-python`` -- ``python -m llama_cpp.server`` (``make local-llm LLM_ENGINE=llama-cpp-python``
  builds llama.cpp for a generic x86-64 CPU: a native build can die with "Illegal instruction").

The model file's sha256 is part of the extraction cache key (:func:`model_file_sha256`): a new GGUF
re-extracts every report, an unchanged one never does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from medfilip.configbase import ConfigError
from medfilip.extraction import llm_models
from medfilip.extraction.xllamacpp_server import KEY_ENV
from medfilip.io import write_text_atomic

PACKAGED = "packaged"
ENGINES = ("xllamacpp", "llama-cpp-python")
DEFAULT_ENGINE = "xllamacpp"
DEFAULT_ALIAS = llm_models.DEFAULT_MODEL
INSTALL_HINT = {
    "xllamacpp": "install the llm extra: make local-llm (a prebuilt wheel, nothing is compiled)",
    "llama-cpp-python": "make local-llm LLM_ENGINE=llama-cpp-python (builds llama.cpp from source, 5-15 minutes "
    "on 2 cores)",
}


# -- the model file ------------------------------------------------------------------------------
def packaged_name(value: str | Path | None) -> str | None:
    """The model name of ``packaged`` / ``packaged:<name>`` (``packaged`` alone: the default model), else None."""
    text = str(value) if value is not None else ""
    if text == PACKAGED:
        return llm_models.DEFAULT_MODEL
    if text.startswith(PACKAGED + ":"):
        return text.split(":", 1)[1]
    return None


def packaged_model_path(name: str = llm_models.DEFAULT_MODEL, cache_dir: str | Path | None = None) -> Path:
    """The packaged GGUF ``name``, assembled from its part packages on first use (size and sha256 checked)."""
    return llm_models.model_path(name, cache_dir)


def resolve_model_file(value: str | Path | None) -> Path:
    """The GGUF path of ``extraction.openai.model_file`` (``packaged[:<name>]`` or a path, which must exist)."""
    if value is None:
        raise ConfigError(
            "extraction.openai.model_file is not set: name the GGUF the server runs "
            f"(a path, or {PACKAGED!r} for the model of extraction.local_llm.model)"
        )
    name = packaged_name(value)
    if name is not None:
        return packaged_model_path(name)
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"extraction.openai.model_file: {path}: no such file")
    return path


@lru_cache(maxsize=16)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a changed file is hashed again
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_file_sha256(value: str | Path | None) -> str | None:
    """sha256 of the configured model file (None when not configured).

    ``packaged[:<name>]`` is the model's published sha256 (assembly checks the file against it), so
    the cache key is known without assembling or reading a gigabyte.
    """
    if value is None:
        return None
    name = packaged_name(value)
    if name is not None:
        return llm_models.spec_of(name).sha256
    path = Path(value)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"extraction.openai.model_file: {path}: no such file") from None
    return _sha256_of(str(path.resolve()), st.st_size, st.st_mtime_ns)


# -- the server process -----------------------------------------------------------------------------
def xllamacpp_available() -> bool:
    try:
        import xllamacpp  # noqa: F401
    except Exception:  # noqa: BLE001 - not installed, or built for another CPU
        return False
    return True


def llama_cpp_available() -> bool:
    try:
        import llama_cpp  # noqa: F401
        import llama_cpp.server  # noqa: F401
    except Exception:  # noqa: BLE001 - not installed, or built for another CPU
        return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_of(base_url: str | None) -> int | None:
    if not base_url:
        return None
    return urlsplit(base_url).port


@dataclass
class ServerInfo:
    """What the pid file holds."""

    pid: int
    host: str
    port: int
    model_file: str
    model_sha256: str | None
    model_alias: str
    log: str
    started_at: float

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"


def engine_available(engine: str) -> bool:
    if engine not in ENGINES:
        raise ConfigError(f"extraction.local_llm.engine is {engine!r}; known: {', '.join(ENGINES)}")
    return xllamacpp_available() if engine == "xllamacpp" else llama_cpp_available()


def _check_engine(engine: str) -> None:
    if not engine_available(engine):
        what = "xllamacpp" if engine == "xllamacpp" else "llama-cpp-python (with its server extra)"
        raise ConfigError(f"{what} is not installed or does not load; {INSTALL_HINT[engine]}")


def server_command(
    model: Path,
    host: str,
    port: int,
    *,
    alias: str = DEFAULT_ALIAS,
    n_ctx: int = 4096,
    n_threads: int | None = None,
    api_key: str | None = None,
    engine: str = DEFAULT_ENGINE,
) -> list[str]:
    """The server's command line; the chat template comes from the GGUF's metadata.

    xllamacpp takes the API key from the environment (:data:`KEY_ENV`), never from the command line.
    """
    threads = n_threads or max(1, min(os.cpu_count() or 1, 8))
    if engine == "xllamacpp":
        return [
            sys.executable,
            "-m",
            "medfilip.extraction.xllamacpp_server",
            "--model",
            str(model),
            "--host",
            host,
            "--port",
            str(port),
            "--alias",
            alias,
            "--n-ctx",
            str(n_ctx),
            "--threads",
            str(threads),
        ]
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--host",
        host,
        "--port",
        str(port),
        "--model_alias",
        alias,
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        str(threads),
        "--n_threads_batch",
        str(threads),
        "--verbose",
        "False",
    ]
    if api_key:
        cmd += ["--api_key", api_key]
    return cmd


def _environment(api_key: str | None, engine: str) -> dict[str, str]:
    """The server's environment: the key for xllamacpp, and OpenMP threads that sleep when they wait
    (on a shared CPU, spinning threads of a 2-thread server slowed generation ~5x in our measurements)."""
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if api_key and engine == "xllamacpp":
        env[KEY_ENV] = api_key
    return env


def _shown(cmd: list[str]) -> str:
    """The command line for the log, the API key left out."""
    if "--api_key" in cmd:
        cmd = cmd[: cmd.index("--api_key")]
    return " ".join(cmd)


def _pidfile(state_dir: Path) -> Path:
    return Path(state_dir) / "server.json"


def read_info(state_dir: str | Path) -> ServerInfo | None:
    path = _pidfile(Path(state_dir))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ServerInfo(**data)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, TypeError) as err:
        raise ConfigError(f"{path}: not a medfilip llm-server pid file ({err}); remove it") from None


def _is_our_process(pid: int) -> bool:
    """The pid runs one of our servers (not a recycled pid of something else)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True  # no /proc (macOS): the pid exists
    return b"llama_cpp.server" in cmdline or b"medfilip.extraction.xllamacpp_server" in cmdline


def _ready(info_or_url: str, timeout_s: float = 2.0, api_key: str | None = None) -> bool:
    req = urllib.request.Request(info_or_url.rstrip("/") + "/models")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - loopback only
            return resp.status == 200
    except (urllib.error.URLError, OSError, TimeoutError):
        return False


def status(state_dir: str | Path) -> tuple[str, ServerInfo | None]:
    """("running" | "not running" | "stale", info): stale = a pid file whose process is gone."""
    info = read_info(state_dir)
    if info is None:
        return "not running", None
    if not _is_our_process(info.pid):
        return "stale", info
    return "running", info


def start(
    model_file: str | Path | None,
    *,
    state_dir: str | Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    alias: str = DEFAULT_ALIAS,
    n_ctx: int = 4096,
    n_threads: int | None = None,
    api_key: str | None = None,
    ready_timeout_s: float = 180.0,
    engine: str = DEFAULT_ENGINE,
) -> ServerInfo:
    """Start the server in the background, wait until it answers, and write the pid file.

    ``port`` None or 0 picks a free port. A server already running from ``state_dir`` is an error
    (stop it first); a stale pid file is replaced.
    """
    _check_engine(engine)
    state_dir = Path(state_dir)
    state, info = status(state_dir)
    if state == "running":
        raise ConfigError(
            f"an llm server already runs from {state_dir} (pid {info.pid}, {info.base_url}); "
            "stop it first: medfilip llm-server stop"
        )
    model = resolve_model_file(model_file)
    sha = model_file_sha256(model_file)
    port = port or free_port(host)
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "server.log"
    cmd = server_command(
        model, host, port, alias=alias, n_ctx=n_ctx, n_threads=n_threads, api_key=api_key, engine=engine
    )
    with open(log_path, "ab") as log_fh:
        log_fh.write(f"\n# {time.strftime('%Y-%m-%dT%H:%M:%S')} {_shown(cmd)}\n".encode())
        log_fh.flush()
        proc = subprocess.Popen(
            cmd,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own group: stop ends it and only it
            env=_environment(api_key, engine),
        )
    info = ServerInfo(proc.pid, host, port, str(model), sha, alias, str(log_path), time.time())
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the llm server exited with code {proc.returncode} before it was ready; "
                f"last lines of {log_path}:\n{_tail(log_path)}"
            )
        if _ready(info.base_url, api_key=api_key):
            write_text_atomic(json.dumps(asdict(info), indent=2) + "\n", _pidfile(state_dir))
            return info
        time.sleep(0.5)
    _terminate(proc.pid)
    raise RuntimeError(
        f"the llm server did not answer on {info.base_url} within {ready_timeout_s:g}s; "
        f"last lines of {log_path}:\n{_tail(log_path)}"
    )


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return "(no log)"


def _terminate(pid: int, grace_s: float = 10.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
            if done:
                return
        except ChildProcessError:
            pass
        if not _is_our_process(pid) or not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def stop(state_dir: str | Path) -> ServerInfo | None:
    """Stop the server started from ``state_dir`` and remove its pid file; None when none ran."""
    state, info = status(state_dir)
    if info is not None and state == "running":
        _terminate(info.pid)
    _pidfile(Path(state_dir)).unlink(missing_ok=True)
    return info if state == "running" else None


def serve(
    model_file: str | Path | None,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    alias: str = DEFAULT_ALIAS,
    n_ctx: int = 4096,
    n_threads: int | None = None,
    api_key: str | None = None,
    engine: str = DEFAULT_ENGINE,
) -> int:
    """Run the server in the foreground (Ctrl-C stops it)."""
    _check_engine(engine)
    model = resolve_model_file(model_file)
    port = port or free_port(host)
    cmd = server_command(
        model, host, port, alias=alias, n_ctx=n_ctx, n_threads=n_threads, api_key=api_key, engine=engine
    )
    print(f"serving {model} as {alias!r} on http://{host}:{port}/v1 ({engine})", flush=True)
    try:
        return subprocess.call(cmd, env=_environment(api_key, engine))
    except KeyboardInterrupt:
        return 130
