"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edgeops.broker import MosquittoBroker


@pytest.fixture
def mosquitto(tmp_path) -> Iterator[MosquittoBroker]:
    """A plain (anonymous, no TLS) Mosquitto on a free loopback port, for this test only."""
    with MosquittoBroker("allow_anonymous true\n", workdir=tmp_path / "broker") as broker:
        yield broker
