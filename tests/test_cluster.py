"""Paper scale on a cluster: the SLURM profile's jobs for config/paper.yaml, the conda env's
post-deploy script, and the LLM rate shared by concurrent extraction jobs.

The dry-run goes through the real profile (workflow/profiles/slurm) and the real paper.yaml; only
the placeholder model paths of paper.yaml are replaced by tiny stand-ins (a weights file, folders
with config.json), because the workflow refuses a config whose paths do not exist before any job.
conda is not installed here, so the profile is used with its `use-conda` key dropped (every other
key as shipped).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medfilip.pipeline.config import validate_config
from medfilip.pipeline.workflow_resources import gpus, llm_jobs, per_job_rate, share_llm_limits, training_gpus

ROOT = Path(__file__).resolve().parent.parent
SNAKEFILE = ROOT / "workflow" / "Snakefile"
PROFILE = ROOT / "workflow" / "profiles" / "slurm" / "config.yaml"
POST_DEPLOY = ROOT / "workflow" / "envs" / "medfilip.post-deploy.sh"


def job_blocks(text: str) -> dict[str, list[str]]:
    """rule name -> the dry-run's lines of each of its jobs (up to its shell command)."""
    blocks: dict[str, list[str]] = {}
    for m in re.finditer(r"^rule (\w+):\n(.*?)(?=^Shell command:|^\[|^rule |\Z)", text, flags=re.M | re.S):
        blocks.setdefault(m.group(1), []).append(m.group(2))
    return blocks


def resources_of(block: str) -> dict[str, str]:
    line = re.search(r"^\s+resources: (.*)$", block, flags=re.M).group(1)
    return dict(item.split("=", 1) for item in line.split(", "))


@pytest.fixture(scope="module")
def paper_dry_run(tmp_path_factory) -> str:
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="make cluster installs the SLURM executor plugin")
    tmp = tmp_path_factory.mktemp("paper")
    (tmp / "clip").mkdir()
    (tmp / "clip" / "config.json").write_text("{}")
    (tmp / "bert").mkdir()
    (tmp / "bert" / "config.json").write_text("{}")
    (tmp / "resnet50.pth").write_bytes(b"\0" * 16)
    stand_ins = tmp / "stand_ins.yaml"
    stand_ins.write_text(
        yaml.safe_dump(
            {
                "embeddings": {"model": str(tmp / "bert")},
                "training": {"model": {"image_weights": str(tmp / "resnet50.pth"), "text_model": str(tmp / "clip")}},
            }
        )
    )
    profile = yaml.safe_load(PROFILE.read_text())
    assert profile["executor"] == "slurm" and profile["use-conda"] is True
    profile.pop("use-conda")
    (tmp / "profile").mkdir()
    (tmp / "profile" / "config.yaml").write_text(yaml.safe_dump(profile))
    work = tmp / "work"
    work.mkdir()
    # a dry-run caps threads at --cores (1 when unset); a SLURM run has no such cap
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(SNAKEFILE),
        "--profile",
        str(tmp / "profile"),
        "--directory",
        str(work),
        "--dry-run",
        "--printshellcmds",
        "--cores",
        "256",
        "results/models/medfilip/model.pt",
        "results/embeddings/bert.parquet",
        "results/features/medfilip/rsna/train.npy",
        "results/probe/baselines/resnet50_random/rsna/scores.npz",
        "--configfile",
        str(ROOT / "config" / "paper.yaml"),
        str(stand_ins),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    return out


def test_paper_training_job_gets_a_gpu_hours_and_threads(paper_dry_run):
    (train,) = job_blocks(paper_dry_run)["train"]
    res = resources_of(train)
    assert int(res["gpu"]) >= 1  # paper.yaml leaves training.device at auto: a GPU, not gpu=0
    assert int(res["runtime"]) >= 600  # minutes: hours, not the 60-minute default
    assert int(res["mem_mb"]) >= 64000
    threads = int(re.search(r"^\s+threads: (\d+)$", train, flags=re.M).group(1))
    assert threads > 1
    shell = re.search(r"rule train:.*?^Shell command: (.*?)$", paper_dry_run, flags=re.M | re.S).group(1)
    assert f"--threads {threads}" in shell


def test_paper_gpu_model_jobs_request_a_gpu_and_cpu_jobs_do_not(paper_dry_run):
    blocks = job_blocks(paper_dry_run)
    (embed,) = blocks["embed_labels"]
    assert int(resources_of(embed)["gpu"]) == 1  # Bio_ClinicalBERT, device auto
    for name in ("report_shards", "structured_labels", "entities"):
        for block in blocks[name]:
            assert int(resources_of(block).get("gpu", 0)) == 0, name
    for block in blocks["extract_triplets"]:
        assert int(resources_of(block)["runtime"]) > 60
    # feature extraction and the fine-tuned baselines (evaluation.linear_probe.device: auto)
    for name in ("features", "probe_baseline"):
        (block,) = blocks[name]
        assert int(resources_of(block)["gpu"]) == 1 and int(resources_of(block)["runtime"]) > 60, name


def test_gpu_requests_follow_the_device():
    assert gpus("cpu") == 0 and gpus("auto") == 1 and gpus("cuda") == 1
    cfg = validate_config({"training": {"device": "cpu"}})
    assert training_gpus(cfg.training) == 0
    cfg = validate_config({"training": {"device": "auto"}})
    assert training_gpus(cfg.training) == 1
    with pytest.raises(ValueError, match="negative"):
        gpus("cuda", -1)


