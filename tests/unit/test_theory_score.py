"""score = −ε/σ checked against the exact score of Gaussian data, where the ideal denoiser is known in closed form."""

import math

import pytest
import torch

from pipelines.diffusion import maths
from pipelines.theory.score import score_from_output


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_score_of_gaussian_data(prediction_type):
    # x0 ~ N(0, s² I)  =>  x_t ~ N(0, (ᾱ s² + 1 − ᾱ) I), exact score −x / (ᾱ s² + 1 − ᾱ);
    # the ideal ε-predictor is E[ε | x_t] = √(1−ᾱ) x / (ᾱ s² + 1 − ᾱ).
    s2, alpha_bar = 0.3, 0.6
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    var = alpha_bar * s2 + 1 - alpha_bar
    eps = math.sqrt(1 - alpha_bar) * x / var
    out = maths.from_eps(eps, x, math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar), prediction_type)
    torch.testing.assert_close(score_from_output(out, x, alpha_bar, prediction_type), -x / var)


def test_alpha_bar_range():
    with pytest.raises(ValueError):
        score_from_output(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), 1.0, "epsilon")
