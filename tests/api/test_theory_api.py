"""The Theory tab's sections through gradio_client: Score and Langevin, Prediction targets (issue 21, items 2-3).
Behaviour, not appearance: the assertions hold whatever the bundled weights."""

from __future__ import annotations

import pytest
from gradio_client.exceptions import AppError

pytestmark = pytest.mark.api
PROMPT = "a red circle on a white background"


def test_langevin_beside_ddim_at_the_same_budget(client):
    lang, ddim, md = client.predict(PROMPT, 5.0, 2, 1, 1.5, 0, api_name="/theory_langevin")
    assert lang and ddim
    assert "2 levels × 1 steps + 1 denoising call = 3 calls" in md and "**DDIM** (3 steps = 3 calls" in md
    assert md.count("judge reads") == 2


def test_langevin_refuses_bad_settings(client):
    with pytest.raises(AppError, match="noise levels"):
        client.predict(PROMPT, 5.0, 0, 1, 1.5, 0, api_name="/theory_langevin")
    with pytest.raises(AppError, match="step size"):
        client.predict(PROMPT, 5.0, 2, 1, 5.0, 0, api_name="/theory_langevin")


@pytest.mark.parametrize("api", ["/theory_score_field", "/theory_score_field_t"])
def test_score_field_trains_and_draws(client, api):
    plot, md = client.predict("8 gaussians", 300, False, 100, 0, api_name=api)
    assert plot is not None and "ε-MLP trained 100 steps" in md
    assert "8 gaussians" in md
    with pytest.raises(AppError, match="must be between 1 and 999"):
        client.predict("8 gaussians", 0, False, 100, 0, api_name=api)


@pytest.mark.parametrize("api", ["/theory_targets", "/theory_targets_t"])
def test_targets_true_predicted_errors(client, api):
    gal, md = client.predict(None, 3, "", 400, 0, api_name=api)
    assert len(gal) == 9
    assert [g["caption"].split(":")[0] for g in gal[:3]] == ["true ε", "predicted ε", "error in ε"]
    assert "t = 400" in md and "conditioned on “a " in md
    with pytest.raises(AppError, match="t must be"):
        client.predict(None, 3, "", 5000, 0, api_name=api)


def test_targets_over_t(client):
    plot, md = client.predict(0, 0, api_name="/theory_targets_over_t")
    assert plot is not None and md.count("|") > 12 and "easiest at t" in md
