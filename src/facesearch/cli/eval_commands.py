"""``facesearch eval verify|identify|detect`` and ``facesearch calibrate``: thin shells over facesearch.eval.

Each writes ``<kind>.json``, ``<kind>.md`` and PNG plots into ``--out`` and prints the Markdown
summary. Embeddings are cached per pack and dataset hash, so the commands share one run.
"""

from __future__ import annotations

import json
import shlex
from argparse import Namespace
from pathlib import Path

import numpy as np

from facesearch.eval.reporting import Report, md_table, pct


def _packs(args: Namespace) -> list[str]:
    return list(dict.fromkeys([args.pack or "buffalo_s", *(args.compare or [])]))


def _embedder(pack: str):
    """None for ONNX packs (the default pipeline); the dlib model for ``dlib_resnet``."""
    if pack == "dlib_resnet":
        from facesearch.eval.dlib_pack import DlibFaceModel

        return DlibFaceModel()
    return None


def _embed(args: Namespace, dataset, pack: str):
    from facesearch.eval.datasets import embed_dataset

    return embed_dataset(dataset, pack, cache=args.cache, progress=not args.json, embedder=_embedder(pack))


def _analyzer(pack: str | None):
    from facesearch.pipeline import FaceAnalyzer

    return FaceAnalyzer(pack)


def _dataset_info(emb) -> dict:
    return {**emb.dataset.describe(), "sha256": emb.dataset_hash, "faces": emb.counts(),
            "embedding_seconds": round(emb.seconds, 1), "cache": str(emb.cache)}


def _out(args: Namespace, kind: str, packs: list[str]) -> Path:
    return args.out or Path("facesearch-eval") / f"{kind}-{'-vs-'.join(packs)}"


def _finish(args: Namespace, report: Report) -> int:
    report.command = shlex.join(["facesearch", *args.argv])
    json_path, md_path = report.write(_out(args, report.kind, report.packs))
    if args.json:
        print(json_path.read_text())
    else:
        print(md_path.read_text())
        print(f"report: {md_path} and {json_path}")
    return 0


# -- verify -----------------------------------------------------------------------------------


def eval_verify(args: Namespace) -> int:
    from facesearch.eval import plots
    from facesearch.eval.datasets import open_dataset
    from facesearch.eval.verification import det_curve, run_verification

    dataset = open_dataset(args.data)
    packs = _packs(args)
    out = _out(args, "verify", packs)
    out.mkdir(parents=True, exist_ok=True)
    results, curves, limits, hists, rows, protocol_rows = {}, {}, {}, {}, [], []
    info = None
    for pack in packs:
        emb = _embed(args, dataset, pack)
        info = info or _dataset_info(emb)
        results[pack] = {"faces": emb.counts(), "embedding_seconds": round(emb.seconds, 1)}
        for rep in run_verification(emb, pairs_file=args.pairs, max_impostors=args.max_impostors, seed=args.seed):
            key = "per_person" if rep.per_person else "all_pairs"
            results[pack][key] = rep.to_dict()
            name = f"{pack}, {rep.weighting}"
            _, fmr, fnmr = det_curve(rep.scores)
            curves[name], limits[name] = (fmr, fnmr), 10 / rep.scores.impostor.pairs
            if not rep.per_person:
                hists[f"{pack} same person"] = results[pack][key]["histograms"]["genuine"]
                hists[f"{pack} different people"] = results[pack][key]["histograms"]["impostor"]
            rows.append([pack, rep.weighting, f"{rep.scores.genuine.pairs:,}", f"{rep.scores.impostor.pairs:,}",
                         *(pct(p["tar"]) if p["resolved"] else "not resolvable" for p in rep.tar_at_far),
                         pct(rep.eer, 3)])
            if rep.protocol:
                p = rep.protocol
                protocol_rows.append([pack, f"{100 * p['accuracy_mean']:.2f} ± {100 * p['accuracy_std']:.2f} %",
                                      p["folds"], p["pairs"]])
    fars = [p["far"] for p in next(iter(results.values()))["all_pairs"]["tar_at_far"]]
    md = ["## TAR at FAR over every same-person pair and every (or a fixed-seed sample of) different-person "
          "pair", "", *md_table(["pack", "weighting", "same-person pairs", "different-person pairs",
                                 *(f"TAR @ FAR {f:g}" for f in fars), "EER"], rows), "",
          "A FAR is resolvable when at least 10 different-person pairs back it (FAR x pairs >= 10)."]
    if protocol_rows:
        md += ["", f"## The dataset's own protocol ({dataset.pairs_file or args.pairs})", "",
               *md_table(["pack", "accuracy (10-fold)", "folds", "pairs"], protocol_rows)]
    report = Report("verify", f"1:1 verification on {dataset.name}", packs, info, results, md)
    report.plots = [plots.det_plot(curves, out / "det.png", limits),
                    plots.histogram_plot(hists, out / "scores.png", {})]
    args.out = out
    return _finish(args, report)


# -- identify ---------------------------------------------------------------------------------


