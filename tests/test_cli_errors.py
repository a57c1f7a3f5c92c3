"""Every failure of a command is one line on stderr; the traceback only with --debug or
LRA_DEBUG=1."""

import errno

import pytest

from lra import cli
from lra.cli import commands
from lra.errors import LRAError

# (argv, the commands.py function it reaches)
COMMANDS = [
    (["train", "--config", "listops:size=smoke", "--workdir", "w"], "train"),
    (["sweep", "--workdir", "w"], "sweep"),
    (["bench", "--models", "softmax"], "bench"),
    (["data", "prepare", "listops"], "prepare"),
]


def fail_with(monkeypatch, name: str, error: Exception) -> None:
    def raise_it(*args, **kwargs):
        raise error
    monkeypatch.setattr(commands, name, raise_it)


@pytest.mark.parametrize("argv,name", COMMANDS, ids=[c[1] for c in COMMANDS])
def test_an_unexpected_failure_is_one_line(monkeypatch, capsys, argv, name):
    fail_with(monkeypatch, name, RuntimeError("the first line\nand a second"))
    assert cli.main(argv) == 1
    assert capsys.readouterr().err == ("lra: error: RuntimeError: the first line "
                                       "(rerun with --debug for the traceback)\n")


@pytest.mark.parametrize("argv,name", COMMANDS, ids=[c[1] for c in COMMANDS])
def test_a_full_disk_names_the_file(monkeypatch, capsys, argv, name):
    fail_with(monkeypatch, name, OSError(errno.ENOSPC, "No space left on device", "/d/x.npy"))
    assert cli.main(argv) == 1
    assert capsys.readouterr().err == "lra: error: no space left on device writing /d/x.npy\n"


@pytest.mark.parametrize("where", ["first", "last"])
def test_debug_shows_the_traceback(monkeypatch, where):
    fail_with(monkeypatch, "train", RuntimeError("boom"))
    argv = COMMANDS[0][0]
    with pytest.raises(RuntimeError, match="boom"):
        cli.main(["--debug", *argv] if where == "first" else [*argv, "--debug"])


def test_debug_from_the_environment_raises_user_errors_too(monkeypatch, capsys):
    argv = ["train", "--config", "listops:size=nope", "--workdir", "w"]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.count("\n") == 1
    monkeypatch.setenv("LRA_DEBUG", "1")
    with pytest.raises(LRAError, match="nope"):
        cli.main(argv)
