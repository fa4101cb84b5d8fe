"""Tessera: a trusted data environment for medical data.

Data is kept split into k-of-n fragments across independent custodians; answers are
computed on the fragments.  The curated public names live here; everything else is
reached through its subpackage.
"""

from __future__ import annotations

from tessera.errors import TesseraError as TesseraError
from tessera.version import __version__ as __version__

__all__ = ["TesseraError", "__version__"]
