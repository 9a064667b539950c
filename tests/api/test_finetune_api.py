"""Every api_name of the "Fine-tune toy-sd" sub-tab of Train your own, through gradio_client (each client is
its own session), with tiny budgets."""

import zipfile

import numpy as np
import pytest
from diffusers import UNet2DConditionModel
from gradio_client.exceptions import AppError
from PIL import Image

from pipelines.models import TOY_SD_DIR

pytestmark = pytest.mark.api

NEW = "a red heart on a white background"
OLD = "a green square on a black background"


def _args(steps=2, seconds=300, prior_on=True, prior=0.5, seed=0, lr=2e-4, layers="all", new=NEW, old=OLD):
    return (new, old, prior_on, prior, steps, seconds, seed, lr, layers)


def _img(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_train_continues_in_the_session_and_changes_the_samples(client):
    fig, loss, reading, status = client.predict(*_args(2), api_name="/finetune_train")
    assert "Step 2 " in status and "prior preservation 50%" in status
    assert "new prompts read back" in reading and loss is not None
    fig2, _, _, status2 = client.predict(*_args(3, lr=3e-3), api_name="/finetune_train")  # new recipe: afresh
    assert "Step 3 " in status2
    fig3, _, _, status3 = client.predict(*_args(3, lr=3e-3), api_name="/finetune_train")  # same: continues
    assert "Step 6 " in status3
    a, b = _img(fig2), _img(fig3)
    assert a.shape == b.shape and not np.array_equal(a, b)  # the fine-tuned row moved


def test_train_rejects_bad_input(client):
    with pytest.raises(AppError, match="new-concept prompts"):
        client.predict(*_args(new="  \n "), api_name="/finetune_train")
    with pytest.raises(AppError, match="at most 4"):
        client.predict(*_args(old="\n".join([OLD] * 5)), api_name="/finetune_train")
    with pytest.raises(AppError, match="learning rate"):
        client.predict(*_args(lr=5.0), api_name="/finetune_train")
    with pytest.raises(AppError, match="text tower"):
        client.predict(*_args(layers="text tower"), api_name="/finetune_train")
    with pytest.raises(AppError, match="steps"):
        client.predict(*_args(steps=0), api_name="/finetune_train")


def test_judge_and_download_need_a_fine_tune_then_work(client, tmp_path):
    with pytest.raises(AppError, match="fine-tune first"):
        client.predict(NEW, OLD, 4, 0, api_name="/finetune_judge")
    with pytest.raises(AppError, match="fine-tune first"):
        client.predict(api_name="/finetune_download")
    client.predict(*_args(1, prior_on=False, layers="attention"), api_name="/finetune_train")
    md = client.predict(NEW, OLD, 4, 0, api_name="/finetune_judge")
    assert "Judge over 4 seeds" in md and "| bundled |" in md and "| fine-tuned |" in md
    path = client.predict(api_name="/finetune_download")
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        assert "toy-sd-finetuned/unet/diffusion_pytorch_model.safetensors" in names
        assert not any(n.endswith("optimizer.pt") for n in names)
        z.extractall(tmp_path)
    tuned = UNet2DConditionModel.from_pretrained(tmp_path / "toy-sd-finetuned" / "unet")
    base = UNet2DConditionModel.from_pretrained(TOY_SD_DIR / "unet")
    diff = [k for k, v in tuned.state_dict().items() if not np.array_equal(v.numpy(), base.state_dict()[k].numpy())]
    assert diff and all(".attentions." in k for k in diff)  # only the attention layers learnt; the file is the copy


def test_the_bundled_model_is_never_changed(app_url):
    """A session fine-tunes hard; a fresh session's 'bundled' row (same prompts, same seed) is unchanged."""
    from gradio_client import Client

    first = Client(app_url, verbose=False).predict(*_args(1), api_name="/finetune_train")[0]
    Client(app_url, verbose=False).predict(*_args(3, lr=5e-3), api_name="/finetune_train")
    later = Client(app_url, verbose=False).predict(*_args(1), api_name="/finetune_train")[0]
    a, b = _img(first), _img(later)
    top = a.shape[0] * 45 // 100  # the bundled row and the titles
    assert np.array_equal(a[:top], b[:top])


def test_stop_answers(client):
    assert client.predict(api_name="/finetune_stop") == "Stopped."
