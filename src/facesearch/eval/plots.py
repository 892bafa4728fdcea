"""PNG plots of evaluation results (matplotlib, headless): DET, score histograms, CMC, FNIR/FPIR."""

from __future__ import annotations

from pathlib import Path

from facesearch.extras import require

matplotlib = require("matplotlib", "eval", "evaluation plots")
matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

FNMR_FLOOR = 1e-5


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def det_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, resolution: dict[str, float]) -> Path:
    """FNMR against FMR on log axes, one line per pack; the dotted line is each curve's counting limit."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, (fmr, fnmr) in curves.items():
        keep = fmr > 0
        # An FNMR of 0 has no place on a log axis: drawn at the floor, and the axis says so.
        line, = ax.plot(fmr[keep], np.maximum(fnmr[keep], FNMR_FLOOR), label=name)
        if name in resolution:
            ax.axvline(resolution[name], color=line.get_color(), linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("false match rate (FMR)")
    ax.set_ylabel(f"false non-match rate (FNMR; 0 drawn at {FNMR_FLOOR:g})")
    ax.set_title("DET: 1:1 verification (dotted: fewest pairs that resolve a rate)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return _save(fig, path)


def histogram_plot(histograms: dict[str, dict], path: Path, thresholds: dict[str, float]) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, hist in histograms.items():
        ax.plot(np.asarray(hist["bin_start"]) + hist["step"] / 2, hist["share"], label=name)
    for label, t in thresholds.items():
        ax.axvline(t, linestyle="--", linewidth=1, color="gray")
        ax.text(t, ax.get_ylim()[1] * 0.9, f" {label}", fontsize=7, rotation=90, va="top")
    ax.set_yscale("log")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("share of pairs per 0.01 bin")
    ax.set_title("Score distributions")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def cmc_plot(cmcs: dict[str, dict[str, float]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, cmc in cmcs.items():
        ranks = [int(k.removeprefix("rank")) for k in cmc]
        ax.plot(ranks, [100 * v for v in cmc.values()], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("rank")
    ax.set_ylabel("mated probes with the mate at or above this rank (%)")
    ax.set_title("CMC: closed-set 1:N identification")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def fnir_fpir_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, (fpir, fnir) in curves.items():
        keep = fpir > 0
        ax.plot(fpir[keep], fnir[keep], label=name, drawstyle="steps-post")
    ax.set_xscale("log")
    ax.set_xlabel("false positive identification rate (FPIR)")
    ax.set_ylabel("false negative identification rate (FNIR)")
    ax.set_title("Open-set 1:N identification (rank 1), by gallery size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
