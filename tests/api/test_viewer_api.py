"""Every api_name of the Denoising viewer tab, through gradio_client against the launched app
(bundled toy model, whatever its weights: these tests assert behaviour, not appearance)."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from demos.denoising_viewer import toy_scene_paths
from pipelines.models import DEFAULT_DIFFUSION_SPECS

pytestmark = pytest.mark.api

MODEL = DEFAULT_DIFFUSION_SPECS[0].name
PROMPT = "a red circle on a navy background"


def _img(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _run_args(sampler="DDIM", steps=6, eta=0.0, seed=0, guidance=3.0, use_image=False, image=None, strength=0.6):
    return (MODEL, PROMPT, "", sampler, steps, eta, seed, guidance, use_image, image, strength)


def _final(client, **kw):
    job = client.submit(*_run_args(**kw), api_name="/viewer_run")
    outs = job.result(timeout=300) and job.outputs()
    return outs


def test_viewer_run_streams_then_scrubs_without_recomputing(client):
    outs = _final(client, steps=12)
    assert len(outs) >= 2  # streamed frames, then the final one
    xt, x0, eps, preview, info = outs[-1]
    assert preview is None  # the cheap latent preview panel: latent models only
    assert "step 12 / 12" in info and "done" in info and "SNR" in info
    assert all(_img(p).shape == (32, 32, 3) for p in (xt, x0, eps))  # native size; the browser upscales
    assert all(len(o) == 5 for o in outs)  # streamed messages carry the panels only (no skipped components)
    # chained on the run's success in the UI: the scrubber and filmstrip, from this session's trajectory
    slider, strip = client.predict(api_name="/viewer_filmstrip")
    assert slider["minimum"] == 1 and slider["maximum"] == 12 and slider["value"] == 12 and slider["interactive"]
    assert len(strip) == 8 and strip[-1]["caption"] == "final image" and "t=" in strip[0]["caption"]
    assert strip[0]["caption"].startswith("step 1 ")  # the same 1-based step numbers as the text and scrubber
    assert all("done" not in o[4] for o in outs[:-1])  # intermediate frames carry step info only
    # scrub (1-based, as the text): step 1 is noisier than the last; the last equals the streamed last frame
    xt1, x01, _, _, info1 = client.predict(1, api_name="/viewer_scrub")
    assert "step 1 / 12" in info1
    xt_last, x0_last, _, _, info_last = client.predict(12, api_name="/viewer_scrub")
    assert "step 12 / 12" in info_last
    assert np.array_equal(_img(x0_last), _img(x0)) and np.array_equal(_img(xt_last), _img(xt))
    assert not np.array_equal(_img(xt1), _img(xt_last))
    # first x_t is noise: neighbouring pixels barely correlate, unlike the last step's
    rough = lambda a: np.abs(np.diff(a.astype(float), axis=1)).mean()  # noqa: E731
    assert rough(_img(xt1)) > rough(_img(xt_last))


def test_prompt_note_names_the_words_the_model_never_read(client):
    note = client.predict(MODEL, "Red cross against white.", api_name="/viewer_prompt_note")
    english = next(s.name for s in DEFAULT_DIFFUSION_SPECS if s.captions == "natural")
    assert "never read" in note and "“against”" in note and "“.”" in note and english.split(" (")[0] in note
    assert client.predict(MODEL, PROMPT, api_name="/viewer_prompt_note") == ""
    assert client.predict(english, "Red cross against white.", api_name="/viewer_prompt_note") == ""
    sd3 = next(s.name for s in DEFAULT_DIFFUSION_SPECS if s.kind == "sd3")  # trained on the English captions too
    assert client.predict(sd3, "Red cross against white.", api_name="/viewer_prompt_note") == ""
    assert "“zebra”" in client.predict(sd3, "a zebra", api_name="/viewer_prompt_note")
    digits = next(s.name for s in DEFAULT_DIFFUSION_SPECS if s.kind == "digits")
    assert client.predict(digits, "7", api_name="/viewer_prompt_note") == ""  # no text encoder: no note
    # a prompt the run refuses gets no note (Denoise says why); any Unicode is read piece by piece
    assert client.predict(MODEL, "a red circle " * 800, api_name="/viewer_prompt_note") == ""
    assert "never read" in client.predict(MODEL, "一只红色的圆圈\x00🔴", api_name="/viewer_prompt_note")


def test_scrub_before_any_run_is_a_clear_error(client):
    with pytest.raises(AppError, match="Run the sampler first"):
        client.predict(1, api_name="/viewer_scrub")
    with pytest.raises(AppError, match="Run the sampler first"):
        client.predict(api_name="/viewer_filmstrip")


def test_start_from_an_image_sdedit(client):
    info = client.predict(MODEL, "DDIM", 10, 0.5, True, api_name="/viewer_start_info")
    assert "5 of 10" in info and "√ᾱ_t" in info and "SNR" in info
    assert "pure noise" in client.predict(MODEL, "DDIM", 10, 0.5, False, api_name="/viewer_start_info")
    scene = handle_file(toy_scene_paths()[0])
    outs = _final(client, steps=10, use_image=True, image=scene, strength=0.5)
    assert "step 5 / 5" in outs[-1][4]
    # at low strength the result stays close to the start image (the model only repaints details)
    low = _final(client, steps=10, use_image=True, image=scene, strength=0.1)
    start = np.asarray(Image.open(toy_scene_paths()[0]).convert("RGB").resize((32, 32), Image.BOX), float)
    assert np.abs(_img(low[-1][1]).astype(float) - start).mean() < 40
    with pytest.raises(AppError, match="leaves no denoising step"):
        client.predict(*_run_args(steps=5, use_image=True, image=scene, strength=0.1), api_name="/viewer_run")


def _native(path) -> np.ndarray:
    """A gallery PNG (32 px nearest-upscaled to 192) back to its 32 x 32 pixels."""
    a = _img(path)
    assert a.shape == (192, 192, 3)
    return a[::6, ::6]


def _psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of uint8 images (peak 255), the same figure as on [-1, 1] with peak-to-peak 2."""
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


