"""Progress on the command line: every command that loads a model shows a bar over its steps on stderr (and the
library's own bars for the long computations inside it) once it has run for half a second, `--json` shows none,
and lines printed meanwhile (warnings, "plot written") stand on lines of their own. There is no `--quiet` flag:
`--json` is the quiet mode. The tests draw bars at once (DELAY 0) except where they test the delay."""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

import pytest

from causalscope.app.cli import _main, _progress, main

PROMPTS = ["--clean", "the cat sat on the mat", "--corrupted", "the dog sat on the mat", "--correct", "mat",
           "--wrong", "cat"]
#: a quick call of every command that loads a model (``models`` lists names without loading any)
CALLS = {
    ("sites",): ["--model", "tiny-gpt2"],
    ("run",): ["--model", "tiny-gpt2", "--prompt", "the cat sat on the"],
    ("trace",): ["--model", "tiny-gpt2", "--prompt", "the cat sat on the mat", "--subject", "cat", "--samples", "2"],
    ("trace-average",): ["--n", "2", "--samples", "2"],
    ("patch",): ["--model", "tiny-gpt2", *PROMPTS],
    ("attribute",): ["--model", "tiny-gpt2", "--input", "the cat sat on the mat", "--baseline", "the dog sat on the mat",
                     "--site", "layers.1", "--steps", "4", "--correct", "mat", "--wrong", "cat"],
    ("mediate",): ["--n", "8", "--n-boot", "20"],
    ("directions",): ["--site", "act2"],
    ("probe",): ["--sites", "act2"],
    ("circuits", "list"): [],
    ("circuits", "ablate"): ["--case", "hist", "--scales", "0,1", "--pairs", "50"],
    ("circuits", "discover"): ["--case", "hist", "--method", "eap"],
    ("circuits", "score"): ["--case", "hist", "--methods", "eap,node"],
}
NO_MODEL = {("models",), ("demo",), ("circuits",)}  # demo: a bar over its sections, tested on its own below


@pytest.fixture(autouse=True)
def no_delay(monkeypatch):
    monkeypatch.setattr(_progress, "DELAY", 0.0)


def commands(p: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                out += [(*prefix, name), *commands(child, (*prefix, name))]
    return out


def bar_lines(err: str, name: str) -> list[str]:
    """The states a bar went through (tqdm redraws with a carriage return, so split on it as on new lines)."""
    return [line for line in re.split(r"[\r\n]", err) if line.startswith(f"{name}:")]


def shown(err: str) -> list[str]:
    """What a terminal shows of each line: the text after its last carriage return."""
    return [line.split("\r")[-1] for line in err.split("\n")]


def test_every_command_that_loads_a_model_is_called_here():
    assert set(commands(_main._parser())) == set(CALLS) | NO_MODEL


@pytest.mark.parametrize("command", list(CALLS), ids=[" ".join(c) for c in CALLS])
def test_every_command_shows_a_bar_over_its_steps_and_json_none(command, capsys):
    assert main([*command, *CALLS[command]]) == 0
    err = capsys.readouterr().err
    states = bar_lines(err, f"causalscope {' '.join(command)}")
    assert states, err
    done = re.fullmatch(r".*\| (\d+)/(\d+) steps \[[0-9:]+, done\]\s*", states[-1])
    assert done and done.group(1) == done.group(2), states[-1]  # it ended with every step done
    assert any("loading" in s for s in states), states  # the step running is named
    assert main([*command, *CALLS[command], "--json"]) == 0
    quiet = capsys.readouterr()
    json.loads(quiet.out)
    assert "%|" not in quiet.err and "steps" not in quiet.err, quiet.err


def test_long_computations_show_the_library_bars_inside(capsys, tmp_path):
    out = tmp_path / "trace.png"
    assert main(["trace", "--model", "tiny-gpt2", "--prompt", "the cat sat on the mat", "--subject", "cat",
                 "--samples", "2", "--kind", "all", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    for kind in ("hidden", "mlp", "attn"):  # causal_trace's own bar, one per kind
        assert bar_lines(err, f"causal trace ({kind})"), err
        assert any(f"tracing ({kind})" in s for s in bar_lines(err, "causalscope trace"))
    written = [line for line in shown(err) if "plot written" in line]  # each on its own line, not inside a bar
    assert [line.rsplit("-", 1)[-1] for line in written] == ["hidden.png", "mlp.png", "attn.png"], err
    assert all(line.startswith("plot written: ") for line in written), err
    assert main(["circuits", "discover", "--case", "hist", "--method", "edge"]) == 0
    assert bar_lines(capsys.readouterr().err, "patching")  # edge patching's bar over its chunks


def test_warnings_stand_on_their_own_line_beside_a_bar(capsys):
    assert main(["run", "--model", "tiny-gpt2", "--prompt", "the zebra sat on the"]) == 0
    err = capsys.readouterr().err
    assert bar_lines(err, "causalscope run")
    warned = [line for line in shown(err) if "['zebra'] are not in the tokenizer's vocabulary" in line]
    assert len(warned) == 1 and warned[0].startswith("causalscope: warning: Prompt"), err


def test_a_failing_command_clears_its_bar_and_says_one_line(capsys):
    assert main(["run", "--model", "tiny-gpt2", "--prompt", "the zebra sat on the", "--strict"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "done" not in err  # the bar stopped where it failed
    assert shown(err)[1:] == [""] and shown(err)[0].startswith("causalscope: error: Prompt 'the zebra sat on the'")
    assert err.split("\r")[-2].strip() == ""  # the bar's line was blanked before the error was written


def test_quick_commands_print_no_bar_and_slow_ones_draw_it_during_a_long_step(capsys, monkeypatch):
    monkeypatch.setattr(_progress, "DELAY", 0.3)
    assert main(["sites", "--model", "mlp"]) == 0  # a bundled model loads in milliseconds
    assert capsys.readouterr().err == ""
    import causalscope.loading

    real = causalscope.loading.load

    def slow(*args, **kw):
        time.sleep(0.8)
        return real(*args, **kw)
    monkeypatch.setattr(causalscope.loading, "load", slow)
    assert main(["sites", "--model", "mlp"]) == 0
    states = bar_lines(capsys.readouterr().err, "causalscope sites")
    assert states[0].rstrip().endswith("0/1 steps [00:00, loading mlp]"), states  # drawn while it loads
    assert states[-1].rstrip().endswith("1/1 steps [00:00, done]"), states


def test_the_demo_shows_a_bar_over_its_sections(capsys, monkeypatch, tmp_path):
    from causalscope.app.demo import _build

    def section(rep):
        rep.section("a section", "text")
    monkeypatch.setattr(_build, "SECTIONS", (section, section, section))  # the real ones take a minute
    assert main(["demo", "--out", str(tmp_path / "r.html")]) == 0
    states = bar_lines(capsys.readouterr().err, "causalscope demo")
    assert states and "3/3" in states[-1], states
    assert (tmp_path / "r.html").exists()


def test_the_bar_reaches_a_pipe():
    """A subprocess whose stderr is a pipe (a log, not a terminal) still gets the bar (loading the model in a fresh
    process takes over the half second before it appears)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "causalscope", "patch", "--model", "tiny-gpt2", "--sites", "heads",
                           *PROMPTS], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    states = bar_lines(proc.stderr, "causalscope patch")
    assert states and states[-1].rstrip().endswith(", done]") and "3/3 steps" in states[-1], proc.stderr
