"""Face quality: is this face usable for recognition, and if not, why?

Four cues, each mapped to 0..1 and multiplied: detector confidence, face size (the
inter-ocular distance drives how much identity the crop holds), sharpness (variance of
the Laplacian of the aligned crop) and pose (yaw and pitch estimated from the five
landmarks). The named ``issues`` let a UI warn on a poor probe in plain words.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

#: Below this overall score a face is flagged as unusable for search.
USABLE_QUALITY = 0.25


@dataclass(frozen=True)
class FaceQuality:
    score: float
    det_score: float
    face_px: float  # shorter side of the detected box, in image pixels
    sharpness: float  # variance of the Laplacian on the aligned 112x112 crop
    yaw: float  # -1 (facing its right) .. 0 (frontal) .. 1; |yaw| near 1 is a profile
    pitch: float  # 0 is level; positive looks down, negative looks up
    issues: tuple[str, ...] = field(default_factory=tuple)

    @property
    def usable(self) -> bool:
        return self.score >= USABLE_QUALITY

    def to_dict(self) -> dict:
        out = asdict(self)
        out["issues"] = list(self.issues)
        out["usable"] = self.usable
        return out


def estimate_pose(landmarks: np.ndarray) -> tuple[float, float]:
    """Yaw and pitch proxies from 5 landmarks, invariant to in-plane rotation and scale."""
    left_eye, right_eye, nose, left_mouth, right_mouth = np.asarray(landmarks, np.float64)
    eye_mid = (left_eye + right_eye) / 2
    mouth_mid = (left_mouth + right_mouth) / 2
    axis_x = right_eye - left_eye
    half_iod = np.linalg.norm(axis_x) / 2
    if half_iod < 1e-6:
        return 1.0, 0.0
    axis_x /= 2 * half_iod
    axis_y = np.array([-axis_x[1], axis_x[0]])
    nose_rel = nose - eye_mid
    yaw = float(np.dot(nose_rel, axis_x) / half_iod)
    eye_to_nose = float(np.dot(nose_rel, axis_y))
    nose_to_mouth = float(np.dot(mouth_mid - nose, axis_y))
    total = eye_to_nose + nose_to_mouth
    # On the template the nose sits at 0.49 of the eye-to-mouth height.
    pitch = float(eye_to_nose / total - 0.49) if abs(total) > 1e-6 else 0.0
    return yaw, pitch


def assess_quality(
    det_score: float, box: np.ndarray, landmarks: np.ndarray, aligned: np.ndarray
) -> FaceQuality:
    face_px = float(min(box[2] - box[0], box[3] - box[1]))
    gray = cv2.cvtColor(aligned, cv2.COLOR_RGB2GRAY)
    sharpness = float(cv2.Laplacian(gray, cv2.CV_64F).var())
    yaw, pitch = estimate_pose(landmarks)

    size_q = float(np.clip((face_px - 12.0) / (64.0 - 12.0), 0.0, 1.0))
    sharp_q = float(sharpness / (sharpness + 40.0))
    sharp_q = min(1.0, sharp_q / 0.8)
    # Thresholds from LFW's spread: 90 % of its faces have |yaw| < 0.5, |pitch| < 0.22.
    pose_q = float(np.clip(1.0 - max(abs(yaw) - 0.35, 0.0) / 0.85, 0.0, 1.0))
    pose_q *= float(np.clip(1.0 - max(abs(pitch) - 0.2, 0.0) / 0.3, 0.0, 1.0))
    det_q = float(np.clip((det_score - 0.3) / 0.5, 0.0, 1.0))
    score = det_q**0.5 * size_q**0.7 * sharp_q**0.5 * pose_q

    issues = []
    if face_px < 32:
        issues.append("small")
    if sharp_q < 0.5:
        issues.append("blurry")
    if abs(yaw) > 0.6:
        issues.append("turned away")
    if abs(pitch) > 0.3:
        issues.append("tilted up or down")
    if det_score < 0.6:
        issues.append("low detector confidence")
    return FaceQuality(round(score, 4), round(float(det_score), 4), round(face_px, 1),
                       round(sharpness, 1), round(yaw, 3), round(pitch, 3), tuple(issues))
