"""Resume state shared by the toy models' training scripts: raw weights + step counter, and the EMA."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file


def resume_with_ema(model: torch.nn.Module, resume: Path, raw_name: str, ema_dir: Path, decay: float,
                    log=print) -> tuple[int, float, EMAModel]:
    """Load ``resume/raw_name`` and the step counter into ``model`` when a run is there, and build its EMA
    (shadow weights from the saved EMA model in ``ema_dir``). Returns ``(start step, wall seconds so far, ema)``."""
    start, wall0 = 0, 0.0
    if (resume / "train_state.json").exists():
        state = json.loads((resume / "train_state.json").read_text())
        start, wall0 = state["step"], state["wall_seconds"]
        model.load_state_dict({k: v.float() for k, v in load_file(resume / raw_name).items()})
        log(f"resuming at step {start} ({wall0 / 60:.0f} min so far)")
    cls = type(model)
    ema = EMAModel(model.parameters(), decay=decay, use_ema_warmup=True, power=2 / 3, model_cls=cls,
                   model_config=model.config)
    if start and any(Path(ema_dir).glob("*.safetensors")):
        ema.shadow_params = [p.detach().float().clone() for p in cls.from_pretrained(ema_dir).parameters()]
        ema.optimization_step = start
    elif start:  # a resume state shipped without its EMA weights (assets budget): the EMA restarts from these
        log(f"no EMA weights in {ema_dir}: the EMA restarts from the raw weights")
    return start, wall0, ema
