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


def load_optimizer(opt: torch.optim.Optimizer, path: Path, start: int) -> int:
    """Load the optimizer state saved with the weights of step ``start`` (:func:`save_optimizer`) into ``opt``.
    A state from another step or another run (e.g. the patch-2 run's, when a patch-1 run resumes from the same
    folder) is ignored. Returns the step the learning-rate warm-up restarts from: 0 when the state was loaded,
    ``start`` when a resumed run has a fresh optimizer."""
    saved = torch.load(path, weights_only=True) if start and Path(path).exists() else None
    if isinstance(saved, dict) and saved.get("step") == start:
        opt.load_state_dict(saved["optimizer"])
        return 0
    return start  # fresh Adam moments: warm up again


def save_optimizer(opt: torch.optim.Optimizer, path: Path, step: int) -> None:
    """The optimizer state, tagged with the step of the weights saved beside it."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"step": step, "optimizer": opt.state_dict()}, path)
