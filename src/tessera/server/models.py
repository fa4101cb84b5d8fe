"""The gateway's request and answer documents (they are its published OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "EPSILON_MAX",
    "EPSILON_MIN",
    "AuditEventRow",
    "AuditReport",
    "ErrorBody",
    "Health",
    "Me",
    "OwnBalance",
    "QueryAnswer",
    "QueryBody",
    "ScanReport",
    "TableBalance",
    "TableInfo",
    "VaultObject",
]

#: The epsilons one query may ask for through the gateway (a table's policy may allow
#: less: its ``max_epsilon``).  Below 1e-6 a release is noise; above 100, no privacy.
EPSILON_MIN = 1e-6
EPSILON_MAX = 100.0
#: The longest SQL text the gateway accepts (characters).
SQL_MAX = 20_000


class _Open(BaseModel):
    """An answer that may carry more fields than those listed (the CLI's documents)."""

    model_config = ConfigDict(extra="allow")


class ErrorBody(BaseModel):
    """Every error, whatever its status."""

    error: str = Field(description="a stable code, e.g. invalid_request, forbidden")
    message: str = Field(description="one line, safe to show")


class QueryBody(BaseModel):
    """``POST /api/v1/query``."""

    model_config = ConfigDict(extra="forbid")

    sql: str = Field(min_length=1, max_length=SQL_MAX)
    epsilon: float | None = Field(
        default=None,
        ge=EPSILON_MIN,
        le=EPSILON_MAX,
        allow_inf_nan=False,
        description="DP tables only: the epsilon to spend (default: the policy's)",
    )


class Health(BaseModel):
    status: Literal["ok"]
    nodes: int
    threshold: int


class Me(BaseModel):
    name: str
    role: str


class TableInfo(_Open):
    name: str
    rows: int
    columns: int
    hospitals: list[str]


class QueryAnswer(_Open):
    columns: list[str]
    rows: list[list[Any]]
    privacy: dict[str, Any] | None = None
    notes: list[list[str | None]] = Field(
        default_factory=list, description="why a cell is NULL or flagged, per row and column"
    )


class OwnBalance(BaseModel):
    """A researcher's own budget on one DP table: never the table's totals."""

    model_config = ConfigDict(extra="forbid")

    table: str
    researcher: str
    delta: float
    default_epsilon: float
    max_epsilon: float | None
    share_rho: float = Field(description="the researcher's own budget on this table")
    spent_rho: float = Field(description="what the researcher has spent (pending included)")
    spent_epsilon: float
    remaining_rho: float
    remaining_epsilon: float


class TableBalance(_Open):
    """A DP table's balance, for stewards and officers."""

    table: str
    policy: dict[str, Any]
    total_rho: float
    spent_rho: float
    pending_rho: float
    remaining_rho: float
    remaining_epsilon: float
    delta: float


class VaultObject(_Open):
    name: str
    size: int
    scheme: str
    k: int
    n: int
    created: str
    generation: int


class AuditReport(_Open):
    ok: bool
    entries: int
    first_bad: int | None
    problem: str | None
    heads: int
    signed_size: int


class AuditEventRow(BaseModel):
    seq: int
    recorded: str | None
    action: str
    outcome: str
    user: str
    role: str
    address: str
    entity: str
    count: int = Field(default=1, description="attempts an aggregated event stands for")


class ScanReport(_Open):
    events: int
    logs: dict[str, bool]
    alerts: list[dict[str, Any]]
