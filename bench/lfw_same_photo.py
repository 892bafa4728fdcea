"""LFW label errors of one kind, found objectively: the same photo filed under two names.

LFW holds a few photos twice, under two people's names (Carlos Beltran / Raul Ibanez: one
picture). A clustering that puts the two files together is right, but LFW's labels call it a
false merge. This script finds such pairs from two independent kinds of evidence, never from
the embedding alone:

- the face embeddings (``bench/lfw_embeddings.py``'s cache) meet at cosine >= ``--min-cosine``
  (0.9; two photos of one person rarely do, different people never did in the calibration), and
- the decoded images themselves are near-identical: the correlation of their 32 x 32 grayscale
  thumbnails is >= ``--min-pixels`` (0.9) and their 64-bit difference hashes (dHash, 9 x 8)
  differ in at most ``--max-hash-bits`` (8) bits.

Different photos of one person, aliases and twins do not pass the image test and stay as LFW
labels them. The pairs are written with their evidence to ``bench/lfw_same_photo.tsv``, which
``bench/cluster_hard.py`` reads to count each pair as one identity (``--raw-labels`` turns it off).

    python bench/lfw_same_photo.py --lfw ../shared/data/lfw
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_lfw import load_cache  # noqa: E402
from lfw_embeddings import DEFAULT_CACHE, DEFAULT_PACK, image_paths  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "lfw_same_photo.tsv"
COLUMNS = ["photo_a", "photo_b", "embedding_cosine", "thumbnail_correlation", "dhash_bits_differ"]


def thumbnail(path: Path, side: int = 32) -> np.ndarray:
    """Grayscale ``side`` x ``side`` thumbnail, zero mean and unit variance (robust to re-encoding and brightness)."""
    a = np.asarray(Image.open(path).convert("L").resize((side, side), Image.BILINEAR), np.float64).ravel()
    return (a - a.mean()) / (a.std() + 1e-9)


def dhash(path: Path) -> np.ndarray:
    """64-bit difference hash: is each pixel of a 9 x 8 grayscale thumbnail brighter than its left neighbour."""
    a = np.asarray(Image.open(path).convert("L").resize((9, 8), Image.BILINEAR), np.int16)
    return (a[:, 1:] > a[:, :-1]).ravel()


def candidate_pairs(truth: np.ndarray, x: np.ndarray, min_cosine: float, block: int = 2048):
    """(i, j, cosine) of photos of *different* names whose embeddings meet at ``min_cosine`` or above."""
    for lo in range(0, len(x), block):
        sims = x[lo:lo + block] @ x.T
        rows, cols = np.nonzero(sims >= min_cosine)
        for r, c in zip(rows.tolist(), cols.tolist()):
            i = lo + r
            if i < c and truth[i] != truth[c]:
                yield i, c, float(sims[r, c])


def read_pairs(path: Path = DEFAULT_OUT) -> list[tuple[str, str]]:
    """The (photo_a, photo_b) pairs of a file this script wrote."""
    lines = [line.split("\t") for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return [(cells[0], cells[1]) for cells in lines[1:]]


def one_identity(paths: list[str], truth: np.ndarray, pairs: list[tuple[str, str]]) -> np.ndarray:
    """``truth`` with each same-photo pair counted as one identity: the photo filed under the name with
    fewer photos takes the other name (alphabetically first on a tie); every other label stays."""
    out = truth.copy()
    names, counts = np.unique(truth, return_counts=True)
    photos = dict(zip(names.tolist(), counts.tolist()))
    where = {p: i for i, p in enumerate(paths)}
    for a, b in pairs:
        if a not in where or b not in where:
            continue
        i, j = where[a], where[b]
        keep, move = sorted((i, j), key=lambda k: (-photos[str(truth[k])], str(truth[k])))
        out[move] = out[keep]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--pack", default=DEFAULT_PACK)
    parser.add_argument("--min-cosine", type=float, default=0.9)
    parser.add_argument("--min-pixels", type=float, default=0.9)
    parser.add_argument("--max-hash-bits", type=int, default=8)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    paths = image_paths(args.lfw)
    truth, x, _how = load_cache(args.lfw, args.cache, args.pack)
    images = Path(args.lfw) / "images"
    rows, rejected = [], []
    for i, j, cosine in candidate_pairs(truth, x, args.min_cosine):
        corr = float(thumbnail(images / paths[i]) @ thumbnail(images / paths[j]) / 1024)
        bits = int(np.sum(dhash(images / paths[i]) != dhash(images / paths[j])))
        row = (paths[i], paths[j], f"{cosine:.3f}", f"{corr:.3f}", str(bits))
        (rows if corr >= args.min_pixels and bits <= args.max_hash_bits else rejected).append(row)
    header = (f"# LFW photos filed under two names: embedding cosine >= {args.min_cosine}, thumbnail correlation >= "
              f"{args.min_pixels}, dHash <= {args.max_hash_bits} bits apart; written by bench/lfw_same_photo.py "
              f"({len(rows)} pairs; {len(rejected)} candidates rejected by the image test)")
    args.out.write_text("\n".join([header, "\t".join(COLUMNS)] + ["\t".join(r) for r in rows]) + "\n")
    print(header)
    for r in rows:
        print("  same photo:", "  ".join(r))
    for r in rejected:
        print("  rejected  :", "  ".join(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
