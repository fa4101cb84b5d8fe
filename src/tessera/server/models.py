"""The gateway's request and answer documents (they are its published OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "EPSILON_MAX",
    "EPSILON_MIN",
    "NAME_MAX",
    "PURPOSE_MAX",
    "REASON_MAX",
    "AuditEventRow",
    "AuditReport",
    "CustodianReport",
    "Decision",
    "DecisionBody",
    "ErrorBody",
    "Health",
    "HeldOutput",
    "Me",
    "OwnBalance",
    "QueryAnswer",
    "QueryBody",
    "RequestBody",
    "RequestDoc",
    "ResearcherBalance",
    "ScanReport",
    "TableBalance",
    "TableInfo",
    "VaultHealth",
    "VaultObject",
    "VaultObjectHealth",
    "VaultPut",
]

#: The epsilons one query may ask for through the gateway (a table's policy may allow
#: less: its ``max_epsilon``).  Below 1e-6 a release is noise; above 100, no privacy.
EPSILON_MIN = 1e-6
EPSILON_MAX = 100.0
#: The longest SQL text the gateway accepts (characters).
SQL_MAX = 20_000
#: The longest purpose of a request, and reason of a decision (characters).
PURPOSE_MAX = 2_000
REASON_MAX = 2_000
#: The longest vault name (bytes of UTF-8, as ``tessera vault put --name``).
NAME_MAX = 1024


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


class ResearcherBalance(OwnBalance):
    """A researcher's own budget on one DP table, as their steward sees it."""

    share_epsilon: float = Field(description="the researcher's budget as epsilon (at delta)")


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


class CustodianReport(_Open):
    """What the custodians hold of the gateway log, compared with it."""

    checked: list[int] = Field(description="the custodians asked (their ids)")
    unreachable: str | None
    problems: list[str]
    no_custodians: bool


class AuditReport(_Open):
    ok: bool
    entries: int
    first_bad: int | None
    problem: str | None
    heads: int
    signed_size: int
    custodians: CustodianReport | None = Field(
        default=None, description="what each custodian witnessed of the log, compared"
    )
    vouched: int = Field(
        default=0, description="custodians that answered and hold nothing against the log"
    )
    nodes: int = Field(default=0, description="the environment's custodians")


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


class RequestBody(BaseModel):
    """``POST /api/v1/requests``: what a researcher asks a steward to approve."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["sql", "recommend", "reidentify"] = "sql"
    purpose: str = Field(min_length=1, max_length=PURPOSE_MAX)
    sql: str | None = Field(default=None, min_length=1, max_length=SQL_MAX)
    epsilon: float | None = Field(
        default=None,
        ge=EPSILON_MIN,
        le=EPSILON_MAX,
        allow_inf_nan=False,
        description="DP tables only: the epsilon to spend (default: the policy's)",
    )


class DecisionBody(BaseModel):
    """``POST /api/v1/requests/{id}/approve`` and ``/refuse``."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=REASON_MAX, description="shown to the researcher")


class Decision(_Open):
    by: str
    decision: str
    reason: str
    at: float = Field(description="unix seconds")


class RequestDoc(_Open):
    """A request and where it stands."""

    id: str
    kind: str = Field(description="sql, recommend, reidentify or output")
    state: str = Field(description="pending, approved, refused, done, held, released or withheld")
    researcher: str
    purpose: str
    sql: str | None = None
    tables: list[str] = Field(default_factory=list)
    epsilon: float | None = None
    filed_at: float = Field(description="unix seconds")
    decisions: list[Decision] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list, description="the checker's reasons")
    job_id: str | None = None


class HeldOutput(BaseModel):
    """A result the disclosure checker held back for a steward to review."""

    held: Literal[True]
    request: str
    reasons: list[str]


class VaultObjectHealth(_Open):
    name: str
    status: str = Field(description="healthy, degraded or lost")
    problems: list[dict[str, str]]
    cells: dict[str, Literal["healthy", "damaged", "missing", "unreachable"]] = Field(
        description="store id -> the state of that store's fragments of the object"
    )


class VaultHealth(_Open):
    """``tessera vault verify --json``, with one cell per object and store."""

    status: str = Field(description="healthy, degraded or lost")
    objects: list[VaultObjectHealth]
    unreachable: list[dict[str, str]]
    stores: list[str] = Field(description="every store's id, in order")


class VaultPut(_Open):
    """``tessera vault put --json``."""

    name: str
    size: int
    scheme: str
    k: int
    n: int
    status: str
    stores_written: list[int]
    stores_failed: list[dict[str, str]]
