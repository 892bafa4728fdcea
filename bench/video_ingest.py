"""Index a generated 60-second, three-person video and search it: faces per track, times, speed.

The video is the one the tests use (``tests/video_fixtures.py``: Colin Powell 0-20 s, hidden
8-9 s; a hard cut to George W. Bush 20-40 s in the same place; nobody 40-42 s; Hugo Chavez
42-60 s, zooming in), 320x240 at 10 frames/s, made from the repository's fixture photos.
It is indexed through ``Engine.index`` exactly as ``facesearch index`` does, then each
person's *other* LFW photo (``--lfw``) searches it.

    python bench/video_ingest.py --lfw ../shared/data/lfw [--fps 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.video_fixtures

from tests.video_fixtures import THREE_PEOPLE_SCRIPT, three_people_video  # noqa: E402

from facesearch.services.engine import Engine  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=Path, required=True, help="LFW folder (for the probe photos)")
    parser.add_argument("--fps", type=float, default=2.0, help="video frames sampled per second")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="video_ingest_") as tmp:
        video = three_people_video(Path(tmp))
        with Engine.open(Path(tmp) / "home") as engine:
            _ = engine.analyzer  # load the models before timing
            start = time.perf_counter()
            summary = engine.index([video], "footage", progress=False, video_fps=args.fps)
            seconds = time.perf_counter() - start
            info = engine.collection("footage")
            faces = engine.catalog.faces(engine.catalog.face_ids(info.id).tolist()).values()
            tracks: dict[int, list[float]] = {}
            for face in faces:
                tracks.setdefault(face.track_id, []).append(face.timestamp_s)
            print(f"60 s video, {args.fps:g} frames/s sampled: indexed in {seconds:.1f} s "
                  f"({60 / seconds:.1f}x real time); {summary.faces_indexed} faces in {summary.video_tracks} tracks")
            for track, times in sorted(tracks.items()):
                print(f"  track {track}: {len(times)} faces at {', '.join(f'{t:.1f} s' for t in sorted(times))}")
            for appearance in THREE_PEOPLE_SCRIPT:
                person = appearance.person.rsplit("_", 1)[0]
                probe = args.lfw / "images" / person / f"{person}_0002.jpg"
                result = engine.search(probe, top_k=5)
                leads = [c for c in result.candidates if c.above_threshold]
                spans = sorted({(c.track_id, *c.track_span) for c in leads})
                print(f"  probe {probe.name} (on screen {appearance.start_s:g}-{appearance.end_s:g} s): "
                      + ("; ".join(f"track {t} on screen {a:.1f}-{b:.1f} s" for t, a, b in spans) or "no match")
                      + " -- faces at " + ", ".join(f"{c.timestamp_s:.1f} s ({c.similarity:.2f})" for c in leads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
