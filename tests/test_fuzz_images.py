"""Generated bad input (hypothesis) at the two public image entry points.

``load_image(source)`` and ``FaceAnalyzer().analyze(image)`` get mutated and truncated bytes of
real photos in every format we decode, images of extreme size and aspect ratio (1xN and Nx1 up
to N = 65000, made small by Pillow), every Pillow mode and random pixel arrays. The property is
always the same: a result of the right shape and type, or a typed :class:`ImageError` (naming
the file when the source was a path) -- never any other exception, never unbounded memory.

The analyzer tests run under an address-space cap (:func:`memory_cap`) so an image that makes
the pipeline allocate gigabytes fails here as a ``MemoryError`` instead of taking a shared
machine down; the same budget the issue sets for the CLI (1.5 GB for the 1x24000 PNG).
"""

from __future__ import annotations

import contextlib
import io
import resource
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from facesearch import load_image
from facesearch.errors import ImageError
from facesearch.pipeline import Face
from tests.realworld import FIXTURES, GB, format_seeds, fuzz_examples

SEEDS = format_seeds()
SEED_NAMES = sorted(SEEDS)

#: Cheap tests (decode only): many examples. Costly ones (the real models): few, no shrinking
#: (one analyzer call on a big image can take seconds; the failing example is printed anyway).
LOADER = settings(max_examples=fuzz_examples(600), deadline=None, suppress_health_check=[HealthCheck.too_slow])
ANALYZER = settings(max_examples=fuzz_examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow],
                    phases=[Phase.explicit, Phase.reuse, Phase.generate])

#: Memory an analyzer call may add to the test process (the issue's budget per image).
ANALYZER_BUDGET_BYTES = int(1.5 * GB)


def check_pixels(result, shape: tuple[int, int] | None = None) -> None:
    """The loader's contract: a C-contiguous (H, W, 3) uint8 array, of ``shape`` if known."""
    assert isinstance(result, np.ndarray), type(result)
    assert result.dtype == np.uint8, result.dtype
    assert result.ndim == 3 and result.shape[2] == 3, result.shape
    assert result.shape[0] >= 1 and result.shape[1] >= 1, result.shape
    assert result.flags["C_CONTIGUOUS"]
    if shape is not None:
        assert result.shape[:2] == shape, (result.shape, shape)


def load_or_typed_error(source, *, shape: tuple[int, int] | None = None, path: Path | None = None):
    """``load_image(source)``: either pixels (checked) or an :class:`ImageError` naming ``path``.
    Any other exception propagates and fails the test with its traceback."""
    try:
        result = load_image(source)
    except ImageError as exc:
        assert exc.reason, "an ImageError must say why"
        if path is not None:
            assert exc.source == str(path), (exc.source, path)
        return exc
    check_pixels(result, shape)
    return result


# -- strategies ------------------------------------------------------------------------------------


@st.composite
def mutated(draw) -> bytes:
    """A real seed file with 1-8 edits: overwritten bytes (biased to the header, where the
    sizes, modes and offsets live), inserted or deleted runs, a duplicated block, a truncation."""
    data = bytearray(SEEDS[draw(st.sampled_from(SEED_NAMES))])
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        kind = draw(st.sampled_from(["header", "header", "byte", "insert", "delete", "duplicate", "truncate"]))
        at = draw(st.integers(0, min(len(data) - 1, 128) if kind == "header" else len(data) - 1))
        if kind in ("header", "byte"):
            data[at] = draw(st.one_of(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x01]), st.integers(0, 255)))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        elif kind == "duplicate":
            data[at:at] = data[at:at + draw(st.integers(1, 256))]
        else:
            del data[at:]
    return bytes(data)


