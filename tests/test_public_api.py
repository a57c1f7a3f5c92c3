"""The README's "Use from Python" example, run as written (smaller where it says so)."""

from pathlib import Path

import doc_blocks
import pytest

import lra

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.slow


def test_the_readme_example_runs(tmp_path, monkeypatch):
    (code,) = [body for _, body in doc_blocks.blocks(README, "python") if "import lra" in body]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LRA_DATA_DIR", str(tmp_path / "data"))
    names: dict = {}
    exec(compile(code.replace('"0,1"', '"0"'), "README", "exec"), names)  # one seed is enough
    assert names["summary"]["status"] == "ok" and names["summary"]["steps"] == 100
    assert names["statuses"] == {"listops/smoke/softmax/seed0": "ok", "listops/smoke/topk/seed0": "ok"}
    assert (tmp_path / "runs/report/accuracy_smoke.md").exists()
    assert [t.name for t in names["report"].tables] == ["accuracy_smoke", "expected_smoke"]


def test_the_package_face_is_lazy_and_complete():
    assert {"load_config", "train", "sweep", "report", "attention", "data"} <= set(lra.__all__)
    assert callable(lra.attention.register) and callable(lra.data.task)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lra.nope  # noqa: B018
