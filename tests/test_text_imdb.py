"""Text end to end on the real IMDb archive ($LRA_IMDB_ARCHIVE; .ci/run points it at
../shared/data/aclImdb_v1.tar.gz). Skipped when the archive is absent."""

import os
from pathlib import Path

import pytest

from lra import data
from lra.training import config, train

ARCHIVE = os.environ.get("LRA_IMDB_ARCHIVE", "")
pytestmark = pytest.mark.skipif(not Path(ARCHIVE).is_file(), reason="LRA_IMDB_ARCHIVE not set")


def test_text_smoke_trains_on_the_real_archive(tmp_path, monkeypatch):
    monkeypatch.setenv("LRA_DATA_DIR", str(tmp_path / "data"))
    c = config.load("text:size=smoke", {"data.path": ARCHIVE})
    with pytest.raises(Exception, match="lra data prepare text"):
        data.open_dataset(c)
    data.prepare(c)
    s = train.train(c, tmp_path / "run")
    assert s["status"] == "ok" and s["steps"] == c.train.steps
    assert 0.0 <= s["test_acc"] <= 1.0 and s["max_len"] == 128
