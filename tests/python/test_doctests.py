"""The examples in the package's docstrings run as written (doctest), each with a throw-away
daemon of its own (`mmshare.start_daemon`, the daemon built for these tests)."""

import doctest
import os
import pathlib

import pytest

import mmshare.array
import mmshare.client
import mmshare.service
import mmshare.stream


@pytest.mark.parametrize(
    "module", [mmshare.client, mmshare.stream, mmshare.array, mmshare.service])
def test_docstring_examples_run(module, daemon_bin, monkeypatch):
    monkeypatch.setenv("PATH", f"{pathlib.Path(daemon_bin).parent}{os.pathsep}{os.environ['PATH']}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, result
    if module is not mmshare.array:
        assert result.attempted > 0
