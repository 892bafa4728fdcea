"""Alignment: map the 5 detected landmarks onto the ArcFace 112x112 template.

A least-squares similarity transform (Umeyama, 1991: rotation, uniform scale,
translation) -- the same estimate InsightFace's ``norm_crop`` makes with scikit-image.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Where ArcFace expects the eyes, nose tip and mouth corners in a 112x112 crop.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
CROP_SIZE = 112


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Return the 2x3 matrix of the least-squares similarity mapping ``src`` onto ``dst``."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n, dim = src.shape
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / n
    d = np.ones(dim)
    if np.linalg.det(cov) < 0:
        d[-1] = -1
    u, s, vt = np.linalg.svd(cov)
    rank = np.linalg.matrix_rank(cov)
    if rank == 0:
        return np.hstack([np.eye(dim), (dst_mean - src_mean)[:, None]])
    if rank == dim - 1:
        # Degenerate (collinear points): choose the sign that keeps a proper rotation,
        # as scikit-image does; otherwise the face would be mirrored.
        if np.linalg.det(u) * np.linalg.det(vt) > 0:
            rotation = u @ vt
        else:
            flip = d.copy()
            flip[-1] = -1
            rotation = u @ np.diag(flip) @ vt
    else:
        rotation = u @ np.diag(d) @ vt
    src_var = src_c.var(axis=0).sum()
    scale = (s * d).sum() / src_var if src_var > 0 else 1.0
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Warp ``image`` so the face's landmarks land on the template; returns (size, size, 3)."""
    template = ARCFACE_TEMPLATE * (size / CROP_SIZE)
    matrix = similarity_transform(landmarks, template)
    return cv2.warpAffine(image, matrix, (size, size), borderValue=0.0)
