"""Secure computation with MPyC (L1): job specs, the SQL compiler, party programs.

Modules: :mod:`~tessera.mpc.jobs` (job specs, program registry),
:mod:`~tessera.mpc.sql` (SQL -> plan), :mod:`~tessera.mpc.plan` (the typed, versioned
plan and its checks), :mod:`~tessera.mpc.result` (cells -> answer),
:mod:`~tessera.mpc.party`, :mod:`~tessera.mpc.sql_program` and
:mod:`~tessera.mpc.validate` (inside party processes).
Nothing is imported here so that party processes start fast; MPyC itself is imported
only inside party processes (``python -m tessera.mpc.party``).
"""