def eval_identify(args: Namespace) -> int:
    from facesearch.eval import plots
    from facesearch.eval.datasets import open_dataset
    from facesearch.eval.identification import CMC_RANKS, FPIR_POINTS, run_identification
    from facesearch.models.calibration import load_calibration

    dataset = open_dataset(args.data)
    packs = _packs(args)
    out = _out(args, "identify", packs)
    out.mkdir(parents=True, exist_ok=True)
    sizes = tuple(int(float(s)) for s in args.sizes.split(","))
    results, cmcs, curves, md = {}, {}, {}, []
    info = None
    for pack in packs:
        emb = _embed(args, dataset, pack)
        info = info or _dataset_info(emb)
        extra = _distractors(args, pack) if args.distractors else None
        calibration = load_calibration(pack)
        split, runs, notes = run_identification(emb.vectors, dataset.labels, emb.usable, sizes=sizes, extra=extra,
                                                synthetic_distractors=not args.no_synthetic,
                                                calibration=calibration, holdout=args.holdout, seed=args.seed)
        results[pack] = {"split": {"seed": split.seed, "enrolled_people": len(split.gallery_mates),
                                   "real_distractors": len(split.distractors), "mated_probes": len(split.mated),
                                   "nonmated_probes": len(split.nonmated), "holdout": args.holdout},
                         "galleries": [r.to_dict() for r in runs], "notes": notes}
        rows = []
        for r in runs:
            label = f"{r.size:,}" + (f" ({r.synthetic:,} synthetic)" if r.synthetic else "")
            cmcs[f"{pack} @ {r.size:,}"] = r.cmc
            _, fpir, fnir = r.curve
            curves[f"{pack} @ {label}"] = (fpir, fnir)
            cal = r.calibrated
            rows.append([label, *(pct(r.cmc[f"rank{k}"]) for k in CMC_RANKS),
                         *("–" if p["fnir"] is None else f"{p['fnir']:.4f}" for p in r.at_fpir),
                         "–" if not cal else f"{cal['threshold']:.3f} → FPIR {cal['measured_fpir']:.4f}, "
                                            f"FNIR {cal['fnir']:.4f}"])
        largest_real = max((r for r in runs if not r.synthetic), key=lambda r: r.size, default=None)
        if largest_real is not None:
            md_top = [f"Highest-scoring non-mated probes at gallery size {largest_real.size:,} (read them before "
                      "blaming the model: labelled datasets file some people under two names):", ""]
            md_top += [f"- {w['score']:.3f} `{dataset.rel_paths[w['probe']]}` → "
                       f"`{dataset.rel_paths[w['gallery']] if w['gallery'] is not None else 'synthetic'}`"
                       for w in largest_real.top_nonmated]
        md += [f"## {pack}: {len(split.gallery_mates):,} enrolled people, {len(split.distractors):,} real "
               f"distractors; {len(split.mated):,} mated and {len(split.nonmated):,} non-mated probes "
               f"(seed {split.seed})", "",
               *md_table(["gallery size", *(f"rank {k}" for k in CMC_RANKS),
                          *(f"FNIR @ FPIR {f:g}" for f in FPIR_POINTS),
                          "calibrated threshold (target FPIR 0.01)"], rows), "", *(f"- {n}" for n in notes), "",
               *(md_top if largest_real is not None else []), ""]
    md += ["FNIR counts a mated probe as found only when its mate is the rank-1 candidate at or above the "
           "threshold. Synthetic rows are labelled; their distractors are drawn from a Gaussian fitted to real "
           "faces, whose tail is lighter than real faces'."]
    report = Report("identify", f"1:N identification on {dataset.name}", packs, info, results, md)
    report.plots = [plots.cmc_plot(cmcs, out / "cmc.png"), plots.fnir_fpir_plot(curves, out / "fnir_fpir.png")]
    args.out = out
    return _finish(args, report)


def _distractors(args: Namespace, pack: str) -> np.ndarray:
    """Embeddings of every photo under ``--distractors`` (any layout), primary face, faces only."""
    from facesearch.eval.datasets import Dataset, embed_dataset

    root = Path(args.distractors)
    rel = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    flat = Dataset(root, root, rel, np.array(["distractor"] * len(rel)), None)
    emb = embed_dataset(flat, pack, cache=None, progress=not args.json, embedder=_embedder(pack))
    return emb.vectors[emb.usable]


# -- detect -----------------------------------------------------------------------------------


