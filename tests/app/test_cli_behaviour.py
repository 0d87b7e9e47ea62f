"""The command line as a user meets it: defaults in every --help, start-up without torch, one-line errors with
the right exit codes, --out checked before any computation, quiet broken pipes and Ctrl-C."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from causalscope.app.cli import _main, main

PY = sys.executable


def _commands(p: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
              ) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    out = [(prefix, p)]
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                out += _commands(child, (*prefix, name))
    return out


def test_every_help_shows_every_default():
    for path, p in _commands(_main._parser()):
        text = p.format_help()
        for action in p._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS or _main._unset(action.default):
                continue
            squeezed = "".join(text.split())  # help wraps lines (and breaks words at hyphens)
            assert f"default:{action.default}".replace(" ", "") in squeezed, (path, action.dest)


def test_help_and_models_start_without_torch():
    code = ("import sys, io, contextlib\nfrom causalscope.app.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    main(['models'])\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'imported torch'\n")
    subprocess.run([PY, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize(("out", "words"), [("t.xyz", "unknown file type '.xyz'"),
                                             ("{tmp}/a-file/t.png", "is not a writable folder")])
def test_out_is_checked_before_computing(out, words, capsys, monkeypatch, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    out = out.format(tmp=tmp_path)

    def never(args):  # the command must not start
        raise AssertionError("computed before checking --out")
    monkeypatch.setattr(_main, "_parser", _with_fn(never))
    assert main(["trace", "--model", "tiny-gpt2", "--prompt", "a b", "--subject", "a", "--out", out]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "Traceback" not in err


def _with_fn(fn):
    real = _main._parser

    def parser() -> argparse.ArgumentParser:
        p = real()
        original = p.parse_args

        def parse_args(argv=None):
            args = original(argv)
            args.fn = fn
            return args
        p.parse_args = parse_args  # type: ignore[method-assign]
        return p
    return parser


@pytest.mark.parametrize(("exc", "code", "words"), [
    (KeyboardInterrupt(), 130, "interrupted"),
    (RuntimeError("disk full"), 1, "failed: RuntimeError: disk full"),
])
def test_interrupts_and_failures_end_in_one_line(exc, code, words, capsys, monkeypatch):
    def boom(args):
        raise exc
    monkeypatch.setattr(_main, "_parser", _with_fn(boom))
    monkeypatch.delenv("CAUSALSCOPE_DEBUG", raising=False)
    assert main(["models"]) == code
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_broken_pipe_ends_quietly():
    cmd = f"{PY} -m causalscope models | head -1"
    done = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0 and done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_bad_facts_json_and_counts_are_usage_errors(tmp_path, capsys):
    bad = tmp_path / "facts.json"
    bad.write_text('[{"prompt": "x"')
    assert main(["trace-average", "--model", "facts-gpt", "--facts", str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    bad.write_text('[{"prompt": "x"}]')
    assert main(["trace-average", "--model", "facts-gpt", "--facts", str(bad)]) == 2
    assert 'string "prompt" and "subject"' in capsys.readouterr().err


def test_the_trace_window_scales_with_depth(capsys):
    assert main(["trace", "--model", "tiny-gpt2", "--prompt", "the cat sat on the mat", "--subject", "cat",
                 "--kind", "mlp", "--samples", "2", "--json"]) == 0
    settings = json.loads(capsys.readouterr().out)[0]["settings"]
    assert settings["window"] == 1  # ceil(4 layers * 10 / 48): ROME's 10 of 48 layers at this depth


def test_docs_cli_reference_is_the_parsers():
    """docs/cli.md's reference section is what the parser generates (regenerate it with
    `python -m causalscope.app.cli._reference`), so every command and option is documented."""
    from pathlib import Path

    from causalscope.app.cli._reference import BEGIN, END, reference_markdown

    text = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    assert BEGIN in text and END in text, "docs/cli.md lost its generated reference section"
    section = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert section == reference_markdown().strip(), "docs/cli.md is stale: regenerate its reference section"


def test_unknown_words_warn_once_and_strict_refuses(capsys):
    assert main(["run", "--model", "tiny-gpt2", "--prompt", "the zebra sat on the"]) == 0
    err = capsys.readouterr().err
    assert err.count("['zebra'] are not in the tokenizer's vocabulary") == 1 and "Traceback" not in err
    assert main(["run", "--model", "tiny-gpt2", "--prompt", "the zebra sat on the", "--strict"]) == 2
    assert "causalscope: error: Prompt 'the zebra sat on the': ['zebra']" in capsys.readouterr().err
    assert main(["patch", "--model", "tiny-gpt2", "--clean", "the cat sat on the mat", "--corrupted",
                 "the dog sat on the mat", "--correct", "zebra", "--wrong", "cat"]) == 2
    assert "'zebra' is not in the tokenizer's vocabulary" in capsys.readouterr().err
