"""What every tab shares: the compute device and the model registry (read-only models).

Built once by ``app.py`` and handed to each ``demos/<tab>.create(runtime)``. Nothing
per-user lives here: per-request state (generators, schedulers, trajectories) is created
inside each request or kept in ``gr.State``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pipelines.models import ModelRegistry, specs_with_default


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

    @classmethod
    def create(cls, device: str = "auto", model: str | None = None) -> "Runtime":
        """``model`` (or env ``DL_MODEL``): the default diffusion model, see :func:`specs_with_default`."""
        import os

        dev = resolve_device(device)
        specs = specs_with_default(model if model is not None else os.environ.get("DL_MODEL") or None)
        return cls(device=dev, registry=ModelRegistry(device=dev, diffusion_specs=specs))
