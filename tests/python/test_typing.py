"""Typing (issue 21): the package ships `py.typed` and stubs; mypy --strict and pyright pass on
a typed user script (tests/python/typed_user.py, whose `assert_type`s pin each return type,
and which runs against a real daemon) and on the examples; pyright's --verifytypes rates the
public API's type completeness at 95 % or more."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

import mmshare

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHECKED = [str(HERE / "typed_user.py"), str(ROOT / "clients/python/examples/serve_latest.py")]
BIN = pathlib.Path(sys.executable).parent
# pyright finds the installed package through the virtualenv it is told about.
ENV = dict(os.environ, VIRTUAL_ENV=str(BIN.parent), PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")


def test_the_package_says_it_is_typed():
    package = pathlib.Path(mmshare.__file__).parent
    assert (package / "py.typed").exists()
    for stub in ["client.pyi", "array.pyi", "stream.pyi", "errors.pyi", "daemon.pyi"]:
        assert (package / stub).exists(), stub


def test_mypy_strict_passes_on_the_typed_script_and_the_examples():
    out = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                          *CHECKED], capture_output=True, text=True, cwd=HERE)
    assert out.returncode == 0, out.stdout + out.stderr


def test_pyright_passes_on_the_typed_script_and_the_examples():
    out = subprocess.run([str(BIN / "pyright"), *CHECKED], capture_output=True, text=True,
                         cwd=HERE, env=ENV)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_public_api_is_typed_completely_enough():
    out = subprocess.run([str(BIN / "pyright"), "--verifytypes", "mmshare", "--ignoreexternal",
                          "--outputjson"], capture_output=True, text=True, cwd=HERE, env=ENV)
    report = json.loads(out.stdout)
    assert report["typeCompleteness"]["exportedSymbolCounts"]["withKnownType"] > 150, report
    score = report["typeCompleteness"]["completenessScore"]
    assert score >= 0.95, (score, [d["message"] for d in report["typeCompleteness"].get(
        "symbols", []) if not d.get("isTypeKnown", True)][:20])


def test_the_typed_script_runs(daemon):
    subprocess.run([sys.executable, str(HERE / "typed_user.py"), daemon.socket], check=True,
                   timeout=120)