#: (mode, formats that can store it) -- every mode Pillow builds an image in.
MODES = {
    "1": ["PNG", "BMP", "TIFF", "GIF", "PPM"],
    "L": ["PNG", "BMP", "TIFF", "GIF", "JPEG", "WEBP", "PPM"],
    "LA": ["PNG", "TIFF", "WEBP"],
    "P": ["PNG", "BMP", "TIFF", "GIF"],
    "RGB": ["PNG", "BMP", "TIFF", "GIF", "JPEG", "WEBP", "PPM"],
    "RGBA": ["PNG", "BMP", "TIFF", "GIF", "WEBP"],
    "CMYK": ["JPEG", "TIFF"],
    "YCbCr": ["JPEG", "TIFF"],
    "I": ["TIFF"],
    "I;16": ["PNG", "TIFF"],
    "F": ["TIFF"],
}
#: Largest side each format can store.
FORMAT_MAX_SIDE = {"WEBP": 16383, "JPEG": 65500}

EXTREMES = [1, 2, 3, 7, 24_000, 32_767, 65_000]


@st.composite
def extreme_sizes(draw) -> tuple[int, int]:
    """(width, height): 1xN, Nx1, thin strips and small ordinary sizes, N up to 65000."""
    kind = draw(st.sampled_from(["row", "column", "strip", "small"]))
    long_side = draw(st.one_of(st.sampled_from(EXTREMES), st.integers(1, 65_000)))
    if kind == "row":
        return long_side, 1
    if kind == "column":
        return 1, long_side
    if kind == "strip":
        short = draw(st.integers(1, 4))
        return (long_side, short) if draw(st.booleans()) else (short, long_side)
    return draw(st.integers(1, 300)), draw(st.integers(1, 300))


@st.composite
def generated_files(draw) -> tuple[bytes, tuple[int, int], str, str]:
    """A valid file of an extreme size in a random mode and format: (bytes, (w, h), mode, format).
    Flat colour, so even 1x65000 is a few hundred bytes in the compressed formats."""
    mode = draw(st.sampled_from(sorted(MODES)))
    fmt = draw(st.sampled_from(MODES[mode]))
    width, height = draw(extreme_sizes())
    limit = FORMAT_MAX_SIDE.get(fmt, 65_535)
    width, height = min(width, limit), min(height, limit)
    colour = draw(st.integers(0, 255))
    img = Image.new(mode, (width, height), colour if mode in ("1", "L", "P", "I", "I;16", "F") else
                    tuple([colour] * len(mode if mode != "YCbCr" else "YCC")))
    buffer = io.BytesIO()
    img.save(buffer, fmt)
    return buffer.getvalue(), (width, height), mode, fmt


DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.int32, np.uint32, np.float32, np.float64, np.bool_]


@st.composite
def pixel_arrays(draw) -> np.ndarray:
    """Arrays of any dtype with 0-4 dimensions and 0-5 channels (many are not images)."""
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(st.one_of(
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=40),
        st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(0, 5)),
        hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
    ))
    return draw(hnp.arrays(dtype, shape))


# -- the loader ------------------------------------------------------------------------------------


def test_seeds_decode():
    """The seeds themselves are good images: every fuzz case starts from something valid."""
    for name in SEED_NAMES:
        check_pixels(load_image(SEEDS[name]))


@LOADER
@given(data=mutated())
def test_mutated_bytes(data):
    load_or_typed_error(data)


@LOADER
@given(name=st.sampled_from(SEED_NAMES), data=st.data())
def test_truncated(name, data):
    seed = SEEDS[name]
    load_or_typed_error(seed[: data.draw(st.integers(0, len(seed) - 1), label="kept bytes")])


#: Inputs the fuzzers once found breaking the loader (each kept as a file: see fixtures/README.md).
REGRESSIONS = sorted((FIXTURES / "fuzz_regressions").iterdir())


@pytest.mark.parametrize("path", REGRESSIONS, ids=[p.name for p in REGRESSIONS])
def test_fuzz_regressions(path):
    """Found by this file and fuzz/fuzz_decode.py: a typed error naming the file (or pixels)."""
    load_or_typed_error(path, path=path)


@LOADER
@given(generated=generated_files())
@example(generated=(Image.new("RGB", (1, 1)).tobytes(), (1, 1), "raw", "raw"))  # raw pixels: not an image file
def test_extreme_sizes_and_modes_from_a_file(generated):
    """Through a real path (the way CLI and ingest call it): exact shape, or a typed error naming
    the file (refusing an extreme aspect ratio is allowed, crashing is not)."""
    data, (width, height), _mode, fmt = generated
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / f"generated.{fmt.lower()}"
        path.write_bytes(data)
        load_or_typed_error(path, shape=None if fmt == "raw" else (height, width), path=path)


