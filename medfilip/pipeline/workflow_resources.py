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
    return str(device).lower()


def gpus(device: Any, per_job: int = 1) -> int:
    """GPUs a job asks for: 0 when ``device`` is ``cpu``, else ``per_job`` (``auto`` and ``cuda``)."""
    if per_job < 0:
        raise ValueError(f"per_job = {per_job}: a GPU count cannot be negative")
    return 0 if _device_name(device) == "cpu" else per_job


def training_processes(training: Any) -> int:
    """Processes per node of a training job: training.distributed.nproc_per_node when set, else 1."""
    distributed = getattr(training, "distributed", None)
    return int(getattr(distributed, "nproc_per_node", 1) or 1) if distributed is not None else 1


def training_nodes(training: Any) -> int:
    """Nodes of a training job: training.distributed.nnodes when set, else 1."""
    distributed = getattr(training, "distributed", None)
    return int(getattr(distributed, "nnodes", 1) or 1) if distributed is not None else 1


def training_gpus(training: Any) -> int:
    """GPUs of a training job (SLURM --gpus, the job's total): one per process on every node, none
    when the device is pinned to cpu."""
    return gpus(training.device, training_processes(training) * training_nodes(training))


def training_launch(training: Any) -> str:
    """The training rule's command prefix for the configured training.distributed (empty for one process)."""
    return training_launcher(training_processes(training), training_nodes(training))


def llm_jobs(resources: dict[str, Any] | None, default: int = 1) -> int:
    """How many extraction jobs may call the LLM at once: the run's ``llm_requests`` limit.

    Snakemake passes the global ``--resources`` (profile ``resources:``) to the workflow as
    ``workflow.global_resources``; a limit that is unset or unbounded counts as ``default``.
    """
    value = (resources or {}).get("llm_requests")
    value = getattr(value, "value", value)  # snakemake's Resources hold Resource objects
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
    shared = o.model_copy(
        update={
            "requests_per_minute": per_job_rate(o.requests_per_minute, jobs),
            "tokens_per_minute": per_job_rate(o.tokens_per_minute, jobs),
        }
    )
    return cfg.model_copy(update={"extraction": cfg.extraction.model_copy(update={"openai": shared})})


def training_launcher(nproc_per_node: int = 1, nnodes: int = 1, port: int = 29500) -> str:
    """The shell prefix that starts ``medfilip train`` (a console script, hence ``--no-python``) as
    ``nnodes x nproc_per_node`` DDP processes; empty for one process.

    Under SLURM (``$SLURM_JOB_ID`` set in the job) ``srun`` starts one torchrun per node and the
    first node of the allocation is the rendezvous host; elsewhere torchrun runs on this machine.
    torchrun sets RANK, WORLD_SIZE and LOCAL_RANK, which medfilip.training.distributed reads.
    The training rule runs ``{launcher} medfilip -c ... train ...``.
    """
    if nproc_per_node < 1 or nnodes < 1:
        raise ValueError(f"nproc_per_node = {nproc_per_node}, nnodes = {nnodes}: both must be >= 1")
    if nproc_per_node * nnodes == 1:
        return ""
    torchrun = (
        f"torchrun --nnodes {nnodes} --nproc-per-node {nproc_per_node} --rdzv-backend c10d "
        f"--rdzv-id ${{SLURM_JOB_ID:-medfilip}} --rdzv-endpoint $MEDFILIP_RDZV_HOST:{port} --no-python"
    )
    host = (
        'MEDFILIP_RDZV_HOST=$( [ -n "${SLURM_JOB_ID:-}" ] && scontrol show hostnames "$SLURM_JOB_NODELIST" '
        "| head -n 1 || echo localhost )"
    )
    srun = (
        '$( [ -n "${SLURM_JOB_ID:-}" ] && echo "srun --nodes '
        + str(nnodes)
        + ' --ntasks-per-node 1 --kill-on-bad-exit 1" )'
    )
    return f"{host}; {srun} {torchrun}"
