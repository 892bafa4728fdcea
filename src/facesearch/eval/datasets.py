"""Labelled face datasets on disk, their content hash, and a cache of their embeddings.

A dataset is a folder with one sub-folder per person (``DIR/NAME/*.jpg``) or LFW's layout
(``DIR/images/NAME/*.jpg`` beside ``pairs.txt``). Every image is embedded once per pack
(primary face, the same pipeline and no-face fallbacks as ``facesearch eval lfw``), and
the result is cached keyed by pack and dataset hash, so ``eval verify``, ``eval identify``
and ``calibrate`` on the same data share one embedding run.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesearch.home import user_cache_dir

#: Extension-less files are tried too: Yale ships its GIFs without one.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".pgm", ".ppm"}


@dataclass(frozen=True)
class Dataset:
    root: Path
    image_dir: Path
    rel_paths: list[str]  # "NAME/file.jpg", sorted
    labels: np.ndarray  # identity of each image = its folder name
    pairs_file: Path | None  # a verification protocol shipped with the data (LFW's pairs.txt)

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def people(self) -> int:
        return len(set(self.labels.tolist()))

    def content_hash(self) -> str:
        """SHA-256 over every image's relative path and bytes: names exactly the data measured."""
        digest = hashlib.sha256()
        for rel in self.rel_paths:
            digest.update(rel.encode() + b"\0")
            digest.update(hashlib.sha256((self.image_dir / rel).read_bytes()).digest())
        return digest.hexdigest()

    def describe(self) -> dict:
        return {"root": str(self.root), "images": len(self.rel_paths), "people": self.people,
                "pairs_file": str(self.pairs_file) if self.pairs_file else None}


def open_dataset(root: str | os.PathLike) -> Dataset:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such dataset folder")
    image_dir = root / "images" if (root / "images").is_dir() else root
    rel_paths = sorted(
        f"{p.parent.name}/{p.name}" for person in image_dir.iterdir() if person.is_dir()
        for p in person.iterdir() if p.is_file() and not p.name.startswith(".")
        and (p.suffix.lower() in IMAGE_SUFFIXES or not p.suffix)
    )
    if not rel_paths:
        raise FileNotFoundError(f"{root}: expected one folder per person with photos in it "
                                "(DIR/NAME/*.jpg, or LFW's DIR/images/NAME/*.jpg)")
    labels = np.array([p.split("/", 1)[0] for p in rel_paths])
    pairs = root / "pairs.txt"
    return Dataset(root, image_dir, rel_paths, labels, pairs if pairs.is_file() else None)


@dataclass(frozen=True)
class DatasetEmbeddings:
    dataset: Dataset
    pack: str
    dataset_hash: str
    vectors: np.ndarray  # (N, d) unit rows; all-zero where no face could be used
    how: np.ndarray  # "detected" | "low-threshold" | "centre-prior" | "none" | "unreadable"
    seconds: float  # embedding time (0 when read from the cache)
    cache: Path | None

    @property
    def usable(self) -> np.ndarray:
        return np.isin(self.how, ("detected", "low-threshold", "centre-prior"))

    def counts(self) -> dict[str, int]:
        kinds, n = np.unique(self.how, return_counts=True)
        return {str(k): int(c) for k, c in zip(kinds, n)}


def default_cache_dir() -> Path:
    return user_cache_dir() / "eval"


def _read(cache: Path) -> dict[str, np.ndarray]:
    if not cache.is_file():
        return {}
    with np.load(cache, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def write_cache(cache: Path, arrays: dict[str, np.ndarray]) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, cache)  # atomic: a killed run never leaves a half-written cache


def cache_key(pack: str) -> str:
    """Where ``pack``'s embeddings sit in a cache file: apart for each runtime and precision
    (``buffalo_s/`` for ONNX Runtime, ``buffalo_s@openvino-bf16/`` ...), since scores differ slightly."""
    from facesearch.models.runtime import runtime_label

    label = runtime_label()
    return f"{pack}/" if label == "onnxruntime" else f"{pack}@{label}/"


def embed_dataset(dataset: Dataset, pack: str = "buffalo_s", *, cache: Path | None = None,
                  use_cache: bool = True, progress: bool = True, embedder=None) -> DatasetEmbeddings:
    """Primary-face embedding of every image, from the cache when pack, paths and content hash agree.

    ``embedder`` (optional) is any object with ``embed_primary_faces(image_dir, rel_paths, progress)``
    returning :class:`facesearch.eval.lfw.ImageEmbeddings`; by default the pack's ONNX pipeline.
    The cache holds any number of packs: keys ``<pack>/paths``, ``<pack>/plain``, ``<pack>/how``,
    ``<pack>/hash``.
    """
    digest = dataset.content_hash()
    cache = cache or default_cache_dir() / f"{dataset.name}-{digest[:12]}.npz"
    key = cache_key(pack) if embedder is None else f"{pack}/"
    stored = _read(cache) if use_cache else {}
    if key + "paths" in stored and list(stored[key + "paths"]) == dataset.rel_paths and (
            key + "hash" not in stored or str(stored[key + "hash"]) == digest):
        return DatasetEmbeddings(dataset, pack, digest, np.ascontiguousarray(stored[key + "plain"], np.float32),
                                 stored[key + "how"], 0.0, cache)
    if embedder is None:
        from facesearch.eval.lfw import embed_lfw_images
        from facesearch.pipeline import FaceAnalyzer

        analyzer = FaceAnalyzer(pack)

        def run(image_dir, rel_paths, progress):
            return embed_lfw_images(analyzer, image_dir, rel_paths, progress=progress)
    else:
        run = embedder.embed_primary_faces
    if progress:
        print(f"embedding {len(dataset.rel_paths):,} images of {dataset.root} with {pack} (cache {cache}) ...",
              file=sys.stderr)
    start = time.perf_counter()
    emb = run(dataset.image_dir, dataset.rel_paths, progress)
    seconds = time.perf_counter() - start
    how = np.array(emb.how)
    if use_cache:
        stored = _read(cache)  # re-read: another pack may have been added meanwhile
        stored.update({key + "paths": np.array(dataset.rel_paths), key + "plain": emb.plain, key + "how": how,
                       key + "hash": np.array(digest)})
        write_cache(cache, stored)
    return DatasetEmbeddings(dataset, pack, digest, np.ascontiguousarray(emb.plain, np.float32), how, seconds, cache)
