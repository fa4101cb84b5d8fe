"""How the requester reports what the custodians answered."""

from __future__ import annotations

import pytest

from tessera.errors import (
    BackendError,
    JobAbortedError,
    PolicyError,
    ReplayError,
    StorageUnavailableError,
)
from tessera.workflows.nodes import _error_class, _raise_refusals


def test_a_stale_or_replayed_job_is_a_refusal_not_a_failure() -> None:
    assert _error_class("job_replayed") is ReplayError
    assert not issubclass(ReplayError, BackendError)


def test_a_node_that_went_away_is_named_before_the_failures_it_caused() -> None:
    errors = {
        1: BackendError("node 1: the MPC party failed"),
        2: JobAbortedError("node 2: job aborted"),
        3: StorageUnavailableError("node 3 at 127.0.0.1:1 is unreachable (RemoteProtocolError)"),
    }
    with pytest.raises(StorageUnavailableError, match="node 3"):
        _raise_refusals(errors, 3)
    errors[2] = PolicyError("node 2: not granted")
    with pytest.raises(PolicyError, match="node 2"):
        _raise_refusals(errors, 3)
