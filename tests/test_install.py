"""``pip install`` of the package alone, no extras, into a fresh virtual environment is
enough for the notebook: a real kernel of that environment loads the extension and runs
an ``%%enqueue`` cell. It installs from the package registry (about 25 s here), so it is
one test, marked ``slow``; it runs in CI like the others."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from jupyter_client import KernelManager  # noqa: E402
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from nbformat.v4 import new_code_cell, new_notebook  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_pip_install_alone_is_enough_for_the_magics(tmp_path: Path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    installed = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(REPO)],
                               capture_output=True, text=True, timeout=800, env=env)
    assert installed.returncode == 0, installed.stderr[-4000:]
    # the marker that tells type checkers the package's annotations are its own (PEP 561)
    marker = subprocess.run(
        [str(python), "-c", "import importlib.resources as r; "
                            "print(r.files('nbqueue').joinpath('py.typed').is_file())"],
        capture_output=True, text=True, timeout=120, env=env)
    assert marker.stdout.strip() == "True", marker.stderr[-4000:]

    kernels = tmp_path / "kernels"
    (kernels / "nbq-venv").mkdir(parents=True)
    (kernels / "nbq-venv" / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "nbqueue in a fresh venv", "language": "python"}))
    manager = KernelManager(kernel_name="nbq-venv",
                            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))
    nb = new_notebook(cells=[new_code_cell(c) for c in [
        "%load_ext nbqueue",
        "import nbqueue\nprint('from', nbqueue.__file__)",
        "%%enqueue sq\nsquare = 7 * 7",
        "%nbq wait sq\nprint('square is', square)",
    ]])
    client = nbclient.NotebookClient(nb, km=manager, timeout=180,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env={**env, "NBQUEUE_DIR": str(tmp_path / "q"), "TMPDIR": str(tmp_path),
                        "IPYTHONDIR": str(tmp_path / "ipython")})
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.outputs)
    assert f"from {venv}" in printed  # the venv's own copy, not this environment's
    assert "square is 49" in printed
