"""A private Ray API that is gone degrades its feature with one warning; a failing call still raises."""

from __future__ import annotations

import logging

import pytest

from elastic_nas.cluster.private import UNAVAILABLE, private_api


def test_a_gone_api_warns_once_and_degrades(caplog):
    calls = []

    @private_api("a test-only private API", "the test feature is off")
    def gone() -> str:
        calls.append(1)
        from ray._private import no_such_module  # noqa: F401  (an API a Ray upgrade removed)

        return "never"

    with caplog.at_level(logging.WARNING):
        assert gone() is UNAVAILABLE
        assert gone() is UNAVAILABLE
    assert len(calls) == 1  # not tried again once known to be gone
    lines = [r.getMessage() for r in caplog.records if "a test-only private API" in r.getMessage()]
    assert len(lines) == 1 and "the test feature is off" in lines[0]


def test_a_failing_call_is_not_mistaken_for_a_gone_api():
    @private_api("another test-only private API", "nothing")
    def flaky() -> None:
        raise TimeoutError("the node went away")

    with pytest.raises(TimeoutError):
        flaky()
    with pytest.raises(TimeoutError):  # still tried: a call failing is not the API missing
        flaky()
