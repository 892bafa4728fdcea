"""A harder clustering benchmark from LFW: people whose photos are far apart, among every LFW person.

Plain LFW flatters clustering: most of a person's photos come from a few press events and look
alike (genuine cosines far above the thresholds). Real collections -- a person over years,
make-up, profile views -- are harder (issue 17: BCubed recall 0.58 on 100 in-the-wild
celebrities). This bench builds a harder set from the same embeddings, openly:

- **hard**: every person with at least ``--min-photos`` (10) LFW photos (George W Bush 530,
  Colin Powell 236, Tony Blair 144, ... 158 people) keeps ``--keep`` (9) of their photos, chosen
  to be as unlike each other as possible (farthest-point selection on the embeddings: one
  photo per event, not the press-conference runs) -- the shape of the in-the-wild set of
  issue 17 (100 people, ~9 photos each, years apart). Every other LFW photo stays, so all
  5,749 people are there as distractors.
- **hard + synthetic**: the same, plus ``--synthetic N`` distractor faces drawn from a Gaussian
  fitted to LFW (:mod:`facesearch.eval.synthetic`; each a person of its own; clearly not real
  faces).
- **LFW**: all 13,232 photos, for reference (the target keeps BCubed F >= 0.99 here).

Methods on the same embeddings: facesearch stage 1 only (``attach_support=0``, pairs at the link
rate: the rule before issue 17); stage 1 cores + stage 2 attachment
(``facesearch/cluster/attach.py``) with pairs at the link rate (the previous defaults); the same
with a group founded on one comparison held to FMR 6e-6 (a point between); facesearch with its
defaults (such a group held to the attachment's rate, 3e-6); and the Immich-style baseline
(``facesearch/cluster/baseline.py``).
Each runs in a forked child: time is its wall time, memory the child's peak RSS above what it
started with (the embeddings themselves are shared with the parent and not counted).

Metrics (``facesearch/cluster/metrics.py``): BCubed and pairwise P/R/F overall and per band of
true identity size; unassigned = share of the faces whose person has 2+ faces in the set that
were left in no cluster (faces of single-photo people *should* be unassigned). Unassigned faces
count as singletons.

    python bench/lfw_embeddings.py --lfw ../shared/data/lfw     # once: fills the embedding cache
    python bench/cluster_hard.py --lfw ../shared/data/lfw --synthetic 50000
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from facesearch.cluster import ClusterParams, bcubed_scores, cluster_faces, pairwise_scores
from facesearch.cluster.baseline import immich_style_cluster
from facesearch.cluster.metrics import band_scores
from facesearch.eval.synthetic import GaussianFaces

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_lfw import load_cache  # noqa: E402
from lfw_embeddings import DEFAULT_CACHE, DEFAULT_PACK  # noqa: E402

BANDS = [(1, 1), (2, 4), (5, 19), (20, 99), (100, None)]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024 ** 2


def hard_subset(truth: np.ndarray, x: np.ndarray, min_photos: int, keep: int) -> np.ndarray:
    """Indices kept: for people with ``min_photos``+ photos, ``keep`` photos as unlike each other as possible.

    Farthest-point selection per person: start from the photo least like the person's mean, then
    repeatedly add the photo whose *highest* cosine to those already kept is lowest -- one photo
    per event, the way photos years apart are. Everyone else keeps every photo (distractors)."""
    names, inverse, counts = np.unique(truth, return_inverse=True, return_counts=True)
    chosen = [np.flatnonzero(counts[inverse] < min_photos)]
    for person in np.flatnonzero(counts >= min_photos):
        idx = np.flatnonzero(inverse == person)
        sims = x[idx] @ x[idx].T
        picked = [int(np.argmin(sims.mean(1)))]
        nearest = sims[picked[0]].copy()
        for _ in range(min(keep, len(idx)) - 1):
            nearest[picked] = np.inf
            nxt = int(np.argmin(nearest))
            picked.append(nxt)
            nearest = np.maximum(nearest, sims[nxt])
        chosen.append(idx[picked])
    return np.sort(np.concatenate(chosen))


def _child(method: str, x: np.ndarray, params: ClusterParams | None, conn) -> None:
    start_rss = rss_mb()
    start = time.perf_counter()
    if method == "immich":
        labels = immich_style_cluster(x).labels
    else:
        labels = cluster_faces(x, params=params).labels
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    conn.send((labels, seconds, max(0.0, peak - start_rss)))
    conn.close()


def run_method(method: str, x: np.ndarray, params: ClusterParams | None) -> tuple[np.ndarray, float, float]:
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(method, x, params, child))
    proc.start()
    child.close()
    result = parent.recv()
    proc.join()
    return result


def report(title: str, truth: np.ndarray, x: np.ndarray, methods: dict[str, ClusterParams | None]) -> None:
    names, counts = np.unique(truth, return_counts=True)
    size = dict(zip(names.tolist(), counts.tolist()))
    multi = np.array([size[t] >= 2 for t in truth.tolist()])
    print(f"\n## {title}: {len(truth):,} faces, {len(names):,} people "
          f"({int(multi.sum()):,} faces of people with 2+ faces)\n")
    print("| method | B3 P | B3 R | B3 F | pair P | pair R | pair F | clusters | unassigned (2+) | seconds | "
          "peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    bands: dict[str, list] = {}
    for name, params in methods.items():
        labels, seconds, peak = run_method("immich" if params is None else "facesearch", x, params)
        b3, pw = bcubed_scores(truth, labels), pairwise_scores(truth, labels)
        clusters = len(np.unique(labels[labels >= 0]))
        print(f"| {name} | {b3.precision:.4f} | {b3.recall:.4f} | {b3.f1:.4f} | {pw.precision:.4f} | "
              f"{pw.recall:.4f} | {pw.f1:.4f} | {clusters:,} | {np.mean(labels[multi] < 0):.3f} | {seconds:.1f} | "
              f"{peak:,.0f} |", flush=True)
        bands[name] = band_scores(truth, labels, BANDS)
    print("\nper band of true identity size (faces, people): BCubed P / R / F, pairwise P / R, unassigned\n")
    print("| band | " + " | ".join(bands) + " |")
    print("|---|" + "---|" * len(bands))
    for i, band in enumerate(next(iter(bands.values()))):
        cells = []
        for scores in bands.values():
            b = scores[i]
            cells.append(f"{b.bcubed.precision:.3f} / {b.bcubed.recall:.3f} / {b.bcubed.f1:.3f}; "
                         f"{b.pairwise.precision:.3f} / {b.pairwise.recall:.3f}; {b.unassigned:.3f}")
        print(f"| {band.name} ({band.faces:,}, {band.people:,}) | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--pack", default=DEFAULT_PACK)
    parser.add_argument("--min-photos", type=int, default=10, help="people with this many photos are made hard")
    parser.add_argument("--keep", type=int, default=9, help="photos kept of each of them, as unlike as possible")
    parser.add_argument("--synthetic", type=int, default=0, help="synthetic distractor faces added to the hard set")
    parser.add_argument("--skip-lfw", action="store_true", help="no plain-LFW reference run")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="only the current defaults (for the slow synthetic set)")
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args(argv)

    truth, x, _how = load_cache(args.lfw, args.cache, args.pack)
    ok = np.linalg.norm(x, axis=1) > 0
    truth, x = truth[ok], x[ok]
    base = ClusterParams(pack=args.pack).resolved()
    print(f"# clustering, harder LFW benchmark ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f})\n\nfacesearch defaults: {base.describe()}")
    link = base.link_fmr
    methods: dict[str, ClusterParams | None] = {
        "facesearch stage 1 only (before issue 17)": ClusterParams(pack=args.pack, attach_support=0, pair_fmr=link),
        "facesearch cores + attach, pairs at the link rate (before)": ClusterParams(pack=args.pack, pair_fmr=link),
        "facesearch, pairs at FMR 6e-6 (between)": ClusterParams(pack=args.pack, pair_fmr=6e-6),
        "facesearch (defaults: pairs at the attach rate, cores + attach)": ClusterParams(pack=args.pack),
    }
    if args.quick:
        methods = {name: p for name, p in methods.items() if "defaults" in name}
    if not args.no_baseline:
        methods["Immich-style baseline"] = None
    if not args.skip_lfw:
        report("LFW, all photos", truth, x, methods)
    keep = hard_subset(truth, x, args.min_photos, args.keep)
    ht, hx = truth[keep], x[keep]
    hard_people = int(np.sum(np.unique(truth, return_counts=True)[1] >= args.min_photos))
    report(f"hard: the {hard_people} people with {args.min_photos}+ photos keep {args.keep} photos as unlike "
           "each other as possible; everyone else as distractors",
           ht, hx, methods)
    if args.synthetic:
        model = GaussianFaces.fit(x, truth)
        extra = model.sample(args.synthetic, args.seed)
        st = np.concatenate([ht, np.array([f"synthetic_{i}" for i in range(args.synthetic)])])
        report(f"hard + {args.synthetic:,} synthetic distractors", st, np.concatenate([hx, extra]), methods)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
