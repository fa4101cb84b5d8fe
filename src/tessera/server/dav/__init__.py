"""``tessera vault mount``: the vault served over WebDAV (wsgidav on cheroot), so that
Windows Explorer, macOS Finder and Linux file managers open it like a network drive.

:mod:`.gate` signs in the gateway's users and audits every request, :mod:`.answer`
refuses what no vault path can be and answers errors, :mod:`.provider` maps the vault's
files and folders (:mod:`tessera.workflows.vault_dav`) to wsgidav's resources,
:mod:`.app` assembles them and ``python -m tessera.server.dav`` serves it.
"""
