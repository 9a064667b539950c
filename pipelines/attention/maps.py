"""Cross-attention maps, recorded at every step by a diffusers attention processor, and edited.

In a ``UNet2DConditionModel`` every ``Transformer2DModel`` block has a cross-attention layer
(``attn2``): the image positions (queries, one per pixel of that layer's feature map) attend over
the prompt's tokens (keys/values from the text features), with probabilities
``softmax(Q Kᵀ / √d)`` ``[B·heads, h·w, L]``. The column of token j, reshaped to ``h × w``, is where
that token is read: its attention map.

How it hooks in. :func:`session` installs a :class:`DispatchProcessor` on every attention layer with
``unet.set_attn_processor`` for the duration of a run (reference-counted, restored after), and turns
off the traced fast path for this context (:func:`pipelines.models.traced_unet.eager`). The processor
looks up the *current context's* :class:`Session` (a ``contextvars`` variable), so another request
running at the same time on the same shared model gets the original processors' exact computation.
Without a session, or for self-attention when nothing edits it, it calls the original processor.

What is kept (bounded memory). Only the conditional half of a CFG batch (what the prompt does), only
the tokens from the start token to the end token (padding copies the end token's role), per layer and
head, at every recorded step, as float16; layers whose maps are larger than ``max_side`` are skipped
(as DAAM skips SD's 64×64 layers). Bytes: :attr:`Record.nbytes`, at most ``max_bytes`` for the run:
when the first step's maps times the steps would exceed it, the heads are averaged (``heads`` = 1),
and if that is still too much only every k-th step is kept (:meth:`Session.next_step`). toy-sd keeps
all heads of all steps (~150 kB per step for a short prompt); SD 1.5 with a long prompt averages heads.

Joint attention (SD3 / MMDiT). An ``SD3Transformer2DModel`` has no cross-attention: in every block
image and text tokens are concatenated and attend jointly (``JointAttnProcessor2_0``), probabilities
``softmax(Q Kᵀ / √d)`` over ``[N_img + L]`` keys. The block of that matrix where image queries meet
text keys, ``[B·heads, N_img, L]``, is where each text token is read: it is recorded in place of a
cross-attention map (rows sum to less than 1: the rest of each row goes to image keys), on the patch
grid (toy-sd3: 16×16 latents, patch 1, 16×16 tokens), computed beside the original processor as for
cross-attention (:func:`joint_probabilities`); editing it is refused.

Aggregation (DAAM, Tang et al. 2023, ``daam/trace.py``): for each (layer, head), sum the maps over
the chosen steps, upsample bicubically to the model's sample size, clamp at 0, then average over
layers and heads: :func:`aggregate`.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import threading
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

MAX_SIDE = 32  # record layers whose maps are at most 32×32 (all of toy-sd's; SD's 32, 16, 8)
MAX_BYTES = 64_000_000  # a run's maps: beyond it heads are averaged, then steps thinned (Session.next_step)

_SESSION: contextvars.ContextVar["Session | None"] = contextvars.ContextVar("dl_attention_session", default=None)
_INSTALL_LOCK = threading.Lock()


@dataclass
class Record:
    """Recorded cross-attention of one run.

    Attributes:
        maps: ``{layer: {step: tensor [B, heads, T, h, w] float16}}`` (B = prompts, T = kept tokens).
        sides: ``{layer: (h, w)}`` of each recorded layer's map.
        sample_hw: ``(H, W)`` of the model's sample (pixels for toy-sd, latents for SD).
        tokens: T, the kept tokens (start .. end token of the longest prompt).
    """

    sample_hw: tuple[int, int]
    tokens: int
    maps: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)
    sides: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        return list(self.maps)

    @property
    def steps(self) -> list[int]:
        return sorted({s for per in self.maps.values() for s in per})

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for per in self.maps.values() for t in per.values())


class Control:
    """Edits cross-attention (and optionally self-attention) probabilities of the conditional half.

    Subclasses implement :meth:`edit`; ``probs`` is ``[B, heads, h·w, L]`` (the conditional prompts,
    a view into the layer's probabilities) and may be changed in place."""

    edits_self = False

    def edit(self, probs: torch.Tensor, step: int, cross: bool) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class Session:
    """One run's recording/editing state; see the module docstring. ``step`` is advanced by the caller."""

    def __init__(self, batch: int, do_cfg: bool, sample_hw: tuple[int, int], keep_tokens: int,
                 record: bool = True, control: Control | None = None, max_side: int = MAX_SIDE,
                 max_bytes: int = MAX_BYTES):
        self.batch, self.do_cfg, self.record_maps = batch, do_cfg, record
        self.control, self.max_side, self.max_bytes = control, max_side, max_bytes
        self.step = 0
        self.mean_heads, self.stride = False, 1
        self.record = Record(tuple(sample_hw), keep_tokens)

    def edits(self, cross: bool) -> bool:
        return self.control is not None and (cross or self.control.edits_self)

    def wants(self, cross: bool) -> bool:
        return self.edits(cross) or (cross and self.record_maps)

    def next_step(self, num_steps: int) -> None:
        """Advance to the next step; after the first, bound the run's maps by ``max_bytes`` (module docstring)."""
        self.step += 1
        if self.step != 1 or not self.record_maps:
            return
        projected = self.record.nbytes * num_steps
        if projected > self.max_bytes and not self.mean_heads:
            self.mean_heads = True
            for per in self.record.maps.values():
                for s, m in per.items():
                    per[s] = m.float().mean(1, keepdim=True).half()
            projected = self.record.nbytes * num_steps
        if projected > self.max_bytes:
            self.stride = -(-projected // self.max_bytes)  # ceil

    def on_probs(self, name: str, probs: torch.Tensor, heads: int, cross: bool) -> torch.Tensor:
        """``probs`` ``[N·heads, h·w, L]`` (N = 2B with CFG as [uncond, cond]) -> the probabilities to use."""
        n = probs.shape[0] // heads
        view = probs.view(n, heads, *probs.shape[1:])
        cond = view[n - self.batch:] if self.do_cfg else view  # [B, heads, hw, L]
        if self.control is not None:
            self.control.edit(cond, self.step, cross)
        if cross and self.record_maps:
            h, w = _side(probs.shape[1], self.record.sample_hw)
            if max(h, w) <= self.max_side and self.step % self.stride == 0:
                t = min(self.record.tokens, cond.shape[-1])
                m = cond[..., :t].detach().to(torch.float16).permute(0, 1, 3, 2).reshape(
                    cond.shape[0], heads, t, h, w)
                if self.mean_heads:
                    m = m.float().mean(1, keepdim=True).half()
                self.record.maps.setdefault(name, {})[self.step] = m
                self.record.sides[name] = (h, w)
        return probs


def _side(hw: int, sample_hw: tuple[int, int]) -> tuple[int, int]:
    """A layer's map size from its number of positions: the sample downsampled by a power of two."""
    f = round(math.sqrt(sample_hw[0] * sample_hw[1] / hw))
    h, w = math.ceil(sample_hw[0] / f), math.ceil(sample_hw[1] / f)
    if h * w != hw:
        raise ValueError(f"cannot place {hw} attention positions on a {sample_hw} sample")
    return h, w


def is_joint(attn) -> bool:
    """An SD3-style joint attention layer (text projected by ``add_q/k/v_proj`` and concatenated)."""
    return getattr(attn, "add_k_proj", None) is not None


def joint_probabilities(attn, hidden_states, encoder_hidden_states) -> torch.Tensor:
    """The text→image block of ``JointAttnProcessor2_0``'s attention: image tokens ``[B, N, C]`` and text
    tokens ``[B, L, C']`` -> ``softmax(Q Kᵀ / √d)[:, :N, N:]`` over the joint keys, ``[B·heads, N, L]``."""
    b, n = hidden_states.shape[:2]

    def split(x, norm):  # [B, T, heads·d] -> [B, heads, T, d], then the layer's q/k norm if it has one
        x = x.view(b, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)
        return x if norm is None else norm(x)

    q = torch.cat([split(attn.to_q(hidden_states), attn.norm_q),
                   split(attn.add_q_proj(encoder_hidden_states), attn.norm_added_q)], dim=2)
    k = torch.cat([split(attn.to_k(hidden_states), attn.norm_k),
                   split(attn.add_k_proj(encoder_hidden_states), attn.norm_added_k)], dim=2)
    probs = torch.softmax(q[:, :, :n] @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)  # SDPA's scale
    return probs[..., n:].reshape(b * attn.heads, n, -1)


def attend(attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, on_probs=None):
    """diffusers' ``AttnProcessor`` (the explicit softmax form) with a hook on the probabilities."""
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    input_ndim = hidden_states.ndim
    if input_ndim == 4:
        batch_size, channel, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
    batch_size, sequence_length, _ = (hidden_states.shape if encoder_hidden_states is None
                                      else encoder_hidden_states.shape)
    attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    query = attn.to_q(hidden_states)
    if encoder_hidden_states is None:
        encoder_hidden_states = hidden_states
    elif attn.norm_cross:
        encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
    key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
    query, key, value = attn.head_to_batch_dim(query), attn.head_to_batch_dim(key), attn.head_to_batch_dim(value)
    probs = attn.get_attention_scores(query, key, attention_mask)  # softmax(Q Kᵀ · scale), [B·heads, N, L]
    if on_probs is not None:
        probs = on_probs(probs, attn.heads)
    hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
    hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
    if input_ndim == 4:
        hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
    if attn.residual_connection:
        hidden_states = hidden_states + residual
    return hidden_states / attn.rescale_output_factor


def probabilities(attn, hidden_states, encoder_hidden_states, attention_mask=None) -> torch.Tensor:
    """softmax(Q Kᵀ · scale) of ``attn`` on a ``[B, N, C]`` input -> ``[B·heads, N, L]`` (as :func:`attend`)."""
    if hidden_states.ndim != 3 or attn.spatial_norm is not None or attn.group_norm is not None:
        raise ValueError("attention maps need a transformer attention layer on [B, N, C] tokens")
    b, n_ctx = encoder_hidden_states.shape[0], encoder_hidden_states.shape[1]
    attention_mask = attn.prepare_attention_mask(attention_mask, n_ctx, b)
    if attn.norm_cross:
        encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
    query = attn.head_to_batch_dim(attn.to_q(hidden_states))
    key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
    return attn.get_attention_scores(query, key, attention_mask)


class DispatchProcessor:
    """Stands in for a layer's processor during sessions: the current context's :class:`Session`
    sees (and may edit) the probabilities; everything else goes to the ``original`` processor."""

    def __init__(self, name: str, original):
        self.name, self.original = name, original

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        s = _SESSION.get()
        cross = encoder_hidden_states is not None
        joint = cross and is_joint(attn)
        if joint and (s is None or not s.wants(cross)):  # JointAttnProcessor2_0 takes no temb
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        if s is None or not s.wants(cross):
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)

        def hook(probs, heads):
            return s.on_probs(self.name, probs, heads, cross)

        if joint:
            if s.edits(cross):
                raise ValueError("attention control (re-weighting, word swap) is not offered for joint attention "
                                 "(SD3-style transformers): only its maps are recorded; choose toy-sd to edit")
            out = self.original(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
            hook(joint_probabilities(attn, hidden_states, encoder_hidden_states), attn.heads)
            return out

        if s.edits(cross):
            return attend(attn, hidden_states, encoder_hidden_states, attention_mask, temb, on_probs=hook)
        # Recording only: the output is the original processor's, bit for bit (the image cannot change);
        # the probabilities are computed beside it from the same Q and K.
        out = self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        hook(probabilities(attn, hidden_states, encoder_hidden_states, attention_mask), attn.heads)
        return out


def cross_attention_layers(unet) -> list[str]:
    """Names of the layers where image positions read the text: ``Attention`` modules with
    ``is_cross_attention`` (UNets) or joint attention over text and image tokens (SD3, :func:`is_joint`)."""
    from diffusers.models.attention_processor import Attention

    return [n for n, m in unet.named_modules() if isinstance(m, Attention) and (m.is_cross_attention or is_joint(m))]


def check_cross_attention(model) -> None:
    """ValueError, meant for the user, when ``model`` has no text conditioning / cross-attention."""
    if not model.conditional or not cross_attention_layers(model.unet):
        raise ValueError(f"{model.name} has no cross-attention (it is unconditional: no prompt, no tokens), so "
                         "there are no attention maps to show; choose a text-to-image model")


def _install(unet) -> None:
    with _INSTALL_LOCK:
        count = getattr(unet, "_dl_attention_users", 0)
        if count == 0:
            originals = unet.attn_processors
            unet._dl_attention_originals = originals
            unet.set_attn_processor({k: DispatchProcessor(k.removesuffix(".processor"), p) for k, p in originals.items()})
        unet._dl_attention_users = count + 1


def _uninstall(unet) -> None:
    with _INSTALL_LOCK:
        unet._dl_attention_users -= 1
        if unet._dl_attention_users == 0:
            unet.set_attn_processor(dict(unet._dl_attention_originals))
            del unet._dl_attention_originals


@contextlib.contextmanager
def session(model, sess: Session):
    """Record/edit cross-attention for the UNet calls made inside this block, in this context.
    Keep the block free of ``yield``: the session lives in the current context."""
    from pipelines.models import traced_unet

    from pipelines.serving import compute_thread

    check_cross_attention(model)
    _install(model.unet)
    token = _SESSION.set(sess)
    try:
        with traced_unet.eager(), compute_thread.whole_batches():  # the session indexes the whole CFG batch
            yield sess
    finally:
        _SESSION.reset(token)
        _uninstall(model.unet)


# ------------------------------------------------------------------ aggregation


def layer_label(name: str, side: tuple[int, int]) -> str:
    """``down_blocks.1.attentions.0.transformer_blocks.0.attn2`` -> ``down 1.0 (16×16)``."""
    parts = name.split(".")
    if parts[0] == "transformer_blocks":  # SD3: transformer_blocks.3.attn -> block 3 (8×8)
        return f"block {parts[1]} ({side[0]}×{side[1]})"
    where = {"down_blocks": "down", "up_blocks": "up", "mid_block": "mid"}.get(parts[0], parts[0])
    idx = f" {parts[1]}.{parts[3]}" if where != "mid" and len(parts) > 3 else ""
    return f"{where}{idx} ({side[0]}×{side[1]})"


def aggregate(rec: Record, steps=None, layers=None, heads=None, index: int = 0) -> torch.Tensor:
    """DAAM heat maps ``[T, H, W]`` (float32, ≥ 0) at the sample size for prompt ``index``.

    Each (layer, head) map is summed over ``steps`` (default: all), upsampled bicubically to the
    sample size and clamped at 0; the result is their mean over ``layers`` (default all) and
    ``heads`` (default all). Raises ValueError when nothing matches."""
    names = list(rec.maps) if layers is None else [n for n in layers if n in rec.maps]
    total, count = None, 0
    for name in names:
        per = rec.maps[name]
        chosen = [per[s][index] for s in (per if steps is None else steps) if s in per]
        if not chosen:
            continue
        m = torch.stack(chosen).float().sum(0)  # [heads, T, h, w]
        if heads is not None:
            m = m[[h for h in heads if h < m.shape[0]]]
        up = F.interpolate(m, size=rec.sample_hw, mode="bicubic", align_corners=False).clamp_(min=0)
        total = up.sum(0) if total is None else total + up.sum(0)
        count += up.shape[0]
    if total is None:
        raise ValueError("no attention maps recorded for those steps/layers")
    return total / count


MAP_MODES = ("raw", "share", "centred")


def relative(maps: torch.Tensor, end: int, mode: str = "raw") -> torch.Tensor:
    """Aggregated maps ``[T, H, W]`` (token 0 the start token, ``end`` the end token's position) read three ways:

    ``raw``: as :func:`aggregate` gives them; ``share``: DAAM's ``normalize=True`` (``daam/trace.py``), each
    pixel's maps divided by its sum over the prompt's words (positions 1 … end−1; the start token, which
    takes most of the attention, and the end token dropped), so a map says which *word* a pixel reads;
    ``centred``: minus the words' mean map at each pixel (above 0 where the word is read more than the
    average word)."""
    if mode not in MAP_MODES:
        raise ValueError(f"map mode must be one of {MAP_MODES}, got {mode!r}")
    words = maps[1:end]
    if mode == "share":
        return maps / words.sum(0, keepdim=True).clamp(min=1e-12)
    if mode == "centred":
        return maps - words.mean(0, keepdim=True)
    return maps


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """Each map ``[..., H, W]`` scaled to [0, 1] by its own maximum (for display)."""
    peak = maps.flatten(-2).amax(-1)[..., None, None]
    return maps / peak.clamp(min=1e-12)
