"""toy-vae and toy-sd3: the latent normalisation, the flow-matching target and the sampler, each
checked against diffusers' own code (StableDiffusion3Pipeline, FlowMatchEulerDiscreteScheduler),
with tiny models built from configs (nothing downloaded, no bundled weights needed)."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

from pipelines.toyworld.toy_sd3 import flow_match_pair, sample, shift_sigmas, toy_transformer_config
from pipelines.toyworld.toy_vae import decode_latents, encode_latents, psnr, ssim, toy_vae_config
from pipelines.toyworld.train_vae import vae_loss
from pipelines.toyworld.world import make_batch


def tiny_vae(scale: float = 0.7, shift: float = 0.3) -> AutoencoderKL:
    torch.manual_seed(0)
    vae = AutoencoderKL(**toy_vae_config(block_out_channels=(8, 16, 16), norm_num_groups=4)).eval()
    vae.register_to_config(scaling_factor=scale, shift_factor=shift)
    return vae


def tiny_transformer() -> SD3Transformer2DModel:
    torch.manual_seed(0)
    return SD3Transformer2DModel(**toy_transformer_config(num_layers=2, width=32, heads=2)).eval()


def test_vae_round_trip_through_from_pretrained_keeps_scale_and_shift(tmp_path):
    """A saved toy-vae loads with AutoencoderKL.from_pretrained, 64 px -> 16x16x4 latents -> 64 px,
    and the reloaded model gives the same latents and images, with scale and shift from its config."""
    vae = tiny_vae()
    vae.save_pretrained(tmp_path)
    loaded = AutoencoderKL.from_pretrained(tmp_path).eval()
    assert (loaded.config.scaling_factor, loaded.config.shift_factor) == (0.7, 0.3)
    x, _ = make_batch(2, seed=3, size=64)
    with torch.no_grad():
        z = encode_latents(loaded, x, sample=False)
        assert z.shape == (2, 4, 16, 16)
        torch.testing.assert_close(z, encode_latents(vae, x, sample=False))
        y = decode_latents(loaded, z)
        assert y.shape == (2, 3, 64, 64)
        torch.testing.assert_close(y, decode_latents(vae, z))


def test_latent_normalisation_is_the_sd3_pipelines():
    """encode: (E(x) - shift) * scale, as StableDiffusion3Img2ImgPipeline.prepare_latents;
    decode: D(z / scale + shift), checked by running StableDiffusion3Pipeline's decode path."""
    from diffusers import StableDiffusion3Pipeline

    vae = tiny_vae(scale=0.5, shift=-0.4)
    x, _ = make_batch(2, seed=4, size=64)
    with torch.no_grad():
        raw = vae.encode(x).latent_dist.mode()
        torch.testing.assert_close(encode_latents(vae, x, sample=False), (raw - (-0.4)) * 0.5)
        z = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
        pipe = StableDiffusion3Pipeline(transformer=tiny_transformer(), scheduler=FlowMatchEulerDiscreteScheduler(),
                                        vae=vae, text_encoder=None, tokenizer=None, text_encoder_2=None,
                                        tokenizer_2=None, text_encoder_3=None, tokenizer_3=None)
        # Zero denoising steps are not allowed; decode as the pipeline's last lines do.
        ref = pipe.image_processor.postprocess(vae.decode(z / vae.config.scaling_factor + vae.config.shift_factor,
                                                          return_dict=False)[0], output_type="pt")
    torch.testing.assert_close((decode_latents(vae, z).clamp(-1, 1) + 1) / 2, ref)
    # and the shift is not a no-op here: without it the image differs
    assert not torch.allclose(decode_latents(vae, z), vae.decode(z / 0.5).sample, atol=1e-3)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_training_pair_matches_flow_match_scheduler(shift):
    """x_t = (1 - σ) x0 + σ ε is scheduler.scale_noise at the timestep of σ; the velocity target
    v = ε - x0, fed to scheduler.step, moves x_t exactly to x at the next σ; shift_sigmas is the
    scheduler's own shift."""
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    sched.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 4, 16, 16, generator=g)
    unshifted = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0).sigmas  # training sigmas
    torch.testing.assert_close(shift_sigmas(unshifted, shift), FlowMatchEulerDiscreteScheduler(shift=shift).sigmas)
    for i in (0, 4, 9):
        t, sigma, sigma_next = sched.timesteps[i], sched.sigmas[i], sched.sigmas[i + 1]
        x_t, v = flow_match_pair(x0, noise, sigma.view(1))
        torch.testing.assert_close(x_t, sched.scale_noise(x0, t.view(1), noise))
        sched._step_index = i
        stepped = sched.step(v, t, x_t).prev_sample
        expected, _ = flow_match_pair(x0, noise, sigma_next.view(1))
        torch.testing.assert_close(stepped, expected, atol=1e-5, rtol=1e-5)
    assert torch.allclose(sched.timesteps, sched.sigmas[:-1] * 1000)  # the transformer's timestep is 1000 σ


