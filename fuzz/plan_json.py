"""Fuzz the SQL plan decoder every custodian runs on a job's ``params["plan"]``
(``tessera.mpc.plan.SqlPlan.from_dict`` and its checks) and the JSON round trip."""

from __future__ import annotations

from fuzz.harness import NOT_JSON, instrumented, json_or_none, run, tessera_only

with instrumented(__name__):
    from tessera.mpc.plan import SqlPlan


@tessera_only
def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name atheris expects)
    doc = json_or_none(data)
    if doc is NOT_JSON:
        return
    plan = SqlPlan.from_dict(doc)
    assert SqlPlan.from_dict(plan.to_dict()) == plan
    assert plan.cells >= 1 and len(plan.columns) == len(plan.items)


def main() -> None:
    run(TestOneInput)


if __name__ == "__main__":
    main()
