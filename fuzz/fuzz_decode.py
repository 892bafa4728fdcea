"""Coverage-guided fuzzing (atheris / libFuzzer) of the decoder path: ``load_image(bytes)``.

Pillow's Python plugins and our loader are instrumented, so libFuzzer steers mutations into
new branches of the GIF/PNG/TIFF/JPEG/WebP/BMP/PPM parsers. The property is the loader's
contract: pixels as a C-contiguous (H, W, 3) uint8 array, or a typed ``ImageError``. Any other
Python exception escaping ``load_image`` is our bug (the loader must type every decoder
failure) and stops the run with a ``crash-*`` file holding the input.

    # seed a corpus from the test fixtures (every decoded format + the inputs that once broke it)
    python fuzz/fuzz_decode.py --seed-corpus fuzz/corpus
    # run until stopped (or -max_total_time=3600); new interesting inputs are added to the corpus
    python fuzz/fuzz_decode.py fuzz/corpus -rss_limit_mb=2048 -timeout=10 -artifact_prefix=fuzz/
    # replay one input (a crash file) without fuzzing
    python fuzz/fuzz_decode.py fuzz/crash-1234abcd
    # survey: keep going past bugs, save one input per distinct bug in fuzz/found/
    mkdir -p fuzz/found && FACESEARCH_FUZZ_RECORD=fuzz/found python fuzz/fuzz_decode.py fuzz/corpus -max_total_time=600

``tests/test_fuzz_decode.py`` runs it briefly in CI. Needs PYTHONPATH=src (or an installed
facesearch) and the repository root on the path for the seed generator (added below).
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import atheris  # noqa: E402

with atheris.instrument_imports(include=["PIL", "facesearch.pipeline.imageio"]):
    import numpy as np
    from PIL import Image

    Image.init()  # import every format plugin now, inside the instrumentation (Pillow loads them lazily)

    from facesearch.errors import ImageError
    from facesearch.pipeline.imageio import load_image

#: Inputs bigger than this are cut (libFuzzer's -max_len also applies): decoding cost, not size,
#: is what we explore; a 64 KB file can still declare a 65000-pixel-wide image.
MAX_INPUT = 65_536


#: With FACESEARCH_FUZZ_RECORD=DIR the run does not stop at the first bug: each distinct one
#: (exception type + the line it came from) is saved once as DIR/<signature>.bin and fuzzing goes
#: on -- a survey of every bug the decoder path has, for a report (libFuzzer's -fork mode does not
#: work under atheris).
RECORD = os.environ.get("FACESEARCH_FUZZ_RECORD")


def test_one_input(data: bytes) -> None:
    if RECORD:
        try:
            check(data)
        except Exception as exc:  # noqa: BLE001 - recording every kind is the point
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            signature = f"{type(exc).__name__}-{Path(frame.filename).stem}-{frame.lineno}"
            target = Path(RECORD) / f"{signature}.bin"
            if not target.exists():
                target.write_bytes(data[:MAX_INPUT])
                print(f"\nRECORDED {signature}: {exc!r}", flush=True)
        return
    check(data)


def check(data: bytes) -> None:
    try:
        pixels = load_image(data[:MAX_INPUT])
    except ImageError as exc:
        if not exc.reason:
            raise AssertionError("an ImageError without a reason") from exc
        return
    if not (isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8 and pixels.ndim == 3
            and pixels.shape[2] == 3 and pixels.flags["C_CONTIGUOUS"] and min(pixels.shape[:2]) >= 1):
        raise AssertionError(f"load_image broke its contract: {type(pixels)} "
                             f"{getattr(pixels, 'shape', None)} {getattr(pixels, 'dtype', None)}")


def seed_corpus(directory: Path) -> int:
    """Write the seeds: every decoded format (tests/realworld.py) and tests/fixtures/fuzz_regressions."""
    import warnings

    from tests.realworld import FIXTURES, format_seeds

    directory.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seeds = format_seeds()
    for path in sorted((FIXTURES / "fuzz_regressions").iterdir()):
        seeds[f"regression_{path.name}"] = path.read_bytes()
    for name, data in seeds.items():
        (directory / name).write_bytes(data)
    return len(seeds)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--seed-corpus":
        print(f"wrote {seed_corpus(Path(sys.argv[2]))} seeds to {sys.argv[2]}")
        return
    import warnings

    warnings.simplefilter("ignore")  # Pillow warns on every damaged EXIF block: noise at 1000s of runs/s
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