def test_sample_equals_stable_diffusion_3_pipeline():
    """The minimal sampler (CFG, FlowMatchEuler with shift, decode with scale and shift) gives the
    pipeline's image from the same transformer, scheduler, latents and embeddings."""
    from diffusers import StableDiffusion3Pipeline

    vae, transformer = tiny_vae(), tiny_transformer()
    g = torch.Generator().manual_seed(1)
    cond = (torch.randn(2, 16, 64, generator=g), torch.randn(2, 128, generator=g))
    uncond = (torch.randn(1, 16, 64, generator=g), torch.randn(1, 128, generator=g))
    latents = torch.randn(2, 4, 16, 16, generator=g)
    config = {"num_train_timesteps": 1000, "shift": 3.0}
    ours = sample(transformer, vae, config, cond, uncond, None, steps=6, guidance=4.0, latents=latents)
    pipe = StableDiffusion3Pipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(**config),
                                    vae=vae, text_encoder=None, tokenizer=None, text_encoder_2=None,
                                    tokenizer_2=None, text_encoder_3=None, tokenizer_3=None)
    ref = pipe(prompt_embeds=cond[0], pooled_prompt_embeds=cond[1], negative_prompt_embeds=uncond[0].expand(2, -1, -1),
               negative_pooled_prompt_embeds=uncond[1].expand(2, -1), latents=latents.clone(), height=64, width=64,
               num_inference_steps=6, guidance_scale=4.0, output_type="pt").images
    torch.testing.assert_close((ours + 1) / 2, ref, atol=1e-4, rtol=0)


