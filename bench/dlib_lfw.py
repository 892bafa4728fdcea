"""LFW view 2 with the optional dlib pack (dlib's ResNet), side by side with buffalo_s.

Embeds the primary face of **every** LFW photo (``LFW_DIR/images/*/*.jpg``, sorted as
``bench/lfw_embeddings.py`` does) with :class:`facesearch.eval.dlib_pack.DlibFaceModel`:
dlib's HOG detector (upsample 1), a lowered HOG threshold for photos without a face, then a
fixed central box (LFW's faces are centred), the 5-point predictor, ``get_face_chip`` (150x150,
padding 0.25) and the ResNet; plain and flip-summed embeddings, L2-normalised.

The result goes into the shared embedding cache (``<pack>/paths``, ``<pack>/plain``,
``<pack>/how``, plus ``<pack>/flipped`` for this evaluation) under the pack name ``dlib_resnet``;
other packs' entries are kept. A cached entry whose path list equals the images found is
reused unless ``--recompute``. Then the 6,000 pairs of ``pairs.txt`` are scored (cosine) and
evaluated with :func:`facesearch.eval.lfw.evaluate` (10 folds: threshold on 9, tested on 1;
TAR at FAR 1e-2 / 1e-3 over all pairs), and buffalo_s's plain embeddings from the same cache
are evaluated on the same pairs for comparison.

    .venv/bin/pip install -e '.[dlib]'
    .venv/bin/python bench/dlib_lfw.py --lfw ../shared/data/lfw
    .venv/bin/python bench/dlib_lfw.py --lfw ../shared/data/lfw --limit 200   # quick check, no cache
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from facesearch.eval.lfw import evaluate, pair_scores, read_pairs
from lfw_embeddings import DEFAULT_CACHE, _read_cache, _write_cache, image_paths

PACK = "dlib_resnet"
COMPARE_PACK = "buffalo_s"
HOWS = ("detected", "low-threshold", "centre-prior", "none")


def embed_all(lfw_dir: Path, paths: list[str], cache: Path | None, recompute: bool, progress: bool
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float | None]:
    """``(plain, flipped, how, seconds)`` of ``paths``; seconds is None when read from the cache."""
    key = f"{PACK}/"
    stored = _read_cache(cache) if cache else {}
    if not recompute and key + "flipped" in stored and list(stored[key + "paths"]) == paths:
        return stored[key + "plain"], stored[key + "flipped"], stored[key + "how"], None

    from facesearch.eval.dlib_pack import DlibFaceModel

    model = DlibFaceModel()
    emb = model.embed_primary_faces(Path(lfw_dir) / "images", paths, progress=progress)
    how = np.array(emb.how)
    if cache:
        stored = _read_cache(cache)  # re-read: another pack may have been added meanwhile
        stored.update({key + "paths": np.array(paths), key + "plain": emb.plain,
                       key + "flipped": emb.flipped, key + "how": how})
        _write_cache(cache, stored)
    return emb.plain, emb.flipped, how, emb.seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=Path, required=True, help="LFW folder with pairs.txt and images/NAME/*.jpg")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"embedding cache (default {DEFAULT_CACHE})")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    parser.add_argument("--recompute", action="store_true", help="embed again even if the cache has the pack")
    parser.add_argument("--limit", type=int, help="quick check: an evenly strided subset of N pairs, their images "
                        "only, no cache")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    cache = None if args.no_cache or args.limit else args.cache
    pairs = read_pairs(args.lfw / "pairs.txt")
    if args.limit:
        pairs = pairs[:: max(1, len(pairs) // args.limit)][: args.limit]
        paths = sorted({p.a for p in pairs} | {p.b for p in pairs})
    else:
        paths = image_paths(args.lfw)
    plain, flipped, how, seconds = embed_all(args.lfw, paths, cache, args.recompute, not args.quiet)
    index = {p: i for i, p in enumerate(paths)}
    missing = [p for p in pairs if p.a not in index or p.b not in index]
    if missing:
        print(f"{len(missing)} pair(s) name images not under {args.lfw}/images, e.g. {missing[0]}", file=sys.stderr)
        return 1
    detected = how == "detected"
    any_face = how != "none"

    import dlib

    print(f"LFW view 2 verification, pack {PACK} (dlib {dlib.__version__}, HOG detector, upsample 1, "
          f"150x150 chip, padding 0.25), {len(paths):,} images, {len(pairs):,} pairs")
    if seconds is not None:
        print(f"embedded in {seconds:.0f} s ({len(paths) / seconds:.1f} images/s, plain + mirror descriptor "
              "per image, one process on the shared 2-core machine)")
    else:
        print(f"embeddings read from {cache}")
    counts = {k: int(np.sum(how == k)) for k in HOWS}
    print("faces: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    print()

    variants = [
        (f"{PACK}: detector only, no flip (no-face pairs = errors)", plain, detected),
        (f"{PACK}: + fallbacks for no-face photos", plain, any_face),
        (f"{PACK}: + flip test-time augmentation", flipped, any_face),
    ]
    stored = _read_cache(cache) if cache else {}
    ckey = f"{COMPARE_PACK}/"
    if ckey + "paths" in stored:
        cindex = {p: i for i, p in enumerate(stored[ckey + "paths"].tolist())}
        if all(p.a in cindex and p.b in cindex for p in pairs):
            rows = np.array([cindex[p] for p in paths])
            chow = stored[ckey + "how"][rows]
            variants.append((f"{COMPARE_PACK}: + fallbacks, no flip (cache)", stored[ckey + "plain"][rows],
                             chow != "none"))
    results = [evaluate(name, pairs, pair_scores(pairs, vecs, index, ok)) for name, vecs, ok in variants]
    print(f"{'variant':<60} {'accuracy':>15} {'TAR@FAR1e-2':>12} {'TAR@FAR1e-3':>12}  threshold (mean of folds)")
    for r in results:
        print(f"{r.name:<60} {100 * r.accuracy_mean:6.2f} ± {100 * r.accuracy_std:.2f} % "
              f"{100 * r.tar_at_far['0.01']:11.2f}% {100 * r.tar_at_far['0.001']:11.2f}%  "
              f"{np.mean(r.thresholds):.3f}")
    best = results[2]
    print()
    print(f"hardest different-person pairs ({PACK}, flip):")
    for a, b, s in best.hardest_impostors:
        print(f"  {s:.3f}  {a}  vs  {b}")
    print("hardest same-person pairs:")
    for a, b, s in best.hardest_genuines:
        print(f"  {s:.3f}  {a}  vs  {b}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
