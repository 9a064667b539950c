"""Models: the registry (bundled and hub, lazy, loaded once), loaders, the tiny CLIP, the traced UNet
and device helpers. ``from pipelines.models import ModelRegistry, DiffusionModel, ...``."""

from pipelines.models.registry import (ASSETS, DEFAULT_CLIP_SPECS, DEFAULT_DIFFUSION_SPECS, SAMPLERS, TOY_CLIP_DIR,
                                       TOY_CLIP_NATURAL_DIR,
                                       TOY_SD_DIR, ClipModel, ClipSpec, DiffusionModel, ModelRegistry, ModelSpec,
                                       ModelUnavailable, load_latent_hub, load_pixel_hub, load_toy_clip,
                                       load_toy_diffusion, spec_for, specs_with_default, toy_clip_config)
from pipelines.models.registry import KIND_LOADERS
from pipelines.models.sd3 import FLOW_SAMPLERS, FlowDiffusionModel, load_spec as _load_sd3_spec
from pipelines.models.digits_model import DigitsDiffusionModel, load_spec as _load_digits_spec

KIND_LOADERS["sd3"] = _load_sd3_spec  # toy-sd3 (SD3 transformer + toy-vae), see pipelines.models.sd3
KIND_LOADERS["digits"] = _load_digits_spec  # the training tab's digits UNets, see pipelines.models.digits_model

__all__ = ["ASSETS", "DEFAULT_CLIP_SPECS", "DEFAULT_DIFFUSION_SPECS", "FLOW_SAMPLERS", "SAMPLERS", "TOY_CLIP_DIR", "TOY_CLIP_NATURAL_DIR", "TOY_SD_DIR",
           "ClipModel", "ClipSpec", "DiffusionModel", "DigitsDiffusionModel", "FlowDiffusionModel", "ModelRegistry", "ModelSpec", "ModelUnavailable",
           "load_latent_hub", "load_pixel_hub", "load_toy_clip", "load_toy_diffusion", "spec_for",
           "specs_with_default", "toy_clip_config"]
