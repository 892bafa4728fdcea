"""The inference runtimes: ONNX Runtime (portable default) and OpenVINO (CPU, bf16 / fp32).

Both run the same pinned ONNX files; these tests check that they agree on real faces, that
the runtime is chosen as documented, and that the GPU path's provider selection works on
a machine without a GPU.
"""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facesearch.errors import ModelError
from facesearch.models import openvino_runtime, runtime
from facesearch.pipeline import FaceAnalyzer
from tests.conftest import LFW, WIDER_GROUP

PHOTOS = ["Colin_Powell_0001.jpg", "George_W_Bush_0001.jpg", "Hugo_Chavez_0001.jpg"]


@pytest.fixture(scope="module")
def reference():
    """ONNX Runtime's faces of a few real photos."""
    analyzer = FaceAnalyzer(runtime="onnxruntime")
    assert analyzer.detector.session.get_providers()[0].endswith("ExecutionProvider")
    return {name: analyzer.analyze(LFW / name)[0] for name in PHOTOS}


@pytest.mark.parametrize("precision, min_cosine, max_landmark_px", [("fp32", 0.9999, 0.05), ("bf16", 0.995, 1.0)])
def test_openvino_agrees_with_onnxruntime_on_real_faces(reference, precision, min_cosine, max_landmark_px):
    analyzer = FaceAnalyzer(runtime="openvino", precision=precision)
    assert analyzer.detector.session.get_providers() == [f"OpenVINO-CPU-{precision}"]
    for name, ref in reference.items():
        face = analyzer.analyze(LFW / name)[0]
        assert float(np.dot(face.embedding, ref.embedding)) >= min_cosine, name
        assert float(np.abs(face.landmarks - ref.landmarks).max()) <= max_landmark_px, name


def test_openvino_keeps_identities_apart():
    analyzer = FaceAnalyzer(runtime="openvino", precision="bf16")
    powell_a = analyzer.analyze(LFW / "Colin_Powell_0001.jpg")[0].embedding
    powell_b = analyzer.analyze(LFW / "Colin_Powell_0002.jpg")[0].embedding
    bush = analyzer.analyze(LFW / "George_W_Bush_0001.jpg")[0].embedding
    assert float(np.dot(powell_a, powell_b)) > 0.4 > float(np.dot(powell_a, bush))


def test_openvino_batches_of_any_size_and_threads_agree():
    analyzer = FaceAnalyzer(runtime="openvino", precision="fp32")
    crops = np.random.default_rng(3).integers(0, 255, (37, 112, 112, 3), dtype=np.uint8)
    whole = analyzer.embedder.embed(crops)
    results: dict[int, np.ndarray] = {}

    def work(k: int) -> None:
        results[k] = analyzer.embedder.embed(crops[k::2])

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert np.allclose(results[0], whole[0::2], atol=1e-5)
    assert np.allclose(results[1], whole[1::2], atol=1e-5)


def test_runtime_choice(monkeypatch):
    monkeypatch.delenv("FACESEARCH_RUNTIME", raising=False)
    # auto by default: OpenVINO on a CPU when installed, else ONNX Runtime (the portable one)
    assert runtime.resolve_runtime() == ("openvino" if openvino_runtime.available() else "onnxruntime")
    assert runtime.resolve_runtime("onnxruntime") == "onnxruntime"
    monkeypatch.setenv("FACESEARCH_RUNTIME", "openvino")
    assert runtime.resolve_runtime() == "openvino"
    assert runtime.runtime_label(precision="fp32") == "openvino-fp32"
    with pytest.raises(ModelError, match="unknown runtime"):
        runtime.resolve_runtime("tensorflow")


def test_unknown_precision_is_refused(builtin_pack):
    with pytest.raises(ModelError, match="precision"):
        runtime.open_session(builtin_pack.recognizer.path, verify_sha256=None, runtime="openvino", precision="int3")