def test_vae_loss_decreases_reconstruction_error_on_a_fixed_batch():
    """A few optimiser steps of the training loss lower the reconstruction MSE (the loss is wired to
    the reconstruction, and the KL term is finite)."""
    vae = tiny_vae(scale=1.0, shift=0.0).train()
    x, _ = make_batch(4, seed=5, size=64)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    first = None
    for i in range(15):
        loss, parts = vae_loss(vae, x, 1e-6, torch.Generator().manual_seed(i))
        assert torch.isfinite(torch.tensor(parts["kl"]))
        first = first if first is not None else parts["mse"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert parts["mse"] < 0.7 * first


def test_psnr_and_ssim_known_values():
    """PSNR of a uniform error e on [-1, 1] images is 10 log10(4 / e^2); SSIM is 1 for identical
    images, and for a constant offset c (on [0, 1]) it is the luminance term alone,
    (2 m (m + c) + C1) / (m^2 + (m + c)^2 + C1) for flat images of value m."""
    x = torch.zeros(1, 3, 32, 32)
    torch.testing.assert_close(psnr(x, x + 0.1), torch.tensor([10 * torch.log10(torch.tensor(400.0)).item()]))
    img, _ = make_batch(1, seed=6, size=64)
    torch.testing.assert_close(ssim(img, img), torch.ones(1))
    m, c, c1 = 0.5, 0.1, 0.01**2
    flat = torch.full((1, 3, 32, 32), 2 * m - 1)
    expected = (2 * m * (m + c) + c1) / (m**2 + (m + c) ** 2 + c1)
    torch.testing.assert_close(ssim(flat, flat + 2 * c), torch.tensor([expected]), atol=1e-6, rtol=0)


def test_render_judge_reads_64_px_scenes_exactly():
    """At 64 px (toy-sd3's size) the render judge still reads shape, colour and background of every
    rendered scene, held-out pairs and grainy noise included."""
    from pipelines.toyworld.render_judge import classify_by_rendering
    from pipelines.toyworld.world import HELD_OUT

    x, scenes = make_batch(160, seed=78, size=64, allow_held_out=True)
    assert sum((s.color, s.shape) in HELD_OUT for s in scenes) >= 5
    g = torch.Generator().manual_seed(2)
    for images in (x, (x + 0.15 * torch.randn(x.shape, generator=g)).clamp(-1, 1)):
        for p, s in zip(classify_by_rendering(images), scenes):
            assert (p["shape"], p["color"], p["background"]) == (s.shape, s.color, s.background), s


def test_train_vae_and_train_sd3_run_and_resume(tmp_path, monkeypatch):
    """The real training scripts, two steps at batch 2 then a resume to three: they write folders that
    load with from_pretrained (the VAE with its measured scale and shift, the transformer in fp16 with
    its scheduler), and the loss logs continue where they stopped."""
    import json

    from pipelines.toyworld import train_sd3, train_vae
    from pipelines.toyworld.unet_config import build_random_toy_sd

    monkeypatch.setattr(train_vae, "RUNS", tmp_path / "runs")  # keep the repo's runs/ untouched
    monkeypatch.setattr(train_sd3, "RUNS", tmp_path / "runs")
    vae_dir, sd3_dir, clip_dir = tmp_path / "vae", tmp_path / "sd3", tmp_path / "clip"
    common = ["--batch", "2", "--save-minutes", "0"]
    train_vae.main(["--steps", "2", "--out", str(vae_dir), "--stats-n", "4", *common])
    train_vae.main(["--steps", "3", "--out", str(vae_dir), "--stats-n", "4", *common])
    vae = AutoencoderKL.from_pretrained(vae_dir)
    assert vae.config.scaling_factor != 1.0 and vae.config.shift_factor != 0.0  # measured, not the defaults
    rows = [json.loads(line) for line in (vae_dir / "resume" / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]

    build_random_toy_sd(tmp_path / "unused", clip_dir)  # writes a random toy-clip
    args = ["--vae", str(vae_dir), "--clip", str(clip_dir), "--out", str(sd3_dir), *common]
    train_sd3.main(["--steps", "3", "--stop-at", "2", *args])
    assert json.loads((sd3_dir / "resume" / "train_state.json").read_text())["step"] == 2
    train_sd3.main(["--steps", "3", *args])
    from safetensors.torch import load_file

    stored = load_file(sd3_dir / "transformer" / "diffusion_pytorch_model.safetensors")
    assert {v.dtype for v in stored.values()} == {torch.float16}
    transformer = SD3Transformer2DModel.from_pretrained(sd3_dir / "transformer")
    assert transformer.config.joint_attention_dim == 64
    for name, p in transformer.state_dict().items():
        torch.testing.assert_close(p, stored[name].float())
    assert FlowMatchEulerDiscreteScheduler.from_pretrained(sd3_dir / "scheduler").config.shift == 1.0
    rows = [json.loads(line) for line in (sd3_dir / "resume" / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["loss"] > 0 for r in rows)

    # a new run with 256 image tokens (patch 1) warm-started from this one: the blocks and text embedders are
    # copied, the patch embedding and the output projection (other shapes) start fresh; a resume without
    # --patch-size rebuilds the run's own patch size
    src = SD3Transformer2DModel.from_pretrained(sd3_dir / "transformer")
    fresh = SD3Transformer2DModel(**toy_transformer_config(patch_size=1, num_layers=src.config.num_layers,
                                                           width=src.config.num_attention_heads
                                                           * src.config.attention_head_dim,
                                                           heads=src.config.num_attention_heads))
    left = train_sd3.warm_start(fresh, sd3_dir / "transformer", log=lambda *a: None)
    assert left == ["pos_embed.proj.weight", "proj_out.bias", "proj_out.weight"]
    for name, p in src.state_dict().items():
        if name not in left:
            torch.testing.assert_close(fresh.state_dict()[name], p)
    p1 = tmp_path / "sd3-p1"
    train_sd3.main(["--steps", "2", "--stop-at", "1", "--patch-size", "1", "--init", str(sd3_dir), *args[:-6],
                    "--out", str(p1), *common])
    train_sd3.main(["--steps", "2", *args[:-6], "--out", str(p1), *common])
    assert SD3Transformer2DModel.from_pretrained(p1 / "transformer").config.patch_size == 1
    assert json.loads((p1 / "resume" / "train_state.json").read_text())["step"] == 2
    # the shipped (EMA) weights carry the positional table the run trained with (copied from the patch-2 run, whose
    # grid spacing differs from a fresh patch-1 config's), not a fresh one
    table = "pos_embed.pos_embed"
    ema_table = load_file(p1 / "transformer" / "diffusion_pytorch_model.safetensors")[table].float()
    torch.testing.assert_close(ema_table, src.state_dict()[table], atol=1e-3, rtol=1e-3)
    assert not torch.allclose(ema_table, SD3Transformer2DModel(**fresh.config).state_dict()[table], atol=1e-2)
    # a resume state shipped without its EMA weights (the assets budget) still resumes; the EMA restarts
    (p1 / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    train_sd3.main(["--steps", "3", *args[:-6], "--out", str(p1), *common])
    assert json.loads((p1 / "resume" / "train_state.json").read_text())["step"] == 3
    assert (p1 / "transformer" / "diffusion_pytorch_model.safetensors").exists()
