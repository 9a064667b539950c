"""Accelerator helpers: ZeroGPU's ``spaces.GPU``, half precision and SDPA attention on CUDA.

* :func:`gpu` is ``spaces.GPU`` on a Hugging Face ZeroGPU Space (``SPACES_ZERO_GPU`` set and
  the ``spaces`` package importable) and a no-op everywhere else, so the same code runs on a
  laptop, a CPU Space and ZeroGPU. Apply it to the event functions that run a model.
* :func:`model_dtype` picks bf16 on CUDA GPUs that support it, else fp16 on CUDA, else fp32
  (CPU and MPS stay fp32: half precision is slower or unsupported there).
* :func:`use_sdpa` sets diffusers' ``AttnProcessor2_0`` (``torch.nn.functional.scaled_dot_product_attention``,
  flash/memory-efficient kernels on GPU) on every attention layer of a UNet/VAE.

No import of ``spaces`` or CUDA initialisation happens at import time.
"""

from __future__ import annotations

import functools
import os

import torch


def on_zero_gpu() -> bool:
    """True on a ZeroGPU Space (the platform sets ``SPACES_ZERO_GPU``)."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in {"1", "true", "yes"}


@functools.lru_cache(maxsize=1)
def _spaces_gpu():
    if not on_zero_gpu():
        return None
    try:
        import spaces  # only present on Spaces
    except ImportError:
        return None
    return spaces.GPU


def gpu(fn=None, *, duration: int | None = None):
    """``@gpu`` / ``@gpu(duration=120)``: ``spaces.GPU`` on ZeroGPU, the function unchanged elsewhere."""
    def wrap(f):
        dec = _spaces_gpu()
        if dec is None:
            return f
        return dec(duration=duration)(f) if duration else dec(f)

    return wrap(fn) if fn is not None else wrap


def model_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on CUDA when supported, else fp16 on CUDA; fp32 on CPU/MPS."""
    device = torch.device(device)
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def use_sdpa(module: torch.nn.Module) -> torch.nn.Module:
    """Route every diffusers attention layer of ``module`` through PyTorch SDPA (no-op if none)."""
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    for m in module.modules():
        if isinstance(m, Attention):
            m.set_processor(AttnProcessor2_0())
    return module
