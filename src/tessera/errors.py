"""The whole Tessera exception tree.

Every failure a user can see is a :class:`TesseraError`; its message is safe to print
(it never contains secret material) and the CLI turns it into one line on stderr and
exit code 1 (the ``exit_code`` class attribute).  Programmer misuse raises the built-in
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
    │  └─ DeidentificationError
    ├─ BackendError                 wraps fsspec/engine failures (``raise … from exc``)
    │  ├─ StorageUnavailableError
    │  └─ EngineUnavailableError
    ├─ UnsupportedError             a construct Tessera does not (yet) handle
    └─ NotFoundError
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BackendError",
    "BudgetExhaustedError",
    "ChainBrokenError",
    "ConfigError",
    "DeidentificationError",
    "EngineUnavailableError",
    "InputError",
    "InsufficientSharesError",
    "IntegrityError",
    "InvalidShareError",
    "NotFoundError",
    "PolicyError",
    "RecoveryError",
    "RiskThresholdError",
    "StorageUnavailableError",
    "TesseraError",
    "UnsupportedError",
    "UsageError",
]


class TesseraError(Exception):
    """Base of every error Tessera raises on purpose; the message is safe to show."""

    code: ClassVar[str] = "tessera_error"
    exit_code: ClassVar[int] = 1


class ConfigError(TesseraError):
    """The environment or its configuration is missing or inconsistent."""

    code = "config_error"


class UsageError(TesseraError):
    """The user asked for something that cannot be done as asked."""

    code = "usage_error"
    exit_code = 2


class InputError(TesseraError):
    """An input file is malformed (truncated, wrong format, bad row)."""

    code = "input_error"


class IntegrityError(TesseraError):
    """Authenticated data failed its check."""

    code = "integrity_error"


class InvalidShareError(IntegrityError):
    """A fragment or share is damaged, forged or belongs to another object."""

    code = "invalid_share"


class ChainBrokenError(IntegrityError):
    """A hash chain or Merkle log does not verify."""

    code = "chain_broken"


class RecoveryError(TesseraError):
    """The data cannot be restored from what is available."""

    code = "recovery_error"


class InsufficientSharesError(RecoveryError):
    """Fewer valid shares than the threshold remain."""

    code = "insufficient_shares"


class PolicyError(TesseraError):
    """A deliberate refusal by policy."""

    code = "policy_refused"


class BudgetExhaustedError(PolicyError):
    """The privacy budget does not admit this release."""

    code = "budget_exhausted"


class RiskThresholdError(PolicyError):
    """The measured re-identification risk is above the allowed threshold."""

    code = "risk_threshold"


class DeidentificationError(PolicyError):
    """A DICOM object cannot be de-identified safely."""

    code = "deidentification_refused"


class BackendError(TesseraError):
    """An engine or storage backend failed."""

    code = "backend_error"


class StorageUnavailableError(BackendError):
    """A store could not be reached or refused the operation."""

    code = "storage_unavailable"


class EngineUnavailableError(BackendError):
    """An optional engine is not installed (the message says which extra to install)."""

    code = "engine_unavailable"


class UnsupportedError(TesseraError):
    """A construct that Tessera does not handle; the message names it."""

    code = "unsupported"


class NotFoundError(TesseraError):
    """The named object, table or entry does not exist."""

    code = "not_found"
