"""Architecture and noise schedule of the bundled text-conditional UNet (``toy-sd``).

Chosen by measured cost on 2 CPU cores (see ``assets/models/toy-sd/MODEL_CARD.md``):
32x32 RGB in pixel space, three resolutions (32, 16, 8), cross-attention on the tiny
CLIP's 64-d token features at 16x16 and 8x8 only (attention at 32x32 costs 4x more and
adds little for flat shapes).
"""

from __future__ import annotations

from pathlib import Path

TEXT_DIM = 64  # width of the tiny CLIP text tower (toy-clip.json text_cfg.width)
CONTEXT_LENGTH = 16  # tokens per prompt (toy-clip.json text_cfg.context_length)


def toy_unet_config(
    sample_size: int = 32,
    block_out_channels: tuple[int, ...] = (32, 64, 96),
    layers_per_block: int = 1,
    cross_attention_dim: int = TEXT_DIM,
    norm_num_groups: int = 16,
) -> dict:
    """Keyword arguments for ``diffusers.UNet2DConditionModel`` (tests pass tiny values)."""
    return dict(
        sample_size=sample_size,
        in_channels=3,
        out_channels=3,
        layers_per_block=layers_per_block,
        block_out_channels=tuple(block_out_channels),
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(block_out_channels) - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (len(block_out_channels) - 1) + ("UpBlock2D",),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=norm_num_groups,
    )


# The cosine schedule is cut at t = 959: the model is trained and sampled on t = 0..959.
# 960 (not 951): DDIM's last step jumps to ᾱ = 1 only when round(T/N) == T // N; 960 is a
# multiple of N = 2, 4, 5, 8, 10, 12, 15, 16, 20, 24, 30, 32, 40, 48 and 960/25, 960/50 round down.
#
# Zero terminal SNR (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are
# Flawed", Algorithm 1): the cut cosine schedule ends at ᾱ_959 = 0.0039, so a training x_959 still
# holds 0.0625·x0. Per pixel that is nothing, but the image's mean colour is the average of 1024
# pixels: its SNR is 0.0039 · 1024 ≈ 4. The first (epsilon-prediction) toy-sd learnt to read the
# background from it, while sampling starts from pure noise, whose mean is random: backgrounds
# came out olive, brown or blue whatever the prompt said. Measured: with the leak that matches
# the prompted background put into x_T, the same weights drew clean white, black and grey
# backgrounds. So sqrt(ᾱ_t) is shifted and rescaled to end at ~0 (ᾱ_959 = TERMINAL_ALPHA_BAR:
# mean-colour SNR 0.001), and the model predicts v = sqrt(ᾱ)·ε - sqrt(1-ᾱ)·x0 (Salimans & Ho
# 2022), which stays well defined at ᾱ ≈ 0 where epsilon-prediction cannot recover x0.
COSINE_FULL_T = 1000
SAMPLE_T = 960
# Not exactly 0: sqrt(ᾱ_T) = 1e-3 keeps the ε <-> v conversions (a division by sqrt(ᾱ)) finite,
# and every sampler (LMS has no ``rescale_betas_zero_snr`` flag) reads the same betas.
TERMINAL_ALPHA_BAR = 1e-6


def toy_betas() -> list[float]:
    """The ``SAMPLE_T`` betas toy-sd trains and samples on (float64 values, ``[960]``).

    The first 960 of the 1000-step cosine schedule (``squaredcos_cap_v2``, Nichol & Dhariwal
    2021, eq. 17), rescaled to zero terminal SNR with diffusers' ``rescale_zero_terminal_snr``
    (Lin et al. 2024, Algorithm 1: sqrt(ᾱ_t) <- (sqrt(ᾱ_t) - sqrt(ᾱ_T)) · sqrt(ᾱ_0) /
    (sqrt(ᾱ_0) - sqrt(ᾱ_T))), then the last beta set so that ᾱ_959 = ``TERMINAL_ALPHA_BAR``.
    """
    import torch
    from diffusers import DDPMScheduler
    from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr

    full = DDPMScheduler(num_train_timesteps=COSINE_FULL_T, beta_schedule="squaredcos_cap_v2")
    betas = rescale_zero_terminal_snr(full.betas[:SAMPLE_T].double())
    alpha_bar_prev = torch.cumprod(1.0 - betas[:-1], dim=0)[-1]
    betas[-1] = 1.0 - TERMINAL_ALPHA_BAR / alpha_bar_prev  # ᾱ_T = ᾱ_{T-1} (1 - β_T)
    return [float(f"{b:.12g}") for b in betas.tolist()]


def toy_scheduler_config() -> dict:
    """The noise schedule the toy UNet trains and samples on (``scheduler/scheduler_config.json``).

    Cosine, cut at t = 959 and rescaled to zero terminal SNR (see ``toy_betas``), stored as
    ``trained_betas``; v-prediction. Cosine keeps signal longer than the linear schedule, which
    matters at 32 px where the linear one destroys the image early. ``clip_sample`` is off:
    clamping x̂0 to [-1, 1] at every step measurably washed DDIM samples out towards grey.
    """
    return dict(
        _class_name="DDPMScheduler",
        num_train_timesteps=SAMPLE_T,
        beta_schedule="squaredcos_cap_v2",
        trained_betas=toy_betas(),
        prediction_type="v_prediction",
        clip_sample=False,
        timestep_spacing="trailing",
    )


def build_random_toy_sd(folder: str | Path, clip_folder: str | Path | None = None, tiny: bool = True,
                        seed: int = 0) -> Path:
    """Write a randomly initialised toy-sd folder (UNet + scheduler) for tests.

    ``tiny`` uses a very small UNet (channels 32/32, one attention level). The text
    encoder is the tiny CLIP in ``clip_folder`` (random weights written there if empty).
    Returns ``folder``.
    """
    import json

    import open_clip
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from pipelines.models.tinyclip import CONFIG_PATH, register

    folder = Path(folder)
    torch.manual_seed(seed)  # test fixture only: deterministic random weights
    cfg = toy_unet_config(block_out_channels=(32, 32), norm_num_groups=8) if tiny else toy_unet_config()
    UNet2DConditionModel(**cfg).save_pretrained(folder / "unet")
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(toy_scheduler_config(), indent=2))
    if clip_folder is not None:
        clip_folder = Path(clip_folder)
        clip_folder.mkdir(parents=True, exist_ok=True)
        if not (clip_folder / "open_clip_model.safetensors").exists():
            (clip_folder / CONFIG_PATH.name).write_text(CONFIG_PATH.read_text())
            model, _, _ = open_clip.create_model_and_transforms(register())
            save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                      clip_folder / "open_clip_model.safetensors")
    return folder
