"""The Theory tab's "ELBO per t" and "FID" api_names through gradio_client on the bundled toy-sd (few
timesteps and samples: wiring, what is shown, validation; the figures are `evaluate --fid`'s job)."""

import re

import pytest
from gradio_client.exceptions import AppError

pytestmark = pytest.mark.api
PROMPT = "a red circle on a white background"


def test_elbo_terms_plot_and_summary(client):
    gallery, plot, md = client.predict(PROMPT, 2, 240, "beta_tilde", False, 0, api_name="/theory_elbo")
    assert len(gallery) == 2 and plot is not None
    total = float(re.search(r"Bound on −log p\(x0 \| prompt\): ([0-9.]+) bits/dim", md).group(1))
    l0 = float(re.search(r"L_0 \(the discretised decoder, σ_1² = β_1\) = \*\*([0-9.]+)\*\*", md).group(1))
    assert total > l0 > 0 and "15 of 960 timesteps" in md  # t = 0..10, 240, 480, 720, 959


def test_elbo_with_the_empty_prompt_and_beta(client):
    _, _, md = client.predict(PROMPT, 1, 240, "beta", True, 1, api_name="/theory_elbo")
    assert "With the **empty prompt**" in md


def test_elbo_monte_carlo_check_agrees(client):
    md = client.predict(PROMPT, 1, "beta_tilde", 0, 400, api_name="/theory_elbo_mc")
    zs = [float(z) for z in re.findall(r"\| ([+−-][0-9.]+) \|$", md, flags=re.M)]
    assert len(zs) == 4 and all(abs(z) < 5 for z in zs), md


@pytest.mark.parametrize("args, message", [(("a photo of a cat", 2, 240, "beta_tilde", False, 0), "names no toy-world"),
                                           ((PROMPT, 2, 240, "sigma", False, 0), "reverse variance")])
def test_elbo_bad_input(client, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/theory_elbo")


def test_fid_sweep_table_and_floor(client):
    plot, md = client.predict(8, 2, [7.5, 0.0], 0, 0, api_name="/theory_fid")
    assert plot is not None and "real B" in md and "w = 0" in md and "w = 7.5" in md
    assert md.index("w = 0") < md.index("w = 7.5")  # sorted
    assert "rank at most 7" in md  # 8 samples in 128 dimensions: the note


@pytest.mark.parametrize("args, message", [((8, 2, [], 0, 0), "at least one"), ((16, 2, [1.0], 16, 0), "fewer than")])
def test_fid_bad_input(client, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/theory_fid")
