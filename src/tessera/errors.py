"""The whole Tessera exception tree.

Every failure a user can see is a :class:`TesseraError`; its message is safe to print
(it never contains secret material) and the CLI turns it into one line on stderr and
exit code 1 (the ``exit_code`` class attribute); the node and gateway APIs answer with
its ``http_status``.  Programmer misuse raises the built-in
``TypeError`` / ``ValueError`` instead, as pyca/cryptography does.

::

    TesseraError                    code: ClassVar[str]; safe message, no secrets
    ├─ ConfigError
    ├─ UsageError                   bad arguments from a user (exit 2)
    ├─ InputError                   malformed input file (CSV, DICOM, fragment header)
    ├─ IntegrityError               MAC, checksum, broken chain
    │  ├─ InvalidShareError
    │  └─ ChainBrokenError
    ├─ RecoveryError
    │  └─ InsufficientSharesError
    ├─ PolicyError                  deliberate refusal
    │  ├─ BudgetExhaustedError
    │  ├─ RiskThresholdError
    │  ├─ DeidentificationError
    │  └─ ForbiddenError           the user's role does not allow it (HTTP 403)
    ├─ AuthenticationError          no or unknown credentials (HTTP 401)
    │  └─ TooManyAttemptsError      too many failures from one address (HTTP 429)
    ├─ BackendError                 wraps fsspec/engine failures (``raise … from exc``)
    │  ├─ StorageUnavailableError
    │  ├─ NodeBusyError            a custodian at its job limit (HTTP 503; send again)
    │  └─ EngineUnavailableError
    ├─ UnsupportedError             a construct Tessera does not (yet) handle
    └─ NotFoundError
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AuthenticationError",
    "BackendError",
    "BudgetExhaustedError",
    "ChainBrokenError",
    "ConfigError",
    "DeidentificationError",
    "EngineUnavailableError",
    "ForbiddenError",
    "InputError",
    "InsufficientSharesError",
    "IntegrityError",
    "InvalidShareError",
    "JobAbortedError",
    "NodeBusyError",
    "NotFoundError",
    "OutputHeldError",
    "PolicyError",
    "RecoveryError",
    "ReplayError",
    "RiskThresholdError",
    "StorageUnavailableError",
    "TesseraError",
    "TooManyAttemptsError",
    "UnsupportedError",
    "UsageError",
]


class TesseraError(Exception):
    """Base of every error Tessera raises on purpose; the message is safe to show."""

    code: ClassVar[str] = "tessera_error"
    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 500
    """The HTTP status the node and gateway APIs answer with."""


class ConfigError(TesseraError):
    """The environment or its configuration is missing or inconsistent."""

    code = "config_error"
    http_status = 400


class UsageError(TesseraError):
    """The user asked for something that cannot be done as asked."""

    code = "usage_error"
    exit_code = 2
    http_status = 400


class InputError(TesseraError):
    """An input file is malformed (truncated, wrong format, bad row)."""

    code = "input_error"
    http_status = 400


class IntegrityError(TesseraError):
    """Authenticated data failed its check."""

    code = "integrity_error"
    http_status = 403


class InvalidShareError(IntegrityError):
    """A fragment or share is damaged, forged or belongs to another object."""

    code = "invalid_share"


class ChainBrokenError(IntegrityError):
    """A hash chain or Merkle log does not verify."""

    code = "chain_broken"


class ReplayError(IntegrityError):
    """A signed job was seen before, or is outside its time window (clocks)."""

    code = "job_replayed"


class RecoveryError(TesseraError):
    """The data cannot be restored from what is available."""

    code = "recovery_error"
    http_status = 409


class InsufficientSharesError(RecoveryError):
    """Fewer valid shares than the threshold remain."""

    code = "insufficient_shares"


class PolicyError(TesseraError):
    """A deliberate refusal by policy."""

    code = "policy_refused"
    http_status = 403


class BudgetExhaustedError(PolicyError):
    """The privacy budget does not admit this release."""

    code = "budget_exhausted"


class RiskThresholdError(PolicyError):
    """The measured re-identification risk is above the allowed threshold."""

    code = "risk_threshold"


class DeidentificationError(PolicyError):
    """A DICOM object cannot be de-identified safely."""

    code = "deidentification_refused"


class ForbiddenError(PolicyError):
    """The user's role does not allow this operation."""

    code = "forbidden"


class OutputHeldError(PolicyError):
    """The custodians hold a release back for its steward (it failed a disclosure check)."""

    code = "output_held"
    http_status = 409

    def __init__(self, message: str, *, job_id: str = "", reasons: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.reasons = reasons


class AuthenticationError(TesseraError):
    """No credentials, or credentials nobody issued."""

    code = "unauthenticated"
    http_status = 401


class TooManyAttemptsError(AuthenticationError):
    """Too many failed sign-ins from one address: refused for a while."""

    code = "too_many_attempts"
    http_status = 429


class BackendError(TesseraError):
    """An engine or storage backend failed."""

    code = "backend_error"
    http_status = 502


class JobAbortedError(BackendError):
    """A custodian stopped its part of a job because another custodian refused or failed."""

    code = "job_aborted"


class NodeBusyError(BackendError):
    """A custodian runs as many jobs as it allows at once (``[node] max_jobs``); the job
    was refused before anything was charged, and may be sent again shortly."""

    code = "node_busy"
    http_status = 503


class StorageUnavailableError(BackendError):
    """A store could not be reached or refused the operation."""

    code = "storage_unavailable"


class EngineUnavailableError(BackendError):
    """An optional engine is not installed (the message says which extra to install)."""

    code = "engine_unavailable"


class UnsupportedError(TesseraError):
    """A construct that Tessera does not handle; the message names it."""

    code = "unsupported"
    http_status = 422


class NotFoundError(TesseraError):
    """The named object, table or entry does not exist."""

    code = "not_found"
    http_status = 404
