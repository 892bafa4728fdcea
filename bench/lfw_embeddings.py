"""Embeddings of every LFW photo, computed once and cached: the shared input of the 1:N benches.

Embeds the primary face of each image under ``LFW_DIR/images/*/*.jpg`` with the same pipeline
and no-face fallbacks as ``facesearch eval lfw`` (:func:`facesearch.eval.lfw.embed_lfw_images`)
and keeps the *plain* (no flip) embedding, which is what ``facesearch index`` stores.

The cache is one ``.npz`` holding any number of packs, keyed ``<pack>/paths``, ``<pack>/plain``
and ``<pack>/how``. A cached entry is reused only when its path list equals the images found
now, so a changed dataset is re-embedded rather than silently mismatched.

    python bench/lfw_embeddings.py --lfw ../shared/data/lfw            # fill the cache
    python bench/lfw_embeddings.py --lfw ../shared/data/lfw --check    # print what is cached
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_CACHE = Path(tempfile.gettempdir()) / "facesearch_lfw_embeddings.npz"
DEFAULT_PACK = "buffalo_s"


def image_paths(lfw_dir: Path) -> list[str]:
    """Sorted ``NAME/NAME_000N.jpg`` paths of every image present (some LFW copies lack one)."""
    image_dir = Path(lfw_dir) / "images"
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{lfw_dir}: expected an images/ folder (LFW layout)")
    return sorted(f"{p.parent.name}/{p.name}" for p in image_dir.glob("*/*.jpg"))


def labels_of(paths: list[str]) -> np.ndarray:
    """Identity of each image = its folder name."""
    return np.array([p.split("/", 1)[0] for p in paths])


def _read_cache(cache: Path) -> dict[str, np.ndarray]:
    if not cache.is_file():
        return {}
    with np.load(cache, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _write_cache(cache: Path, arrays: dict[str, np.ndarray]) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, cache)


def load_or_compute(lfw_dir: Path, cache: Path | None = DEFAULT_CACHE, pack: str = DEFAULT_PACK,
                    progress: bool = True) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """``(paths, labels, embeddings, how)`` for every LFW image; embeddings are unit-length float32.

    ``how`` says how each face was found: ``detected`` | ``low-threshold`` | ``centre-prior`` |
    ``none`` (an all-zero row; no LFW image ends there with the centre-prior fallback).
    """
    paths = image_paths(lfw_dir)
    stored = _read_cache(Path(cache)) if cache else {}
    key = f"{pack}/"
    if key + "paths" in stored and list(stored[key + "paths"]) == paths:
        embeddings = np.ascontiguousarray(stored[key + "plain"], np.float32)
        return paths, labels_of(paths), embeddings, stored[key + "how"]

    from facesearch.eval.lfw import embed_lfw_images
    from facesearch.pipeline import FaceAnalyzer

    if progress:
        print(f"embedding {len(paths):,} LFW images with {pack} (cache {cache}) ...", file=sys.stderr)
    start = time.perf_counter()
    emb = embed_lfw_images(FaceAnalyzer(pack), Path(lfw_dir) / "images", paths, progress=progress)
    if progress:
        print(f"embedded in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    how = np.array(emb.how)
    if cache:
        stored = _read_cache(Path(cache))  # re-read: another pack may have been added meanwhile
        stored.update({key + "paths": np.array(paths), key + "plain": emb.plain, key + "how": how})
        _write_cache(Path(cache), stored)
    return paths, labels_of(paths), emb.plain, how


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=Path, required=True, help="LFW folder with images/NAME/*.jpg")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"embedding cache (default {DEFAULT_CACHE})")
    parser.add_argument("--pack", default=DEFAULT_PACK, help="model pack (default %(default)s)")
    parser.add_argument("--check", action="store_true", help="only report the cache; compute nothing")
    args = parser.parse_args(argv)
    if args.check:
        stored = _read_cache(args.cache)
        for name in sorted(k for k in stored if k.endswith("/paths")):
            print(f"{name[:-6]}: {len(stored[name]):,} images")
        return 0
    paths, labels, embeddings, how = load_or_compute(args.lfw, args.cache, args.pack)
    kinds, counts = np.unique(how, return_counts=True)
    print(f"{len(paths):,} images, {len(set(labels.tolist())):,} people, dim {embeddings.shape[1]}; faces: "
          + ", ".join(f"{k} {c:,}" for k, c in zip(kinds, counts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
