"""Hub-model plumbing without a network: tiny random models of the hub models' classes
(a UNet2DModel in a DDPMPipeline folder, a Stable Diffusion folder) saved to a temp dir and
chosen by --model / DL_MODEL through the same registry code; spaces.GPU; dtypes; SDPA."""

from __future__ import annotations

import sys
import types

import pytest
import torch

import app
from pipelines.models import accel
from pipelines.models import ModelRegistry, ModelUnavailable, spec_for, specs_with_default
from pipelines.runtime import Runtime
from tests.tiny_models import build_tiny_sd


@pytest.fixture(scope="module")
def ddpm_folder(tmp_path_factory):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)  # fixture weights only
    unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
                       block_out_channels=(8, 16), norm_num_groups=4,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    folder = tmp_path_factory.mktemp("hub") / "tiny-ddpm"
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("hub") / "tiny-sd")


def test_local_ddpm_folder_is_chosen_by_flag_and_loads_as_pixel_model(ddpm_folder):
    spec = spec_for(str(ddpm_folder))
    assert spec.kind == "pixel" and spec.name == "tiny-ddpm (local)"
    rt = Runtime.create("cpu", model=str(ddpm_folder))
    assert rt.registry.default_diffusion == spec.name
    assert "toy-sd (bundled, 32 px)" in rt.registry.diffusion_names()  # bundled stays available
    m = rt.registry.diffusion()
    assert m.kind == "pixel" and m.sample_shape == (3, 16, 16) and not m.conditional
    assert m.unet.dtype == torch.float32  # CPU: full precision
    from pipelines.diffusion.loop import sample_steps

    *_, last = sample_steps(m, "", num_inference_steps=2, sampler="DDIM", generator=torch.Generator().manual_seed(0))
    assert last.image.shape == (1, 3, 16, 16) and torch.isfinite(last.image).all()


def test_local_sd_folder_loads_as_latent_model_via_env(sd_folder, monkeypatch):
    monkeypatch.setenv("DL_MODEL", str(sd_folder))
    rt = Runtime.create("cpu")
    m = rt.registry.diffusion()
    assert m.kind == "latent" and m.conditional and m.vae is not None
    assert m.encode_prompt(["a cat", ""]).shape == (2, 77, 32)


def test_cli_flag_and_env_var(monkeypatch):
    assert app.parse_args(["--model", "google/ddpm-cat-256"]).model == "google/ddpm-cat-256"
    monkeypatch.setenv("DL_MODEL", "stable-diffusion-v1-5 (hub)")
    assert app.parse_args([]).model == "stable-diffusion-v1-5 (hub)"
    # a hub id reorders the registry so it is every dropdown's default, the others remain
    specs = specs_with_default("google/ddpm-cat-256")
    assert specs[0].source == "google/ddpm-cat-256" and len(specs) == len(specs_with_default(None))
    with pytest.raises(ValueError, match="unknown model 'nope/nothing'.*local diffusers pipeline folder"):
        spec_for("nope/nothing")


def test_offline_hub_model_is_a_clear_message_and_bundled_still_works(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reg = ModelRegistry("cpu", specs_with_default("google/ddpm-cat-256"))
    with pytest.raises(ModelUnavailable, match="network.*bundled toy models"):
        reg.diffusion()  # the chosen default is the hub cat: refused clearly, not a crash
    assert reg.diffusion("toy-sd (bundled, 32 px)").kind == "toy"


def test_spaces_gpu_wrapper_is_a_no_op_off_zero_gpu(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    accel._spaces_gpu.cache_clear()

    def f(x):
        return x + 1

    assert accel.gpu(f) is f and accel.gpu(duration=60)(f) is f


def test_spaces_gpu_wrapper_on_zero_gpu(monkeypatch):
    calls = []

    def fake_gpu(fn=None, duration=None):
        def deco(f):
            def run(*a, **k):
                calls.append(duration)
                return f(*a, **k)
            return run
        return deco(fn) if fn is not None else deco

    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=fake_gpu))
    accel._spaces_gpu.cache_clear()
    try:
        assert accel.gpu(lambda x: x * 2)(3) == 6 and calls == [None]
        assert accel.gpu(duration=90)(lambda: "ok")() == "ok" and calls == [None, 90]
    finally:
        accel._spaces_gpu.cache_clear()


def test_dtypes_and_sdpa(ddpm_folder):
    from diffusers import UNet2DModel
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    assert accel.model_dtype("cpu") == torch.float32
    unet = UNet2DModel.from_pretrained(ddpm_folder / "unet")
    accel.use_sdpa(unet)
    attn = [m for m in unet.modules() if isinstance(m, Attention)]
    assert attn and all(isinstance(m.processor, AttnProcessor2_0) for m in attn)
    if torch.cuda.is_available():  # pragma: no cover - CPU CI
        assert accel.model_dtype("cuda") in (torch.bfloat16, torch.float16)
