"""Tiny random models for tests, built from small configs (diffusers' own test practice),
saved to a folder and loaded back through the real loading code (``pipelines.models``).

* :func:`build_tiny_sd` writes a Stable-Diffusion folder (UNet, VAE, CLIP text encoder,
  CLIP tokenizer, DDIM scheduler), loadable by ``StableDiffusionPipeline.from_pretrained``
  and ``pipelines.models.load_latent_hub``. The tokenizer is built offline from open_clip's
  bundled BPE file (the same BPE as OpenAI CLIP).
* :class:`IdentityVAE` lets the stock ``StableDiffusionPipeline`` drive a *pixel-space*
  text-conditional UNet (the toy model): latents = pixels, decode = identity.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import torch

SD_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                    set_alpha_to_one=False, steps_offset=1, num_train_timesteps=1000)


def clip_tokenizer():
    """A ``transformers.CLIPTokenizer`` equal to OpenAI CLIP's, from open_clip's BPE file.

    Vocabulary order follows open_clip's ``SimpleTokenizer``: 256 byte symbols, the same with
    ``</w>``, one token per merge, then the two special tokens (49408 in all).
    """
    import open_clip.tokenizer as oct
    from transformers import CLIPTokenizer

    lines = gzip.open(oct.default_bpe()).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]
    symbols = list(oct.bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={v: i for i, v in enumerate(vocab)}, merges=merges, model_max_length=77)


def build_tiny_sd(folder: str | Path, seed: int = 0, sample_size: int = 16) -> Path:
    """Write a random tiny Stable Diffusion to ``folder`` (latents 4 x s x s, images 2s px)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    torch.manual_seed(seed)  # test fixture only: deterministic random weights
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=sample_size, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=4, attention_head_dim=4)
    vae = AutoencoderKL(block_out_channels=[8, 16], in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        norm_num_groups=4, sample_size=2 * sample_size)
    tok = clip_tokenizer()
    text = CLIPTextModel(CLIPTextConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        vocab_size=len(tok), max_position_embeddings=77))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                   scheduler=DDIMScheduler(**SD_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def identity_vae():
    """A VAE stand-in for pixel models: scaling factor 1, decode = identity (vae_scale_factor 1)."""
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.models.autoencoders.vae import DecoderOutput
    from diffusers.models.modeling_utils import ModelMixin

    class IdentityVAE(ModelMixin, ConfigMixin):
        @register_to_config
        def __init__(self, block_out_channels=(1,), scaling_factor: float = 1.0, latent_channels: int = 3):
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

        def decode(self, z, return_dict=True, generator=None):
            return DecoderOutput(sample=z) if return_dict else (z,)

    return IdentityVAE()
