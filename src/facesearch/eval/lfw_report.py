"""Turning evaluation results into reports (text, JSON) and score calibrations."""

from __future__ import annotations

import numpy as np

from facesearch.eval.lfw import ImageEmbeddings, VerificationResult
from facesearch.eval.verification import pair_score_histograms
from facesearch.models.calibration import Calibration, build_calibration

NOTE_ON_LABELS = ("LFW has label errors of its own (see docs/accuracy.md): read the hardest pairs "
                  "before blaming the model.")


def lfw_report_dict(pack: str, results: list[VerificationResult], counts: dict[str, int],
                    embeddings: ImageEmbeddings) -> dict:
    return {
        "protocol": "LFW view 2, 10 folds, threshold chosen on 9 folds and tested on the 10th",
        "pack": pack,
        "images": len(embeddings.paths),
        "faces": counts,
        "seconds": round(embeddings.seconds, 1),
        "variants": [
            {
                "name": r.name,
                "accuracy_mean": round(r.accuracy_mean, 5),
                "accuracy_std": round(r.accuracy_std, 5),
                "fold_accuracies": r.fold_accuracies,
                "tar_at_far": r.tar_at_far,
                "fold_thresholds": [round(t, 4) for t in r.thresholds],
                "hardest_impostor_pairs": r.hardest_impostors,
                "hardest_genuine_pairs": r.hardest_genuines,
            }
            for r in results
        ],
    }


def format_lfw_report(pack: str, results: list[VerificationResult], counts: dict[str, int],
                      embeddings: ImageEmbeddings) -> str:
    n = len(embeddings.paths)
    lines = [
        f"LFW view 2 verification, pack {pack}, {n} images embedded in {embeddings.seconds:.0f} s "
        f"({n / max(embeddings.seconds, 1e-9):.1f} images/s)",
        f"faces: {counts['detected']} detected at the default threshold; no face in "
        f"{n - counts['detected']} image(s): {counts['low-threshold']} found at detector threshold 0.1, "
        f"{counts['centre-prior']} aligned on the dataset's mean landmark layout, {counts['none']} unusable",
        "",
        f"{'variant':<58} {'accuracy':>16} {'TAR@FAR1e-2':>12} {'TAR@FAR1e-3':>12}",
    ]
    for r in results:
        acc = f"{100 * r.accuracy_mean:.2f} ± {100 * r.accuracy_std:.2f} %"
        lines.append(f"{r.name:<58} {acc:>16} {100 * r.tar_at_far['0.01']:>11.2f}% "
                     f"{100 * r.tar_at_far['0.001']:>11.2f}%")
    final = results[-1]
    lines += ["", f"hardest different-person pairs ({final.name.lstrip('+ ')}):"]
    lines += [f"  {s:.3f}  {a}  vs  {b}" for a, b, s in final.hardest_impostors]
    lines += ["hardest same-person pairs:"]
    lines += [f"  {s:.3f}  {a}  vs  {b}" for a, b, s in final.hardest_genuines]
    lines += ["", NOTE_ON_LABELS]
    return "\n".join(lines)


def calibration_from_lfw(pack: str, embeddings: ImageEmbeddings, flip_augment: bool = False) -> Calibration:
    """Every different-person pair among the embedded LFW images whose face the detector found."""
    keep = np.array([h == "detected" for h in embeddings.how])
    vectors = (embeddings.flipped if flip_augment else embeddings.plain)[keep]
    names = np.array([p.split("/")[0] for p, k in zip(embeddings.paths, keep) if k])
    scores = pair_score_histograms(vectors, names, per_person=True)
    source = (f"LFW: all different-person pairs (each pair of people weighted equally) of the {len(vectors):,} "
              "photos of its pairs.txt with a face found by the detector")
    return build_calibration(pack, source, scores.impostor, scores.genuine, flip_augment=flip_augment)
