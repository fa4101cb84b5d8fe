"""Homomorphic encryption (CKKS) for analyses on a server nobody trusts (layer 1).

The owner of a key set encrypts a table (or a CT series and its segmentation mask) with
a public key bundle; an untrusted server computes sums, means, variances, covariances,
model scores or a structure's volume and mean intensity on the ciphertexts; the owner
decrypts the answer and checks it against sentinel rows the server could not tell from
real ones.  See docs/he.md.

* :mod:`tessera.he.params` — CKKS parameters from multiplicative depth, 128-bit security;
* :mod:`tessera.he.engine` — the engine interface (TenSEAL by default, imported lazily);
* :mod:`tessera.he.packing` — column-wise packing, sentinels, padding;
* :mod:`tessera.he.evaluate` — the server's circuits, with exact scale accounting;
* :mod:`tessera.he.verify` / :mod:`tessera.he.results` — the client's checks and results;
* :mod:`tessera.he.files` / :mod:`tessera.he.container` — the files and messages;
* :mod:`tessera.he.session` — encrypt, answer, open on bytes.

Importing this package does not import the engine: ``tenseal`` loads on first use.
"""

from tessera.he.engine import DEFAULT_ENGINE as DEFAULT_ENGINE
from tessera.he.engine import register_engine as register_engine
from tessera.he.jobs import Job as Job
from tessera.he.jobs import Model as Model
from tessera.he.params import Params as Params
from tessera.he.params import params_for_depth as params_for_depth

__all__ = ["DEFAULT_ENGINE", "Job", "Model", "Params", "params_for_depth", "register_engine"]
