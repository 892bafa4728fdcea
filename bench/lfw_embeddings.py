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
import sys
import tempfile
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


def _write_cache(cache: Path, arrays: dict[str, np.ndarray]) -> None:
    from facesearch.eval.datasets import write_cache

    write_cache(cache, arrays)


def _read_cache(cache: Path) -> dict[str, np.ndarray]:
    if not cache.is_file():
        return {}
    with np.load(cache, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def load_or_compute(lfw_dir: Path, cache: Path | None = DEFAULT_CACHE, pack: str = DEFAULT_PACK,
                    progress: bool = True) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """``(paths, labels, embeddings, how)`` for every LFW image; embeddings are unit-length float32.

    ``how`` says how each face was found: ``detected`` | ``low-threshold`` | ``centre-prior`` |
    ``none`` (an all-zero row; no LFW image ends there with the centre-prior fallback).
    The cache is the one ``facesearch eval`` uses (:func:`facesearch.eval.datasets.embed_dataset`).
    """
    from facesearch.eval.datasets import embed_dataset, open_dataset

    dataset = open_dataset(lfw_dir)
    if dataset.image_dir == dataset.root:
        raise FileNotFoundError(f"{lfw_dir}: expected an images/ folder (LFW layout)")
    emb = embed_dataset(dataset, pack, cache=Path(cache) if cache else None, use_cache=bool(cache),
                        progress=progress)
    return dataset.rel_paths, dataset.labels, emb.vectors, emb.how


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
