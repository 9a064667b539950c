"""The Fréchet distance against independent computations: scipy's sqrtm and the diagonal closed form."""

import numpy as np
import pytest
import scipy.linalg

from pipelines.theory.fid import fid_from_features, frechet_distance


def _random_spd(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert got.total == pytest.approx(expected, rel=1e-8)
    assert got.mean == pytest.approx(np.sum((mu1 - mu2) ** 2))


def test_diagonal_closed_form():
    # For diagonal covariances: Σ_i (σ1_i − σ2_i)² with σ the standard deviations.
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    got = frechet_distance(np.zeros(3), np.diag(var1), np.ones(3), np.diag(var2))
    assert got.covariance == pytest.approx(np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2))
    assert got.mean == pytest.approx(3.0)


def test_real_vs_real_near_zero_and_shift_detected():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((4000, 4)), rng.standard_normal((4000, 4))
    assert fid_from_features(a, b).total < 0.02
    assert fid_from_features(a, b + 1.0).mean == pytest.approx(4.0, rel=0.05)


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
