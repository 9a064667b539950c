"""Fréchet distance between two Gaussians fitted to embeddings (seed 004's FID, Heusel et al. 2017).

FID = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2})

The matrix square root is taken as (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2}, which has the same trace as (Σ₁ Σ₂)^{1/2}
and is symmetric positive semi-definite, so two symmetric eigendecompositions suffice (no complex parts,
unlike ``scipy.linalg.sqrtm`` on the non-symmetric product). The test checks it against ``sqrtm``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Frechet:
    """The distance and its two parts: ``mean`` = ‖μ₁ − μ₂‖², ``covariance`` = the trace term."""

    mean: float
    covariance: float

    @property
    def total(self) -> float:
        return self.mean + self.covariance


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix; negative round-off eigenvalues are clipped."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` of embeddings ``[N, D]`` (N >= 2)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need embeddings of shape [N, D] with N >= 2, got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> Frechet:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2); means ``[D]``, covariances ``[D, D]``."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shapes do not match: means {mu1.shape}, {mu2.shape}; covariances {sigma1.shape}, "
                         f"{sigma2.shape}")
    root1 = _psd_sqrt(sigma1)
    cross = _psd_sqrt(root1 @ sigma2 @ root1)  # Tr of this = Tr (Σ₁ Σ₂)^{1/2}
    mean_part = float(np.sum((mu1 - mu2) ** 2))
    cov_part = float(np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(cross))
    return Frechet(mean=mean_part, covariance=max(cov_part, 0.0))


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> Frechet:
    """Fréchet distance between two sets of embeddings ``[N, D]`` and ``[M, D]``."""
    return frechet_distance(*gaussian_stats(real), *gaussian_stats(fake))
