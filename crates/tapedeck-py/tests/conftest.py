"""Shared fixtures: a PostgreSQL URL (skipped without a server, a failure under CI=true)."""

from __future__ import annotations

import os
import socket
import urllib.parse

import pytest


def _answers(url: str) -> bool:
    u = urllib.parse.urlparse(url)
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or 5432), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def postgres_url() -> str:
    url = os.environ.get("TAPEDECK_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
    if not _answers(url):
        message = f"no PostgreSQL answers at {url} (set TAPEDECK_TEST_POSTGRES_URL)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return url
