"""Shared fixtures of the CLI tests."""

import pytest

from tdbnas.cli import search as search_cli
from tdbnas.search import SyntheticFitness
from tdbnas.spaces import get_space


@pytest.fixture
def synthetic(monkeypatch):
    """`tdbnas search` ranks by a seeded synthetic fitness instead of a real signal."""
    monkeypatch.setattr(search_cli, "fitness_factory",
                        lambda args: SyntheticFitness(get_space(args.space), 0, metric="score").factory)


@pytest.fixture
def cli(capsys):
    """`cli(*argv) -> (exit code, stdout, stderr)` of one `tdbnas` command."""
    from tdbnas.cli.main import main

    def run(*argv):
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run
