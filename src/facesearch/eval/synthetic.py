"""Synthetic distractor faces: embeddings drawn from a Gaussian fitted to real ones.

Used only where real faces run out (1:N at 100k-1M gallery sizes) and always labelled as
synthetic in reports. The fit is mean + full covariance of real unit embeddings, each person
weighted equally; samples are L2-normalised. Its marginal matches a per-identity model
(centre + within-person noise) with one photo per synthetic person. Its extreme tail is
lighter than real faces' (bench/search_scale.py measures this), so FNIR growth with
gallery size measured on it is a lower bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHUNK = 65_536  # drawn in fixed chunks, so a smaller N is a prefix of a larger one


@dataclass
class GaussianFaces:
    mean: np.ndarray  # (d,)
    chol: np.ndarray  # (d, d) lower Cholesky factor of the covariance

    @classmethod
    def fit(cls, embeddings: np.ndarray, labels: np.ndarray) -> GaussianFaces:
        _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        w = 1.0 / counts[inverse]
        w /= w.sum()
        x = embeddings.astype(np.float64)
        mean = w @ x
        centred = x - mean
        cov = (centred * w[:, None]).T @ centred
        cov += 1e-8 * np.trace(cov) / len(cov) * np.eye(len(cov))
        return cls(mean, np.linalg.cholesky(cov))

    def sample_into(self, out: np.ndarray, rows: np.ndarray | None, n: int, seed: int) -> None:
        """Write distractors 0..n-1 of the seeded stream into ``out[rows]`` (or ``out[:n]``)."""
        mean, chol_t = self.mean.astype(np.float32), self.chol.T.astype(np.float32)
        for c, lo in enumerate(range(0, n, CHUNK)):
            hi = min(n, lo + CHUNK)
            z = np.random.default_rng([seed, c]).standard_normal((CHUNK, len(mean)), np.float32)[:hi - lo]
            x = z @ chol_t
            x += mean
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            if rows is None:
                out[lo:hi] = x
            else:
                out[rows[lo:hi]] = x

    def sample(self, n: int, seed: int) -> np.ndarray:
        out = np.empty((n, len(self.mean)), np.float32)
        self.sample_into(out, None, n, seed)
        return out
