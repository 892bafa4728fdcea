"""Every CLI command, given bad arguments and no terminal, ends in one line saying what to do.

The command tree is walked from the real argparse parser, so a command added later is covered
without editing this file. Each command runs in its own child process (forked from one driver
process, so the imports are paid once) with stdin on /dev/null, the way a script or a service
runs it; the child ends as the interpreter would: an escaping exception prints its traceback.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from facesearch.cli.main import build_parser, command_parsers

#: Runs each argv of a JSON list in a forked child: stdin /dev/null, stdout and stderr captured.
DRIVER = textwrap.dedent("""
    import json, os, sys, tempfile, traceback
    from facesearch.cli.main import build_parser, main
    build_parser()  # the command modules are imported once, before the forks
    import facesearch.governance, facesearch.settings  # noqa: what most commands open
    cases, results = json.load(sys.stdin), []
    null = os.open(os.devnull, os.O_RDONLY)
    for argv in cases:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            pid = os.fork()
            if pid == 0:
                os.dup2(null, 0); os.dup2(out.fileno(), 1); os.dup2(err.fileno(), 2)
                try:
                    code = main(argv)
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (print(exc.code, file=sys.stderr) or 1)
                except BaseException:
                    traceback.print_exc()
                    code = 1
                sys.stdout.flush(); sys.stderr.flush()
                os._exit(code or 0)
            _, status = os.waitpid(pid, 0)
            out.seek(0); err.seek(0)
            results.append([argv, os.waitstatus_to_exitcode(status), out.read().decode(errors="replace"),
                            err.read().decode(errors="replace")])
    json.dump(results, sys.__stdout__)
""")


def _leaf_commands() -> list[tuple[list[str], argparse.ArgumentParser]]:
    """(words after `facesearch`, parser) of every command that runs something."""
    leaves = []
    for parser in command_parsers(build_parser()):
        if parser.get_default("handler") is None:
            continue
        words = parser.prog.split()[1:]
        leaves.append((words, parser))
    return leaves


def _bad_value(action: argparse.Action, nowhere: Path) -> list[str]:
    """A well-formed but wrong value: a path under a regular file (can never exist or be created,
    even as root), an id nothing has, the first allowed choice."""
    if action.choices:
        return [str(next(iter(action.choices)))]
    count = action.nargs if isinstance(action.nargs, int) else 1
    value = "987654" if action.type is int else ("0.5" if action.type is float else str(nowhere / "missing"))
    return [value] * count


def _bad_args(words: list[str], parser: argparse.ArgumentParser, home: Path, nowhere: Path) -> list[str] | None:
    """The command with every required argument given a bad value, or None if none is required."""
    argv, required = list(words), False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        if not action.option_strings:
            if action.nargs in ("?", "*"):
                continue
            argv += _bad_value(action, nowhere)
            required = True
        elif action.required:
            argv += [action.option_strings[0], *_bad_value(action, nowhere)]
            required = True
        elif "--home" in action.option_strings:
            argv += ["--home", str(home)]
            required = True  # a home that cannot be created is a bad value too
    # A mutually exclusive group that must be given: its first option.
    for group in parser._mutually_exclusive_groups:
        if group.required:
            action = group._group_actions[0]
            argv += [action.option_strings[0], *_bad_value(action, nowhere)]
            required = True
    return argv if required else None


def _run_all(cases: list[list[str]], env_home: Path) -> list[tuple[list[str], int, str, str]]:
    import os

    env = {**os.environ, "FACESEARCH_HOME": str(env_home)}
    env.pop("FACESEARCH_PASSWORD", None)
    done = subprocess.run([sys.executable, "-c", DRIVER], input=json.dumps(cases), capture_output=True,
                          text=True, env=env, timeout=900, stdin=None)
    assert done.returncode == 0, done.stderr[-3000:]
    return [tuple(r) for r in json.loads(done.stdout)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, list[tuple[list[str], int, str, str]]]:
    base = tmp_path_factory.mktemp("cli-errors")
    nowhere = base / "a-file"
    nowhere.write_text("not a folder\n")
    home = base / "home"
    # Bad values go with a home that cannot exist, so each command fails where it starts (before
    # any model loads: about 1 s, not 5, per command); `user add` below gets a real home.
    leaves = _leaf_commands()
    unknown = [[*words, "--no-such-option"] for words, _ in leaves]
    bad = [argv for words, parser in leaves
           if (argv := _bad_args(words, parser, nowhere / "home", nowhere)) is not None]
    results = _run_all(unknown + bad + [["user", "add", "x", "--role", "admin", "--home", str(home)]], home)
    return {"unknown": results[:len(unknown)], "bad": results[len(unknown):-1], "user_add": results[-1:]}


def _one_clear_line(argv: list[str], code: int, out: str, err: str) -> None:
    where = "facesearch " + " ".join(argv)
    assert "Traceback" not in out + err, f"{where}: traceback\n{err[-2000:]}"
    assert code not in (0, 1, 3), f"{where}: exit {code}\n{out[-500:]}{err[-500:]}"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"{where}: expected one line on stderr, got\n{err[-2000:]}"
    assert lines[0].startswith("facesearch"), lines[0]


def test_the_tree_is_walked():
    """The walk finds the nested commands, so a new one cannot slip past the checks below."""
    names = {" ".join(words) for words, _ in _leaf_commands()}
    assert {"search", "user add", "audit verify", "subject enroll", "eval verify", "models pin"} <= names
    assert len(names) >= 40


def test_unknown_option_is_one_line_naming_the_help(runs):
    assert len(runs["unknown"]) >= 40
    for argv, code, out, err in runs["unknown"]:
        _one_clear_line(argv, code, out, err)
        assert " --help)" in err, err  # the missing required argument, or the unknown option


#: Commands that only show settings: a home that cannot exist is no error for them.
SHOW_ONLY = {"config show"}


def test_bad_values_are_one_line_never_a_traceback(runs):
    assert len(runs["bad"]) >= 40
    for argv, code, out, err in runs["bad"]:
        if " ".join(argv[:2]) in SHOW_ONLY:
            assert code == 0 and "Traceback" not in out + err
            continue
        _one_clear_line(argv, code, out, err)


def test_user_add_without_a_terminal_names_password_stdin(runs):
    [(argv, code, out, err)] = runs["user_add"]
    _one_clear_line(argv, code, out, err)
    assert "--password-stdin" in err


def test_a_group_without_its_action_is_one_line(cli):
    code, out, err = cli("user")
    assert code == 2 and out == ""
    assert err.strip() == "facesearch user: error: the following arguments are required: ACTION " \
                          "(see facesearch user --help)"


def test_an_unexpected_error_is_one_line_unless_asked(cli, monkeypatch):
    """A bug still reaches the user as one line; FACESEARCH_TRACEBACK=1 lets a developer see where."""
    import facesearch.cli.commands as commands

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(commands, "models_list", broken)  # a fault injected into one handler
    code, out, err = cli("models")
    assert code == 3 and "ZeroDivisionError: division by zero" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("FACESEARCH_TRACEBACK", "1")
    with pytest.raises(ZeroDivisionError):
        cli("models")
