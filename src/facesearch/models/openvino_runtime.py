"""OpenVINO as a second runtime for the same ONNX files, behind ONNX Runtime's session interface.

The detector and embedder only use ``get_inputs()``, ``get_outputs()`` and
``run(None, {name: blob})``; :class:`OpenVinoSession` offers exactly those, so the pipeline
does not know which runtime it runs on. On CPUs with bf16 matrix units (AVX-512 BF16 /
AMX) OpenVINO runs the models in bf16 (about 2-4x ONNX Runtime's fp32 here); elsewhere in
fp32. Inputs keep their batch and spatial sizes dynamic (one compiled model serves every
view size and batch); an infer request per thread, since one request is not thread-safe.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesearch.home import user_cache_dir

#: Precisions a caller may ask for; "auto" is bf16 where the CPU has it, fp32 otherwise.
PRECISIONS = ("auto", "bf16", "fp32")
_import_lock = threading.Lock()


def available() -> bool:
    try:
        _openvino()
    except ImportError:
        return False
    return True


def _openvino():
    """``import openvino``, leaving out its model conversion tools (``openvino.tools.ovc``, with
    their telemetry): facesearch compiles the ONNX files directly, and importing those tools was
    0.1 s of CPU in every start-up. OpenVINO's ``__init__`` skips them when they cannot be
    imported; an explicit ``import openvino.tools.ovc`` later still works."""
    with _import_lock:
        if "openvino" not in sys.modules and "openvino.tools.ovc" not in sys.modules:
            sys.modules["openvino.tools.ovc"] = None  # type: ignore[assignment] - makes that import fail
            try:
                import openvino
            finally:
                del sys.modules["openvino.tools.ovc"]
    import openvino

    return openvino


def resolve_precision(precision: str) -> str:
    """``bf16`` or ``fp32``; ``auto`` is bf16 where the CPU has bf16 units."""
    ov = _openvino()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "auto":
        return "bf16" if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES") else "fp32"
    return precision


def model_cache_dir() -> Path | None:
    """Where OpenVINO keeps compiled models: the user cache (``$XDG_CACHE_HOME/facesearch/openvino``);
    None where it cannot be written. OpenVINO keys each entry by the model's content, the device,
    the compile options and its own version; a model loaded from there computes bitwise the same
    outputs as one compiled afresh (``tests/test_runtimes.py``)."""
    folder = user_cache_dir() / "openvino"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK | os.X_OK) else None


@dataclass(frozen=True)
class _Port:
    name: str
    shape: list


class OpenVinoSession:
    """An ONNX model compiled by OpenVINO for the CPU, used like an ``ort.InferenceSession``."""

    #: OpenVINO's CPU plugin prepares kernels for each new input shape on first use (50-250 ms
    #: here, measured per shape): callers round batch and view sizes to a few buckets.
    specialises_shapes = True

    def __init__(self, path: Path, *, threads: int, precision: str = "auto",
                 byte_input: tuple[float, float] | None = None) -> None:
        ov = _openvino()
        precision = resolve_precision(precision)
        core = ov.Core()
        cache = model_cache_dir()
        if cache is not None:  # a compiled model is loaded, not compiled again: 0.1-0.3 s less per model
            core.set_property({"CACHE_DIR": str(cache)})
        model = core.read_model(str(path))
        # Batch (and a detector's height and width) stay dynamic: one compiled model for all.
        model.reshape({port.get_any_name(): ov.PartialShape(_dynamic(_dims(port))) for port in model.inputs})
        self._inputs = [_Port(p.get_any_name(), _dims(p)) for p in model.inputs]
        #: (mean, std) when the compiled model takes RGB uint8 images (N, H, W, 3) and computes
        #: ``(v - mean) / std`` and the channel-first layout itself, in OpenVINO's threads: the
        #: caller then makes no float blob (a third of the detector's preparation time).
        self.byte_input = byte_input
        if byte_input is not None:
            model = _with_byte_input(ov, model, *byte_input)
        self.precision = precision
        self._compiled = core.compile_model(model, "CPU", {
            "INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": {"fp32": "f32"}.get(precision, precision)})
        self._outputs = [_Port(p.get_any_name(), _dims(p)) for p in model.outputs]
        self._local = threading.local()

    def get_inputs(self) -> list[_Port]:
        return self._inputs

    def get_outputs(self) -> list[_Port]:
        return self._outputs

    def get_providers(self) -> list[str]:
        return [f"OpenVINO-CPU-{self.precision}"]

    def run(self, output_names, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        # Inputs and outputs shared, not copied by OpenVINO: the outputs are copied once below.
        result = request.infer({name: np.ascontiguousarray(value) for name, value in feed.items()},
                               share_inputs=True, share_outputs=True)
        outputs = [result[port] for port in self._compiled.outputs]
        if output_names is not None:
            index = {p.name: i for i, p in enumerate(self._outputs)}
            outputs = [outputs[index[name]] for name in output_names]
        return [np.array(o, copy=True) for o in outputs]  # the request reuses its buffers


def _with_byte_input(ov, model, mean: float, std: float):
    """``model`` (one NCHW float input) taking NHWC uint8 images and normalising them itself."""
    from openvino.preprocess import PrePostProcessor

    steps = PrePostProcessor(model)
    steps.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    steps.input().model().set_layout(ov.Layout("NCHW"))
    steps.input().preprocess().convert_element_type(ov.Type.f32).mean(mean).scale(std)
    return steps.build()


def _dims(port) -> list:
    return [d.get_length() if d.is_static else None for d in port.get_partial_shape()]


def _dynamic(dims: list) -> list[int]:
    """[N, C, H, W] with N dynamic, and H, W too unless they are a recognizer's fixed crop."""
    if len(dims) != 4:
        return [-1, *[d if d is not None else -1 for d in dims[1:]]]
    _, channels, height, width = dims
    fixed_crop = height is not None and height == width and height <= 224
    return [-1, channels, height if fixed_crop else -1, width if fixed_crop else -1]
