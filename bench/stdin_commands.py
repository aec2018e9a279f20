"""The command channel of the bench's helper processes: one command a line on stdin."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator


async def stdin_commands() -> AsyncIterator[tuple[str, str]]:
    """``(command, rest of the line)`` for each line on stdin, until ``quit`` or end of input."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if not line or line == "quit":
            return
        command, _, rest = line.partition(" ")
        yield command, rest
