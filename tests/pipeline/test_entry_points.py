"""Every entry point answers ``--help``: ``bddn``, each ``bddn <command>``, and ``python -m pipeline.weights``.

argparse %-formats every help string when it prints help, so a literal ``%`` (say "95 % intervals")
crashes ``--help`` with a ``ValueError``; walking the whole parser tree catches any such string.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from pipeline import cli, weights


def _sub_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's sub-command parsers by name (none for a leaf)."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the tree, the root included."""
    paths = [path]
    for name, sub in _sub_parsers(parser).items():
        paths.extend(_walk(sub, path + (name,)))
    return paths


COMMAND_PATHS = _walk(cli.build_parser())


def test_every_command_module_is_registered_under_its_module_name() -> None:
    registered = {path[0] for path in COMMAND_PATHS if path}
    assert registered == {cli.command_name(name) for name in cli.COMMAND_MODULES}


@pytest.mark.parametrize(("argv", "word"), [
    (["fit", "--subject", "1"], "fit"), (["--run-root", "fit", "synth"], "synth"), (["--run-root=r", "figures"], "figures"),
    (["--help"], None), ([], None), (["fitt"], "fitt"),
])
def test_chosen_command_is_the_first_word_that_is_no_option(argv: list[str], word: str | None) -> None:
    assert cli.chosen_command(argv) == word


def test_a_command_run_imports_its_own_module_alone() -> None:
    code = ("import sys; from pipeline import cli; parser = cli.build_parser(only='demo-images'); "
            "print(sorted(name for name in sys.modules if name.startswith('pipeline.commands.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['pipeline.commands.demo_images']"


def test_a_misspelt_command_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["fitt"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    for name in cli.COMMAND_MODULES:
        assert cli.command_name(name) in err


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda path: " ".join(("bddn",) + path))
def test_help_exits_zero_and_prints_usage(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main([*path, "--help"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: bddn")
    for name in path:
        assert name in out.splitlines()[0]


def test_help_strings_carry_no_bare_percent() -> None:
    """A help string's ``%`` must be ``%%`` or a ``%(...)s`` placeholder; formatting each proves it."""
    for path in COMMAND_PATHS:
        parser = cli.build_parser()
        for name in path:
            parser = _sub_parsers(parser)[name]
        for action in parser._actions:
            if action.help and action.help is not argparse.SUPPRESS:
                try:
                    action.help % {"prog": parser.prog, "default": action.default, "choices": action.choices}
                except (ValueError, TypeError, KeyError) as error:
                    pytest.fail(f"bddn {' '.join(path)} {action.option_strings or action.dest}: help is not a "
                                f"valid %-format ({error}): {action.help!r}")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    choice.help % {"prog": parser.prog}


def test_command_page_shows_its_text_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    """The sub-command's own page prints a literal percent once (its description is not %-formatted)."""
    with pytest.raises(SystemExit):
        cli.main(["compare", "--help"])
    out = capsys.readouterr().out
    assert "95 % bootstrap" in " ".join(out.split())
    assert "%%" not in out


def test_console_script_top_level_help_runs() -> None:
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "COMMAND" in done.stdout and "Traceback" not in done.stderr


def test_weights_module_help_runs_without_installing(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        weights.main(["--help"])
    assert stopped.value.code == 0
    assert "checkpoint" in capsys.readouterr().out
