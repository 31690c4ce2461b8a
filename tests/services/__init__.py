"""Real services for integration tests, one module per service."""

import os
import shutil

import pytest

SBIN = "/usr/sbin:/usr/local/sbin"


def require_binary(name: str, package: str) -> str:
    """Path of `name`; skips without it on a developer's machine, but fails under CI,
    where `make test` installs the Debian packages and a skip would hide a broken install."""
    path = shutil.which(name) or shutil.which(name, path=SBIN)
    if path:
        return path
    message = f"`{name}` is not installed (Debian package `{package}`; `make test` installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
