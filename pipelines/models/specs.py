"""The registry's entries: where each bundled or hub model lives (``ModelSpec``, ``ClipSpec``) and the samplers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "models"
TOY_SD_DIR = ASSETS / "toy-sd"
TOY_CLIP_DIR = ASSETS / "toy-clip"
TOY_CLIP_NATURAL_DIR = ASSETS / "toy-clip-natural"  # text tower also tuned on captions as people write them
TOY_CLIP_NATURAL = "toy-clip-natural (bundled)"  # its registry name (the CLIP tab's default: issue 15)
TOY_CLIP_ROBUST = "toy-clip-robust (bundled)"  # toy-clip-natural with an adversarially trained image tower
TOY_SD_NATURAL_DIR = ASSETS / "toy-sd-natural"  # toy-sd via toy-clip-natural, cross-attention tuned on those captions
# The digits (kind "digits", 1-channel, class labels as the condition) open in the viewer and the guidance tab
# only: ``ModelRegistry.diffusion_names(digits=True)`` lists them; SESSION_DIGITS is the model a user trained
# in the "Train your own" tab and sent on (kept per session by ``pipelines.serving.session_models``).
DIGITS_KINDS = ("digits", "session")
SESSION_DIGITS = "digits you trained (this session)"

# Sampler names shown in the UI -> diffusers scheduler class names (and extra config).
SAMPLERS: dict[str, tuple[str, dict]] = {
    "DDPM": ("DDPMScheduler", {}),
    "DDIM": ("DDIMScheduler", {}),
    "DPM-Solver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
}
# kind -> loader(spec, device, toy_clip(folder)) for kinds defined elsewhere (models/__init__.py adds "sd3")
KIND_LOADERS: dict[str, Callable] = {}


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the registry. ``source`` is a local folder or a hub repo id."""

    name: str
    kind: str  # "toy" | "pixel" | "latent"
    source: str
    description: str = ""
    clip_source: str | None = None  # for "toy": the tiny-CLIP folder (text encoder)
    hub: bool = False
    vae_source: str | None = None  # for "sd3": the VAE folder
    captions: str = "template"  # for "toy" and "sd3": the captions it was trained on ("template" | "natural", toyworld/captions.py)


@dataclass(frozen=True)
class ClipSpec:
    name: str
    arch: str  # open_clip architecture name
    pretrained: str  # file path or open_clip pretrained tag
    description: str = ""
    config_path: str | None = None  # custom open_clip config JSON to register
    hub: bool = False
    image_tower: str | None = None  # a tiny CLIP's image tower swapped in (safetensors of ``visual.*``)


DEFAULT_DIFFUSION_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec("toy-sd (bundled, 32 px)", "toy", str(TOY_SD_DIR),
              "Tiny text-to-image UNet trained on the toy world; offline.", str(TOY_CLIP_DIR)),
    ModelSpec("toy-sd, reads English (bundled, 32 px)", "toy", str(TOY_SD_NATURAL_DIR),
              "toy-sd read through toy-clip-natural, with cross-attention layers fine-tuned on captions as "
              "people write them (articles, word order, punctuation); offline.", str(TOY_CLIP_NATURAL_DIR),
              captions="natural"),
    ModelSpec("toy-sd3 (bundled, 64 px, latent)", "sd3", str(ASSETS / "toy-sd3"), "Tiny SD3 (MMDiT, flow "
              "matching) on toy-vae latents; offline.", str(TOY_CLIP_NATURAL_DIR), vae_source=str(ASSETS / "toy-vae"),
              captions="natural"),
    ModelSpec("digits 0-9, class-conditional (bundled, 16 px)", "digits", str(ASSETS / "digits-class-flow"),
              "CS180 part B: a class-conditional UNet on MNIST digits, flow matching; the prompt is a digit."),
    ModelSpec("digits, unconditional (bundled, 16 px)", "digits", str(ASSETS / "digits-time-flow"),
              "CS180 part B: a time-conditioned UNet on MNIST digits, flow matching; no prompt."),
    ModelSpec(SESSION_DIGITS, "session", "", "The digits model trained (or loaded) in the Train your own tab and "
              "sent to the other tabs: it lives in your session only."),
    ModelSpec("google/ddpm-cat-256 (hub)", "pixel", "google/ddpm-cat-256",
              "Unconditional 256 px cat DDPM from the seed notebook; needs network.", hub=True),
    ModelSpec("stable-diffusion-v1-5 (hub)", "latent", "stable-diffusion-v1-5/stable-diffusion-v1-5",
              "Stable Diffusion 1.5, latent 4x64x64; needs network (GPU advised).", hub=True),
    ModelSpec("stable-diffusion-inpainting (hub)", "latent", "stable-diffusion-v1-5/stable-diffusion-inpainting",
              "SD 1.5 inpainting checkpoint; needs network (GPU advised).", hub=True),
)

DEFAULT_CLIP_SPECS: tuple[ClipSpec, ...] = (
    ClipSpec("toy-clip (bundled)", "toy-clip", str(TOY_CLIP_DIR / "open_clip_model.safetensors"),
             "Tiny CLIP trained on the toy world; offline.", str(TOY_CLIP_DIR / "toy-clip.json")),
    ClipSpec(TOY_CLIP_NATURAL, "toy-clip", str(TOY_CLIP_NATURAL_DIR / "open_clip_model.safetensors"),
             "toy-clip with its text tower tuned on captions as people write them (the same image tower); offline.",
             str(TOY_CLIP_NATURAL_DIR / "toy-clip.json")),
    ClipSpec(TOY_CLIP_ROBUST, "toy-clip", str(TOY_CLIP_NATURAL_DIR / "open_clip_model.safetensors"),
             "toy-clip-natural with an adversarially trained (robust) image tower: its gradient changes what the "
             "picture shows instead of fooling it; offline.", str(TOY_CLIP_NATURAL_DIR / "toy-clip.json"),
             image_tower=str(ASSETS / "toy-clip-robust" / "image_tower.safetensors")),
    ClipSpec("ViT-B-32 / openai (hub)", "ViT-B-32", "openai", "OpenAI CLIP ViT-B/32; needs network.", hub=True),
)
