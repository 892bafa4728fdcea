"""Loading the models in the background (``Engine.load_analyzer_in_background``, used by
``facesearch index``): the analyzer loaded there is the one used, once, and a failure to load
reaches the caller as it would have without the thread."""

from __future__ import annotations

import threading

import pytest

from facesearch.errors import ModelError
from facesearch.pipeline import FaceAnalyzer

from .conftest import LFW


def test_the_analyzer_loaded_in_the_background_is_used_once(open_engine, tmp_path):
    made: list[tuple[FaceAnalyzer, str]] = []

    def factory() -> FaceAnalyzer:
        analyzer = FaceAnalyzer()
        made.append((analyzer, threading.current_thread().name))
        return analyzer

    engine = open_engine(analyzer_factory=factory)
    engine.load_analyzer_in_background()
    engine.load_analyzer_in_background()  # a second call starts nothing more
    summary = engine.index([LFW / "Colin_Powell_0001.jpg", LFW / "George_W_Bush_0001.jpg"], "c", progress=False)
    assert summary.faces_indexed == 2
    assert [name for _, name in made] == ["facesearch-load-models"]
    assert engine.analyzer is made[0][0]


def test_a_failure_to_load_reaches_the_indexing_caller(open_engine):
    def broken() -> FaceAnalyzer:
        raise ModelError("the model file is damaged")  # a fault injected into loading

    engine = open_engine(analyzer_factory=broken)
    engine.load_analyzer_in_background()
    with pytest.raises(ModelError, match="damaged"):
        engine.index([LFW / "Colin_Powell_0001.jpg"], "c", progress=False)
    with pytest.raises(ModelError, match="damaged"):  # asked again, it is tried again (and fails again)
        _ = engine.analyzer


def test_the_cli_reports_a_failure_to_load_as_an_error(cli, tmp_path):
    """As before the models loaded in a thread: the command fails with the reason; no photo is
    recorded as failed because of it."""
    home = tmp_path / "h"
    code, out, err = cli("--pack", "no-such-pack", "index", LFW / "Colin_Powell_0001.jpg", "--collection", "c",
                         "--home", home, "--json")
    assert code == 2 and out == ""
    assert err.strip().splitlines()[-1] == "facesearch: error: unknown built-in pack 'no-such-pack' (have: buffalo_s)"
