"""The HTTP API's request and response bodies (pydantic): the OpenAPI schema is generated from these.

Unknown fields are refused (a typo such as `itemids` is a 422 naming it, not a silently empty
request). Hard ceilings here bound what a body can hold at all; the configured limits
(`ServeSettings.max_candidates`, ...) are checked by the service and may be lower.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_ID_LENGTH = 256
HARD_MAX_CANDIDATES = 10_000
HARD_MAX_EVENTS = 10_000

Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, strip_whitespace=True)]
Label = Annotated[str, StringConstraints(max_length=64)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RankContext(Strict):
    ts: datetime | None = Field(None, description="rank as of this moment (ISO 8601; no offset = UTC); default: the service clock")
    page: Label | None = Field(None, description="where the list is shown, e.g. 'home' (logged, not a feature yet)")
    device: Label | None = Field(None, description="e.g. 'mobile' (logged, not a feature yet)")


class RankRequest(Strict):
    user_id: Id
    item_ids: list[Id] = Field(..., min_length=1, max_length=HARD_MAX_CANDIDATES, description="candidates, no duplicates")
    context: RankContext = Field(default_factory=RankContext)
    top_k: int | None = Field(None, ge=1, le=HARD_MAX_CANDIDATES, description="how many to return; default: all")
    explain: bool = Field(True, description="add reasons and the top feature contributions to each item")


class Contribution(BaseModel):
    feature: str
    value: float | None = Field(..., description="the feature's value for this item (null: missing)")
    contribution: float = Field(..., description="its additive share of the score (LightGBM pred_contrib)")


class RankedItem(BaseModel):
    item_id: str
    rank: int
    score: float
    title: str | None = None
    category: str | None = None
    blurb: str | None = None
    blurb_source: Literal["generated", "fallback", "extractive", "none"] = "none"
    reason: str | None = None
    top_features: list[Contribution] = Field(default_factory=list)


class ModelInfo(BaseModel):
    arm: str
    ref: str
    run_dir: str
    model_name: str | None = None
    version: str | None = None
    alias: str | None = None
    trained_at: str | None = None
    features: list[str]
    feature_groups: list[str]
    loaded_at: str


class RankResponse(BaseModel):
    request_id: str
    user_id: str
    arm: str
    model_version: str | None
    ts: datetime
    known_user: bool
    unknown_items: int = Field(..., description="candidates not in the catalog (ranked on behaviour only)")
    items: list[RankedItem]


class FeedbackEvent(Strict):
    """One event in the import schema (recsys/core/schemas.py EVENTS_SCHEMA)."""

    user_id: Id
    item_id: Id
    clicked: Literal[0, 1] = Field(..., description="1 = clicked, 0 = shown and not clicked")
    ts: datetime | None = Field(None, description="when it happened (no offset = UTC); default: the service clock")
    request_id: Id | None = Field(None, description="the request_id of the /v1/rank response that showed the item")
    position: int | None = Field(None, ge=1, le=HARD_MAX_CANDIDATES, description="1-based slot it was shown in")
    rating: float | None = None


class FeedbackRequest(Strict):
    events: list[FeedbackEvent] = Field(..., min_length=1, max_length=HARD_MAX_EVENTS)


class FeedbackResponse(BaseModel):
    accepted: int = Field(..., description="events taken into the live log")
    unknown_items: int = Field(0, description="events for items in no catalog: kept aside (durably), not counted")
    log_offset: int = Field(..., description="bytes in the durable feedback log after this write")


class Health(BaseModel):
    status: Literal["ok"]
    arms: dict[str, str | None]
    events: int = Field(..., description="events in the live log (training state + feedback)")
