"""The project's settings read from the environment: Redis Sentinel addresses."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from transcribe_project.settings import sentinel_addresses


def test_sentinel_addresses_parsed_in_order():
    assert sentinel_addresses("10.0.0.1:26379, redis-b:26380,") == [("10.0.0.1", 26379), ("redis-b", 26380)]


def test_sentinel_addresses_empty_means_none():
    assert sentinel_addresses("") == []


@pytest.mark.parametrize("bad", ["10.0.0.1", "host:", ":26379", "host:port"])
def test_sentinel_addresses_refuse_what_is_not_host_port(bad):
    with pytest.raises(ImproperlyConfigured, match="host:port"):
        sentinel_addresses(bad)
