"""The operator console's response shapes (README "Operator console")."""

from __future__ import annotations

from pydantic import BaseModel, Field

from notifier.schemas.notification import NotificationPublic


class LatencySeries(BaseModel):
    p50: list[float | None]
    p95: list[float | None]
    p99: list[float | None]


class QueueDepth(BaseModel):
    pending: int = Field(description="waiting for a first attempt, no worker on it")
    retrying: int = Field(description="waiting for a next attempt after a transient failure")
    in_flight: int = Field(description="due and under a worker's lease right now")


class ChannelStats(BaseModel):
    sent: list[int]
    delivered: list[int]
    failed: list[int]
    skipped: list[int]
    latency_ms: LatencySeries = Field(
        description="due → first sent/delivered, in milliseconds, per step (null: none that step)"
    )
    queue: QueueDepth


class AdminStats(BaseModel):
    window_seconds: int
    step_seconds: int
    timestamps: list[int] = Field(description="each step's start, in seconds since the epoch")
    channels: dict[str, ChannelStats]


class NotificationSearchPage(BaseModel):
    items: list[NotificationPublic]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: last")
