"""What a newcomer meets first: the README's hints hold, and a test run leaves the work tree clean."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SCREENSHOTS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_browser_screenshots_go_to_an_ignored_build_folder():
    """`make test` must not rewrite tracked files: the browser tests' screenshots are git-ignored."""
    assert not SCREENSHOTS.is_relative_to(ROOT / "docs")
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    probe = SCREENSHOTS / "search_results.png"
    done = subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=ROOT)
    assert done.returncode == 0, f"{probe} is not git-ignored"


def test_readme_says_how_to_reach_the_cli():
    assert ". .venv/bin/activate" in README and ".venv/bin/facesearch" in README


def test_readme_images_exist():
    """The curated screenshots the README shows are in docs/screenshots."""
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", README)
    assert images
    for image in images:
        assert image.startswith("docs/screenshots/") and (ROOT / image).is_file(), image
