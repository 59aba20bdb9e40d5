"""examples/fast_sampling.ipynb runs top to bottom against the default (shipped) model."""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from spritediff.checkpoint import DEFAULT_MODEL

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "fast_sampling.ipynb"

pytestmark = pytest.mark.skipif(
    not DEFAULT_MODEL.is_file(),
    reason=f"the default model spritediff/assets/{DEFAULT_MODEL.name} is missing; the notebook samples it")


def code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


@pytest.mark.slow
def test_fast_sampling_notebook_executes(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.outputs and cell.execution_count is None for cell in code_cells(nb)), \
        "commit the notebook without outputs"
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in code_cells(nb) for output in cell.outputs]
    mimes = {mime for output in outputs for mime in output.get("data", {})}
    assert {"image/png", "image/gif"} <= mimes  # sample grids and denoising GIFs, inline
    text = "".join(output.get("text", "") for output in outputs)
    assert "speed-up vs ddpm-500" in text and "DDIM-20 is" in text
    assert list(tmp_path.iterdir()) == []  # the notebook leaves no files behind
