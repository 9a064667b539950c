"""The digits models (``pipelines.training.digits``: 1-channel ``UNet2DModel`` at 16×16, optionally class-conditional)
as :class:`DiffusionModel` s, so that the one loop, the denoising viewer and the guidance tab run them.

==========================  ====================================================================
diffusers / the digits       here
==========================  ====================================================================
``class_labels [B]``         the "prompt": a digit 0-9 (``"7"``, ``"seven"``, ``"digit 7"``); the empty
                             prompt is ``NULL_CLASS`` (label dropped), CFG's unconditional branch.
                             :meth:`encode_prompt` returns the labels as a ``[B, 1, 1]`` float tensor, so
                             the loop's CFG batching ([uncond, cond] along the batch) carries them.
``timestep``                 the scheduler's: σ·1000 for flow matching, the integer t for DDPM (ε)
prediction                   v = ε − x0 (flow; x̂0 = x_t − σ v, ``maths.to_eps_x0``) or ε
images                       ``[B, 1, 16, 16]`` in [-1, 1]; :meth:`decode` repeats the gray channel to
                             ``[B, 3, 16, 16]`` and :meth:`encode` averages RGB to gray (SDEdit starts)
samplers                     flow: Euler on the flow ODE (as toy-sd3); DDPM-trained: every ε sampler
==========================  ====================================================================
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from pipelines.models.registry import SAMPLERS, DiffusionModel, ModelUnavailable
from pipelines.models.sd3 import flow_scheduler

NULL_CLASS = 10  # the label-dropout class (pipelines.training.digits.NULL_CLASS; checked by a test)
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def label_of(prompt: str) -> int:
    """A prompt -> the class label: the one digit it names (``"7"``, ``"a seven"``, ``"digit 7"``), or
    ``NULL_CLASS`` for the empty prompt (no label: the unconditional half of CFG)."""
    words = re.findall(r"[a-z]+|\d+", str(prompt or "").lower())
    found = {str(DIGIT_WORDS.index(w)) if w in DIGIT_WORDS else w for w in words
             if w in DIGIT_WORDS or w.isdigit()}
    if not words:
        return NULL_CLASS
    if len(found) != 1 or len(next(iter(found))) != 1:
        raise ValueError(f"the digits model takes one digit 0-9 as its prompt (e.g. '7' or 'seven'), got {prompt!r}; "
                         "the empty prompt means 'no label'")
    return int(next(iter(found)))


@dataclass
class DigitsDiffusionModel(DiffusionModel):
    """A digits ``UNet2DModel`` (``[B, 1, 16, 16]``); ``encode_prompt`` is None for the unconditional stage."""

    flow: bool = False

    @property
    def samplers(self) -> list[str]:
        from pipelines.models.sd3 import FLOW_SAMPLERS

        return list(FLOW_SAMPLERS) if self.flow else list(SAMPLERS)

    def make_scheduler(self, sampler: str | None = None, **overrides):
        """A fresh scheduler for one request: flow models Euler on the flow ODE only, DDPM models any ε sampler."""
        if self.flow:
            return flow_scheduler(self.name, self.scheduler_config, sampler or "Euler", overrides)
        return super().make_scheduler(sampler or "DDIM", **overrides)

    def _unet(self, x_in: torch.Tensor, t, emb: torch.Tensor | None) -> torch.Tensor:
        from pipelines.serving import compute_thread

        compute_thread.checkpoint()  # other requests' turn first
        labels = None if emb is None else emb[:, 0, 0].round().long()  # [B] class labels, NULL_CLASS = none
        return self.unet(x_in, t, class_labels=labels, return_dict=False)[0]

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Image ``[B, 3, H, W]`` in [-1, 1] -> gray ``[B, 1, H, W]`` (a start image for SDEdit)."""
        return image.to(self.device, self.unet.dtype).mean(dim=1, keepdim=True)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, H, W]`` -> ``[B, 3, H, W]`` (the gray channel three times), in [-1, 1]."""
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def from_unet(unet, scheduler_config: dict, name: str, class_conditional: bool,
              device: torch.device | str = "cpu") -> DigitsDiffusionModel:
    """A :class:`DigitsDiffusionModel` around a *copy* of ``unet`` (frozen, eval, fp32): a model still
    being trained elsewhere (the training tab's EMA) is not changed under a running sampler."""
    device = torch.device(device)
    net = copy.deepcopy(unet).float().requires_grad_(False).eval().to(device)
    if class_conditional and getattr(net.config, "num_class_embeds", None) != NULL_CLASS + 1:
        raise ValueError(f"{name}: a class-conditional digits UNet has {NULL_CLASS + 1} class embeddings "
                         "(digits 0-9 and 'no label')")

    @torch.no_grad()
    def encode_prompt(prompts: list[str]) -> torch.Tensor:
        return torch.tensor([float(label_of(p)) for p in prompts], device=device).view(-1, 1, 1)  # [B, 1, 1]

    flow = "FlowMatch" in str(scheduler_config.get("_class_name", ""))
    return DigitsDiffusionModel(name, "digits", net, dict(scheduler_config), device,
                                encode_prompt if class_conditional else None, flow=flow)


def load_folder(folder: str | Path, device: torch.device | str = "cpu", name: str = "digits") -> DigitsDiffusionModel:
    """A folder written by ``pipelines.training.digits.save`` (``config.json``, weights, ``training.json``,
    ``scheduler/``) -> its model; the single-step denoiser stage is refused (it does not sample)."""
    from pipelines.training import digits

    folder = Path(folder)
    if not (folder / "training.json").exists():
        raise ModelUnavailable(f"digits model not found in {folder}; train one with "
                               "`python -m pipelines.training.train_digits`")
    unet, cfg = digits.load(folder)
    return from_trained(unet, cfg, name, device)


def from_trained(unet, cfg, name: str, device: torch.device | str = "cpu") -> DigitsDiffusionModel:
    """A digits recipe's UNet and its :class:`~pipelines.training.digits.DigitsConfig` -> a model for the loop."""
    if cfg.stage == "denoiser":
        raise ValueError("the single-step denoiser cleans noisy digits at one noise level; it does not generate "
                         "from noise, so it cannot open in the viewer (train the 'time' or 'class' stage)")
    sched = json.loads(cfg.obj.scheduler().to_json_string())
    return from_unet(unet, sched, name, cfg.stage == "class", device)


def is_class_conditional(folder: str | Path) -> bool:
    """Whether the digits UNet saved in ``folder`` takes a class label (read from its ``config.json``)."""
    cfg = Path(folder) / "config.json"
    return cfg.exists() and json.loads(cfg.read_text()).get("num_class_embeds") == NULL_CLASS + 1


def load_spec(spec, device: torch.device, toy_clip=None) -> DigitsDiffusionModel:
    """The registry's loader for kind ``digits`` (``toy_clip`` unused: the condition is a class label)."""
    return load_folder(spec.source, device, spec.name)
