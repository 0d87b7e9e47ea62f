"""The documentation runs: every ```python block of each docs/*.md page, in order, in one fresh namespace
per page (a block whose first line is ``# no-test`` is skipped), and every ``causalscope ...`` command in
the ```bash blocks of docs/cli.md exits 0. Everything is written under pytest's tmp_path."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
PAGES = sorted(p.name for p in DOCS.glob("*.md"))


def blocks(page: str, lang: str) -> list[tuple[int, str]]:
    """(line number, code) of each fenced block of ``lang`` in ``page``."""
    text = (DOCS / page).read_text(encoding="utf-8")
    return [(text.count("\n", 0, mt.start()) + 2, mt.group(2)) for mt in FENCE.finditer(text) if mt.group(1) == lang]


def cli_commands() -> list[tuple[int, str]]:
    cmds: list[tuple[int, str]] = []
    if not (DOCS / "cli.md").is_file():
        return cmds  # test_every_page_has_examples reports the missing page
    for line0, code in blocks("cli.md", "bash"):
        if not code.lstrip().startswith("causalscope "):
            continue
        cmds += [(line0 + i, line.strip()) for i, line in enumerate(code.splitlines())
                 if line.strip().startswith("causalscope ")]
    return cmds


def test_every_page_has_examples():
    assert {"getting-started.md", "sites.md", "interventions.md", "engine.md", "adapters.md", "loading.md",
            "report.md", "cli.md"} <= set(PAGES)
    for page in PAGES:
        if page == "cli.md":
            assert cli_commands(), page
        else:
            assert blocks(page, "python"), f"{page} has no ```python block"


# the Ray examples run in the one xdist worker of the Ray tests (group "ray"), never beside another local Ray
PAGE_PARAMS = [pytest.param(p, marks=pytest.mark.xdist_group("ray")) if p == "distributed.md" else p for p in PAGES]


@pytest.mark.parametrize("page", PAGE_PARAMS)
def test_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # tempfile.mkdtemp() in a page lands here too
    # a real (temporary) module as the namespace, so that e.g. @dataclass can find the defining module
    module = types.ModuleType(f"causalscope_docs_{Path(page).stem.replace('-', '_')}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for line, code in blocks(page, "python"):
        if code.lstrip().startswith("# no-test"):
            continue
        exec(compile(code, f"docs/{page}:{line}", "exec"), module.__dict__)  # noqa: S102


CLI = cli_commands()


@pytest.mark.parametrize("line,command", CLI, ids=[c for _, c in CLI])
def test_cli_command_exits_0(line, command, tmp_path):
    argv = shlex.split(command, comments=True)
    # one intra-op thread: beside the other xdist worker, 2 threads on 2 cores stall every small op
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "causalscope", *argv[1:]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, f"docs/cli.md:{line}: {command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"


def test_readme_python_examples_run(tmp_path, monkeypatch):
    """The README's ```python blocks (the sixty-second tour) run as written."""
    readme = DOCS.parent / "README.md"
    text = readme.read_text(encoding="utf-8")
    codes = [(text.count("\n", 0, mt.start()) + 2, mt.group(2)) for mt in FENCE.finditer(text) if mt.group(1) == "python"]
    assert codes, "the README has no python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "causalscope_readme"}
    for line, code in codes:
        exec(compile(code, f"README.md:{line}", "exec"), namespace)  # noqa: S102
