"""SD3-style latent models in the registry: an ``SD3Transformer2DModel`` on VAE latents, sampled with
``FlowMatchEulerDiscreteScheduler`` through the one loop (:mod:`pipelines.diffusion.loop`).

What differs from a UNet, and how it fits the loop without a second one:

==========================  =================================================================
SD3 (diffusers)             here
==========================  =================================================================
``encoder_hidden_states``   per-token text features ``[B, L, D]``
``pooled_projections``      the pooled text embedding ``[B, P]``, packed after the tokens as
                            ``ceil(P / D)`` extra rows (zero-padded): the loop's conditioning is
                            one tensor ``[B, L + ceil(P/D), D]``, so its CFG batching
                            ([uncond, cond]) carries both (:func:`pack_text` / :func:`unpack_text`)
``timestep``                1000 σ, broadcast to the batch (``t.expand(B)``, as the pipeline)
prediction                  the flow velocity v = ε − x0; x̂0 = x_t − σ v (``maths.to_eps_x0``)
latents                     z = (E(x) − shift) · scale, decode D(z / scale + shift)
==========================  =================================================================

The text side is toy-clip: its per-token features and its pooled, projected embedding
(:func:`toy_clip_text`), what SD3 takes from its CLIP encoders.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from pipelines.models.registry import ClipModel, DiffusionModel, ModelUnavailable
from pipelines.serving import compute_thread

# Flow models walk the flow ODE; "Euler" (with the model's own shift) is the name the UI already has for that
# integrator. The variants are the same FlowMatchEulerDiscreteScheduler with its σ grid re-spaced by SD3's shift
# (σ' = sσ / (1 + (s − 1)σ), s = 3: more of the steps at high noise) or with stochastic steps (x̂0 = x_t − σ v
# re-noised with a fresh ε to the next σ, the flow counterpart of DDPM's ancestral step).
FLOW_SAMPLERS: dict[str, tuple[str, dict]] = {
    "Euler": ("FlowMatchEulerDiscreteScheduler", {}),
    "Euler, shift 3": ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}),
    "Euler, stochastic": ("FlowMatchEulerDiscreteScheduler", {"stochastic_sampling": True}),
}
LATENT_RGB_SCENES = 128  # toy-world scenes the linear latent preview is fitted on (at load)
LATENT_RGB_SEED = 9_300_000


@torch.no_grad()
def toy_clip_text(clip_model: torch.nn.Module, tokenizer, prompts: list[str],
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts -> (per-token features ``[B, L, 64]``, pooled projected embedding ``[B, 128]``), what
    SD3 takes from its CLIP text encoders (the pooled one unnormalised, as ``text_embeds``)."""
    from pipelines.models.tinyclip import text_token_features

    tokens = tokenizer(list(prompts)).to(device)  # [B, L]
    return text_token_features(clip_model, tokens), clip_model.encode_text(tokens)