@LOADER
@given(array=pixel_arrays())
def test_random_arrays(array):
    """Arrays are a public source too: an image of the same height and width, or ImageError."""
    result = load_or_typed_error(array)
    if isinstance(result, np.ndarray):
        assert result.shape[:2] == array.shape[:2]


# -- the analyzer entry ----------------------------------------------------------------------------


@contextlib.contextmanager
def memory_cap(extra_bytes: int):
    """Cap this process's address space at its current size + ``extra_bytes`` for the block:
    an allocation past the budget raises MemoryError here instead of swapping the machine."""
    with open("/proc/self/status", "rb") as status:
        vm_kb = next(int(line.split()[1]) for line in status if line.startswith(b"VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = vm_kb * 1024 + extra_bytes
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def analyze_or_typed_error(analyzer, source) -> list[Face] | ImageError:
    """``analyzer.analyze(source)`` within the memory budget: faces (checked) or ImageError."""
    try:
        with memory_cap(ANALYZER_BUDGET_BYTES):
            faces = analyzer.analyze(source)
    except ImageError as exc:
        assert exc.reason
        return exc
    except MemoryError as exc:  # the cap: name the budget rather than a bare MemoryError
        raise AssertionError(f"analyze() needed more than {ANALYZER_BUDGET_BYTES / GB:.1f} GB "
                             f"on top of the loaded models: {exc!r}") from exc
    assert isinstance(faces, list)
    for face in faces:
        assert isinstance(face, Face)
        x1, y1, x2, y2 = face.box
        assert np.isfinite([x1, y1, x2, y2]).all() and x2 >= x1 and y2 >= y1, face.box
        assert face.embedding is not None and face.embedding.dtype == np.float32
        assert face.embedding.ndim == 1 and np.isfinite(face.embedding).all()
    return faces


def _flat(width: int, height: int, value: int = 120) -> np.ndarray:
    return np.full((height, width, 3), value, dtype=np.uint8)


@ANALYZER
@given(size=extreme_sizes(), value=st.integers(0, 255))
@example(size=(24_000, 1), value=120)  # the 176-byte 1x24000 PNG that cost 1.5 GB (issue 10)
@example(size=(65_000, 1), value=120)  # 1x65000: tried to allocate 9.5 GB, answered 500
@example(size=(1, 65_000), value=120)
def test_analyzer_extreme_aspect_ratios(analyzer, size, value):
    width, height = size
    analyze_or_typed_error(analyzer, _flat(width, height, value))


@ANALYZER
@given(data=mutated())
def test_analyzer_mutated_bytes(analyzer, data):
    """Encoded bytes straight into the analyzer: it decodes with the same typed errors."""
    analyze_or_typed_error(analyzer, data)


@ANALYZER
@given(generated=generated_files())
def test_analyzer_generated_files(analyzer, generated):
    analyze_or_typed_error(analyzer, generated[0])


@ANALYZER
@given(array=pixel_arrays())
def test_analyzer_random_arrays(analyzer, array):
    analyze_or_typed_error(analyzer, array)


@pytest.mark.parametrize("name", ["fixture.jpg", "exif_rotated.jpg", "cmyk.tiff", "gray16.png"])
def test_analyzer_finds_the_face_in_good_seeds(analyzer, name):
    """The property tests above accept 'no face'; make sure a real face is still found, so a
    pipeline that returned [] for everything could not pass this file."""
    faces = analyze_or_typed_error(analyzer, SEEDS[name] if name == "fixture.jpg" else
                                   _upscaled(SEEDS[name]))
    assert isinstance(faces, list) and len(faces) >= 1, name


def _upscaled(data: bytes) -> bytes:
    """The 64x64 seeds are too small for the detector: the same photo at 256x256, same format."""
    with Image.open(io.BytesIO(data)) as img:
        fmt = img.format
        big = img.resize((256, 256), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        big.save(buffer, fmt, exif=img.info.get("exif", b""))
    return buffer.getvalue()
