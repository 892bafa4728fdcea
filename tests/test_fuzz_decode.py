"""A brief coverage-guided fuzz run of the decoder path (fuzz/fuzz_decode.py, atheris) in CI.

2000 mutations (or 20 s) from a corpus seeded with every decoded format and the inputs that
once broke the loader. Any Python exception escaping ``load_image`` other than a typed
``ImageError`` is our bug and fails this test, with the input libFuzzer saved. A native crash
inside Pillow's C decoders (a deadly signal) is Pillow's bug, not ours: reported as a warning
with its input, not a failure. Longer runs: see docs/reliability.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

from tests.realworld import fuzz_examples

HARNESS = Path(__file__).resolve().parents[1] / "fuzz" / "fuzz_decode.py"
RUNS, SECONDS = fuzz_examples(2000), fuzz_examples(20)


def test_decoder_fuzz_brief(tmp_path):
    corpus, artifacts = tmp_path / "corpus", tmp_path / "artifacts"
    artifacts.mkdir()
    seeded = subprocess.run([sys.executable, HARNESS, "--seed-corpus", corpus], capture_output=True, text=True,
                            timeout=120)
    assert seeded.returncode == 0, seeded.stderr
    assert len(list(corpus.iterdir())) >= 15
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    run = subprocess.run([sys.executable, HARNESS, corpus, f"-runs={RUNS}", f"-max_total_time={SECONDS}",
                          "-timeout=10", "-rss_limit_mb=2048", f"-artifact_prefix={artifacts}/"],
                         capture_output=True, text=True, errors="replace", timeout=SECONDS + 180, env=env)
    output = run.stdout + run.stderr
    found = sorted(artifacts.iterdir())
    if run.returncode != 0 and "deadly signal" in output and "Uncaught Python exception" not in output:
        warnings.warn(f"Pillow crashed natively (its bug, report upstream); input kept at {found}:\n"
                      f"{output[-3000:]}", stacklevel=1)
        return
    assert run.returncode == 0 and not found, (
        f"the decoder fuzz run found a bug (input: {[str(p) for p in found]}):\n{_crash_report(output)}")
    assert "Done" in output and "runs" in output, output[-2000:]  # it really ran


def _crash_report(output: str) -> str:
    """The libFuzzer report without atheris's long 'Instrumenting ...' preamble."""
    lines = [line for line in output.splitlines() if not line.startswith("INFO: Instrumenting")]
    return "\n".join(lines)[-6000:]
