"""A traced, frozen TorchScript forward for the small bundled UNet: same numbers, less Python.

Why. The toy UNet works on ``[2, 3, 32, 32]`` tensors (a CFG batch), where each of its ~1,000
ops takes microseconds and diffusers' Python around them (block dispatch, ``Attention.forward``'s
``inspect.signature`` on every call, shape checks) is a good part of a step. ``torch.jit.trace``
records the ops once and ``torch.jit.freeze`` folds the weights in, so the graph runs without
that Python (figures: ``docs/measurements.md``). The graph gives the same floats as eager.

How. :func:`install` replaces ``unet.forward`` on that one instance with :class:`TracedForward`,
so every caller (the sampling loop, guidance, inpainting, diffusers' own pipelines, the
benchmark's bare loop) runs the same thing. A call takes the traced path only when it is a plain
inference call, ``unet(sample, timestep_tensor, encoder_hidden_states=emb[, return_dict=...])``
with autograd off; anything else (gradients for CLIP guidance through the UNet, extra kwargs,
a Python-number timestep) runs the original eager forward. A graph is traced per input
*signature* (shapes, dtypes, device, timestep rank) the first time it is seen, ~0.6 s plus
~0.3 s of warm-up calls for the toy UNet, and kept, up to :data:`MAX_GRAPHS` signatures.

The graphs are a process resource shared read-only like the model weights; they hold no
request data. Freezing makes the weights graph constants (most share storage with the
parameters, but folding passes may precompute new tensors from them), so code that changes the
weights (fine-tuning, ``load_state_dict``) must call :meth:`TracedForward.clear` after.
``DL_JIT=0`` turns the traced path off (eager everywhere), for comparison; :func:`eager` turns it
off for the calls made inside a ``with`` block in this context only (Python attention processors that
record or edit attention, :mod:`pipelines.attention`, only run on the eager path).
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import os
import threading
import warnings
from typing import Any

import torch

MAX_GRAPHS = 8  # signatures traced per model: CFG batch 2, batch 1 (w = 1), a few eval batches


_EAGER: contextvars.ContextVar[bool] = contextvars.ContextVar("dl_unet_eager", default=False)


def enabled() -> bool:
    """``DL_JIT`` is not ``0`` and no :func:`eager` block is active here: the traced path is on (the default)."""
    return os.environ.get("DL_JIT", "1").strip() != "0" and not _EAGER.get()


@contextlib.contextmanager
def eager():
    """Within this block (this context only: other requests keep the traced graph), UNet calls run eager,
    through the attention processors currently set on the model."""
    token = _EAGER.set(True)
    try:
        yield
    finally:
        _EAGER.reset(token)


class _Plain(torch.nn.Module):
    """``(sample, timestep, encoder_hidden_states) -> sample``: the positional form tracing needs."""

    def __init__(self, unet: torch.nn.Module, eager_forward):
        super().__init__()
        self.unet = unet
        self._eager = eager_forward

    def forward(self, sample, timestep, encoder_hidden_states):
        return self._eager(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]


class TracedForward:
    """Callable that stands in for ``unet.forward``; see the module docstring.

    ``sample`` ``[B, C, H, W]``, ``timestep`` a 0-d or ``[B]`` tensor, ``encoder_hidden_states``
    ``[B, L, D]`` -> the UNet's output ``[B, C_out, H, W]`` (as ``UNet2DConditionOutput`` unless
    ``return_dict=False``), exactly as the eager forward returns it.
    """

    def __init__(self, unet: torch.nn.Module):
        self.unet = unet
        self.eager = type(unet).forward.__get__(unet)  # the class's forward, bound to this instance
        self._graphs: dict[tuple, Any] = {}
        self._lock = threading.Lock()
        self.traced_calls = 0  # how many calls took the traced path (tests read it)

    def __deepcopy__(self, memo):
        """A copy of the UNet gets its own (empty) graph cache, bound to the copy."""
        unet = self.unet
        return TracedForward(memo[id(unet)] if id(unet) in memo else copy.deepcopy(unet, memo))

    def clear(self) -> None:
        """Drop the traced graphs (their constants may predate a weight change); the next calls trace again."""
        with self._lock:
            self._graphs.clear()

    @staticmethod
    def _signature(sample, timestep, emb) -> tuple | None:
        if not (isinstance(sample, torch.Tensor) and isinstance(timestep, torch.Tensor)
                and isinstance(emb, torch.Tensor)) or timestep.dim() > 1:
            return None
        return (tuple(sample.shape), sample.dtype, sample.device.type, tuple(timestep.shape), timestep.dtype,
                tuple(emb.shape), emb.dtype)

    def _graph(self, key: tuple, args: tuple):
        graph = self._graphs.get(key)
        if graph is not None or len(self._graphs) >= MAX_GRAPHS:
            return graph
        with self._lock:  # one trace per signature, even if two threads ask at once
            if key not in self._graphs and len(self._graphs) < MAX_GRAPHS:
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # TracerWarnings about shape asserts, expected
                    plain = _Plain(self.unet, self.eager).eval()  # freeze needs eval mode (a loaded model is)
                    graph = torch.jit.freeze(torch.jit.trace(plain, args, check_trace=False))
                    for _ in range(2):  # the profiling executor specialises on the first calls
                        graph(*args)
                self._graphs[key] = graph
            return self._graphs.get(key)

    def __call__(self, sample, timestep, encoder_hidden_states=None, *args, return_dict: bool = True, **kwargs):
        key = None
        if not args and not kwargs and enabled() and not torch.is_grad_enabled():
            if isinstance(timestep, torch.Tensor) and timestep.dim() == 0 and isinstance(sample, torch.Tensor):
                # as [B] (the UNet broadcasts a 0-d one the same way): a call alone and the same shape stacked with
                # other requests' calls (per-sample timesteps) share one graph, so the first stack traces nothing
                timestep = timestep.expand(sample.shape[0])
            key = self._signature(sample, timestep, encoder_hidden_states)
        graph = self._graph(key, (sample, timestep, encoder_hidden_states)) if key is not None else None
        if graph is None:
            return self.eager(sample, timestep, encoder_hidden_states, *args, return_dict=return_dict, **kwargs)
        self.traced_calls += 1
        out = graph(sample, timestep, encoder_hidden_states)
        if not return_dict:
            return (out,)
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        return UNet2DConditionOutput(sample=out)


def install(unet: torch.nn.Module) -> torch.nn.Module:
    """Give ``unet`` (a ``UNet2DConditionModel``) the traced forward; returns it. Idempotent."""
    if not isinstance(getattr(unet, "forward", None), TracedForward):
        unet.forward = TracedForward(unet)
    return unet
