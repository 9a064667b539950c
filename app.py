"""Diffusion Lab: assembles the tabs and launches. Nothing else lives here.

Each module in TAB_MODULES exposes ``TITLE`` and ``create(runtime)``; adding a tab is one line.
Flags (each has an environment variable): --host DL_HOST, --port DL_PORT/GRADIO_SERVER_PORT,
--share DL_SHARE, --device DL_DEVICE (auto/cpu/cuda/mps), --model DL_MODEL (default diffusion model).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os

import gradio as gr

from demos import guard, lecture
from pipelines.serving import compute_thread, heap
from pipelines.runtime import Runtime

TAB_MODULES = [
    "demos.start_here",
    "demos.forward_noising",
    "demos.schedules",
    "demos.denoising_viewer",
    "demos.inside_model",
    "demos.guidance",
    "demos.clip_guidance",
    "demos.noise_tricks",
    "demos.inpainting",
    "demos.train_your_own",
    "demos.latent_space",
    "demos.theory",
]
MAX_FILE_SIZE = "20mb"  # per file; and at most guard.MAX_REQUEST_BYTES (21 MB) per request, all files together
QUEUE_MAX_SIZE = 32
MAX_SESSIONS = 300  # live sessions whose gr.State gradio keeps (the oldest go first); see README "Hardening"


def build_app(runtime: Runtime, queue_max_size: int = QUEUE_MAX_SIZE) -> gr.Blocks:
    """One gr.Tab per module of TAB_MODULES, in order. Loads no model (tabs load lazily).

    ``queue_max_size`` bounds the waiting line; beyond it a request is refused at once with
    "Queue is full" (HTTP 503), never left hanging."""
    # Cached examples live for this process only: gradio keys its cache folder by component id, so a
    # folder kept across versions could serve images from older weights. Same seed -> same image anyway.
    if "GRADIO_EXAMPLES_CACHE" not in os.environ:
        import tempfile

        os.environ["GRADIO_EXAMPLES_CACHE"] = tempfile.mkdtemp(prefix="diffusion-lab-examples-")
    # delete_cache: every 30 min, drop result files older than 1 h (each slider drag writes a JPEG).
    with gr.Blocks(title="Diffusion Lab", delete_cache=(1800, 3600)) as demo:
        with gr.Row(elem_id="dl-header"):
            gr.Markdown("# Diffusion Lab\nrun the pieces of a diffusion model and watch what they do",
                        elem_id="dl-title")
            present = gr.Checkbox(False, label="Presentation mode", container=False, elem_id="dl-present",
                                  scale=0, min_width=160)
            link_btn = gr.Button("Link to this setup", size="sm", elem_id="dl-link-btn", scale=0, min_width=150)
        link_box = gr.Textbox(label="link to this tab's setup (copied to the clipboard)", elem_id="dl-link",
                              buttons=["copy"], interactive=False, max_lines=1, visible=False)
        registry, items = {}, {}
        with gr.Tabs(elem_id="dl-tabs") as tabs:
            for name in TAB_MODULES:
                module = importlib.import_module(name)
                tid = lecture.tab_id(name)
                with gr.Tab(module.TITLE, id=tid, elem_id=f"tab-{tid}") as items[tid]:
                    registry[tid] = module.create(runtime) or {}  # {url key: control}, see demos/lecture.py
        lecture.wire(demo, tabs, items, registry, present, link_btn, link_box)
    demo.lecture_registry = registry  # {tab id: {URL key: control}}: for tests of documented links
    # CPU-bound work: one job at a time per event, bounded waiting line; on CPU every handler's torch work
    # runs on one thread (pipelines/serving/compute_thread.py: OpenMP slows down ~2x when several threads use torch).
    if runtime.device.type != "cpu":
        compute_thread.enable(False)
    demo.queue(max_size=queue_max_size, default_concurrency_limit=1 if runtime.device.type == "cpu" else 2)
    guard.limit_queue_per_client(demo)  # one client cannot fill the queue for everyone
    guard.check_input_kinds(demo)  # a wrong kind of value gets a message naming the parameter
    guard.compact_session_state()  # a fresh session no longer copies every component's config
    heap.start()  # freed memory goes back to the OS (pipelines/serving/heap.py)
    # the ~700k objects of the built app are permanent: out of the cyclic GC's sight, a full collection no longer
    # walks them (0.33 s with every thread stopped, a slider update's whole budget; docs/measurements.md)
    gc.collect()
    gc.freeze()
    return demo


def launch_kwargs(demo: gr.Blocks) -> dict:
    """What every launch of the app passes (main and the tests): upload size, session cap, and the
    hardening middleware (security headers, request-size bound, private endpoints refused)."""
    from starlette.middleware import Middleware

    return {"max_file_size": MAX_FILE_SIZE, "state_session_capacity": MAX_SESSIONS,
            "app_kwargs": {"middleware": [Middleware(guard.GuardMiddleware, private=guard.private_api_names(demo))]}}


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
    p.add_argument("--model", default=env("DL_MODEL"),
                   help="default diffusion model (DL_MODEL): a registry name, a hub id such as google/ddpm-cat-256, "
                        "or a local diffusers pipeline folder; the dropdowns still offer every model")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import logging

    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("pipelines.serving").setLevel(logging.INFO)  # replay hits/misses (pipelines/serving/replay.py)
    if os.environ.get("DL_COMPUTE_THREAD", "1") != "0":  # DL_COMPUTE_THREAD=0: old behaviour, for benchmarks
        compute_thread.keep_this_thread_serial()  # before build_app's first torch op: see pipelines/serving/compute_thread.py
    else:
        compute_thread.enable(False)
    demo = build_app(Runtime.create(args.device, args.model))
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **launch_kwargs(demo))


if __name__ == "__main__":
    main()
