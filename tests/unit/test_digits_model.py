"""The digits models in the one loop (issue 16, item 3): class labels as the condition, flow and DDPM
objectives, the per-session store that hands a trained model to the viewer and the guidance tab."""

import pytest
import torch

from pipelines.diffusion import loop
from pipelines.models import ModelRegistry, digits_model
from pipelines.models.specs import DIGITS_KINDS, SESSION_DIGITS
from pipelines.runtime import Runtime
from pipelines.serving.session_models import SessionModels
from pipelines.training import digits

CLASS_DIR = digits.ASSETS / "digits-class-flow"


@pytest.fixture(scope="module")
def class_model():
    return digits_model.load_folder(CLASS_DIR, name="digits")


def test_labels_from_prompts():
    assert digits_model.NULL_CLASS == digits.NULL_CLASS
    assert [digits_model.label_of(p) for p in ("7", "seven", "a digit 3", " Zero ", "")] == [7, 7, 3, 0, 10]
    for bad in ("a red circle", "7 and 8", "12", "seven 8"):
        with pytest.raises(ValueError, match="one digit 0-9"):
            digits_model.label_of(bad)


def _hand_euler_cfg(unet, sched, x, label: int, w: float):
    """Flow matching by hand (no loop, no maths module): Euler on dx/dσ = v over the scheduler's σ grid,
    v = v_u + w (v_c − v_u) (CFG, Ho & Salimans eq. 6), x̂0 = x − σ v at every step."""
    x0s = []
    for i, t in enumerate(sched.timesteps):
        s, s_next = float(sched.sigmas[i]), float(sched.sigmas[i + 1])
        labels = torch.tensor([label, digits.NULL_CLASS])
        out = unet(torch.cat([x, x]), t.expand(2), class_labels=labels).sample
        v = out[1:] + w * (out[:1] - out[1:])
        x0s.append(x - s * v)
        x = x + (s_next - s) * v
    return x, x0s


def test_loop_equals_hand_written_flow_euler_with_cfg(class_model):
    noise = torch.randn((1, 1, 16, 16), generator=torch.Generator().manual_seed(3))
    recs = list(loop.sample_steps(class_model, "4", negative_prompt="", guidance_scale=2.5, num_inference_steps=8,
                                  latents=noise, generator=torch.Generator().manual_seed(0)))
    sched = class_model.make_scheduler()
    sched.set_timesteps(8)
    with torch.no_grad():
        x, x0s = _hand_euler_cfg(class_model.unet, sched, noise.clone(), 4, 2.5)
    assert torch.allclose(recs[-1].x_prev, x, atol=1e-5)
    for rec, ref in zip(recs, x0s):
        assert torch.allclose(rec.pred_x0, ref, atol=1e-5)
    assert recs[-1].image.shape == (1, 3, 16, 16)  # gray repeated to RGB
    assert torch.equal(recs[-1].image[:, 0], recs[-1].image[:, 2])


def test_the_class_asked_for_is_drawn(class_model):
    from pipelines.training.digit_judge import load_judge

    img = loop.sample(class_model, [str(d) for d in range(10)], guidance_scale=3.0, num_inference_steps=12,
                      generator=torch.Generator().manual_seed(0))
    assert (load_judge()(img[:, :1]).argmax(1) == torch.arange(10)).float().mean() >= 0.8


def test_flow_models_refuse_eps_samplers(class_model):
    from pipelines.models import FLOW_SAMPLERS

    assert class_model.samplers == list(FLOW_SAMPLERS) and "DDIM" not in class_model.samplers
    with pytest.raises(ValueError, match="flow-matching"):
        class_model.make_scheduler("DDIM")


