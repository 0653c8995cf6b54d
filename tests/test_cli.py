"""The command line speaks one language: option spellings, plain help, --version, one-line errors (issue 23)."""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from downstream_probes import cli
from downstream_probes.cli._options import _Spelled
from downstream_probes.s3prl.plugins import discover_upstream_plugins

BIN = Path(sys.executable).parent


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _current_flags(action: argparse.Action) -> list[str]:
    old = action.old_spellings if isinstance(action, _Spelled) else ()
    return [flag for flag in action.option_strings if flag not in old]


@pytest.mark.parametrize("command", sorted(_subparsers()))
def test_one_meaning_per_letter_and_dashes(command: str) -> None:
    parser = _subparsers()[command]
    for action in parser._actions:
        flags = _current_flags(action)
        if "-o" in flags:
            assert action.dest == "override", f"{command}: -o is for s3prl overrides only"
        if "-k" in flags:
            assert action.dest in ("upstream_ckpt", "checkpoint"), f"{command}: -k is for checkpoints only"
        if "-p" in flags or "--out" in flags:
            assert action.dest == "out", command
        for flag in flags:
            assert "_" not in flag, f"{command}: {flag} (long options use dashes)"
    assert "``" not in parser.format_help() and ":mod:" not in parser.format_help()


def test_old_spellings_still_work_with_a_note(capsys) -> None:
    args = cli.build_parser().parse_args(
        ["probe-sweep", "-u", "x", "--upstream_ckpt", "m.pt", "-d", "ic", "--sweep_dir", "out", "--auto_resume"]
    )
    assert (args.upstream_ckpt, args.out, args.auto_resume) == ("m.pt", "out", True)
    err = capsys.readouterr().err
    assert "--upstream_ckpt is deprecated; use -k/--ckpt" in err and "--sweep_dir is deprecated; use -p/--out" in err
    assert "--upstream_ckpt" not in _subparsers()["probe-sweep"].format_help()


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0 and re.match(r"mrsuperb \S+", capsys.readouterr().out)


def test_internal_errors_keep_their_traceback(monkeypatch, capsys) -> None:
    """Only our own error types become one line; a bug (any other exception) is not hidden as bad input."""
    parser = cli.build_parser()

    def broken(args):
        raise ValueError("an internal pandas-like error")

    with monkeypatch.context() as patch:
        patch.setattr(cli, "build_parser", lambda: parser)
        patch.setattr(parser, "parse_args", lambda argv: argparse.Namespace(command="upstreams", handler=broken))
        with pytest.raises(ValueError, match="internal"):
            cli.main(["upstreams"])
    assert cli.main(["convert", "/nonexistent/in.pt", "/tmp/out.pt"]) == 2
    assert "convert: error: checkpoint /nonexistent/in.pt does not exist" in capsys.readouterr().err


def test_run_downstream_help_lists_real_upstreams_only() -> None:
    done = subprocess.run(
        [str(BIN / "run_downstream.py"), "-h"], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stderr == ""  # no FutureWarning, no "ESPnet is not installed"
    text = " ".join(done.stdout.split())
    listed = ast.literal_eval(re.search(r"Available options in S3PRL: (\[[^\]]*\])", text).group(1).replace("' '", "'"))
    assert not {"os", "torch", "FileLock", "glob", "logger", "Path", "s3prl", "time", "logging"} & set(listed)
    assert set(discover_upstream_plugins()) <= set(listed) and "wav2vec2" in listed and "hubert" in listed
    assert "our task names" in text and "T0 T1 T2 T3 T4 D0 T5" in text and "recipes/superb/TASK/config.yaml" in text
