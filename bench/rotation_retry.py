"""What the rotated-scan retry costs and finds: a folder analysed with and without it.

For each photo: was it looked at again turned (no face, a weak best face, or faces lying on
their side), was it kept turned, and the analysis time; the same folder is also run with every
photo turned 90 degrees without EXIF (sideways scans), where the retry should find the faces.

    nice -n 10 python bench/rotation_retry.py samples/lfw samples/group samples/probes
"""

from __future__ import annotations

import argparse
import io
import time
from dataclasses import replace
from pathlib import Path

from PIL import Image

from facesearch.pipeline import FaceAnalyzer
from facesearch.pipeline.analyzer import TURN_BELOW_SCORE, upright_turn
from facesearch.pipeline.imageio import open_photo

SUFFIXES = {".jpg", ".jpeg", ".png"}


def _sideways(path: Path) -> bytes:
    with Image.open(path) as img:
        out = io.BytesIO()
        img.convert("RGB").transpose(Image.Transpose.ROTATE_90).save(out, format="JPEG", quality=95)
        return out.getvalue()


def run(analyzer: FaceAnalyzer, sources: list, retry: bool) -> dict:
    analyzer.config = replace(analyzer.config, rotate_retry=retry)
    looked, turned, faces, seconds = 0, 0, 0, 0.0
    for source in sources:
        photo = open_photo(source)
        start = time.perf_counter()
        found = analyzer.analyze_photos([photo])[0]
        seconds += time.perf_counter() - start
        faces += len(found)
        turned += photo.rotation != 0
        if retry:  # would the upright pass have asked for the turns? (same rule as the analyzer)
            again = analyzer.detector.detect_batch([open_photo(source).pixels])[0]
            looked += not len(again) or float(again.scores.max()) < TURN_BELOW_SCORE or upright_turn(again) != 0
    return {"photos": len(sources), "faces": faces, "looked_again": looked, "turned": turned,
            "seconds": round(seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    paths = sorted(p for folder in args.folders for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES)
    analyzer = FaceAnalyzer(threads=1)
    analyzer.analyze(paths[0])  # warm up
    upright, sideways = list(paths), [_sideways(p) for p in paths]
    for name, sources in (("upright", upright), ("sideways (turned 90, no EXIF)", sideways)):
        off, on = run(analyzer, sources, False), run(analyzer, sources, True)
        print(f"{name}: {on['photos']} photos")
        print(f"  retry off: {off['faces']} faces, {off['seconds']} s")
        print(f"  retry on:  {on['faces']} faces, {on['seconds']} s; looked at again {on['looked_again']}, "
              f"kept turned {on['turned']}")


if __name__ == "__main__":
    main()
