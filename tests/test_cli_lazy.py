"""The CLI imports what the command it runs needs, and its help stays complete.

``facesearch index`` is timed as a whole process against InsightFace (bench/index_vs_insightface.py),
so its start-up counts: the parser imports no command module (handlers are imported when
their command runs) and the command groups kept in their own modules are only added when they
may be the command (or for ``--help``). These tests hold both halves: every command is still
listed and has working help, and an index run in a fresh interpreter imports none of the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from facesearch.cli.main import OWN_COMMANDS, build_parser, command_parsers, command_word

from .conftest import LFW

SRC = Path(__file__).resolve().parent.parent / "src"
#: The command groups defined in their own modules (subject_commands, cluster_commands, ...).
GROUP_COMMANDS = {"subject", "match", "cluster", "config", "backup", "restore", "optout"}


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


def test_the_whole_parser_has_every_command_and_a_lean_one_exactly_those_of_main():
    assert _commands(build_parser()) == OWN_COMMANDS | GROUP_COMMANDS
    for command in OWN_COMMANDS:
        assert _commands(build_parser(command)) == OWN_COMMANDS, command
    for command in GROUP_COMMANDS | {"no-such-command"}:
        assert _commands(build_parser(command)) == OWN_COMMANDS | GROUP_COMMANDS, command


def test_help_lists_every_command(cli):
    code, out, _ = cli("--help")
    assert code == 0
    listed = {line.split()[0] for line in out.split("commands:")[1].splitlines()[2:] if line.startswith("    ")
              and not line.startswith("     ")}
    assert listed == OWN_COMMANDS | GROUP_COMMANDS


def test_every_command_has_working_help(cli):
    parsers = [p for p in command_parsers(build_parser()) if p.prog != "facesearch"]
    assert len(parsers) > 50
    for parser in parsers:
        words = parser.prog.split()[1:]
        code, out, err = cli(*words, "--help")
        assert (code, err) == (0, ""), words
        assert out.startswith(f"usage: {parser.prog}"), (words, out[:200])
        assert parser.format_help() == out  # the lean parser's help is the whole parser's


@pytest.mark.parametrize(("argv", "word"), [
    (["index", "x", "--collection", "c"], "index"),
    (["--runtime", "openvino", "index", "x"], "index"),
    (["--threads=2", "--pack", "buffalo_s", "search", "p"], "search"),
    (["--thr", "2", "subject", "list"], "subject"),  # an abbreviated global option and its value
    (["index", "--help"], "index"),
    (["--help"], None),
    ([], None),
    (["--runtime", "bogus", "index"], None),  # a bad global option: the whole parser says so
])
def test_command_word(argv, word):
    assert command_word(argv) == word


def test_errors_name_the_command_as_before(cli):
    code, _, err = cli("--runtime", "bogus", "index", "x")
    assert code == 2 and "argument --runtime: invalid choice: 'bogus'" in err
    code, _, err = cli("indx", "x")
    assert code == 2 and "invalid choice: 'indx'" in err and "subject" in err  # every command offered
    code, _, err = cli("index", "x")
    assert code == 2 and "the following arguments are required: --collection" in err


#: Modules an index run must not import: the other commands, evaluation, clustering, the web
#: server, and Alembic (a new home's catalog is created without it).
NOT_FOR_INDEX = ("alembic", "facesearch.eval", "facesearch.cluster", "facesearch.api", "facesearch.cli.commands",
                 "facesearch.cli.eval_commands", "facesearch.cli.admin_commands", "facesearch.cli.subject_commands",
                 "facesearch.cli.cluster_commands", "facesearch.cli.service_commands",
                 "facesearch.cli.optout_commands", "facesearch.governance.subjects", "facesearch.governance.clusters")

INDEX_AND_LIST = """
import json, sys
from facesearch.cli.main import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_index_imports_only_what_indexing_needs(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", INDEX_AND_LIST, "index", str(LFW / "Colin_Powell_0001.jpg"),
                           "--collection", "c", "--home", str(tmp_path / "home"), "--json"],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["code"] == 0
    assert '"faces_indexed": 1' in done.stdout  # it really indexed
    loaded = [m for m in result["modules"] if any(m == bad or m.startswith(bad + ".") for bad in NOT_FOR_INDEX)]
    assert loaded == []
    assert "facesearch.cli.engine_commands" in result["modules"]  # the handler was imported when it ran


FREEZE_PROBE = """
import gc, sys
from facesearch.cli.main import main
argv = sys.argv[1:]
sys.argv = ["facesearch", "--help"]
code = main(None if argv == ["program"] else ["--help"])
print("FROZEN", gc.get_freeze_count() > 0)
"""


@pytest.mark.parametrize(("how", "frozen"), [("program", True), ("library", False)])
def test_only_the_program_itself_skips_the_last_collection(how, frozen):
    """Run as the program, facesearch leaves its objects to the OS at exit (gc.freeze: 0.2-0.4 s
    less per command); called with argv (tests, scripts) the caller keeps a working collector."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", FREEZE_PROBE, how], env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip().splitlines()[-1] == f"FROZEN {frozen}"
