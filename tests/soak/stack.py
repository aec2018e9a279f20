"""The soak's running pieces: the private cluster, the service processes, the peers, the
producer and one socket per user."""

from __future__ import annotations

from dataclasses import dataclass

from tests.faults.clients import UserSocket
from tests.faults.peers import TimedPushPeer, TimedSmtpPeer
from tests.faults.processes import PrivateCluster, ProcessSet, ServiceProcess
from tests.faults.scenario import Producer
from tests.peers import TwilioPeer


@dataclass
class Stack:
    cluster: PrivateCluster
    database: str
    url: str
    procs: ProcessSet
    api: ServiceProcess
    workers: list[ServiceProcess]
    env: dict[str, str]
    smtp: TimedSmtpPeer
    push: TimedPushPeer
    twilio: TwilioPeer
    producer: Producer
    sockets: dict[str, UserSocket]

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.cluster.port}/{self.database}"
