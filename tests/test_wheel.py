"""The wheel works outside the checkout: configs and kernels ship as lra.configs and lra.kernels;
and the installed package keeps the layers of pyproject.toml's import-linter contracts.

The wheel is built from a copy of the sources (nothing is written into the checkout) and
installed without its dependencies into a fresh venv in a temporary folder; the dependencies
come from this test's own environment through a .pth line (a plain path line: the checkout's
editable-install hook in that environment is not run). The declared dependencies are checked
against the imports instead of being downloaded again.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "lra", "configs", "kernels")

pytestmark = pytest.mark.slow


def run(cmd, cwd, env=None, check=True):
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert out.returncode == 0, f"{cmd}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, bin folder, work folder) of a fresh venv holding only the built wheel."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                         if (ROOT / name).is_dir() else {}))
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "dist"), str(src)],
        cwd=tmp)
    wheel = next((tmp / "dist").glob("lra_harness-*.whl"))
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    python = venv / "bin" / "python"
    target = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                      cwd=tmp).stdout.strip())
    run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(wheel)], cwd=tmp)
    (target / "_lra_test_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    work = tmp / "outside"
    work.mkdir()
    return python, wheel, work, target


def test_wheel_has_no_generic_top_level_names(installed):
    _, wheel, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"lra"}
    assert "lra/configs/listops.py" in names and "lra/kernels/flash.py" in names


def test_declared_dependencies_cover_the_imports(installed):
    _, wheel, _, _ = installed
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    required = {line.split(":", 1)[1].strip().split(">")[0].split("=")[0].split(";")[0].strip()
                for line in meta.splitlines() if line.startswith("Requires-Dist:")
                and "extra ==" not in line}
    assert {"jax", "flax", "optax", "ml-collections", "orbax-checkpoint", "numpy", "pillow",
            "rich"} <= required


def test_cli_runs_from_the_wheel_outside_the_checkout(installed, tmp_path):
    python, _, work, _ = installed
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["LRA_DATA_DIR"] = str(tmp_path / "data")
    lra = [str(python), "-m", "lra.cli"]
    where = run([str(python), "-c", "import lra.configs, lra.kernels, importlib.util as u; "
                 "print(lra.configs.__file__, lra.kernels.__file__, "
                 "u.find_spec('configs'), u.find_spec('kernels'))"], cwd=work, env=env).stdout
    assert str(ROOT) not in where and where.split()[2:] == ["None", "None"]

    listed = run(lra + ["list"], cwd=work, env={**env, "COLUMNS": "200"}).stdout
    assert "lra.configs.listops" in listed and "pathfinder" in listed
    prepared = run(lra + ["data", "prepare", "listops", "--size", "smoke"], cwd=work, env=env)
    assert "prepared listops" in prepared.stdout

    # a config file of the user's own, next to nothing but itself
    (work / "my_listops.py").write_text(
        "from lra.configs import listops\n\n\n"
        "def get_config(arg=None):\n"
        "    c = listops.get_config(arg)\n"
        "    c.train.steps = 6\n"
        "    return c\n")
    for spec, steps in (("listops:model=softmax,size=smoke", 20), ("my_listops.py:size=smoke", 6)):
        workdir = work / spec.split(":")[0].replace(".py", "")
        run(lra + ["train", "--config", spec, "--workdir", str(workdir)], cwd=work, env=env)
        summary = json.loads((workdir / "summary.json").read_text())
        assert summary["status"] == "ok" and summary["steps"] == steps


def test_the_layers_hold_in_the_installed_package(installed):
    """import-linter reads the package from disk, so it runs on the installed copy, where
    configs and kernels sit inside lra/; a forbidden import planted there must be named."""
    python, _, work, site = installed
    lint = [str(python), "-c", "import sys; from importlinter.cli import lint_imports_command; "
            "sys.exit(lint_imports_command())", str(ROOT / "pyproject.toml")]
    ok = run(lint, cwd=work, check=False)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
    assert "Contracts: 4 kept, 0 broken" in ok.stdout
    planted = site / "lra" / "kernels" / "_planted.py"
    planted.write_text("from lra.errors import LRAError\n")
    try:
        broken = run(lint, cwd=work, check=False)
    finally:
        planted.unlink()
    assert broken.returncode != 0
    assert "lra.kernels._planted -> lra.errors" in broken.stdout
