"""Diffusion Lab benchmark: prints rows measured side by side in one run (never a timed unit test).

    .venv/bin/python scripts/benchmark.py [--only viewer] [--threads N]

Each entry of ROW_MODULES is a module under scripts/ with ``rows(runtime) -> [(what, figure)]``;
add a tab's rows by adding its module.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROW_MODULES = {
    "forward": "scripts.bench_forward",  # issue #2: forward-noising update (512x512) and cold start
    "viewer": "scripts.bench_viewer",  # issue #4: Denoising viewer
    "guidance": "scripts.bench_guidance",  # issue #5: CFG step and CLIP-guided step vs a plain step
    "attention": "scripts.bench_attention",  # issue 17: a run with cross-attention maps recorded vs a plain run
    "latent": "scripts.bench_latent",  # issue 18: toy-sd3 28-step sample + decode beside toy-sd's 50 steps
    "train": "scripts.bench_train",  # issue #16: 2-D DDPM vs flow in 15 s, digits accuracy vs time, interleaving
    "room": "scripts.bench_room",  # issue 20: the batching curve, batch invariance, micro-batches
    "finetune": "scripts.bench_finetune",  # issue 21: fine-tune on hearts for 5 min, with / without prior preservation
}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=list(ROW_MODULES), action="append", help="run only these groups")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = p.parse_args(argv)
    import torch

    from pipelines.runtime import Runtime

    if args.threads:
        torch.set_num_threads(args.threads)
    runtime = Runtime.create("cpu")
    print(f"# Diffusion Lab benchmark  ({os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, load avg {os.getloadavg()[0]:.1f})\n")
    print("| group | what | figure |\n|---|---|---|")
    for group in args.only or list(ROW_MODULES):
        t0 = time.perf_counter()
        for what, figure in importlib.import_module(ROW_MODULES[group]).rows(runtime):
            print(f"| {group} | {what} | {figure} |", flush=True)
        print(f"| {group} | (group wall time) | {time.perf_counter() - t0:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
