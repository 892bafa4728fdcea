"""ArcFace embedding of aligned crops: batched, L2-normalised float32, deterministic."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnxruntime as ort


class ArcFaceEmbedder:
    def __init__(self, session: ort.InferenceSession, mean: float = 127.5, std: float = 127.5,
                 batch_size: int = 32, flip_augment: bool = False) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.mean = mean
        self.std = std
        self.batch_size = batch_size
        # Flip test-time augmentation: embed the mirror image too and sum; costs 2x.
        self.flip_augment = flip_augment
        self.dim = int(session.get_outputs()[0].shape[-1])
        # A runtime that prepares kernels per input shape gets batches of power-of-two sizes: 18
        # crops run as 16 + 2 (at most log2(batch_size) + 1 shapes in a run, no padding rows; a
        # row's output does not depend on the batch it is in: tests/test_runtimes.py).
        self.bucket_batches = bool(getattr(session, "specialises_shapes", False))

    def embed(self, crops: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """``crops``: (N, 112, 112, 3) uint8 RGB. Returns (N, dim) unit-length float32."""
        crops = np.asarray(crops)
        if self.flip_augment and len(crops):
            half = len(crops)
            feats = self.raw_features(np.concatenate([crops, crops[:, :, ::-1]]))
            feats = feats[:half] + feats[half:]
        else:
            feats = self.raw_features(crops)
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        return feats / np.maximum(norms, 1e-12)

    def raw_features(self, crops: np.ndarray) -> np.ndarray:
        """Un-normalised recognizer outputs, batched; (N, dim) float32."""
        crops = np.asarray(crops)
        out = np.empty((len(crops), self.dim), np.float32)
        for start, size in _batches(len(crops), self.batch_size, self.bucket_batches):
            batch = crops[start:start + size]
            # (crop - mean) / std as (N, 3, 112, 112) float32, written once (no float, transposed
            # and contiguous copies of each batch)
            blob = np.empty((size, 3, *batch.shape[1:3]), np.float32)
            np.subtract(batch.transpose(0, 3, 1, 2), self.mean, out=blob, casting="unsafe")
            np.divide(blob, self.std, out=blob)
            out[start:start + size] = self.session.run(None, {self.input_name: blob})[0]
        return out


def _batches(n: int, batch_size: int, powers_of_two: bool) -> list[tuple[int, int]]:
    """(start, size) of each batch of ``n`` rows: at most ``batch_size`` each, and with
    ``powers_of_two`` the largest power of two that fits (37 rows of 32: 32, 4, 1)."""
    out, start = [], 0
    while start < n:
        size = min(batch_size, n - start)
        if powers_of_two:
            size = 1 << (size.bit_length() - 1)
        out.append((start, size))
        start += size
    return out
