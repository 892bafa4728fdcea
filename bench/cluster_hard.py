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
rate: the rule before issue 17); stage 1 cores + stage 2 attachment (``facesearch/cluster/attach.py``,
2 supporters at FMR 3e-6 only) with a group founded on one comparison held to the attachment's rate
(the previous defaults); the same with such a group at FMR 6e-6; facesearch with its defaults
(pairs at 6e-6, and the wide attachment rule: 4 supporters at a size-scaled 3e-5); and the
Immich-style baseline (``facesearch/cluster/baseline.py``).

Labels: LFW files a few photos twice, under two names (``bench/lfw_same_photo.py`` finds them from
the embeddings *and* the decoded images; the list with its evidence is ``bench/lfw_same_photo.tsv``).
By default each such pair counts as one identity, for every method alike; ``--raw-labels`` keeps
LFW's labels. Both are reported: the main tables on the labels in use, then the overall scores on
the other labelling.
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

from facesearch.cluster import ClusterParams, KnnGraph, bcubed_scores, build_knn_graph, cluster_faces, pairwise_scores
from facesearch.cluster.baseline import immich_style_cluster
from facesearch.cluster.metrics import band_scores
from facesearch.eval.synthetic import GaussianFaces

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_lfw import load_cache  # noqa: E402
from lfw_embeddings import DEFAULT_CACHE, DEFAULT_PACK, image_paths  # noqa: E402
from lfw_same_photo import DEFAULT_OUT as SAME_PHOTO  # noqa: E402
from lfw_same_photo import one_identity, read_pairs  # noqa: E402

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


def _child(method: str, x: np.ndarray, params: ClusterParams | None, graph: KnnGraph | None, conn) -> None:
    start_rss = rss_mb()
    start = time.perf_counter()
    if method == "immich":
        labels = immich_style_cluster(x).labels
    else:
        labels = cluster_faces(x, params=params, graph=graph).labels
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    conn.send((labels, seconds, max(0.0, peak - start_rss)))
    conn.close()


def run_method(method: str, x: np.ndarray, params: ClusterParams | None,
               graph: KnnGraph | None = None) -> tuple[np.ndarray, float, float]:
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(method, x, params, graph, child))
    proc.start()
    child.close()
    result = parent.recv()
    proc.join()
    return result


def multi_photo(truth: np.ndarray) -> np.ndarray:
    """Faces whose person has 2+ faces in the set (the ones that should be in a cluster)."""
    names, counts = np.unique(truth, return_counts=True)
    size = dict(zip(names.tolist(), counts.tolist()))
    return np.array([size[t] >= 2 for t in truth.tolist()])


