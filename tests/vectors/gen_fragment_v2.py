"""Generate tests/vectors/fragment_v2.json: regression vectors for fragment format v2.

Produced by Tessera itself with a fixed DRBG seed (no independent implementation):
they pin the byte layout so that a format change cannot slip in unnoticed.  One
vector per scheme.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

from tessera.core.fragment import split_stream
from tessera.core.rng import Drbg


def main() -> None:
    plaintext = b"Tessera fragment format v2 known answer"
    seed = bytes(range(32))
    vectors = []
    for scheme in ("shamir", "ssms"):
        dsts = [io.BytesIO() for _ in range(3)]
        split_stream(
            io.BytesIO(plaintext),
            dsts,
            k=2,
            size=len(plaintext),
            scheme=scheme,
            block_size=4096,
            rng=Drbg.from_seed(seed),
        )
        frags = [d.getvalue() for d in dsts]
        vectors.append(
            {
                "scheme": scheme,
                "k": 2,
                "n": 3,
                "seed": seed.hex(),
                "plaintext": plaintext.hex(),
                "header_fields": frags[0][:48].hex(),
                "sha256": [hashlib.sha256(f).hexdigest() for f in frags],
            }
        )
    out = Path(__file__).with_name("fragment_v2.json")
    out.write_text(json.dumps(vectors, indent=1) + "\n")


if __name__ == "__main__":
    main()
