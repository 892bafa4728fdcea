"""1:N identification on LFW through facesearch's real index: closed-set rank-1/5 and open-set FNIR @ FPIR.

Protocol (every image under ``LFW_DIR/images``, primary face, plain embedding as ingest stores it,
see ``bench/lfw_embeddings.py``):

- closed set: gallery = the first photo (sorted) of each person with 2+ photos plus every
  person with a single photo (distractors); probes = all other photos of the 2+ people.
  Reports the rank-1 and rank-5 hit rates (target: rank-1 >= 98 %) and lists the misses
  with the highest wrong score (often LFW label errors, not model errors).
- open set: a seeded 20 % of the 2+ people are held out of the gallery; all their photos
  are non-mated probes, the other people's non-first photos are mated probes.
  FPIR(t) = share of non-mated probes whose top score >= t; FNIR(t) = share of mated probes
  whose true mate is not rank 1 with score >= t. Reported at FPIR 0.01 and 0.1 (with the
  threshold) and at the pack's calibrated search threshold, with the highest-scoring
  non-mated probes listed, since many are LFW label errors (one person under two names,
  a photo whose central face is someone else).

The gallery is loaded into a ``FaissIndex`` (or Milvus through ``open_index``) with ids =
gallery row numbers and all probes are searched in batches.

    python bench/identify_lfw.py --lfw ../shared/data/lfw
    python bench/identify_lfw.py --lfw ../shared/data/lfw --backend milvus --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from facesearch.index import open_index
from facesearch.models.calibration import load_calibration
from facesearch.search import search_threshold
from lfw_embeddings import DEFAULT_CACHE, DEFAULT_PACK, load_or_compute

FPIR_POINTS = (0.01, 0.1)


def split_people(labels: np.ndarray) -> tuple[dict[str, list[int]], list[int]]:
    """Rows of each person with 2+ photos (sorted paths, so the first is ``_0001``), and singles."""
    rows: dict[str, list[int]] = {}
    for i, name in enumerate(labels.tolist()):
        rows.setdefault(name, []).append(i)
    multi = {name: r for name, r in rows.items() if len(r) >= 2}
    singles = [r[0] for r in rows.values() if len(r) == 1]
    return multi, singles


def search_gallery(backend: str, gallery: np.ndarray, probes: np.ndarray, k: int, workdir: Path,
                   collection_id: int, batch: int = 1024) -> tuple[np.ndarray, np.ndarray, dict]:
    """Build the index over ``gallery`` (ids = row numbers), search every probe; ids, scores, timings."""
    start = time.perf_counter()
    index = open_index(backend, directory=workdir, collection_id=collection_id, dim=gallery.shape[1])
    for lo in range(0, len(gallery), 10_000):
        index.add(np.arange(lo, min(len(gallery), lo + 10_000)), gallery[lo:lo + 10_000])
    if backend == "milvus":
        index.save()  # flush, so the search sees every row
    built = time.perf_counter() - start
    start = time.perf_counter()
    ids = np.full((len(probes), k), -1, np.int64)
    scores = np.full((len(probes), k), -np.inf, np.float32)
    for lo in range(0, len(probes), batch):
        hits = index.search(probes[lo:lo + batch], k)
        ids[lo:lo + batch], scores[lo:lo + batch] = hits.ids, hits.scores
    searched = time.perf_counter() - start
    info = {"index": index.describe(), "build_s": round(built, 2), "search_s": round(searched, 2),
            "queries_per_s": round(len(probes) / searched, 1)}
    index.drop()
    return ids, scores, info


def closed_set(paths, labels, embeddings, backend, workdir, top: int = 10) -> dict:
    multi, singles = split_people(labels)
    mates = [r[0] for r in multi.values()]
    gallery_rows = np.array(sorted(mates + singles))
    probe_rows = np.array(sorted(i for r in multi.values() for i in r[1:]))
    ids, scores, info = search_gallery(backend, embeddings[gallery_rows], embeddings[probe_rows], 10, workdir, 1)
    found = gallery_rows[np.where(ids >= 0, ids, 0)]  # dataset rows of the hits
    truth = labels[probe_rows]
    correct = (labels[found] == truth[:, None]) & (ids >= 0)
    rank1 = correct[:, 0]
    misses = np.where(~rank1)[0]
    misses = misses[np.argsort(-scores[misses, 0])][:top]
    return {
        "gallery": len(gallery_rows), "gallery_mates": len(mates), "gallery_distractors": len(singles),
        "probes": len(probe_rows), "rank1": float(rank1.mean()), "rank5": float(correct[:, :5].any(1).mean()),
        "rank10": float(correct.any(1).mean()), "misses": int((~rank1).sum()), **info,
        "worst_misses": [{"probe": paths[probe_rows[q]], "top": paths[found[q, 0]], "score": float(scores[q, 0]),
                          "mate_rank": _rank_of_mate(correct[q])} for q in misses],
    }


def _rank_of_mate(row: np.ndarray) -> int | None:
    hit = np.where(row)[0]
    return int(hit[0]) + 1 if len(hit) else None


def threshold_at_fpir(nonmated_top: np.ndarray, fpir: float) -> float:
    """Lowest threshold t with share(nonmated_top >= t) <= fpir."""
    ranked = np.sort(nonmated_top.astype(np.float32))[::-1]
    allowed = int(np.floor(fpir * len(ranked)))
    if allowed >= len(ranked):
        return float(ranked[-1])
    return float(np.nextafter(ranked[allowed], np.float32(np.inf)))


def rates_at(t: float, nonmated_top: np.ndarray, mated_top: np.ndarray, mated_hit1: np.ndarray) -> dict:
    return {"threshold": round(float(t), 5), "fpir": float(np.mean(nonmated_top >= t)),
            "fnir": float(np.mean(~(mated_hit1 & (mated_top >= t))))}


def open_set(paths, labels, embeddings, backend, workdir, seed: int, holdout: float, calibration,
             top: int = 10, group_top: int = 50) -> dict:
    multi, singles = split_people(labels)
    names = sorted(multi)
    rng = np.random.default_rng(seed)
    held = set(rng.choice(names, size=round(holdout * len(names)), replace=False).tolist())
    enrolled = [n for n in names if n not in held]
    gallery_rows = np.array(sorted([multi[n][0] for n in enrolled] + singles))
    mated_rows = np.array(sorted(i for n in enrolled for i in multi[n][1:]))
    nonmated_rows = np.array(sorted(i for n in held for i in multi[n]))
    probe_rows = np.concatenate([mated_rows, nonmated_rows])
    # The calibrated search threshold for this gallery's size (FPIR 0.01), as the engine applies it.
    calibrated, words = search_threshold(calibration, None, len(gallery_rows))
    ids, scores, info = search_gallery(backend, embeddings[gallery_rows], embeddings[probe_rows], 1, workdir, 2)
    top_rows = gallery_rows[np.where(ids[:, 0] >= 0, ids[:, 0], 0)]
    m = len(mated_rows)
    mated_top, nonmated_top = scores[:m, 0], scores[m:, 0]
    mated_hit1 = (labels[top_rows[:m]] == labels[mated_rows]) & (ids[:m, 0] >= 0)
    points = {f"{f:g}": rates_at(threshold_at_fpir(nonmated_top, f), nonmated_top, mated_top, mated_hit1)
              for f in FPIR_POINTS}
    worst = np.argsort(-nonmated_top)[:top]
    groups: dict[tuple[str, str], list[float]] = {}
    for q in np.argsort(-nonmated_top)[:group_top]:
        groups.setdefault((labels[nonmated_rows[q]], labels[top_rows[m + q]]), []).append(float(nonmated_top[q]))
    return {
        "seed": seed, "held_out_people": len(held), "enrolled_people": len(enrolled), "gallery": len(gallery_rows),
        "mated_probes": m, "nonmated_probes": len(nonmated_rows), "mated_rank1": float(mated_hit1.mean()),
        "at_fpir": points, "at_calibrated_threshold": rates_at(calibrated, nonmated_top, mated_top, mated_hit1),
        "calibrated_threshold_words": words,
        **info,
        "top_nonmated": [{"probe": paths[nonmated_rows[q]], "top": paths[top_rows[m + q]],
                          "score": float(nonmated_top[q])} for q in worst],
        "top_nonmated_grouped": {"of": group_top, "groups": [
            {"probe_person": a, "top_person": b, "probes": len(v), "max": max(v), "min": min(v)}
            for (a, b), v in list(groups.items())[:top]]},
    }


def format_report(report: dict) -> str:
    c, o = report["closed_set"], report["open_set"]
    lines = [
        f"LFW 1:N identification -- pack {report['pack']}, backend {report['backend']} "
        f"({c['index'].get('mode', c['index'].get('index_type', ''))}), {report['images']:,} images, "
        f"faces: {report['faces']}",
        "",
        f"Closed set: gallery {c['gallery']:,} ({c['gallery_mates']:,} mates + {c['gallery_distractors']:,} "
        f"single-photo distractors), probes {c['probes']:,}",
        f"  rank-1 {100 * c['rank1']:.2f} %   rank-5 {100 * c['rank5']:.2f} %   rank-10 {100 * c['rank10']:.2f} %"
        f"   ({c['misses']} rank-1 misses; target rank-1 >= 98 %: {'met' if c['rank1'] >= 0.98 else 'MISSED'})",
        f"  index build {c['build_s']:.2f} s, search {c['search_s']:.2f} s ({c['queries_per_s']:,.0f} queries/s "
        "batched)",
        "  rank-1 misses with the highest wrong score (mate rank in top 10, '-' = beyond):",
    ]
    for w in c["worst_misses"]:
        lines.append(f"    {w['score']:.3f}  {w['probe']:<48} -> {w['top']:<48} mate rank "
                     f"{w['mate_rank'] or '-'}")
    lines += [
        "",
        f"Open set (seed {o['seed']}): {o['held_out_people']} of {o['held_out_people'] + o['enrolled_people']:,} "
        f"people held out; gallery {o['gallery']:,}; mated probes {o['mated_probes']:,} "
        f"(rank-1 {100 * o['mated_rank1']:.2f} %), non-mated probes {o['nonmated_probes']:,}",
        f"  {'operating point':<34}{'threshold':>10}{'FPIR':>9}{'FNIR':>9}",
    ]
    for key, p in o["at_fpir"].items():
        lines.append(f"  {'FPIR <= ' + key:<34}{p['threshold']:>10.3f}{p['fpir']:>9.4f}{p['fnir']:>9.4f}")
    p = o["at_calibrated_threshold"]
    lines.append(f"  {'calibrated search threshold':<34}{p['threshold']:>10.3f}{p['fpir']:>9.4f}{p['fnir']:>9.4f}")
    lines.append(f"    ({o['calibrated_threshold_words']})")
    lines.append("  highest-scoring non-mated probes (check for LFW label errors before calling them model errors):")
    for w in o["top_nonmated"]:
        lines.append(f"    {w['score']:.3f}  {w['probe']:<48} -> {w['top']}")
    g = o["top_nonmated_grouped"]
    lines.append(f"  the {g['of']} highest-scoring non-mated probes by (probe person -> top gallery person), "
                 f"first {len(g['groups'])} pairs:")
    for w in g["groups"]:
        lines.append(f"    {w['probes']:>3} probe(s) {w['min']:.3f}-{w['max']:.3f}  {w['probe_person']} -> "
                     f"{w['top_person']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=Path, required=True, help="LFW folder with images/NAME/*.jpg")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"embedding cache (default {DEFAULT_CACHE})")
    parser.add_argument("--pack", default=DEFAULT_PACK, help="model pack (default %(default)s)")
    parser.add_argument("--backend", choices=("faiss", "milvus"), default="faiss")
    parser.add_argument("--seed", type=int, default=0, help="open set: which people are held out")
    parser.add_argument("--holdout", type=float, default=0.2, help="open set: share of 2+ people held out")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)

    paths, labels, embeddings, how = load_or_compute(args.lfw, args.cache, args.pack, progress=not args.json)
    kinds, counts = np.unique(how, return_counts=True)
    calibration = load_calibration(args.pack)
    with tempfile.TemporaryDirectory(prefix="identify_lfw_") as tmp:
        report = {
            "pack": args.pack, "backend": args.backend, "images": len(paths),
            "faces": ", ".join(f"{k} {c:,}" for k, c in zip(kinds, counts)),
            "closed_set": closed_set(paths, labels, embeddings, args.backend, Path(tmp)),
            "open_set": open_set(paths, labels, embeddings, args.backend, Path(tmp), args.seed, args.holdout,
                                 calibration),
        }
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