def pack_text(tokens: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """``[B, L, D]`` tokens and ``[B, P]`` pooled -> one ``[B, L + ceil(P/D), D]`` tensor (zero-padded)."""
    b, _, d = tokens.shape
    rows = math.ceil(pooled.shape[1] / d)
    padded = torch.nn.functional.pad(pooled, (0, rows * d - pooled.shape[1]))
    return torch.cat([tokens, padded.view(b, rows, d).to(tokens.dtype)], dim=1)


def unpack_text(emb: torch.Tensor, pooled_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pack_text`: ``[B, L + R, D]`` -> (tokens ``[B, L, D]``, pooled ``[B, P]``)."""
    rows = math.ceil(pooled_dim / emb.shape[2])
    return emb[:, :-rows], emb[:, -rows:].flatten(1)[:, :pooled_dim]


def flow_scheduler(name: str, config: dict, sampler: str, overrides: dict):
    """A fresh ``FlowMatchEulerDiscreteScheduler`` (its shift from ``config`` unless the sampler sets one) for one
    request of model ``name``. ε/v samplers (DDIM, DPM-Solver++, ...) are refused: they integrate a VP schedule a
    flow model has not."""
    import diffusers

    if sampler not in FLOW_SAMPLERS:
        raise ValueError(f"{name} is a flow-matching model: its samplers are Euler on the flow ODE "
                         f"(FlowMatchEulerDiscreteScheduler), one of {list(FLOW_SAMPLERS)}; {sampler!r} is for ε/v "
                         "models. Choose Euler.")
    cls_name, extra = FLOW_SAMPLERS[sampler]
    return getattr(diffusers, cls_name).from_config(config, **{**extra, **overrides})


@dataclass
class FlowDiffusionModel(DiffusionModel):
    """A :class:`DiffusionModel` whose ``unet`` is an ``SD3Transformer2DModel`` and whose scheduler is
    flow matching. ``encode_prompt`` returns packed text (:func:`pack_text`); ``encode_text`` the two
    parts; ``pooled_dim`` is the transformer's ``pooled_projection_dim``."""

    pooled_dim: int = 0
    encode_text: object | None = None

    @property
    def samplers(self) -> list[str]:
        return list(FLOW_SAMPLERS)

    def make_scheduler(self, sampler: str = "Euler", **overrides):
        """A fresh ``FlowMatchEulerDiscreteScheduler`` for one request (:func:`flow_scheduler`)."""
        return flow_scheduler(self.name, self.scheduler_config, sampler, overrides)

    def predict(self, x_in: torch.Tensor, t, emb: torch.Tensor | None) -> torch.Tensor:
        """One transformer pass: latents ``[B, C, h, w]``, timestep 1000 σ, packed text ``[B, L+R, D]`` ->
        the velocity ``[B, C, h, w]`` (``StableDiffusion3Pipeline``'s call, ``timestep = t.expand(B)``)."""
        compute_thread.checkpoint()
        if emb is None:
            raise ValueError(f"{self.name} needs text conditioning (the empty prompt is its unconditional one)")
        tokens, pooled = unpack_text(emb, self.pooled_dim)
        timestep = torch.as_tensor(t, device=x_in.device).expand(x_in.shape[0])
        return self.unet(hidden_states=x_in, timestep=timestep, encoder_hidden_states=tokens,
                         pooled_projections=pooled, return_dict=False)[0]


def from_parts(transformer, vae, scheduler_config: dict, name: str = "sd3", device: torch.device | str = "cpu",
               clip: ClipModel | None = None, fit_preview: bool = False,
               captions: str = "template") -> FlowDiffusionModel:
    """A :class:`FlowDiffusionModel` from loaded parts (frozen, eval). ``clip``: toy-clip as the text
    encoder (None: give ``prompt_embeds`` packed with :func:`pack_text`). ``fit_preview``: fit the linear
    latent -> RGB preview on toy-world scenes (:func:`fit_toy_latent_rgb`). ``captions``: what it was trained
    on, for the tokens view's vocabulary (as :class:`DiffusionModel`)."""
    device = torch.device(device)
    encode_prompt = encode_pooled = encode_text = tokenizer = None
    if clip is not None:
        def encode_text(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            return toy_clip_text(clip.model, clip.tokenizer, prompts, device)

        def encode_prompt(prompts: list[str]) -> torch.Tensor:
            return pack_text(*encode_text(prompts))

        def encode_pooled(prompts: list[str]) -> torch.Tensor:
            return encode_text(prompts)[1]

        tokenizer = clip.tokenizer
    model = FlowDiffusionModel(
        name, "sd3", transformer, dict(scheduler_config), device, encode_prompt, vae=vae,
        latent_scale=float(vae.config.scaling_factor), latent_shift=float(vae.config.shift_factor or 0.0),
        tokenizer=tokenizer, encode_pooled=encode_pooled, pooled_dim=int(transformer.config.pooled_projection_dim),
        encode_text=encode_text, captions=captions)
    if fit_preview:
        model.latent_rgb = fit_toy_latent_rgb(model)
    return model


@torch.no_grad()
def fit_toy_latent_rgb(model: DiffusionModel, n: int = LATENT_RGB_SCENES, seed: int = LATENT_RGB_SEED) -> torch.Tensor:
    """The cheap preview's affine map ``[C + 1, 3]`` fitted by least squares on ``n`` fresh toy-world
    scenes at the model's size (:func:`pipelines.diffusion.previews.fit_latent_rgb`)."""
    from pipelines.diffusion.previews import fit_latent_rgb
    from pipelines.toyworld.world import make_batch

    x, _ = make_batch(n, seed=seed, size=model.image_size[0], allow_held_out=True)
    return fit_latent_rgb(model.encode(x.to(model.device)).float().cpu(), x)


def load_toy_sd3(folder: str | Path, vae_folder: str | Path, device: torch.device, name: str = "toy-sd3",
                 clip: ClipModel | None = None, captions: str = "template") -> FlowDiffusionModel:
    """``folder/transformer`` and ``folder/scheduler`` (``from_pretrained``), the VAE in ``vae_folder`` and
    toy-clip (``clip``, already loaded) as the text encoder; the latent preview fitted once here."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel

    folder, vae_folder = Path(folder), Path(vae_folder)
    for need in (folder / "transformer" / "config.json", vae_folder / "config.json"):
        if not need.exists():
            raise ModelUnavailable(f"{need} not found; train toy-sd3 with `python -m pipelines.toyworld.train_sd3` "
                                   "(and toy-vae with `python -m pipelines.toyworld.train_vae`)")
    if clip is None:
        raise ValueError("load_toy_sd3 needs the loaded toy-clip (its text encoder)")
    transformer = SD3Transformer2DModel.from_pretrained(folder / "transformer").requires_grad_(False).eval()
    vae = AutoencoderKL.from_pretrained(vae_folder).requires_grad_(False).eval()
    sched_cfg = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    return from_parts(transformer.to(device), vae.to(device), sched_cfg, name, device, clip, fit_preview=True,
                      captions=captions)


def load_spec(spec, device: torch.device, toy_clip) -> FlowDiffusionModel:
    """The registry's loader for kind ``sd3``: ``toy_clip(folder)`` gives the (shared, cached) toy-clip."""
    return load_toy_sd3(spec.source, spec.vae_source, device, spec.name, clip=toy_clip(spec.clip_source),
                        captions=spec.captions)
