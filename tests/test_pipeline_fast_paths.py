"""Faster ways to do the same per-photo work compute bitwise the same thing as the plain NumPy
they replaced (the detector's input blob, the turned photos of the rotated-scan retry), so the
detections and embeddings of an ingest do not move."""

from __future__ import annotations

import numpy as np
import pytest

from facesearch.pipeline.imageio import rot90


@pytest.mark.parametrize("shape", [(7, 5), (7, 5, 1), (7, 5, 3), (6, 9, 4), (480, 640, 3)])
@pytest.mark.parametrize("k", [-1, 0, 1, 2, 3, 4, 5])
def test_rot90_is_numpys(shape, k):
    image = np.random.default_rng(k + 10).integers(0, 256, shape, dtype=np.uint8)
    turned = rot90(image, k)
    expected = np.ascontiguousarray(np.rot90(image, k))
    assert turned.shape == expected.shape and turned.dtype == expected.dtype
    assert np.array_equal(turned, expected) and turned.flags.c_contiguous
    assert not np.shares_memory(turned, image)  # a new array, as before


def test_rot90_of_other_types_and_views():
    floats = np.random.default_rng(1).standard_normal((5, 8, 3)).astype(np.float32)
    assert np.array_equal(rot90(floats, 1), np.rot90(floats, 1))
    view = np.random.default_rng(2).integers(0, 256, (40, 60, 3), dtype=np.uint8)[5:30:2, ::3]
    assert np.array_equal(rot90(view, 3), np.rot90(view, 3))


def test_the_detector_blob_is_bitwise_the_plain_arithmetic(analyzer):
    detector = analyzer.detector
    rng = np.random.default_rng(3)
    for height, width in [(640, 640), (384, 512), (33, 17)]:
        canvas = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        expected = np.empty((3, height, width), np.float32)
        np.subtract(canvas.transpose(2, 0, 1), detector.mean, out=expected, casting="unsafe")
        np.divide(expected, detector.std, out=expected)
        batch = np.full((2, 3, height, width), np.nan, np.float32)
        detector._normalise_into(batch[1], canvas)
        assert batch[1].tobytes() == expected.tobytes()  # every bit, and written in place
        assert np.isnan(batch[0]).all()  # nothing written beside it