def test_three_ways(client):
    gallery, md = client.predict(MODEL, handle_file(toy_scene_paths()[1]), 400, 50, "a blue square", 1.0, 0,
                                 api_name="/three_ways")
    assert len(gallery) == 8 and "iterative (9 steps)" in gallery[4]["caption"]
    assert [g["caption"].split(":")[0] for g in gallery[5:]] == [f"seed's blur of x_t, kernel {k}" for k in (3, 5, 9)]
    clean, noisy, blur, one, it, *seed_blurs = (_native(g["image"]) for g in gallery)
    psnrs = [float(v) for v in re.findall(r"\| ([\d.]+) dB \|", md)]
    assert len(psnrs) == 6
    # the table's PSNRs are those of the images shown (recomputed here from the 8-bit pictures)
    for shown, table in zip((blur, one, it, *seed_blurs), psnrs):
        assert abs(_psnr_u8(shown, clean) - table) < 0.5, (_psnr_u8(shown, clean), table)
    # the seed's blur of x_t itself stays faded (no 1/√ᾱ): the oracle-σ blur of x_t/√ᾱ beats every kernel
    assert psnrs[0] > max(psnrs[3:]), psnrs
    psnrs = psnrs[:3]
    # at t = 400 every method beats the noisy input, and the trained model beats the blur
    p_noisy = _psnr_u8(noisy, clean)
    assert min(psnrs) > p_noisy + 2, (psnrs, p_noisy)
    assert max(psnrs[1], psnrs[2]) > psnrs[0]
    # the slider reaches 999; the toy schedule ends at 959: clamped, and said so
    gallery, md = client.predict(MODEL, handle_file(toy_scene_paths()[1]), 999, 200, "a blue square", 1.0, 0,
                                 api_name="/three_ways")
    assert "t = 959 (the slider asked for 999" in md and gallery[1]["caption"] == "noisy x_t, t=959"


def test_sampler_race(client):
    lanes = [True, "DDPM", 6, True, "DDIM", 4, True, "DPM-Solver++", 3, False, "Euler", 5]
    gallery, md = client.predict(MODEL, PROMPT, 3.0, 1, *lanes, api_name="/sampler_race")
    assert [g["caption"].split(",")[0] for g in gallery] == ["DDPM", "DDIM", "DPM-Solver++"]
    assert "| DDIM | 4 |" in md and "seed 1" in md
    with pytest.raises(AppError, match="2 to 4"):
        client.predict(MODEL, PROMPT, 3.0, 1, True, "DDIM", 4, *([False, "DDIM", 4] * 3), api_name="/sampler_race")


def test_sampler_race_lanes_are_the_golden_images(client):
    """Same x_T for every lane: at the golden settings (seed 0, w = 3, 20 steps) each lane is the
    stored golden image of its sampler (tests/golden/, made by sampling.sample)."""
    from scripts import golden_check as gc

    lanes = [True, "DDIM", 20, True, "DPM-Solver++", 20, True, "Euler", 20, False, "DDPM", 2]
    gallery, md = client.predict(MODEL, gc.PROMPT, gc.GUIDANCE, gc.SEED, *lanes, api_name="/sampler_race")
    assert [g["caption"].split(",")[0] for g in gallery] == ["DDIM", "DPM-Solver++", "Euler"]
    for g, key in zip(gallery, ("ddim", "dpmpp", "euler")):
        shown = _native(g["image"])
        golden = gc.read_png(gc.GOLDEN_DIR / f"{key}.png")
        assert np.abs(shown.astype(int) - golden.astype(int)).max() <= 1, key