def test_post_deploy_installs_the_workflow_checkout_from_anywhere(tmp_path):
    # snakemake runs a copy of the script from the conda prefix, in the working directory (--directory)
    prefix = tmp_path / "conda-prefix"
    prefix.mkdir()
    script = prefix / "0123abcd_.post-deploy.sh"
    shutil.copy(POST_DEPLOY, script)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    stub = tmp_path / "bin"
    stub.mkdir()
    record = tmp_path / "pip-args.txt"
    # the env's python: records what pip would be asked to install
    (stub / "python").write_text(f'#!/bin/sh\necho "$@" > {record}\n')
    (stub / "python").chmod(0o755)
    env = {"PATH": f"{stub}:{os.environ['PATH']}", "MEDFILIP_SOURCE_DIR": str(ROOT)}
    proc = subprocess.run(["bash", str(script)], cwd=workdir, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    args = record.read_text().split()
    assert args[:5] == ["-m", "pip", "install", "--no-deps", "--editable"]
    assert Path(args[5]) == ROOT and (Path(args[5]) / "pyproject.toml").is_file()

    # without the variable (not created through the workflow) it stops with a clear message
    env.pop("MEDFILIP_SOURCE_DIR")
    proc = subprocess.run(["bash", str(script)], cwd=workdir, env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "MEDFILIP_SOURCE_DIR" in proc.stderr
    env["MEDFILIP_SOURCE_DIR"] = str(workdir)  # not a checkout
    proc = subprocess.run(["bash", str(script)], cwd=workdir, env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "no pyproject.toml" in proc.stderr


def test_workflow_exports_its_own_checkout_for_the_post_deploy_script():
    text = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    assert re.search(r'os\.environ\["MEDFILIP_SOURCE_DIR"\] = str\(REPO_ROOT\.resolve\(\)\)', text)
    assert re.search(r"REPO_ROOT = Path\(workflow\.basedir\)\.parent", text)


def test_llm_limits_are_shared_by_the_jobs_that_can_run():
    assert llm_jobs({"llm_requests": 4}) == 4
    assert llm_jobs({}) == 1 and llm_jobs(None) == 1 and llm_jobs({"llm_requests": "x"}) == 1
    assert per_job_rate(500, 4) == 125 and per_job_rate(3, 4) == 1
    cfg = validate_config({"extraction": {"openai": {"requests_per_minute": 500, "tokens_per_minute": 200_000}}})
    shared = share_llm_limits(cfg, 4)
    assert shared.extraction.openai.requests_per_minute == 125
    assert shared.extraction.openai.tokens_per_minute == 50_000
    # 4 jobs at their share never exceed the account's limit
    assert 4 * shared.extraction.openai.requests_per_minute <= cfg.extraction.openai.requests_per_minute
    assert share_llm_limits(cfg, 1) is cfg
    with pytest.raises(ValueError):
        share_llm_limits(cfg, 0)


def test_openai_backend_paces_to_its_share(monkeypatch):
    from medfilip.extraction.openai.backend import OpenAIBackend

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    cfg = validate_config({"extraction": {"backend": "openai", "openai": {"requests_per_minute": 600}}})
    whole = OpenAIBackend.from_config(cfg)
    third = OpenAIBackend.from_config(share_llm_limits(cfg, 3))
    assert whole.limiter.requests_per_window == 600
    assert third.limiter.requests_per_window == 200


def test_training_launcher_runs_torchrun_only_for_several_processes(tmp_path):
    from medfilip.pipeline.workflow_resources import training_launcher

    assert training_launcher(1, 1) == ""
    with pytest.raises(ValueError):
        training_launcher(0, 1)
    prefix = training_launcher(4, 2)
    assert "--nnodes 2 --nproc-per-node 4" in prefix and "--no-python" in prefix
    # what the shell makes of it: torchrun on this machine without SLURM; srun + first node under SLURM
    stub = tmp_path / "bin"
    stub.mkdir()
    for name, body in {
        "torchrun": 'echo torchrun "$@"',
        "srun": 'shift 6; echo srun "$@"',
        "scontrol": "echo node17; echo node18",
    }.items():
        (stub / name).write_text(f"#!/bin/sh\n{body}\n")
        (stub / name).chmod(0o755)
    cmd = f"{prefix} medfilip train --run medfilip"
    env = {"PATH": f"{stub}:{os.environ['PATH']}"}
    local = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True).stdout
    assert local.startswith("torchrun ") and "--rdzv-endpoint localhost:29500" in local
    assert local.rstrip().endswith("--no-python medfilip train --run medfilip")
    slurm = subprocess.run(
        ["bash", "-c", cmd],
        env={**env, "SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "node[17-18]"},
        capture_output=True,
        text=True,
    ).stdout
    assert slurm.startswith("srun torchrun") and "--rdzv-endpoint node17:29500" in slurm and "--rdzv-id 42" in slurm


def test_distributed_training_asks_for_every_gpu_and_node_and_launches_torchrun():
    from medfilip.pipeline.workflow_resources import training_launch, training_nodes

    one = validate_config({}).training
    assert training_gpus(one) == 1 and training_nodes(one) == 1 and training_launch(one) == ""
    ddp = validate_config({"training": {"distributed": {"nproc_per_node": 4, "nnodes": 2}}}).training
    assert training_gpus(ddp) == 8 and training_nodes(ddp) == 2
    assert "torchrun --nnodes 2 --nproc-per-node 4" in training_launch(ddp)
    cpu = validate_config({"training": {"device": "cpu", "distributed": {"nproc_per_node": 2}}}).training
    assert training_gpus(cpu) == 0 and "--nproc-per-node 2" in training_launch(cpu)


def test_paper_yaml_is_sized_for_one_h100():
    cfg = validate_config(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()))
    t = cfg.training
    assert t.batch_size >= 128 and t.num_workers >= 8 and t.precision == "bf16" and t.channels_last and t.compile
    assert t.log_every > 1
