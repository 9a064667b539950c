"""Oversize UNet calls run in micro-batches with a turn between them (issue 20 / issue 19's slider target)."""

from __future__ import annotations

import torch

from pipelines.models import ModelRegistry
from pipelines.serving import compute_thread


def _inputs(model, b: int):
    g = torch.Generator().manual_seed(3)
    x = torch.randn((b, *model.sample_shape), generator=g)
    emb = model.encode_prompt([f"a {c} circle on a navy background" for c in ("red", "blue")] * (b // 2))
    return x, torch.tensor(500), emb


def test_a_split_call_gives_each_sample_what_one_call_gives(monkeypatch):
    model = ModelRegistry().diffusion()
    x, t, emb = _inputs(model, 16)
    with torch.no_grad():
        whole = model._unet(x, t, emb)  # one call of 16, independent of predict's splitting
        turns = []
        monkeypatch.setattr(compute_thread, "checkpoint", lambda: turns.append(1))
        monkeypatch.setenv("DL_MICRO_BATCH", "4")
        split = model.predict(x, t, emb)
    assert split.shape == whole.shape
    assert len(turns) == 4  # a turn before each chunk of 4
    assert float((split - whole).abs().max()) < 1e-4  # float rounding of the batch size only (bench_room)


def test_a_call_within_the_micro_batch_is_one_call(monkeypatch):
    model = ModelRegistry().diffusion()
    x, t, emb = _inputs(model, 2)
    turns = []
    monkeypatch.setattr(compute_thread, "checkpoint", lambda: turns.append(1))
    with torch.no_grad():
        model.predict(x, t, emb)
    assert len(turns) == 1
