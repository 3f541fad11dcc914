"""Per-job resources the rules declare: GPUs from the configured device, a shared LLM budget.

Rules call these in their ``resources:`` blocks; the cluster profile
(workflow/profiles/slurm/config.yaml) adds runtime, memory and threads per rule. A job asks
for a GPU whenever its config does not pin ``cpu`` (``auto`` means "use one when there is
one", so on a cluster the job must be given one), which the SLURM executor plugin turns into
``--gpus``. On one machine a ``gpu`` resource that ``--resources`` does not limit is not
a constraint, so a CPU-only laptop still runs ``device: auto`` jobs.
"""

from __future__ import annotations

from typing import Any


def _device_name(device: Any) -> str:
    return str(getattr(device, "value", device)).lower()


def gpus(device: Any, per_job: int = 1) -> int:
    """GPUs a job asks for: 0 when ``device`` is ``cpu``, else ``per_job`` (``auto`` and ``cuda``)."""
    if per_job < 0:
        raise ValueError(f"per_job = {per_job}: a GPU count cannot be negative")
    return 0 if _device_name(device) == "cpu" else per_job


def training_processes(training: Any) -> int:
    """Processes per node of a training job: training.distributed.nproc_per_node when set, else 1."""
    distributed = getattr(training, "distributed", None)
    return int(getattr(distributed, "nproc_per_node", 1) or 1) if distributed is not None else 1


def training_gpus(training: Any) -> int:
    """GPUs per node of a training job: one per process, none when the device is pinned to cpu."""
    return gpus(training.device, training_processes(training))


def llm_jobs(resources: dict[str, Any] | None, default: int = 1) -> int:
    """How many extraction jobs may call the LLM at once: the run's ``llm_requests`` limit.

    Snakemake passes the global ``--resources`` (profile ``resources:``) to the workflow as
    ``workflow.global_resources``; a limit that is unset or unbounded counts as ``default``.
    """
    value = (resources or {}).get("llm_requests")
    try:
        n = int(value)
    except (TypeError, ValueError):
        return default
    return n if 0 < n < 10**6 else default


def per_job_rate(limit: int, jobs: int) -> int:
    """A per-minute limit of the account divided among ``jobs`` concurrent jobs (rounded down, >= 1)."""
    if jobs < 1:
        raise ValueError(f"jobs = {jobs}: at least one extraction job runs")
    return max(1, int(limit) // jobs)


def share_llm_limits(cfg: Any, jobs: int) -> Any:
    """The config with extraction.openai's per-minute limits divided among ``jobs`` concurrent jobs.

    Every extraction job paces itself to its share, so ``jobs`` jobs running at once stay within
    the account's requests_per_minute and tokens_per_minute together (``--cores 8`` never
    multiplies the rate). ``jobs == 1`` returns ``cfg`` itself.
    """
    if jobs == 1:
        return cfg
    o = cfg.extraction.openai
    shared = o.model_copy(update={"requests_per_minute": per_job_rate(o.requests_per_minute, jobs),
                                  "tokens_per_minute": per_job_rate(o.tokens_per_minute, jobs)})
    return cfg.model_copy(update={"extraction": cfg.extraction.model_copy(update={"openai": shared})})