def eval_detect(args: Namespace) -> int:
    from facesearch.eval.datasets import Dataset
    from facesearch.eval.detection import BUCKETS, dlib_under_test, read_labels, run_detection, scrfd_under_test

    labels = read_labels(args.labels)
    if args.limit:
        labels = dict(list(labels.items())[:: max(1, len(labels) // args.limit)][:args.limit])
    image_dir = args.data / "images" if (args.data / "images").is_dir() else args.data
    detector = dlib_under_test() if args.pack == "dlib_resnet" else scrfd_under_test(_analyzer(args.pack))
    result = run_detection(image_dir, labels, detector)
    listed = Dataset(args.data, image_dir, sorted(labels), np.array([]), None)
    info = {**listed.describe(), "images": len(labels), "labels": str(args.labels), "sha256": listed.content_hash()}
    rows = [[label, result["by_height"][label]["faces"], pct(result["by_height"][label]["recall"], 1),
             pct(result["by_height"][label]["average_precision"], 1)] for label, _, _ in BUCKETS]
    rows.append(["all", result["all"]["faces"], pct(result["all"]["recall"], 1),
                 pct(result["all"]["average_precision"], 1)])
    md = [f"## Detection at IoU {result['iou']:g}, by face height (px)", "",
          *md_table(["height", "faces", f"recall @ score {result['operating_threshold']:g}",
                     "average precision"], rows), "",
          f"{result['seconds_per_image']:.3f} s per image for detection alone; AP over detections scoring "
          f">= {result['ap_score_threshold']:g}. WIDER labels miss some faces, so precision is a lower bound."]
    report = Report("detect", f"Face detection on {args.data.name}", [detector.name], info, result, md)
    args.out = _out(args, "detect", [detector.name])
    return _finish(args, report)


# -- calibrate --------------------------------------------------------------------------------


def calibrate(args: Namespace) -> int:
    from facesearch.eval.calibrate import calibrate_embeddings, check_calibration, holdout_scores, read_people
    from facesearch.eval.datasets import open_dataset
    from facesearch.home import resolve_home
    from facesearch.models.calibration import CALIBRATION_FILE

    dataset = open_dataset(args.data)
    pack = args.pack or "buffalo_s"
    emb = _embed(args, dataset, pack)
    held = read_people(args.exclude_people) if args.exclude_people else set()
    calibration = calibrate_embeddings(emb, exclude=held, max_impostors=args.max_impostors, seed=args.seed)
    if args.out_file:
        target = args.out_file
    elif args.home:
        target = resolve_home(args.home) / "calibrations" / f"{Path(pack).name}.json"
    elif Path(pack).is_dir():
        target = Path(pack) / CALIBRATION_FILE  # attached to the pinned local pack
    else:
        raise SystemExit("facesearch: error: a built-in pack's shipped calibration is read-only: give --home "
                         "(the calibration then applies to that home) or --calibration-out FILE")
    calibration.save(target)
    check = None
    if held:
        scores, protocol = holdout_scores(emb, held, args.check_pairs)
        check = {"people": len(held), "protocol_pairs": protocol,
                 "rows": check_calibration(calibration, scores, (1e-3, 1e-4, 1e-5))}
    summary = {"calibration": str(target), "source": calibration.source,
               "impostor_pairs": calibration.impostor_pairs, "genuine_pairs": calibration.genuine_pairs,
               "tail": calibration.tail.__dict__ if calibration.tail else None,
               "operating_points": calibration.operating_points, "check": check}
    # Exit 1 when the held-out people contradict the calibration where they can resolve it.
    status = 1 if check and any(r["resolvable"] and not r["within_factor_2"] for r in check["rows"]) else 0
    if args.json:
        print(json.dumps(summary, indent=1))
        return status
    print(f"calibration for {pack} written to {target}")
    print(f"  {calibration.source}")
    if calibration.tail:
        t = calibration.tail
        print(f"  measured down to FMR {t.anchor_fmr:.1e} (score {t.anchor_score:.3f}); beyond, log10 FMR falls "
              f"{-t.slope:.1f} per unit of score (fit over {t.fitted_points} points, worst residual "
              f"{t.max_error_log10:.3f} decades)")
    print(f"  {'FMR':>8} {'threshold':>10} {'TAR':>8}")
    for rate, (threshold, tar) in calibration.operating_points.items():
        extrapolated = calibration.threshold_for_fmr(float(rate))[1]
        print(f"  {rate:>8} {threshold:>10.3f} {100 * tar:>7.2f}%{'  (fitted tail)' if extrapolated else ''}")
    print(f"  verify default: {calibration.describe_threshold()}")
    for n in (1_000, 100_000, 1_000_000):
        t, fmr, _ = calibration.search_threshold(n)
        print(f"  search default at {n:>9,} faces: threshold {t:.3f} (FPIR 0.01 = FMR {fmr:.1e} per comparison)")
    if check:
        print(f"check on {check['people']:,} held-out people ({check['rows'][0]['impostor_pairs']:,} different-person "
              f"pairs, {check['protocol_pairs']} of them from {args.check_pairs}):")
        for r in check["rows"]:
            verdict = ("within a factor of 2" if r["within_factor_2"] else
                       "NOT RESOLVABLE" if not r["resolvable"] else "OUTSIDE a factor of 2")
            print(f"  target FMR {r['target_fmr']:g}: threshold {r['threshold']:.3f} -> measured "
                  f"{r['measured_fmr']:.2e} ({r['false_matches']} pairs), ratio {r['ratio']:.2f}: {verdict}")
    return status
