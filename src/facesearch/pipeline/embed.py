"""ArcFace embedding of aligned crops: batched, L2-normalised float32, deterministic."""

from __future__ import annotations

import numpy as np
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

    def embed(self, crops: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """``crops``: (N, 112, 112, 3) uint8 RGB. Returns (N, dim) unit-length float32."""
        crops = np.asarray(crops)
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        out = np.empty((len(crops), self.dim), np.float32)
        step = self.batch_size // 2 if self.flip_augment else self.batch_size
        for start in range(0, len(crops), max(step, 1)):
            batch = crops[start:start + step]
            if self.flip_augment:
                batch = np.concatenate([batch, batch[:, :, ::-1]])
            blob = (batch.astype(np.float32) - self.mean) / self.std
            blob = np.ascontiguousarray(blob.transpose(0, 3, 1, 2))
            feats = self.session.run(None, {self.input_name: blob})[0]
            if self.flip_augment:
                half = len(feats) // 2
                feats = feats[:half] + feats[half:]
            out[start:start + len(feats)] = feats
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)
