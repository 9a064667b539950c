"""Theory tab: the maths the seeds teach, computed live on the bundled models.

Each section is its own module (``demos/theory_*.py``) exposing ``TITLE`` and ``create(runtime) -> dict``
(its URL keys for lecture links, see demos/lecture.py); this module only lays them out as sub-tabs, so
sections can be added without touching each other.
"""

from __future__ import annotations

import importlib

import gradio as gr

TITLE = "Theory"

# Sub-tab modules, in order. Each: TITLE, create(runtime) -> {url key: control}.
SECTIONS: list[str] = ["demos.theory_score", "demos.theory_targets", "demos.theory_elbo", "demos.theory_fid"]


def create(runtime) -> dict:
    """One gr.Tab per section; the sections' URL keys are merged (they must be distinct)."""
    registry: dict = {}
    if not SECTIONS:
        gr.Markdown("The theory sections are being built.")
        return registry
    with gr.Tabs(elem_id="theory-tabs"):
        for name in SECTIONS:
            module = importlib.import_module(name)
            with gr.Tab(module.TITLE, elem_id=f"theory-{name.rsplit('_', 1)[-1]}"):
                keys = module.create(runtime) or {}
            clash = registry.keys() & keys.keys()
            if clash:
                raise ValueError(f"theory sections reuse URL keys {sorted(clash)}")
            registry.update(keys)
    return registry
