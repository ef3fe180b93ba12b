"""Shared fixtures for the Python tests: the Rust worker binary that writes real array files."""

import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def worker() -> str:
    """Path of `mmshare-test-worker`, built by cargo if the test script did not say where it is."""
    path = os.environ.get("MMSHARE_TEST_WORKER")
    if path:
        return path
    subprocess.run(
        ["cargo", "build", "--quiet", "-p", "mmshare-tests", "--bin", "mmshare-test-worker"],
        cwd=REPO,
        check=True,
    )
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return str(target / "debug" / "mmshare-test-worker")