def test_oracle_recovers_x0_and_the_model_does_not_exactly(client):
    gallery, strip, md = client.predict(MODEL, handle_file(toy_scene_paths()[2]), 0.8, "DDPM", 10, "a star", 1.0, 0,
                                        api_name="/oracle")
    assert len(gallery) == 4 and len(strip) == 12
    err_oracle, err_model = (float(v) for v in re.findall(r"max \|error\| = ([\d.e+-]+)", md))
    assert err_oracle < 1e-3 < err_model


@pytest.mark.parametrize("kw,match", [
    (dict(sampler="Euler", eta=0.5), "DDIM only"),
    (dict(steps=500), r"steps must be between 1 and 200, got 500"),
    (dict(use_image=True, image=None), "give an image"),
])
def test_bad_input_is_reported(client, kw, match):
    with pytest.raises(AppError, match=match):
        client.predict(*_run_args(**kw), api_name="/viewer_run")


@pytest.mark.parametrize("bad", ["NaN", "Infinity"])
def test_nan_and_inf_sent_through_the_raw_api_are_refused(app_url, bad):
    """JSON clients cannot send NaN, but a raw POST can (Python's json accepts it)."""
    body = json.dumps({"data": list(_run_args(steps="__STEPS__"))}).replace('"__STEPS__"', bad)
    base = app_url.rstrip("/") + "/gradio_api/call/viewer_run"
    event = httpx.post(base, content=body, headers={"content-type": "application/json"}, timeout=30).json()["event_id"]
    stream = httpx.get(f"{base}/{event}", timeout=120).text
    assert "event: error" in stream, stream[:500]
    # the input guard refuses both before gradio's own bounds check (which NaN would pass), naming the parameter
    assert "steps must be a finite number" in stream, stream[:500]


def test_eight_concurrent_jobs_get_their_own_trajectories(app_url):
    """8 sessions at once: each scrubs its own run; the same seed gives the same final image as a serial run."""
    seeds = [0, 1, 2, 3, 0, 1, 2, 3]
    # generous HTTP timeout: on a loaded 2-core machine the config fetch can take > httpx's 5 s default
    clients = [Client(app_url, verbose=False, httpx_kwargs={"timeout": 120}) for _ in seeds]

    def one(k):
        c, seed = clients[k], seeds[k]
        outs = c.submit(*_run_args(seed=seed, steps=5), api_name="/viewer_run").result(timeout=600)
        _, x0, _, _, info = c.predict(5, api_name="/viewer_scrub")
        return _img(outs[1]), _img(x0), info

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    for final, scrubbed, info in results:
        assert np.array_equal(final, scrubbed) and "step 5 / 5" in info  # each session scrubs its own run
    for k in range(4):
        assert np.array_equal(results[k][0], results[k + 4][0])  # same seed, same image
    assert not np.array_equal(results[0][0], results[1][0])  # different seeds differ
    serial = Client(app_url, verbose=False, httpx_kwargs={"timeout": 120}).predict(*_run_args(seed=2, steps=5), api_name="/viewer_run")
    assert np.array_equal(_img(serial[1]), results[2][0])


@pytest.mark.parametrize("sampler,key", [("DDIM", "ddim"), ("Euler", "euler")])
def test_viewer_final_prediction_is_the_golden_image(client, sampler, key):
    """The viewer at the golden settings (seed 0, w = 3, 20 steps): its last x̂0 panel is the golden
    image (DDIM and Euler end exactly on x̂0: ᾱ_final = 1, σ_final = 0), so the viewer's output is
    pinned across refactors, not only sampling.sample's."""
    from scripts import golden_check as gc

    args = (MODEL, gc.PROMPT, "", sampler, gc.STEPS, 0.0, gc.SEED, gc.GUIDANCE, False, None, 0.6)
    job = client.submit(*args, api_name="/viewer_run")
    job.result(timeout=300)
    _, x0, _, _, info = job.outputs()[-1]
    assert f"step {gc.STEPS} / {gc.STEPS}" in info
    golden = gc.read_png(gc.GOLDEN_DIR / f"{key}.png")
    assert np.abs(_img(x0).astype(int) - golden.astype(int)).max() <= 1
