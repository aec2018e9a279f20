"""What the soak found (``SoakReport``): lost, resent after success, duplicates inside the
documented window, time to drain; and the channels it judges."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

CHANNELS = ("websocket", "email", "browser", "sms")
SUCCESS = {
    "websocket": ("delivered",),
    "email": ("delivered",),
    "browser": ("sent", "delivered"),
    "sms": ("sent", "delivered"),
}
PROVIDER_CHANNELS = ("email", "browser", "sms")  # a repeat there reaches a person twice


@dataclass
class SoakReport:
    config: dict[str, Any]
    notifications_accepted: int = 0
    notifications_in_database: int = 0
    lost: int = 0
    undelivered: int = 0  # channels still queued at the end of the drain window (not drained)
    lost_detail: list[str] = field(default_factory=list)
    resent_after_success: int = 0
    resent_after_success_detail: list[str] = field(default_factory=list)
    duplicates_in_window: dict[str, int] = field(default_factory=dict)
    websocket_repeated_frames: int = 0
    peer_messages: dict[str, int] = field(default_factory=dict)
    kills: int = 0
    db_restarts: int = 0
    enqueue_retries: int = 0
    time_to_drain_seconds: float | None = None
    drained: bool = False
    total_seconds: float = 0.0
    final_status: dict[str, int] = field(default_factory=dict)
    # (seconds since the soak began, what): kills, restarts; for reading the details against
    timeline: list[tuple[float, str]] = field(default_factory=list)
    began_at: float = field(default_factory=time.time)

    def mark(self, what: str) -> None:
        self.timeline.append((round(time.time() - self.began_at, 3), what))

    def rel(self, at: float) -> float:
        return round(at - self.began_at, 3)

    @property
    def ok(self) -> bool:
        return self.drained and self.lost == 0 and self.resent_after_success == 0

    def text(self) -> str:
        window = ", ".join(f"{k} {v}" for k, v in sorted(self.duplicates_in_window.items()))
        peers = ", ".join(f"{k} {v}" for k, v in sorted(self.peer_messages.items()))
        lines = [
            f"soak: {self.notifications_accepted} notifications x {len(CHANNELS)} channels, "
            f"{self.kills} worker SIGKILLs, {self.db_restarts} PostgreSQL restarts",
            f"  lost:                       {self.lost}",
            f"  still queued (not drained): {self.undelivered}",
            f"  resent after success:       {self.resent_after_success}",
            f"  duplicates in the window:   {sum(self.duplicates_in_window.values())} ({window})",
            f"  websocket repeated frames:  {self.websocket_repeated_frames} (replays; by design)",
            f"  peer messages:              {peers}",
            f"  enqueue retries (503):      {self.enqueue_retries}",
            f"  time to drain:              {self.time_to_drain_seconds} s",
            f"  total:                      {self.total_seconds} s",
            f"  result:                     {'OK' if self.ok else 'FAILED'}",
        ]
        for detail in (self.lost_detail + self.resent_after_success_detail)[:10]:
            lines.append(f"    {detail}")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["ok"] = self.ok
        return body
