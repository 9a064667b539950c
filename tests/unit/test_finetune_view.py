"""The fine-tuning view's pipelines (issue 21): prompts, same-seed sampling in chunks (against the one
sampling loop run in one go), the rendering judge's verdicts on rendered scenes, the session model, the
trainable-layer choice, releasing memory and the downloadable folder."""

from __future__ import annotations

import zipfile

import pytest
import torch
from diffusers import UNet2DConditionModel

from pipelines.diffusion.loop import sample
from pipelines.models import load_toy_diffusion, traced_unet
from pipelines.models.tinyclip import CONFIG_PATH
from pipelines.toyworld.unet_config import build_random_toy_sd
from pipelines.toyworld.world import Scene, render_batch
from pipelines.training import finetune_view as view
from pipelines.training.finetune import FineTuneConfig, FineTuner


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ft")
    folder = build_random_toy_sd(tmp / "sd", tmp / "clip")
    assert (tmp / "clip" / CONFIG_PATH.name).exists()
    return load_toy_diffusion(folder, tmp / "clip", torch.device("cpu"))


def test_prompt_lines():
    assert view.prompt_lines("a red heart\n\n  a blue heart  \n", "p") == ["a red heart", "a blue heart"]
    with pytest.raises(ValueError, match="at least one"):
        view.prompt_lines(" \n", "new-concept prompts")
    with pytest.raises(ValueError, match="at most 4"):
        view.prompt_lines("\n".join(["a red heart"] * 5), "p")
    assert view.cycle(["a", "b"], 5) == ["a", "b", "a", "b", "a"]


def test_verdicts_read_rendered_scenes_back():
    scenes = [Scene("heart", "red", "white", "medium", 0.5, 0.5, 0.3), Scene("square", "green", "black", "medium",
                                                                             0.5, 0.5, 0.3)]
    x = render_batch(scenes)
    assert view.verdicts(x, ["a red heart on a white background", "a green square"], ("shape",)) == [True, True]
    assert view.verdicts(x, ["a blue heart", "a red square"], ("shape", "color")) == [False, False]
    assert view.verdicts(x, ["a red circle", "something"], ("shape",)) == [False, None]
    assert view.rate([True, False, None, True]) == (2, 3)


def test_chunked_sampling_equals_one_run_of_the_loop(tiny):
    prompts = ["a red heart", "a blue square"]
    it = view.sampler(tiny, prompts, seed=3, steps=6)
    chunks = 0
    while (img := view.advance(it, 2)) is None:
        chunks += 1
    ref = sample(tiny, prompts, sampler="DDIM", num_inference_steps=6, guidance_scale=view.SCALE,
                 generator=torch.Generator().manual_seed(3)).clamp(-1, 1)
    assert chunks >= 2 and img.shape == (2, 3, 32, 32) and torch.allclose(img, ref, atol=1e-5)


def test_session_model_samples_eagerly_with_its_own_weights_and_leaves_the_base(tiny):
    assert isinstance(tiny.unet.forward, traced_unet.TracedForward)
    base = {k: v.clone() for k, v in tiny.unet.state_dict().items()}
    tuner = FineTuner.from_model(tiny, FineTuneConfig(batch=4, lr=5e-3, prior=0.5, train="attention"))
    assert not isinstance(tuner.unet.forward, traced_unet.TracedForward)  # a traced graph would freeze old weights
    grads = {n for n, p in tuner.unet.named_parameters() if p.requires_grad}
    assert grads and all(".attentions." in n for n in grads)
    before = sample(tiny, ["a red heart"], sampler="DDIM", num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    tuner.run(2)
    model = view.tuned_model(tiny, tuner)
    with torch.no_grad():
        after = sample(model, ["a red heart"], sampler="DDIM", num_inference_steps=4,
                       generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(before, after)
    assert all(torch.equal(v, tiny.unet.state_dict()[k]) for k, v in base.items())
    assert tuner.opt.state
    tuner.release()
    assert not tuner.opt.state and all(p.grad is None for p in tuner.params)
    tuner.run(1)  # trains on after a release


def test_export_zip_is_a_from_pretrained_folder_without_the_optimiser(tiny, tmp_path):
    tuner = FineTuner.from_model(tiny, FineTuneConfig(batch=2, prior=0.0))
    tuner.run(1)
    z = view.export_zip(tuner, tmp_path)
    with zipfile.ZipFile(z) as f:
        names = f.namelist()
        f.extractall(tmp_path / "out")
    assert "toy-sd-finetuned/unet/config.json" in names and not any("optimizer" in n for n in names)
    back = UNet2DConditionModel.from_pretrained(tmp_path / "out" / "toy-sd-finetuned" / "unet")
    assert all(torch.equal(v, tuner.unet.state_dict()[k]) for k, v in back.state_dict().items())


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="trained layers"):
        FineTuneConfig(train="text")
    with pytest.raises(ValueError, match="prior"):
        FineTuneConfig(prior=1.0)
