"""Subject search on LFW: does enrolling several photos per person beat one photo, and which fusion?

Protocol (every LFW image, primary face, plain embedding as ingest stores it; the cache of
``bench/lfw_embeddings.py``; metric definitions from ``bench/identify_lfw.py``):

- targets: the 610 people with 4+ photos. For each, a seeded random 3 photos are enrolled
  as one subject; all their other photos are probes.
- distractor subjects: every person with 1-3 photos, enrolled with all their photos.
- conditions, same probes and same people in the gallery:
  ``single``  each subject enrolled with one photo (the first of its random picks; a
              distractor's first photo): today's one-photo search;
  ``best``    all enrolled photos, subject score = max over its faces (= indexing every photo
              and taking the top face's person);
  ``mean``    all enrolled photos, subject score = similarity to the normalised mean template.
  Scores come from :class:`facesearch.search.subjects.SubjectSet`, the code the engine runs.
- closed set: every target enrolled; rank-1 / rank-5 of the true subject.
- open set: a seeded 20 % of the targets is held out of the gallery; all their photos are
  non-mated probes, the other targets' non-enrolled photos are mated probes. FPIR(t) = share
  of non-mated probes whose top subject scores >= t; FNIR(t) = share of mated probes whose
  subject is not rank 1 with score >= t. Reported at FPIR 0.01 and 0.1 and at the pack's
  calibrated search threshold.

Repeated over ``--seeds`` (which photos are enrolled, who is held out); mean and range.

    python bench/subjects_lfw.py --lfw ../shared/data/lfw [--cache /tmp/facesearch_lfw_embeddings.npz]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from facesearch.models.calibration import load_calibration
from facesearch.search import search_threshold
from facesearch.search.subjects import SubjectSet
from identify_lfw import FPIR_POINTS, rates_at, threshold_at_fpir
from lfw_embeddings import DEFAULT_CACHE, DEFAULT_PACK, load_or_compute

ENROL = 3
MIN_PHOTOS = ENROL + 1
CONDITIONS = ("single", "best", "mean")


def people_rows(labels: np.ndarray) -> dict[str, list[int]]:
    rows: dict[str, list[int]] = {}
    for i, name in enumerate(labels.tolist()):
        rows.setdefault(name, []).append(i)
    return rows


def enrolment(rows: dict[str, list[int]], seed: int) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """(enrolled rows, probe rows) per target person; distractors enrol all their (<= 3) photos."""
    rng = np.random.default_rng(seed)
    enrolled, probes = {}, {}
    for name in sorted(rows):
        r = rows[name]
        if len(r) >= MIN_PHOTOS:
            picks = [int(i) for i in rng.choice(r, size=ENROL, replace=False)]
            enrolled[name] = picks
            probes[name] = [i for i in r if i not in picks]
        else:
            enrolled[name] = list(r)
    return enrolled, probes


def subject_set(embeddings: np.ndarray, enrolled: dict[str, list[int]], names: list[str],
                condition: str) -> SubjectSet:
    take = (lambda r: r[:1]) if condition == "single" else (lambda r: r)
    return SubjectSet.build([(k, embeddings[take(enrolled[n])]) for k, n in enumerate(names)],
                            dim=embeddings.shape[1])


def evaluate(embeddings: np.ndarray, labels: np.ndarray, seed: int, holdout: float, calibration) -> dict:
    rows = people_rows(labels)
    enrolled, probes = enrolment(rows, seed)
    targets = sorted(probes)
    names = sorted(enrolled)
    rng = np.random.default_rng(seed + 1000)
    held = set(rng.choice(targets, size=round(holdout * len(targets)), replace=False).tolist())
    open_names = [n for n in names if n not in held]
    closed_probe_rows = np.array([i for n in targets for i in probes[n]])
    closed_truth = np.array([names.index(n) for n in targets for _ in probes[n]])
    mated_rows = np.array([i for n in targets if n not in held for i in probes[n]])
    mated_truth = np.array([open_names.index(n) for n in targets if n not in held for _ in probes[n]])
    nonmated_rows = np.array([i for n in sorted(held) for i in rows[n]])
    out = {"seed": seed, "targets": len(targets), "distractor_subjects": len(names) - len(targets),
           "closed_probes": len(closed_probe_rows), "held_out": len(held), "mated_probes": len(mated_rows),
           "nonmated_probes": len(nonmated_rows), "conditions": {}}
    for condition in CONDITIONS:
        fusion = "best" if condition == "single" else condition
        gallery = subject_set(embeddings, enrolled, names, condition)
        scores = gallery.scores(embeddings[closed_probe_rows], fusion)
        order = np.argsort(-scores, axis=1)[:, :5]
        hit = order == closed_truth[:, None]
        gallery_open = subject_set(embeddings, enrolled, open_names, condition)
        mated = gallery_open.scores(embeddings[mated_rows], fusion)
        nonmated_top = gallery_open.scores(embeddings[nonmated_rows], fusion).max(axis=1)
        mated_top = mated.max(axis=1)
        mated_hit1 = mated.argmax(axis=1) == mated_truth
        # the threshold facesearch would use for a search of this gallery (its size in comparisons)
        calibrated, _ = search_threshold(calibration, gallery_size=gallery_open.comparisons(fusion))
        out["conditions"][condition] = {
            "gallery_subjects": len(gallery), "gallery_faces": int(gallery.counts.sum()),
            "rank1": float(hit[:, 0].mean()), "rank5": float(hit.any(axis=1).mean()),
            "open_rank1": float(mated_hit1.mean()),
            "at_fpir": {f"{f:g}": rates_at(threshold_at_fpir(nonmated_top, f), nonmated_top, mated_top, mated_hit1)
                        for f in FPIR_POINTS},
            "comparisons_per_search": gallery_open.comparisons(fusion),
            "at_calibrated_threshold": rates_at(calibrated, nonmated_top, mated_top, mated_hit1),
        }
    return out


TAIL_POINTS = (0.2, 0.25, 0.3, 0.35, 0.4)


def impostor_tails(embeddings: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    """Share of different-person (probe, subject) scores at or above each point, per condition:
    probes = the targets' non-enrolled photos, subjects = the targets. What the calibration (single
    face pairs) must be scaled by for a fused score."""
    enrolled, probes = enrolment(people_rows(labels), seed)
    targets = sorted(probes)
    rows = np.array([i for n in targets for i in probes[n]])
    different = labels[rows][:, None] != np.array(targets)[None, :]
    out = {"pairs": int(different.sum())}
    for condition in CONDITIONS:
        gallery = subject_set(embeddings, enrolled, targets, condition)
        scores = gallery.scores(embeddings[rows], "best" if condition == "single" else condition)[different]
        out[condition] = {f"{t:g}": float(np.mean(scores >= t)) for t in TAIL_POINTS}
    return out


def summarise(runs: list[dict]) -> dict:
    def stat(values: list[float]) -> dict:
        v = np.array(values, np.float64)
        return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}

    summary = {}
    for condition in CONDITIONS:
        cs = [r["conditions"][condition] for r in runs]
        summary[condition] = {
            "rank1": stat([c["rank1"] for c in cs]), "rank5": stat([c["rank5"] for c in cs]),
            **{f"fnir@fpir{f:g}": stat([c["at_fpir"][f"{f:g}"]["fnir"] for c in cs]) for f in FPIR_POINTS},
            **{f"threshold@fpir{f:g}": stat([c["at_fpir"][f"{f:g}"]["threshold"] for c in cs]) for f in FPIR_POINTS},
            "fnir@calibrated": stat([c["at_calibrated_threshold"]["fnir"] for c in cs]),
            "fpir@calibrated": stat([c["at_calibrated_threshold"]["fpir"] for c in cs]),
        }
    return summary


def format_report(report: dict) -> str:
    first = report["runs"][0]
    thresholds = ", ".join(f"{k} {c['at_calibrated_threshold']['threshold']:.3f} at {c['comparisons_per_search']:,}"
                           for k, c in first["conditions"].items())
    lines = [
        f"LFW subject search -- pack {report['pack']}, {report['images']:,} images; seeds {report['seeds']}",
        f"targets: {first['targets']} people with {MIN_PHOTOS}+ photos, {ENROL} enrolled each (seeded), the rest "
        f"are probes; {first['distractor_subjects']:,} distractor subjects (people with 1-{ENROL} photos, "
        "all enrolled)",
        f"closed set: {first['closed_probes']:,} probes; open set: {first['held_out']} targets held out "
        f"({first['nonmated_probes']:,} non-mated probes), {first['mated_probes']:,} mated probes "
        "(counts for the first seed)",
        "calibrated: the pack's search threshold for a gallery of that many comparisons per search "
        f"(first seed: {thresholds}); calibration: {report['calibration']}",
        "",
        "mean over seeds [min - max]:",
        f"  {'condition':<9}{'rank-1 %':>24}{'rank-5 %':>10}{'FNIR@FPIR0.01':>26}{'FNIR@FPIR0.1':>14}"
        f"{'FNIR/FPIR @ calibrated':>26}",
    ]
    for condition, s in report["summary"].items():
        r1, f1 = s["rank1"], s["fnir@fpir0.01"]
        lines.append(
            f"  {condition:<9}{100 * r1['mean']:>10.2f} [{100 * r1['min']:.2f}-{100 * r1['max']:.2f}]"
            f"{100 * s['rank5']['mean']:>10.2f}{f1['mean']:>12.4f} [{f1['min']:.4f}-{f1['max']:.4f}]"
            f"{s['fnir@fpir0.1']['mean']:>14.4f}{s['fnir@calibrated']['mean']:>17.4f} / "
            f"{s['fpir@calibrated']['mean']:.4f}")
    lines += ["", "per seed (rank-1 %, FNIR @ FPIR 0.01 with its threshold):"]
    for run in report["runs"]:
        parts = []
        for condition, c in run["conditions"].items():
            p = c["at_fpir"]["0.01"]
            parts.append(f"{condition} {100 * c['rank1']:.2f} / {p['fnir']:.4f} (t {p['threshold']:.3f})")
        lines.append(f"  seed {run['seed']}: " + "; ".join(parts))
    tails = report["impostor_tails"]
    lines += ["", f"different-person score tails (seed {report['seeds'][0]}, {tails['pairs']:,} probe x subject pairs "
              f"among the targets): share >= t, and x single",
              "  " + f"{'':<9}" + "".join(f"{'t=' + format(t, 'g'):>20}" for t in TAIL_POINTS)]
    for condition in CONDITIONS:
        cells = []
        for t in TAIL_POINTS:
            share, base = tails[condition][f"{t:g}"], tails["single"][f"{t:g}"]
            cells.append(f"{share:.2e} (x{share / base:.1f})" if base else f"{share:.2e}")
        lines.append("  " + f"{condition:<9}" + "".join(f"{c:>20}" for c in cells))
    best = min(("best", "mean"), key=lambda k: report["summary"][k]["fnir@fpir0.01"]["mean"])
    lines += ["", f"lower FNIR @ FPIR 0.01: {best}; higher rank-1: "
              f"{max(('best', 'mean'), key=lambda k: report['summary'][k]['rank1']['mean'])}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=Path, required=True, help="LFW folder with images/NAME/*.jpg")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"embedding cache (default {DEFAULT_CACHE})")
    parser.add_argument("--pack", default=DEFAULT_PACK, help="model pack (default %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--holdout", type=float, default=0.2, help="open set: share of targets held out")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)

    paths, labels, embeddings, _how = load_or_compute(args.lfw, args.cache, args.pack, progress=not args.json)
    calibration = load_calibration(args.pack)
    runs = [evaluate(embeddings, labels, seed, args.holdout, calibration) for seed in args.seeds]
    report = {"pack": args.pack, "images": len(paths), "seeds": args.seeds,
              "calibration": calibration.source if calibration else "none (uncalibrated pack)", "runs": runs,
              "summary": summarise(runs), "impostor_tails": impostor_tails(embeddings, labels, args.seeds[0])}
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