@pytest.mark.parametrize("sampler", ["DDIM", "DDPM", "DPM-Solver++", "Euler"])
def test_ddpm_digits_run_every_eps_sampler_as_diffusers_does(sampler):
    """A DDPM-trained (here: untrained, random) class UNet: the loop's result equals the scheduler's own
    step loop with CFG written out (diffusers as the reference)."""
    cfg = digits.DigitsConfig(stage="class", objective="ddpm", channels=(8, 16), seed=1)
    model = digits_model.from_trained(digits.build_unet(cfg), cfg, "ddpm digits")
    assert not model.flow and sampler in model.samplers
    noise = torch.randn((1, 1, 16, 16), generator=torch.Generator().manual_seed(5))
    got = loop.sample(model, "2", sampler=sampler, guidance_scale=2.0, num_inference_steps=6, latents=noise,
                      generator=torch.Generator().manual_seed(7))
    sched, gen = model.make_scheduler(sampler), torch.Generator().manual_seed(7)
    sched.set_timesteps(6)
    x = noise * sched.init_noise_sigma
    extra = {"generator": gen} if sampler in ("DDPM", "Euler") else {}
    with torch.no_grad():
        for t in sched.timesteps:
            x_in = sched.scale_model_input(torch.cat([x, x]), t)
            out = model.unet(x_in, t, class_labels=torch.tensor([digits.NULL_CLASS, 2])).sample
            eps = out[:1] + 2.0 * (out[1:] - out[:1])
            x = sched.step(eps, t, x, **extra).prev_sample
    assert torch.allclose(got[:, :1], x.clamp(-1, 1), atol=1e-5)


def test_unconditional_stage_and_denoiser(class_model):
    cfg = digits.DigitsConfig(stage="time", objective="flow", channels=(8, 16))
    m = digits_model.from_trained(digits.build_unet(cfg), cfg, "time digits")
    assert not m.conditional
    assert loop.sample(m, "", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="does not generate"):
        digits_model.from_trained(None, digits.DigitsConfig(stage="denoiser"), "d")
    assert digits_model.is_class_conditional(CLASS_DIR)
    assert not digits_model.is_class_conditional(digits.ASSETS / "digits-time-flow")


def test_sdedit_starts_from_a_gray_image(class_model):
    rgb = torch.full((1, 3, 16, 16), -1.0)
    rgb[:, :, 4:12, 7:9] = 1.0  # a white bar, like a "1"
    assert class_model.encode(rgb).shape == (1, 1, 16, 16)
    img = loop.sample(class_model, "1", init_image=rgb, strength=0.5, num_inference_steps=8, guidance_scale=2.0,
                      generator=torch.Generator().manual_seed(0))
    assert img.shape == (1, 3, 16, 16)


def test_a_sent_model_is_a_snapshot():
    cfg = digits.DigitsConfig(stage="class", channels=(8, 16))
    unet = digits.build_unet(cfg)
    m = digits_model.from_trained(unet, cfg, SESSION_DIGITS)
    with torch.no_grad():
        next(unet.parameters()).add_(1.0)  # training goes on in the tab
    assert not torch.equal(next(unet.parameters()), next(m.unet.parameters()))
    assert not any(p.requires_grad for p in m.unet.parameters())


def test_session_store_is_bounded_and_expires():
    now = [0.0]
    store = SessionModels(max_sessions=2, ttl=10.0, clock=lambda: now[0])
    store.put("a", 1)
    store.put("b", 2)
    now[0] = 5.0
    assert store.get("a") == 1  # a's clock restarts at 5
    store.put("c", 3)  # over the bound: the least recently used (b) goes
    with pytest.raises(ValueError, match="Train your own"):
        store.get("b")
    now[0] = 14.0
    assert store.get("a") == 1 and len(store) == 2
    now[0] = 26.0  # c last used at 5, a at 14: both past the 10 s
    assert len(store) == 0
    with pytest.raises(ValueError, match="session"):
        store.put(None, 1)


def test_runtime_resolves_the_session_entry(class_model):
    rt = Runtime()
    with pytest.raises(ValueError, match="no trained digits model"):
        rt.diffusion(SESSION_DIGITS, "s1")
    rt.session_models.put("s1", class_model)
    assert rt.diffusion(SESSION_DIGITS, "s1") is class_model
    with pytest.raises(ValueError, match="no trained digits model"):
        rt.diffusion(SESSION_DIGITS, "s2")  # another session sees nothing
    assert rt.flow_only(SESSION_DIGITS, "s1") and not rt.flow_only(SESSION_DIGITS, "s2")
    with pytest.raises(ValueError, match="lives in your session"):
        rt.registry.diffusion(SESSION_DIGITS)  # views that take no session say so


def test_digits_are_listed_only_where_asked():
    reg = ModelRegistry()
    plain, with_digits = reg.diffusion_names(), reg.diffusion_names(digits=True)
    assert not any(reg.spec(n).kind in DIGITS_KINDS for n in plain)
    assert SESSION_DIGITS in with_digits and set(plain) < set(with_digits)
    assert reg.diffusion_names(kind="digits") == [n for n in with_digits if reg.spec(n).kind == "digits"]
