"""The model registry: bundled toy models and hub models, loaded lazily, once, and cached.

Models are shared read-only across users (``requires_grad_(False)``, ``eval()``); every request builds
its own scheduler with :meth:`DiffusionModel.make_scheduler` and its own ``torch.Generator``.

Kinds of diffusion model:

=============  ==========================================  =========================
kind           what                                         conditioning
=============  ==========================================  =========================
``toy``        bundled pixel-space UNet2DConditionModel     tiny-CLIP text tokens
``pixel``      pixel-space ``UNet2DModel`` (ddpm-cat-256)   none (unconditional)
``latent``     Stable Diffusion (VAE + UNet + CLIP text)    CLIP text tokens
``sd3``        toy-sd3: toy-vae + SD3 transformer (flow)    tiny-CLIP tokens + pooled
=============  ==========================================  =========================

Hub models need a network; when it is missing, :meth:`ModelRegistry.diffusion` raises ``ModelUnavailable``
(a ``ValueError``) with a clear message, and the bundled models keep working.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from pipelines.models.specs import (ASSETS, DEFAULT_CLIP_SPECS, DEFAULT_DIFFUSION_SPECS, DIGITS_KINDS,  # noqa: F401
                                    KIND_LOADERS, SAMPLERS, SESSION_DIGITS, TOY_CLIP_DIR, TOY_CLIP_NATURAL_DIR,
                                    TOY_SD_DIR, ClipSpec, ModelSpec)
from pipelines.serving import compute_thread


class ModelUnavailable(ValueError):
    """A model could not be loaded (offline, missing weights, no access)."""


@dataclass
class ClipModel:
    """A loaded open_clip model with helpers on ``[B, 3, H, W]`` images in [-1, 1]."""

    name: str
    model: torch.nn.Module
    tokenizer: Callable
    image_size: int
    device: torch.device

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in [-1, 1] -> unit embeddings ``[B, D]`` (differentiable)."""
        from pipelines.models.tinyclip import normalize_for_clip

        feats = self.model.encode_image(normalize_for_clip(x.to(self.device), self.image_size))
        return torch.nn.functional.normalize(feats, dim=-1)

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> unit embeddings ``[B, D]``."""
        tokens = self.tokenizer(list(prompts)).to(self.device)
        return torch.nn.functional.normalize(self.model.encode_text(tokens), dim=-1)


@dataclass
class DiffusionModel:
    """A loaded diffusion model: denoiser, scheduler config, optional text encoder and VAE.

    ``encode_prompt(list[str]) -> [B, L, D]`` token features for cross-attention (None for
    unconditional models). For latent models ``vae`` maps latents ``[B, 4, h, w]`` to images
    ``[B, 3, 8h, 8w]`` in [-1, 1]; model space is ``(latents - latent_shift) * latent_scale``.
    ``latent_rgb`` ``[C, 3]`` (or ``[C + 1, 3]``, last row a bias) is an optional latent -> RGB preview map.
    ``tokenizer`` is the text side's tokenizer (open_clip's ``SimpleTokenizer`` or transformers'
    ``CLIPTokenizer``) and ``encode_pooled(list[str]) -> [B, D']`` the pooled text embedding, for the
    "Inside the model" views (None for unconditional models). ``encode_weighted(list[str], [B, L]) -> [B, L, D]``
    is ``encode_prompt`` with each key position's attention from later tokens in the causal text encoder
    scaled (:func:`pipelines.models.tinyclip.weighted_causal_mask`; None where the encoder does not offer it).
    """

    name: str
    kind: str
    unet: torch.nn.Module
    scheduler_config: dict
    device: torch.device
    encode_prompt: Callable[[list[str]], torch.Tensor] | None = None
    vae: torch.nn.Module | None = None
    latent_scale: float = 1.0
    latent_shift: float = 0.0
    latent_rgb: torch.Tensor | None = None
    tokenizer: object | None = None
    encode_pooled: Callable[[list[str]], torch.Tensor] | None = None
    encode_weighted: Callable[[list[str], torch.Tensor], torch.Tensor] | None = None
    captions: str = "template"  # bundled toy models: the captions it was trained on (its vocabulary)

    @property
    def conditional(self) -> bool:
        return self.encode_prompt is not None

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """``(C, h, w)`` of what the denoiser works on (pixels or latents)."""
        cfg = self.unet.config
        size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
        return (cfg.in_channels if self.kind != "latent" else 4, size, size)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` in pixels of what the model generates (8x the latent for SD)."""
        _, h, w = self.sample_shape
        if self.vae is None:
            return (h, w)
        f = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return (h * f, w * f)

    @property
    def samplers(self) -> list[str]:
        """The sampler names this model takes (flow models override it: :data:`pipelines.models.sd3.FLOW_SAMPLERS`)."""
        return list(SAMPLERS)

    def make_scheduler(self, sampler: str = "DDIM", **overrides):
        """A fresh scheduler instance for one request (diffusers schedulers hold state)."""
        import diffusers

        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {list(SAMPLERS)}")
        cls_name, extra = SAMPLERS[sampler]
        cls = getattr(diffusers, cls_name)
        return cls.from_config(self.scheduler_config, **{**extra, **overrides})

    @staticmethod
    def takes_eta(sampler: str) -> bool:
        """Whether ``sampler``'s step has DDIM's η (read from the scheduler class, not a list)."""
        import inspect

        import diffusers

        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {list(SAMPLERS)}")
        return "eta" in inspect.signature(getattr(diffusers, SAMPLERS[sampler][0]).step).parameters

    def prediction_type(self, scheduler) -> str:
        """What the denoiser outputs under ``scheduler``: its ``prediction_type``, or ``flow`` (u = ε − x0)."""
        from pipelines.diffusion import maths

        return "flow" if maths.space(scheduler) == "flow" else scheduler.config.get("prediction_type", "epsilon")

    def predict(self, x_in: torch.Tensor, t, emb: torch.Tensor | None) -> torch.Tensor:
        """One denoiser pass: input ``[B, C, h, w]``, timestep, text features ``[B, L, D]`` -> output.
        Other requests get a turn before it and between chunks of ``compute_thread.micro_batch()`` images."""
        m = compute_thread.micro_batch()  # an oversize call (the trade-off's 16 images) runs in chunks
        chunks = [(x_in[i:i + m], t[i:i + m] if torch.is_tensor(t) and t.dim() == 1 else t,
                   None if emb is None else emb[i:i + m]) for i in range(0, x_in.shape[0], m)]
        outs = [self._unet(*args) for args in chunks]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _unet(self, x_in: torch.Tensor, t, emb: torch.Tensor | None) -> torch.Tensor:
        """Other requests' turn first. A plain no-grad text-conditioned call (the traced path) may be stacked
        with other requests' calls to this UNet (``compute_thread.batched``); the rest run alone."""
        from pipelines.models import traced_unet

        if (emb is not None and torch.is_tensor(t) and t.dim() <= 1 and not torch.is_grad_enabled()
                and isinstance(self.unet.forward, traced_unet.TracedForward) and traced_unet.enabled()):
            return compute_thread.batched(("unet", id(self.unet)), self._forward, x_in, t, emb)
        compute_thread.checkpoint()
        return self._forward(x_in, t, emb)

    def _forward(self, x_in: torch.Tensor, t, emb: torch.Tensor | None) -> torch.Tensor:
        kw = {} if emb is None else {"encoder_hidden_states": emb}
        return self.unet(x_in, t, **kw, return_dict=False)[0]

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Image ``[B, 3, H, W]`` in [-1, 1] -> model space (the VAE latent mode, shifted and scaled)."""
        if self.vae is None:
            return image.to(self.device, self.unet.dtype)
        lat = self.vae.encode(image.to(self.device, self.vae.dtype)).latent_dist.mode()
        return (lat - self.latent_shift) * self.latent_scale

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Model space -> image ``[B, 3, H, W]`` in [-1, 1] (identity for pixel models)."""
        if self.vae is None:
            return x
        return self.vae.decode(x / self.latent_scale + self.latent_shift).sample.clamp(-1, 1)


def _freeze(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    module.requires_grad_(False)
    return module.eval().to(device)


def _hub_error(source: str, err: Exception) -> ModelUnavailable:
    return ModelUnavailable(
        f"Could not load '{source}' from the Hugging Face Hub ({type(err).__name__}). "
        "This model needs a network connection (and for some, an accepted licence and a "
        "token). Offline, use the bundled toy models, which work without a network."
    )


def load_toy_clip(pretrained: str | Path, config_path: str | Path, device: torch.device) -> ClipModel:
    """Load the bundled tiny CLIP through open_clip's ordinary factory."""
    import open_clip

    from pipelines.models.tinyclip import register

    arch = register(Path(config_path))
    if not Path(pretrained).exists():
        raise ModelUnavailable(f"tiny-CLIP weights not found at {pretrained}; train them with "
                               "`python -m pipelines.toyworld.train_clip`")
    model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=str(pretrained))
    return _clip_model(arch, _freeze(model, device), open_clip.get_tokenizer(arch), device)


def with_image_tower(clip: ClipModel, tower: str | Path) -> ClipModel:
    """A copy of a tiny CLIP with the image tower stored in ``tower`` (``visual.*`` weights, safetensors);
    the text tower is shared in meaning, not in memory (the copy is independent)."""
    import copy

    from pipelines.models.tinyclip import load_image_tower

    if not Path(tower).exists():
        raise ModelUnavailable(f"image tower not found at {tower}; train it with "
                               "`python -m pipelines.toyworld.train_robust_clip`")
    model = copy.deepcopy(clip.model)
    load_image_tower(model, tower)
    return ClipModel(clip.name, _freeze(model, clip.device), clip.tokenizer, clip.image_size, clip.device)


def toy_clip_config(folder: str | Path) -> Path:
    """The open_clip config JSON in a tiny-CLIP folder (the one JSON that is not training state)."""
    return next(p for p in sorted(Path(folder).glob("*.json")) if p.stem != "train_state")


def load_toy_diffusion(folder: str | Path, clip_folder: str | Path, device: torch.device,
                       name: str = "toy-sd", clip: ClipModel | None = None,
                       captions: str = "template") -> DiffusionModel:
    """Load a bundled text-conditional pixel model: ``folder/unet``, ``folder/scheduler``
    and the tiny CLIP in ``clip_folder`` as the (frozen) text encoder (``clip``: already loaded).
    ``captions``: what it was trained on ("template" or "natural"), for the tokens view's vocabulary."""
    from diffusers import UNet2DConditionModel

    from pipelines.models import traced_unet
    from pipelines.models.tinyclip import text_token_features

    folder, clip_folder = Path(folder), Path(clip_folder)
    if not (folder / "unet" / "config.json").exists():
        raise ModelUnavailable(f"toy diffusion model not found in {folder}; train it with "
                               "`python -m pipelines.toyworld.train_unet`")
    unet = _freeze(UNet2DConditionModel.from_pretrained(folder / "unet"), device)
    unet = unet.to(memory_format=torch.channels_last)  # NHWC convolutions, as in training (faster on CPU)
    traced_unet.install(unet)  # plain inference calls run a traced, frozen graph (same floats, less Python)
    sched_cfg = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    if clip is None:
        clip = load_toy_clip(clip_folder / "open_clip_model.safetensors", toy_clip_config(clip_folder), device)

    @torch.no_grad()
    def encode_prompt(prompts: list[str], key_weights: torch.Tensor | None = None) -> torch.Tensor:
        tokens = clip.tokenizer(list(prompts)).to(device)  # [B, L]
        return text_token_features(clip.model, tokens, key_weights)  # [B, L, D]

    @torch.no_grad()
    def encode_pooled(prompts: list[str]) -> torch.Tensor:
        return clip.model.encode_text(clip.tokenizer(list(prompts)).to(device))  # [B, embed_dim]

    return DiffusionModel(name, "toy", unet, sched_cfg, device, encode_prompt, tokenizer=clip.tokenizer,
                          encode_pooled=encode_pooled, encode_weighted=encode_prompt, captions=captions)


def load_pixel_hub(source: str, device: torch.device, name: str) -> DiffusionModel:
    """An unconditional ``UNet2DModel`` repo laid out like a DDPMPipeline (unet/, scheduler/)."""
    from diffusers import DDPMPipeline

    from pipelines.models.accel import model_dtype, use_sdpa

    try:
        pipe = DDPMPipeline.from_pretrained(source, dtype=model_dtype(device))
    except Exception as err:  # noqa: BLE001 - any hub failure becomes a clear message
        raise _hub_error(source, err) from err
    unet = use_sdpa(pipe.unet) if device.type == "cuda" else pipe.unet
    return DiffusionModel(name, "pixel", _freeze(unet, device), dict(pipe.scheduler.config), device)


def load_latent_hub(source: str, device: torch.device, name: str) -> DiffusionModel:
    """A Stable Diffusion repo (or a local folder in the same layout)."""
    from diffusers import StableDiffusionPipeline

    from pipelines.models.accel import model_dtype, use_sdpa

    dtype = model_dtype(device)  # bf16/fp16 on CUDA, fp32 on CPU
    try:
        pipe = StableDiffusionPipeline.from_pretrained(source, dtype=dtype, safety_checker=None,
                                                       requires_safety_checker=False)
    except Exception as err:  # noqa: BLE001
        raise _hub_error(source, err) from err
    text_encoder = _freeze(pipe.text_encoder, device)
    tokenizer = pipe.tokenizer
    if device.type == "cuda":  # SDPA (flash / memory-efficient kernels) in every attention layer
        use_sdpa(pipe.unet), use_sdpa(pipe.vae)

    @torch.no_grad()
    def encode_prompt(prompts: list[str]) -> torch.Tensor:
        ids = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids.to(device)
        return text_encoder(ids)[0]  # [B, 77, 768]

    @torch.no_grad()
    def encode_pooled(prompts: list[str]) -> torch.Tensor:
        ids = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids.to(device)
        return text_encoder(ids)[1]  # pooler output at the end token, [B, 768]

    return DiffusionModel(name, "latent", _freeze(pipe.unet, device), dict(pipe.scheduler.config), device,
                          encode_prompt, vae=_freeze(pipe.vae, device),
                          latent_scale=float(pipe.vae.config.scaling_factor), tokenizer=tokenizer,
                          encode_pooled=encode_pooled)


def spec_for(choice: str, specs: tuple[ModelSpec, ...] = DEFAULT_DIFFUSION_SPECS) -> ModelSpec:
    """A model chosen by CLI flag / ``DL_MODEL``: a registry name, a known hub repo id, or a local
    folder laid out like a diffusers pipeline (``model_index.json``: DDPMPipeline -> pixel,
    StableDiffusion*Pipeline -> latent). Raises ValueError with the choices otherwise."""
    for s in specs:
        if choice in (s.name, s.source):
            return s
    folder = Path(choice).expanduser()
    index = folder / "model_index.json"
    if index.is_file():
        cls = json.loads(index.read_text()).get("_class_name", "")
        kind = "pixel" if cls in {"DDPMPipeline", "DDIMPipeline"} else "latent" if "StableDiffusion" in cls else None
        if kind is None:
            raise ValueError(f"{folder}: unsupported pipeline class {cls!r} (DDPMPipeline or StableDiffusionPipeline)")
        return ModelSpec(f"{folder.name} (local)", kind, str(folder.resolve()), f"local {cls} folder")
    raise ValueError(f"unknown model {choice!r}: use one of {[s.name for s in specs]}, their hub ids, "
                     "or a local diffusers pipeline folder")


def specs_with_default(choice: str | None,
                       specs: tuple[ModelSpec, ...] = DEFAULT_DIFFUSION_SPECS) -> tuple[ModelSpec, ...]:
    """``specs`` with ``choice`` (see :func:`spec_for`) moved or added first: it becomes every
    dropdown's default; the bundled models stay in the list."""
    if not choice:
        return specs
    first = spec_for(choice, specs)
    return (first, *[s for s in specs if s.name != first.name])


class ModelRegistry:
    """Names -> lazily loaded, cached, shared read-only models. Thread-safe."""

    def __init__(self, device: torch.device | str = "cpu", diffusion_specs: tuple[ModelSpec, ...] = DEFAULT_DIFFUSION_SPECS,
                 clip_specs: tuple[ClipSpec, ...] = DEFAULT_CLIP_SPECS):
        self.device = torch.device(device)
        self._diffusion_specs = {s.name: s for s in diffusion_specs}
        self._clip_specs = {s.name: s for s in clip_specs}
        self._cache: dict[str, object] = {}
        self._lock = threading.RLock()  # re-entrant: a toy diffusion model loads its CLIP through clip()

    def diffusion_names(self, kind: str | None = None, digits: bool = False) -> list[str]:
        """Names of ``kind`` (None: all); the digits (``DIGITS_KINDS``) only when asked for by ``kind`` or ``digits``."""
        return [n for n, s in self._diffusion_specs.items()
                if (s.kind == kind if kind is not None else digits or s.kind not in DIGITS_KINDS)]

    def clip_names(self) -> list[str]:
        return list(self._clip_specs)

    @property
    def default_diffusion(self) -> str:
        return next(iter(self._diffusion_specs))

    @property
    def default_clip(self) -> str:
        return next(iter(self._clip_specs))

    def spec(self, name: str) -> ModelSpec:
        if name not in self._diffusion_specs:
            raise ValueError(f"unknown model {name!r}; choose one of {list(self._diffusion_specs)}")
        return self._diffusion_specs[name]

    def diffusion(self, name: str | None = None) -> DiffusionModel:
        """The loaded model ``name`` (default: the first, bundled one)."""
        name = name or self.default_diffusion
        spec = self.spec(name)
        key = "diffusion:" + name
        with self._lock:  # one load per model, even when many requests arrive at once
            if key not in self._cache:
                if spec.kind == "toy":
                    self._cache[key] = load_toy_diffusion(spec.source, spec.clip_source, self.device, name,
                                                          clip=self._toy_clip(spec.clip_source),
                                                          captions=spec.captions)
                elif spec.kind == "pixel":
                    self._cache[key] = load_pixel_hub(spec.source, self.device, name)
                elif spec.kind == "latent":
                    self._cache[key] = load_latent_hub(spec.source, self.device, name)
                elif spec.kind == "session":
                    raise ValueError(f"{name!r} lives in your session: this view cannot take it (open it in the "
                                     "viewer's 'Watch it denoise' or the Guidance playground)")
                elif spec.kind in KIND_LOADERS:
                    self._cache[key] = KIND_LOADERS[spec.kind](spec, self.device, self._toy_clip)
                else:
                    raise ValueError(f"unknown model kind {spec.kind!r}")
            return self._cache[key]  # type: ignore[return-value]

    def _toy_clip(self, folder: str) -> ClipModel:
        """The tiny CLIP in ``folder``, loaded once whether a tab asks for it or a toy model needs it."""
        key = "toyclip:" + str(Path(folder).resolve())
        with self._lock:
            if key not in self._cache:
                self._cache[key] = load_toy_clip(Path(folder) / "open_clip_model.safetensors",
                                                 toy_clip_config(folder), self.device)
            return self._cache[key]  # type: ignore[return-value]

    def clip(self, name: str | None = None) -> ClipModel:
        """The loaded open_clip model ``name`` (default: the bundled tiny CLIP)."""
        name = name or self.default_clip
        if name not in self._clip_specs:
            raise ValueError(f"unknown CLIP model {name!r}; choose one of {list(self._clip_specs)}")
        spec = self._clip_specs[name]
        key = "clip:" + name
        with self._lock:
            if key not in self._cache:
                if spec.config_path:
                    clip = self._toy_clip(str(Path(spec.pretrained).parent))
                    self._cache[key] = with_image_tower(clip, spec.image_tower) if spec.image_tower else clip
                else:
                    self._cache[key] = _load_hub_clip(spec, self.device)
            return self._cache[key]  # type: ignore[return-value]


    def noisy_clip(self):
        """toy-clip-noisy, the noise-aware image tower (``toyworld/noisy_clip.py``), loaded once."""
        from pipelines.toyworld import noisy_clip
        with self._lock:
            if "noisyclip" not in self._cache:
                self._cache["noisyclip"] = noisy_clip.load(device=self.device)
            return self._cache["noisyclip"]


def _load_hub_clip(spec: ClipSpec, device: torch.device) -> ClipModel:
    import open_clip

    try:
        model, _, _ = open_clip.create_model_and_transforms(spec.arch, pretrained=spec.pretrained)
    except Exception as err:  # noqa: BLE001
        raise _hub_error(f"{spec.arch}/{spec.pretrained}", err) from err
    return _clip_model(spec.name, _freeze(model, device), open_clip.get_tokenizer(spec.arch), device)


def _clip_model(name: str, model: torch.nn.Module, tokenizer, device: torch.device) -> ClipModel:
    size = model.visual.image_size  # an int or (H, W)
    return ClipModel(name, model, tokenizer, int(size[0] if isinstance(size, (tuple, list)) else size), device)
