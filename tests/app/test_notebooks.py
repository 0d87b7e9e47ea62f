"""The tutorials in notebooks/ run in a fresh Jupyter kernel (nbclient + ipykernel), as a reader runs them: every
cell without an error, every figure a cell returns shown inline (no ``%matplotlib inline``), every result shown as
its HTML table, and no warning printed (``TqdmWarning: IProgress not found`` without ipywidgets, above all).

The kernel is this interpreter (a kernel spec written to a temporary ``JUPYTER_PATH``), so a ``python3`` kernel
installed elsewhere on the machine cannot stand in for it. A cell tagged ``third-party-imports`` imports another
library itself (the user's-own-model tutorial imports transformers before causalscope): warnings printed there
belong to that library.
"""
from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "causalscope-tests"
THIRD_PARTY = "third-party-imports"
#: a cell whose value is a figure: its last line calls .plot(...)
PLOT_CELL = re.compile(r"\.plot\([^()]*\)\s*(#.*)?$")


@pytest.fixture
def kernel(tmp_path, monkeypatch) -> str:
    """A kernel spec for this interpreter, found before any other (JUPYTER_PATH comes first)."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    # one intra-op thread: the notebooks' models are tiny, and CI runs two test workers on two cores
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "causalscope tests", "language": "python", "env": env}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # as in a fresh Jupyter: ipykernel picks its inline backend
    return KERNEL


def execute(nb: nbformat.NotebookNode, cwd: Path, kernel: str) -> nbformat.NotebookNode:
    NotebookClient(nb, timeout=300, kernel_name=kernel, resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def outputs(cell: nbformat.NotebookNode, mime: str) -> list[str]:
    return [o["data"][mime] for o in cell.get("outputs", []) if mime in o.get("data", {})]


def warnings_printed(cell: nbformat.NotebookNode) -> list[str]:
    text = "".join(o["text"] for o in cell.get("outputs", []) if o["output_type"] == "stream" and o["name"] == "stderr")
    return [line for line in text.splitlines() if "Warning" in line or "warn" in line.lower()]


def check_png(data: str) -> None:
    assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_fresh_kernel_shows_figures_and_results_and_prints_no_warning(kernel, tmp_path):
    cells = [
        "import warnings\nwarnings.simplefilter('always')",  # every warning is printed, not only the first
        "import causalscope as cs\nimport torch\nfrom causalscope import circuits, core, patching, tracing",
        "r = cs.LabelledArray(torch.arange(6.0).reshape(2, 3), ('layer', 'position'), name='<b>x</b>')\n"
        "r = r.with_tokens(['the', 'cat', 'sat'])\nr",
        "r.plot()",
        "import sys\nprint('matplotlib.pyplot' in sys.modules)",
    ]
    nb = execute(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells]), tmp_path, kernel)
    assert [warnings_printed(c) for c in nb.cells] == [[]] * len(cells)
    (html,) = outputs(nb.cells[2], "text/html")
    assert 'class="causalscope-result"' in html and "&lt;b&gt;x&lt;/b&gt;" in html and "&#x27;cat&#x27;" in html
    assert html.count('<img src="data:image/png;base64,') == 1
    (png,) = outputs(nb.cells[3], "image/png")  # the Figure plot() returns, shown
    check_png(png)
    # shown without pyplot: no figure manager holds it, so nothing is shown twice or closed behind the user's back
    assert nb.cells[4]["outputs"][0]["text"] == "False\n"


def test_every_notebook_is_linked_from_getting_started():
    text = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    assert len(NOTEBOOKS) == 6
    for path in NOTEBOOKS:
        assert f"../notebooks/{path.name}" in text, path.name


@pytest.mark.slow  # ~10-20 s each: a kernel start, torch and transformers imports, the tutorial itself
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_a_fresh_kernel(path, kernel, tmp_path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "notebooks are kept without outputs"
    execute(nb, tmp_path, kernel)  # raises CellExecutionError, with the cell and traceback, on any error
    code = [c for c in nb.cells if c.cell_type == "code"]
    plots = [c for c in code if PLOT_CELL.search(c.source.strip().splitlines()[-1])]
    assert plots, "every tutorial shows a figure"
    for cell in plots:
        pngs = outputs(cell, "image/png")
        assert len(pngs) == 1, f"no inline figure for:\n{cell.source}"
        check_png(pngs[0])
    for cell in code:
        for text in outputs(cell, "text/plain"):
            if text.startswith("<LabelledArray"):  # a result as a cell's value: its table and figure
                (html,) = outputs(cell, "text/html")
                assert 'class="causalscope-result"' in html and "data:image/png;base64," in html
        if THIRD_PARTY not in cell.metadata.get("tags", []):
            assert not warnings_printed(cell), f"{cell.source}\nprinted {warnings_printed(cell)}"
