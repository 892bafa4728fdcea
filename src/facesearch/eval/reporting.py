"""Evaluation reports: a JSON and a Markdown file per run, naming exactly what was measured.

Each report records the command line, the pack (name and file hashes), library versions,
the dataset (path, size, content SHA-256) and the plots written beside it, so a number in
``docs/accuracy.md`` can always be traced to the run that produced it.
"""

from __future__ import annotations

import json
import platform
import shlex
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

_LIBRARIES = ("facesearch", "onnxruntime", "openvino", "numpy", "faiss-cpu", "opencv-python-headless", "dlib-bin")


def versions() -> dict[str, str]:
    from facesearch.models.runtime import runtime_label

    # Which runtime (and precision) computed the embeddings: scores differ slightly between them.
    out = {"python": platform.python_version(), "platform": platform.platform(), "runtime": runtime_label()}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def pack_files(pack: str) -> dict[str, str]:
    """File name -> SHA-256 of a pack's model files (empty when the pack cannot be resolved)."""
    from facesearch.models import load_pack

    try:
        resolved = load_pack(pack, verify=False)
    except Exception:  # noqa: BLE001 - a non-ONNX pack (dlib) describes itself elsewhere
        return {}
    return {f.path.name: f.sha256 for f in resolved.files()}


@dataclass
class Report:
    kind: str  # "verify" | "identify" | "detect" | "calibrate"
    title: str
    packs: list[str]
    dataset: dict
    results: dict
    markdown: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    command: str = field(default_factory=lambda: shlex.join(["facesearch", *sys.argv[1:]]))  # the CLI sets it

    def header(self) -> dict:
        return {"kind": self.kind, "title": self.title, "command": self.command,
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "packs": {p: pack_files(p) for p in self.packs}, "versions": versions(), "dataset": self.dataset}

    def write(self, out_dir: Path) -> tuple[Path, Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        head = self.header()
        json_path, md_path = out_dir / f"{self.kind}.json", out_dir / f"{self.kind}.md"
        json_path.write_text(json.dumps({**head, "plots": [p.name for p in self.plots], "results": self.results},
                                        indent=1, default=_jsonable) + "\n")
        lines = [f"# {self.title}", "", f"Command: `{self.command}`", "",
                 f"Date: {head['date']}; dataset `{self.dataset.get('root')}` "
                 f"({self.dataset.get('images', '?')} images, SHA-256 `{self.dataset.get('sha256', '?')}`)", ""]
        for pack, files in head["packs"].items():
            listed = ", ".join(f"`{name}` {digest[:12]}…" for name, digest in files.items()) or "see pack notes"
            lines.append(f"Pack `{pack}`: {listed}")
        lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in head["versions"].items()), "",
                  *self.markdown, ""]
        lines += [f"![{p.stem}]({p.name})" for p in self.plots]
        md_path.write_text("\n".join(lines) + "\n")
        return json_path, md_path


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def md_table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f} %"