def test_a_tampered_model_is_refused_by_openvino_too(make_local_pack):
    from facesearch.errors import ChecksumMismatchError
    from facesearch.models import load_pack

    pack = load_pack(str(make_local_pack()), verify=False)
    with open(pack.recognizer.path, "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(ChecksumMismatchError):
        runtime.open_session(pack.recognizer.path, verify_sha256=pack.recognizer.sha256, runtime="openvino")


def test_choosing_a_runtime_on_a_cpu_build_does_not_import_onnxruntime():
    """Start-up: OpenVINO runs need not pay for importing onnxruntime (0.1-0.3 s)."""
    code = ("import sys; from facesearch.models import runtime; runtime.resolve_runtime('auto'); "
            "runtime.default_providers(); print('onnxruntime' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ("True" if runtime._gpu_build_installed() else "False")


def test_gpu_provider_selection_on_a_cpu_machine(monkeypatch):
    """The GPU install path (onnxruntime-gpu): CUDA first when offered, and auto stays on ONNX Runtime there."""
    assert runtime.default_providers()[-1] == "CPUExecutionProvider"
    monkeypatch.setattr(runtime, "_gpu_build_installed", lambda: True)  # as with onnxruntime-gpu installed
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert runtime.default_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert runtime.resolve_runtime("auto") == "onnxruntime"


def test_a_model_from_openvinos_cache_computes_bitwise_the_same(monkeypatch, tmp_path, builtin_pack):
    """Compiled models are kept in the user cache (start-up: loading one is cheaper than compiling
    it); one loaded from there gives exactly the outputs of one compiled afresh, and a cache that
    cannot be written is simply not used."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    crops = np.random.default_rng(5).standard_normal((4, 3, 112, 112)).astype(np.float32)
    blob = np.random.default_rng(6).standard_normal((1, 3, 320, 256)).astype(np.float32)
    outputs = []
    for _ in range(2):
        rec = openvino_runtime.OpenVinoSession(builtin_pack.recognizer.path, threads=2)
        det = openvino_runtime.OpenVinoSession(builtin_pack.detector.path, threads=2)
        outputs.append((rec.run(None, {rec.get_inputs()[0].name: crops}),
                        det.run(None, {det.get_inputs()[0].name: blob}),
                        rec._compiled.get_property("LOADED_FROM_CACHE")))
    assert [loaded for _, _, loaded in outputs] == [False, True]
    assert len(list((tmp_path / "cache" / "facesearch" / "openvino").glob("*.blob"))) == 2
    (tmp_path / "a-file").write_text("")  # a cache folder that cannot be made (even as root): not used
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file" / "cache"))
    assert openvino_runtime.model_cache_dir() is None
    rec = openvino_runtime.OpenVinoSession(builtin_pack.recognizer.path, threads=2)
    det = openvino_runtime.OpenVinoSession(builtin_pack.detector.path, threads=2)
    fresh = (rec.run(None, {rec.get_inputs()[0].name: crops}), det.run(None, {det.get_inputs()[0].name: blob}))
    for got in [outputs[1][:2], fresh]:
        for a, b in zip(outputs[0][0] + outputs[0][1], got[0] + got[1]):
            assert np.array_equal(a, b)


def test_openvino_is_imported_without_its_conversion_tools():
    """Start-up: facesearch compiles ONNX files itself; OpenVINO's model conversion tools (and their
    telemetry) are not imported with it, and stay importable for whoever wants them."""
    code = ("import sys; from facesearch.models import openvino_runtime as o; assert o.available(); "
            "print('openvino.tools.ovc' in sys.modules, 'openvino_telemetry' in sys.modules); "
            "import openvino.tools.ovc; print(callable(openvino.tools.ovc.convert_model))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False", "True"]


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_openvino_detector_fed_bytes_finds_bitwise_the_same_faces(builtin_pack, precision):
    """The OpenVINO detector takes the views as uint8 images and normalises them inside the compiled
    model (no float blob made in Python): on real photos, every box, landmark and score is
    bitwise what the float blob gives."""
    from facesearch.pipeline.detect import ScrfdDetector
    from facesearch.pipeline.imageio import load_image

    det = builtin_pack.detector
    fed_bytes = ScrfdDetector(openvino_runtime.OpenVinoSession(
        det.path, threads=2, precision=precision, byte_input=(det.mean, det.std)), det.mean, det.std)
    fed_floats = ScrfdDetector(openvino_runtime.OpenVinoSession(det.path, threads=2, precision=precision),
                               det.mean, det.std)
    assert fed_bytes._bytes and not fed_floats._bytes
    images = [load_image(LFW / name) for name in PHOTOS] + [load_image(WIDER_GROUP)]
    got, want = fed_bytes.detect_batch(images), fed_floats.detect_batch(images)
    assert sum(len(d) for d in want) >= len(images)
    for a, b in zip(got, want):
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
        assert np.array_equal(a.landmarks, b.landmarks)


def test_the_analyzer_hands_openvino_bytes_and_onnxruntime_floats():
    assert FaceAnalyzer(runtime="openvino").detector._bytes
    assert not FaceAnalyzer(runtime="onnxruntime").detector._bytes


def test_an_openvino_embedding_does_not_depend_on_the_batch_it_is_in():
    """The recognizer runs 37 crops as batches of 32, 4 and 1 (power-of-two shapes, no padding
    rows): each crop's embedding is bitwise the one it gets alone or in any other batch."""
    embedder = FaceAnalyzer(runtime="openvino", precision="bf16").embedder
    crops = np.random.default_rng(11).integers(0, 255, (37, 112, 112, 3), dtype=np.uint8)
    whole = embedder.raw_features(crops)
    alone = np.concatenate([embedder.raw_features(crops[i:i + 1]) for i in range(0, 37, 6)])
    assert np.array_equal(whole[0:37:6], alone)
    assert np.array_equal(whole[5:23], embedder.raw_features(crops[5:23]))  # 16 + 2 rows


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 300), batch_size=st.integers(1, 64), powers=st.booleans())
def test_embedding_batches_cover_every_row_once(n, batch_size, powers):
    from facesearch.pipeline.embed import _batches

    batches = _batches(n, batch_size, powers)
    assert [start for start, _ in batches] == list(np.cumsum([0] + [size for _, size in batches])[:-1])
    assert sum(size for _, size in batches) == n and all(0 < size <= batch_size for _, size in batches)
    if powers:
        assert all(size & (size - 1) == 0 for _, size in batches)
        assert len({size for _, size in batches}) <= batch_size.bit_length()
