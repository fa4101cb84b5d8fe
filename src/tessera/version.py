"""The one place for Tessera's versions; imports nothing (the bottom layer).

``__version__`` is the release: the wheel's version (setuptools reads it from here,
``pyproject.toml`` ``[tool.setuptools.dynamic]``) and what ``tessera --version`` prints.

``PROTOCOL_VERSION`` is the version of what custodian nodes, the gateway and clients
say to each other (the node API and the job documents).  It changes only when a change
breaks a party that speaks the previous one; a node refuses a peer or a job whose
protocol version it does not speak.
"""

from __future__ import annotations

from typing import Final

__all__ = ["PROTOCOL_VERSION", "__version__"]

__version__: Final = "0.1.0"

PROTOCOL_VERSION: Final = 1
