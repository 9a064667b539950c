"""Diffusion Lab: assembles the tabs and launches. Nothing else lives here.

Each module in TAB_MODULES exposes ``TITLE`` and ``create(runtime)``; adding a tab is one line.
Flags (each has an environment variable): --host DL_HOST, --port DL_PORT/GRADIO_SERVER_PORT,
--share DL_SHARE, --device DL_DEVICE (auto/cpu/cuda/mps).
"""

from __future__ import annotations

import argparse
import importlib
import os

import gradio as gr

from pipelines.runtime import Runtime

TAB_MODULES = [
    "demos.forward_noising",
    "demos.schedules",
    "demos.denoising_viewer",
    "demos.guidance",
    "demos.clip_guidance",
    "demos.inpainting",
]
MAX_FILE_SIZE = "20mb"
QUEUE_MAX_SIZE = 32


def build_app(runtime: Runtime) -> gr.Blocks:
    """One gr.Tab per module of TAB_MODULES, in order. Loads no model (tabs load lazily)."""
    # delete_cache: every 30 min, drop result files older than 1 h (each slider drag writes a JPEG).
    with gr.Blocks(title="Diffusion Lab", delete_cache=(1800, 3600)) as demo:
        gr.Markdown("# Diffusion Lab\nRun the pieces of a diffusion model and watch what they do.")
        for name in TAB_MODULES:
            module = importlib.import_module(name)
            with gr.Tab(module.TITLE):
                module.create(runtime)
    # CPU-bound work: one job at a time per event, bounded waiting line.
    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=1 if runtime.device.type == "cpu" else 2)
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    on_space = bool(env("SPACE_ID"))
    p = argparse.ArgumentParser(description="Diffusion Lab")
    p.add_argument("--host", default=env("DL_HOST", "0.0.0.0" if on_space else "127.0.0.1"),
                   help="bind address (DL_HOST; 0.0.0.0 on a Hugging Face Space)")
    p.add_argument("--port", type=int, default=int(env("DL_PORT") or env("GRADIO_SERVER_PORT") or 7860),
                   help="port (DL_PORT or GRADIO_SERVER_PORT; default 7860)")
    p.add_argument("--share", action="store_true", default=env("DL_SHARE", "").lower() in {"1", "true", "yes"},
                   help="create a public gradio.live link (DL_SHARE=1)")
    p.add_argument("--device", default=env("DL_DEVICE", "auto"), choices=["auto", "cpu", "cuda", "mps"],
                   help="compute device (DL_DEVICE; default auto)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    demo = build_app(Runtime.create(args.device))
    demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                max_file_size=MAX_FILE_SIZE)


if __name__ == "__main__":
    main()
