"""Issue 14 without a browser: the replay (Play) serves recorded frames, the "Start here" story, the tour's
tokens and feature colours, and ``run=1`` in lecture links."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from demos import lecture, player
from pipelines import tour


def _img(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


# ------------------------------------------------------------------ player (pure)


def _fake(n):
    return (lambda st, k: (f"frame{k}",)), (lambda st: n if st else 0)


def test_player_plays_from_the_next_step_and_restarts_at_the_end(monkeypatch):
    monkeypatch.setattr(player.time, "sleep", lambda s: None)
    show, count = _fake(5)
    assert [k for _, k in player.frames(show, count, {"x": 1}, 20, 2)] == [3, 4, 5]
    assert [k for _, k in player.frames(show, count, {"x": 1}, 20, 5)] == [1, 2, 3, 4, 5]  # at the end: again
    assert list(player.frames(show, count, {"x": 1}, 2, 0))[0] == ("frame1", 1)


@pytest.mark.parametrize("speed", [1, 21, float("nan")])
def test_player_speed_is_bounded(speed):
    show, count = _fake(5)
    with pytest.raises(ValueError, match="speed"):
        next(player.frames(show, count, {"x": 1}, speed, 1))


def test_player_needs_a_run_and_steps_stay_in_range():
    show, count = _fake(5)
    with pytest.raises(ValueError, match="Run it first"):
        next(player.frames(show, count, None, 8, 1))
    assert player.step_by(show, count, {"x": 1}, 5, 1)[-1] == 5
    assert player.step_by(show, count, {"x": 1}, 1, -1)[-1] == 1
    assert player.step_by(show, count, {"x": 1}, 3, -1) == ("frame2", 2)


# ------------------------------------------------------------------ tour (pipelines)


@pytest.fixture(scope="module")
def toy_clip():
    from pipelines.runtime import Runtime

    return Runtime.create("cpu").registry.clip()


def test_token_pieces_match_the_tokenizer_s_own_decode(toy_clip):
    tok = toy_clip.tokenizer
    prompt = "a small cyan triangle on a white background"
    pieces, pad = tour.token_pieces(tok, prompt)
    assert pieces[0] == tour.START and pieces[-1] == tour.END
    ids = tok([prompt])[0].tolist()
    assert len(pieces) + pad == len(ids)  # every slot accounted for
    inner = [i for i in ids if i not in (tok.sot_token_id, tok.eot_token_id, 0)]
    assert "".join(pieces[1:-1]).replace(" ", "") == tok.decode(inner).replace(" ", "")  # the reference decode
    assert "triangle" in pieces


def test_token_pieces_of_a_too_long_prompt_are_cut(toy_clip):
    pieces, pad = tour.token_pieces(toy_clip.tokenizer, "a red circle " * 20)
    assert pad == 0 and len(pieces) == toy_clip.tokenizer.context_length


def test_features_image_colours():
    f = torch.tensor([[1.0, -1.0, 0.0, 0.5]])  # [L=1, D=4]
    img = tour.features_image(f)
    assert img.shape == (1, 4, 3) and img.dtype == np.uint8
    assert img[0, 0].tolist() == [255, 0, 0] and img[0, 1].tolist() == [0, 0, 255]  # + red, − blue
    assert img[0, 2].tolist() == [255, 255, 255] and img[0, 3].tolist() == [255, 128, 128]  # 0 white, half pink


# ------------------------------------------------------------------ lecture


def test_run_is_a_known_url_key():
    with __import__("gradio").Blocks():
        import gradio as gr

        reg = {"guidance": {"steps": gr.Slider(2, 100, value=30, step=1)}}
    tab, values, problems, _ = lecture.restore_updates({"tab": "guidance", "run": "1", "steps": "6"}, reg)
    assert tab == "guidance" and problems == [] and values == [(6,)]


def test_readme_lecture_links_are_valid():
    """Every example link in the README selects a tab and sets only known keys to valid values."""
    import re
    from pathlib import Path
    from urllib.parse import parse_qsl

    import app
    from pipelines.runtime import Runtime

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("## Lecture links", 1)[1].split("```", 2)[1]
    links = re.findall(r"^/\?(\S+)$", block, flags=re.M)
    assert len(links) >= 5, block
    registry = app.build_app(Runtime.create("cpu")).lecture_registry
    for q in links:
        tab, values, problems, _ = lecture.restore_updates(dict(parse_qsl(q)), registry)
        assert tab is not None and problems == [], (q, problems)
        assert sum(v is not None for v in values) >= 1, q


# ------------------------------------------------------------------ through the app


@pytest.mark.api
def test_viewer_play_replays_the_recorded_frames(client):
    from demos.denoising_viewer import DEFAULT_PROMPT
    from pipelines.models import DEFAULT_DIFFUSION_SPECS

    model = DEFAULT_DIFFUSION_SPECS[0].name
    job = client.submit(model, DEFAULT_PROMPT, "", "DDIM", 6, 0.0, 3, 3.0, False, None, 0.6, api_name="/viewer_run")
    job.result(timeout=300)
    xt_final = job.outputs()[-1][0]
    slider, strip = client.predict(api_name="/viewer_filmstrip")
    play = client.submit(20, 6, api_name="/viewer_play")  # speed, current step (at the end: from step 1)
    play.result(timeout=120)
    outs = play.outputs()
    assert [o[-1] for o in outs] == [1, 2, 3, 4, 5, 6]
    assert [o[4].split("**")[1] for o in outs] == [f"step {k} / 6" for k in range(1, 7)]
    for k in (1, 4, 6):  # the same pictures as the scrubber's: recorded, not recomputed
        xt, x0, eps, _, _ = client.predict(k, api_name="/viewer_scrub")
        assert all(np.array_equal(_img(a), _img(b)) for a, b in zip((xt, x0, eps), outs[k - 1][:3]))
    # the last frame is the final image: the x_t panel shows the run's result, not the last noisy input
    assert np.array_equal(_img(outs[-1][0]), _img(xt_final))
    final = _img(strip[-1]["image"]["path"] if isinstance(strip[-1]["image"], dict) else strip[-1]["image"])
    k = final.shape[0] // 32
    assert np.array_equal(final[::k, ::k], _img(outs[-1][0]))


@pytest.mark.api
def test_start_here_tells_the_story(client):
    job = client.submit("a red circle on a navy background", 0, 5, api_name="/start_here")
    job.result(timeout=300)
    outs = job.outputs()
    tokens, feats = outs[0][:2]  # sent once, first; later messages skip them
    _, _, xt, x0, info, final = outs[-1][:6]
    assert ">red<" in tokens and ">circle<" in tokens and "padding" in tokens
    assert "step 5 / 5" in info and "done" in info
    f = _img(feats)
    assert f.shape[0] % 16 == 0 and f.shape[1] % 64 == 0  # 16 token slots × 64 numbers, enlarged
    assert _img(final).shape == (32, 32, 3) and np.array_equal(_img(final), _img(xt))  # last x_t = the picture
    assert len(outs) >= 6  # step 0 (noise), then every step
    xt1, _, info1 = client.predict(1, api_name="/start_scrub")
    assert "step 1 / 5" in info1 and not np.array_equal(_img(xt1), _img(final))
    with pytest.raises(Exception, match="prompt"):
        client.predict("x" * 5000, 0, 5, api_name="/start_here")


@pytest.mark.api
def test_inpaint_play_replays_every_model_call(client, tmp_path):
    """The replay walks through the recorded calls (the known region re-imposed each time) and ends on the result."""
    from gradio_client import handle_file

    from demos.inpainting import WORK_PX, toy_sample_images
    from pipelines.models import DEFAULT_DIFFUSION_SPECS

    bg = tmp_path / "bg.png"
    toy_sample_images()[0].save(bg)
    layer = np.zeros((WORK_PX, WORK_PX, 4), np.uint8)
    layer[64:192, 64:192] = (255, 0, 255, 140)
    Image.fromarray(layer, "RGBA").save(tmp_path / "layer.png")
    value = {"background": handle_file(str(bg)), "layers": [handle_file(str(tmp_path / "layer.png"))],
             "composite": None}
    job = client.submit(DEFAULT_DIFFUSION_SPECS[0].name, value, "a yellow star on a navy background", "", 5.0, 4,
                        "DDIM", 0, 1, 2, api_name="/inpaint")
    job.result(timeout=300)
    runs = job.outputs()
    assert all(len(o) == 4 for o in runs)  # the recording travels in a gr.State, not in the API
    play = client.submit(20, len(runs), api_name="/inpaint_play")  # at the end: from the first call
    play.result(timeout=120)
    outs = play.outputs()
    assert [o[-1] for o in outs] == list(range(1, len(runs) + 1))  # one frame per streamed model call
    assert np.array_equal(_img(outs[-1][0]), _img(runs[-1][0])) and "Done" in outs[-1][2]
    assert np.array_equal(_img(outs[0][0]), _img(runs[0][0])) and "UNet call 1/" in outs[0][2]
    result2, _, info2 = client.predict(2, api_name="/inpaint_scrub")
    assert np.array_equal(_img(result2), _img(outs[1][0])) and "UNet call 2/" in info2
    # outside the mask every replayed frame keeps the input's pixels (JPEG frames: within a few levels)
    inp = np.asarray(Image.open(bg).convert("RGB")).astype(int)
    for o in outs:
        assert np.abs(_img(o[0]).astype(int)[:48] - inp[:48]).mean() < 4


@pytest.mark.api
def test_clip_play_shows_both_runs_in_lock_step(client):
    from pipelines.models import DEFAULT_DIFFUSION_SPECS

    from demos.clip_guidance import BASE_MODES

    job = client.submit("toy-clip (bundled)", DEFAULT_DIFFUSION_SPECS[0].name, "a red circle on a white background", BASE_MODES[0], "",
                        3.0, 2, 2.0, "sqrt_alpha_bar", 3, 0, "plain CLIP (scores cutouts of x̂0)", True, 1.0, 1,
                            api_name="/clip_guidance_run")
    job.result(timeout=300)
    final_gallery = job.outputs()[-1][0]
    play = client.submit(20, 3, api_name="/clip_play")
    play.result(timeout=120)
    outs = play.outputs()
    assert [o[-1] for o in outs] == [1, 2, 3]
    assert [c["caption"] for c in outs[0][0]] == ["without: step 1/3, x̂0", "with: step 1/3, x̂0"]
    last = outs[-1][0]
    assert [c["caption"] for c in last] == ["without CLIP guidance", "with CLIP guidance"]
    for a, b in zip(last, final_gallery):  # the last frame = the run's final pair
        assert np.array_equal(_img(a["image"]["path"] if isinstance(a["image"], dict) else a["image"]),
                              _img(b["image"]["path"] if isinstance(b["image"], dict) else b["image"]))
    wl, gl = (_img(c["image"]["path"] if isinstance(c["image"], dict) else c["image"]) for c in last)
    assert not np.array_equal(wl, gl)  # the pair really is two runs
