"""Face quality: blur, size and pose cues are measured and named."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from facesearch.pipeline.align import ARCFACE_TEMPLATE
from facesearch.pipeline.quality import USABLE_QUALITY, assess_quality, estimate_pose


@pytest.fixture
def enlarged(face_photo) -> Image.Image:
    """The face photo at 300x300: a radius-4 blur of the 150 px original leaves no detectable
    face at all, while on this copy the blurred face is still found and can be scored."""
    return face_photo.resize((300, 300), Image.Resampling.BICUBIC)


def test_sharp_face_is_usable(primary, face_photo):
    quality = primary(face_photo).quality
    assert quality.usable
    assert quality.score >= USABLE_QUALITY
    assert quality.issues == ()
    assert 0.0 < quality.score <= 1.0


def test_blurred_face_scores_lower(primary, enlarged):
    sharp = primary(enlarged).quality
    blurred = primary(enlarged.filter(ImageFilter.GaussianBlur(radius=4))).quality
    assert blurred.sharpness < sharp.sharpness / 4
    assert blurred.score < sharp.score
    assert "blurry" in blurred.issues
    assert "blurry" not in sharp.issues


def test_blur_lowers_quality_monotonically(primary, enlarged):
    scores = [primary(enlarged.filter(ImageFilter.GaussianBlur(radius=r))).quality.sharpness
              for r in (0.5, 2, 4)]
    assert scores[0] > scores[1] > scores[2]


def test_tiny_face_is_flagged_small(primary, face_photo):
    normal = primary(face_photo).quality
    tiny = primary(face_photo.resize((50, 50), Image.Resampling.LANCZOS)).quality
    assert tiny.face_px < 32 <= normal.face_px
    assert "small" in tiny.issues
    assert "small" not in normal.issues
    assert tiny.score < normal.score


def test_quality_serialises(primary, face_photo):
    data = primary(face_photo).to_dict()
    quality = data["quality"]
    assert set(quality) >= {"score", "det_score", "face_px", "sharpness", "yaw", "pitch", "issues", "usable"}
    assert isinstance(quality["issues"], list)
    assert quality["usable"] is True


def test_pose_of_the_template_is_frontal_and_level():
    yaw, pitch = estimate_pose(ARCFACE_TEMPLATE)
    assert abs(yaw) < 0.05
    assert abs(pitch) < 0.05


def test_pose_ignores_in_plane_rotation_and_scale():
    t = np.deg2rad(40)
    rotation = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    moved = 3.0 * ARCFACE_TEMPLATE @ rotation.T + 17.0
    np.testing.assert_allclose(estimate_pose(moved), estimate_pose(ARCFACE_TEMPLATE), atol=1e-9)


def test_turned_face_is_flagged():
    turned = ARCFACE_TEMPLATE.copy()
    turned[2, 0] += 30.0  # nose far towards one eye: a near-profile
    yaw, _ = estimate_pose(turned)
    assert abs(yaw) > 0.6
    crop = np.full((112, 112, 3), 128, np.uint8)
    crop[::2] = 0  # stripes: plenty of sharpness
    box = np.array([0.0, 0.0, 100.0, 100.0])
    frontal = assess_quality(0.9, box, ARCFACE_TEMPLATE, crop)
    profile = assess_quality(0.9, box, turned, crop)
    assert "turned away" in profile.issues and "turned away" not in frontal.issues
    assert profile.score < frontal.score
