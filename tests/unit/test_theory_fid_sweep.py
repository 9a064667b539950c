"""FID: identical sets, exact shifts and sampled Gaussians against the closed form; the PCA projection;
the sweep's structure on a tiny random toy-sd."""

import numpy as np
import pytest
import torch

from pipelines.theory import fid_sweep as S
from pipelines.theory.fid import fid_from_features, frechet_distance


def test_identical_sets_give_zero():
    f = np.random.default_rng(0).standard_normal((300, 16))
    got = fid_from_features(f, f.copy())
    assert abs(got.total) < 1e-9 and abs(got.mean) < 1e-12


def test_exact_shift_is_all_mean_part():
    f = np.random.default_rng(1).standard_normal((300, 8))
    delta = np.linspace(-1, 1, 8)
    got = fid_from_features(f, f + delta)
    assert got.mean == pytest.approx(float(delta @ delta), rel=1e-12) and abs(got.covariance) < 1e-9


def test_sampled_gaussians_approach_the_closed_form():
    """Samples of N(μ1, diag σ1²) and N(μ2, diag σ2²): FID → ‖μ1 − μ2‖² + Σ (σ1 − σ2)² (independent formula)."""
    rng = np.random.default_rng(2)
    mu1, mu2 = np.zeros(4), np.array([0.5, 0.0, -0.5, 1.0])
    s1, s2 = np.array([1.0, 2.0, 0.5, 1.0]), np.array([1.5, 1.0, 0.5, 0.2])
    a = mu1 + s1 * rng.standard_normal((50_000, 4))
    b = mu2 + s2 * rng.standard_normal((50_000, 4))
    got = fid_from_features(a, b)
    assert got.mean == pytest.approx(float(np.sum((mu1 - mu2) ** 2)), abs=0.01)
    assert got.covariance == pytest.approx(float(np.sum((s1 - s2) ** 2)), abs=0.02)


def test_pca_with_all_axes_changes_nothing_and_fewer_axes_less():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((200, 6)), rng.standard_normal((200, 6)) * 1.3 + 0.2
    full = fid_from_features(a, b).total
    proj = S.pca_projector(a, 6)
    assert fid_from_features(proj(a), proj(b)).total == pytest.approx(full, rel=1e-9)  # a rotation
    proj2 = S.pca_projector(a, 2)
    assert proj2(a).shape == (200, 2) and fid_from_features(proj2(a), proj2(b)).total < full


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from pipelines.models import load_toy_clip, load_toy_diffusion, toy_clip_config
    from pipelines.toyworld.unet_config import build_random_toy_sd

    d = tmp_path_factory.mktemp("tiny_fid")
    build_random_toy_sd(d / "sd", d / "clip")
    clip = load_toy_clip(d / "clip" / "open_clip_model.safetensors", toy_clip_config(d / "clip"), torch.device("cpu"))
    return load_toy_diffusion(d / "sd", d / "clip", torch.device("cpu"), name="tiny", clip=clip), clip


def test_sweep_structure_on_a_tiny_model(tiny):
    model, clip = tiny
    seen = []
    res = S.fid_sweep(model, clip, [0.0, 2.0], n=6, steps=2, chunk=4, pca=3,
                      callback=lambda d, t, what: seen.append((d, t)))
    assert res.dims == 3 and res.n == 6 and [r["scale"] for r in res.rows] == [0.0, 2.0]
    assert seen[-1] == (4, 4) and res.real_vs_real.total > 0
    assert all(r["fid"].total > 0 and 0 <= r["judged"] <= 1 and r["images"].shape[1:] == (3, 32, 32)
               for r in res.rows)
    md = S.table(res)
    assert "real B" in md and "w = 2" in md
    with pytest.raises(ValueError):
        S.fid_sweep(model, clip, [1.0], n=6, pca=6)  # PCA axes must be fewer than the samples
    with pytest.raises(ValueError):
        S.fid_sweep(model, clip, [], n=6)


def test_rendered_scenes_are_judged_right():
    scenes = S.reference_scenes(12, seed=4)
    from pipelines.toyworld.world import render_batch

    assert S.judged_fraction(render_batch(scenes), scenes) == 1.0
    assert S.reference_scenes(5, 9) == S.reference_scenes(5, 9) != S.reference_scenes(5, 10)