def report(title: str, truth: np.ndarray, x: np.ndarray, methods: dict[str, ClusterParams | None],
           other: tuple[str, np.ndarray] | None = None, share_graph: bool = False) -> None:
    """Scores of each method on ``truth``; ``other`` = (what, labels): the overall scores on that labelling too.
    ``share_graph``: build the k-NN graph once (every facesearch method here has the same k and edge floor)
    and give it to each run, whose time and memory then leave the graph out (printed apart)."""
    names = np.unique(truth)
    multi = multi_photo(truth)
    print(f"\n## {title}: {len(truth):,} faces, {len(names):,} people "
          f"({int(multi.sum()):,} faces of people with 2+ faces)\n")
    graph = None
    if share_graph:
        base = next(p for p in methods.values() if p is not None).resolved()
        before, start = rss_mb(), time.perf_counter()
        graph = build_knn_graph(x, base.k, min_sim=base.edge_threshold, exact_limit=base.exact_limit,
                                assign=base.assign)
        print(f"shared k-NN graph ({graph.mode}): {time.perf_counter() - start:.1f} s, "
              f"{max(0.0, rss_mb() - before):,.0f} MB more resident in the parent\n", flush=True)
    print("| method | B3 P | B3 R | B3 F | pair P | pair R | pair F | clusters | unassigned (2+) | seconds | "
          "peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    bands: dict[str, list] = {}
    found: dict[str, np.ndarray] = {}
    for name, params in methods.items():
        labels, seconds, peak = run_method("immich" if params is None else "facesearch", x, params, graph)
        found[name] = labels
        b3, pw = bcubed_scores(truth, labels), pairwise_scores(truth, labels)
        clusters = len(np.unique(labels[labels >= 0]))
        out = int(np.sum(labels[multi] < 0))
        print(f"| {name} | {b3.precision:.4f} | {b3.recall:.4f} | {b3.f1:.4f} | {pw.precision:.4f} | "
              f"{pw.recall:.4f} | {pw.f1:.4f} | {clusters:,} | {out / max(int(multi.sum()), 1):.4f} ({out}) | "
              f"{seconds:.1f} | {peak:,.0f} |", flush=True)
        bands[name] = band_scores(truth, labels, BANDS)
    if other is not None:
        what, alt = other
        alt_multi = multi_photo(alt)
        print(f"\nthe same clusterings scored on {what}\n")
        print("| method | B3 P | B3 R | B3 F | pair P | pair R | pair F | unassigned (2+) |")
        print("|---|---|---|---|---|---|---|---|")
        for name, labels in found.items():
            b3, pw = bcubed_scores(alt, labels), pairwise_scores(alt, labels)
            out = int(np.sum(labels[alt_multi] < 0))
            print(f"| {name} | {b3.precision:.4f} | {b3.recall:.4f} | {b3.f1:.4f} | {pw.precision:.4f} | "
                  f"{pw.recall:.4f} | {pw.f1:.4f} | {out / max(int(alt_multi.sum()), 1):.4f} ({out}) |")
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
    parser.add_argument("--with-previous", action="store_true",
                        help="with --quick: the stage-1 and previous-defaults rows too")
    parser.add_argument("--large-link-fmr", type=float, default=None,
                        help="also the defaults with this stricter link_fmr (what a collection far larger than LFW "
                             "should pass; params.py)")
    parser.add_argument("--share-graph", action="store_true",
                        help="on the synthetic set: one k-NN graph for every facesearch method (time printed apart)")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--raw-labels", action="store_true",
                        help=f"LFW's labels as they are (default: the same-photo pairs of {SAME_PHOTO.name} count as "
                             "one identity)")
    args = parser.parse_args(argv)

    raw, x, _how = load_cache(args.lfw, args.cache, args.pack)
    fixed = one_identity(image_paths(args.lfw), raw, read_pairs(SAME_PHOTO))
    ok = np.linalg.norm(x, axis=1) > 0
    raw, fixed, x = raw[ok], fixed[ok], x[ok]
    moved = int(np.sum(raw != fixed))
    truth, other = (raw, (f"the corrected labels ({moved} same-photo files moved)", fixed)) if args.raw_labels \
        else (fixed, ("LFW's raw labels", raw))
    base = ClusterParams(pack=args.pack).resolved()
    print(f"# clustering, harder LFW benchmark ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f})\n\nfacesearch defaults: {base.describe()}\n\nlabels: "
          + ("LFW's raw labels (--raw-labels)" if args.raw_labels else
             f"LFW's, with the {moved} photos filed twice under two names ({SAME_PHOTO.name}) counted as one "
             "identity with their twin file (--raw-labels: LFW's as they are)"))
    link = base.link_fmr
    methods: dict[str, ClusterParams | None] = {
        "facesearch stage 1 only (before issue 17)": ClusterParams(
            pack=args.pack, attach_support=0, pair_fmr=link, attach_wide_support=0),
        "facesearch previous defaults (pairs at the attach rate, 2 supporters only)": ClusterParams(
            pack=args.pack, pair_fmr=None, attach_wide_support=0),
        "facesearch, pairs at FMR 6e-6, 2 supporters only": ClusterParams(pack=args.pack, attach_wide_support=0),
        "facesearch (defaults: pairs at 6e-6, 2 supporters or 4 wide)": ClusterParams(pack=args.pack),
    }
    if args.quick:
        methods = {name: p for name, p in methods.items()
                   if "(defaults" in name or (args.with_previous and ("previous" in name or "stage 1" in name))}
    if args.large_link_fmr:
        methods[f"facesearch defaults with link FMR {args.large_link_fmr:g}"] = ClusterParams(
            pack=args.pack, link_fmr=args.large_link_fmr)
    if not args.no_baseline:
        methods["Immich-style baseline"] = None
    if not args.skip_lfw:
        report("LFW, all photos", truth, x, methods, other)
    keep = hard_subset(raw, x, args.min_photos, args.keep)  # LFW's people, whichever labels score
    ht, hx = truth[keep], x[keep]
    hard_people = int(np.sum(np.unique(raw, return_counts=True)[1] >= args.min_photos))
    report(f"hard: the {hard_people} people with {args.min_photos}+ photos keep {args.keep} photos as unlike "
           "each other as possible; everyone else as distractors",
           ht, hx, methods, (other[0], other[1][keep]))
    if args.synthetic:
        model = GaussianFaces.fit(x, raw)
        extra = model.sample(args.synthetic, args.seed)
        fake = np.array([f"synthetic_{i}" for i in range(args.synthetic)])
        report(f"hard + {args.synthetic:,} synthetic distractors", np.concatenate([ht, fake]),
               np.concatenate([hx, extra]), methods, (other[0], np.concatenate([other[1][keep], fake])),
               share_graph=args.share_graph)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
