"""Helpers shared by the tests that drive a ``Lab`` of nodes directly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from cke_adapters.lab.netns import Lab
from cke_adapters.ssh import FileKeySource, SSHPool


def run(factory: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
    """Run ``factory()`` to completion in a new event loop, at most ``timeout`` seconds."""

    async def bounded() -> Any:
        return await asyncio.wait_for(factory(), timeout)

    return asyncio.run(bounded())


def make_pool(lab: Lab) -> SSHPool:
    return SSHPool(FileKeySource(lab.client_key_path), lab.known_hosts_path, connect_timeout=5.0)


def remove_all_containers(lab: Lab) -> None:
    """Best effort before ``lab.down()``: every container on every node, forcibly."""

    async def clean() -> None:
        async with make_pool(lab) as pool:
            await asyncio.gather(
                *(
                    pool.run(a, ["podman", "rm", "-a", "-f", "-t", "0"], check=False)
                    for a in lab.addresses
                ),
                return_exceptions=True,
            )

    with contextlib.suppress(Exception):  # the lab goes down regardless
        run(clean, timeout=30)
