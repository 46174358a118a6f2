"""A job's share of the machine: in a parallel sweep one GPU per worker and a fair share of CPU threads;
in every job, freed memory kept for reuse (runner.infra.memory)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

from runner.infra.memory import keep_freed_memory

log = logging.getLogger("ragtune")


def parallel_jobs() -> int:
    """How many jobs run at once on this machine: the joblib launcher's n_jobs, else 1."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return 1
    launcher = HydraConfig.get().launcher
    n = launcher.get("n_jobs") if "joblib" in str(launcher.get("_target_", "")) else None
    if n is None:
        return 1
    return os.cpu_count() or 1 if n < 0 else int(n)


def visible_gpus() -> list[str]:
    """GPU ids this process may use, found without initialising CUDA (nvidia-smi, or the env)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    if not shutil.which("nvidia-smi"):
        return []
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def share_machine(job_num: int) -> dict:
    """In a parallel sweep, pin this worker to GPU (job_num mod #GPUs) through CUDA_VISIBLE_DEVICES,
    before CUDA initialises, and give torch cpu_count // n_jobs threads.

    A worker process keeps the GPU of its first job for the jobs it runs after (CUDA cannot move
    once initialised); the first n_jobs jobs start on n_jobs distinct workers, so with
    n_jobs == #GPUs every GPU gets one worker. Every job keeps the memory it frees for its next
    allocation (`keep_freed_memory`).
    """
    import torch

    n_jobs = parallel_jobs()
    share: dict = {"parallel_jobs": n_jobs, "freed_memory": keep_freed_memory()}
    if n_jobs <= 1:
        return share
    gpus = visible_gpus()
    if gpus and not torch.cuda.is_initialized() and "RAGTUNE_PINNED_GPU" not in os.environ:
        gpu = gpus[job_num % len(gpus)]
        os.environ["CUDA_VISIBLE_DEVICES"] = os.environ["RAGTUNE_PINNED_GPU"] = gpu
        log.info("parallel sweep: job %d pinned to GPU %s", job_num, gpu)
    if "RAGTUNE_PINNED_GPU" in os.environ:
        share["gpu"] = os.environ["RAGTUNE_PINNED_GPU"]
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    torch.set_num_threads(threads)
    share["torch_threads"] = threads
    return share
