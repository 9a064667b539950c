"""What every tab shares: the compute device and the model registry (read-only models).

Built once by ``app.py`` and handed to each ``demos/<tab>.create(runtime)``. Per-request state
(generators, schedulers, trajectories) is created inside each request or kept in ``gr.State``; the one
per-user thing here is ``session_models``, the bounded, expiring store of models users trained and sent
to other tabs, keyed by session (:mod:`pipelines.serving.session_models`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pipelines.models import DiffusionModel, ModelRegistry, specs_with_default
from pipelines.models.specs import SESSION_DIGITS
from pipelines.serving.replay import ReplayCache
from pipelines.serving.session_models import SessionModels


def resolve_device(flag: str = "auto") -> torch.device:
    """``auto`` -> cuda, else mps, else cpu; ``cpu``/``cuda``/``mps`` explicitly.

    Raises ValueError when the requested accelerator is not available.
    """
    flag = (flag or "auto").lower()
    if flag == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if flag == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA GPU is visible")
    if flag == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("--device mps was asked for, but MPS is not available")
    if flag not in {"cpu", "cuda", "mps"}:
        raise ValueError(f"unknown device {flag!r}: use auto, cpu, cuda or mps")
    return torch.device(flag)


@dataclass
class Runtime:
    """Shared, read-only context for the tabs."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    registry: ModelRegistry = field(default_factory=ModelRegistry)
    session_models: SessionModels = field(default_factory=SessionModels)
    replay: ReplayCache = field(default_factory=ReplayCache)  # finished runs' frames, shared by all (not per user)

    def diffusion(self, name: str | None, session: str | None = None) -> DiffusionModel:
        """The model ``name`` for the browser session ``session``: the session's own trained digits model for
        :data:`SESSION_DIGITS`, else the registry's shared one (ValueError when there is none)."""
        if name == SESSION_DIGITS:
            return self.session_models.get(session, "trained digits model")
        return self.registry.diffusion(name or None)

    def flow_only(self, name: str | None, session: str | None = None) -> bool:
        """Whether ``name`` samples with Euler on the flow ODE only (toy-sd3, the flow-matching digits)."""
        if not name:
            return False
        kind = self.registry.spec(name).kind
        if kind == "sd3":
            return True
        if kind in ("digits", "session"):
            try:
                return bool(getattr(self.diffusion(name, session), "flow", False))
            except ValueError:  # nothing sent yet: the run itself will say so
                return False
        return False

    @classmethod
    def create(cls, device: str = "auto", model: str | None = None) -> "Runtime":
        """``model`` (or env ``DL_MODEL``): the default diffusion model, see :func:`specs_with_default`."""
        import os

        dev = resolve_device(device)
        specs = specs_with_default(model if model is not None else os.environ.get("DL_MODEL") or None)
        return cls(device=dev, registry=ModelRegistry(device=dev, diffusion_specs=specs))
