"""Stream drivers for amaranth.sim testbenches (valid/ready handshakes, optional random stalls)."""

from __future__ import annotations

import random


async def put(ctx, port, beats, *, stall: float = 0.0, rng: random.Random | None = None):
    """Send each payload in ``beats`` on ``port``, idling at random with probability ``stall``."""
    rng = rng or random.Random(0)
    for beat in beats:
        while stall and rng.random() < stall:
            await ctx.tick()
        ctx.set(port.valid, 1)
        ctx.set(port.payload, beat)
        await ctx.tick().until(port.ready)
        ctx.set(port.valid, 0)


async def get(ctx, port, count: int, *, stall: float = 0.0, rng: random.Random | None = None):
    """Receive ``count`` payloads from ``port``, refusing at random with probability ``stall``."""
    rng = rng or random.Random(1)
    out = []
    for _ in range(count):
        while stall and rng.random() < stall:
            await ctx.tick()
        ctx.set(port.ready, 1)
        (payload,) = await ctx.tick().sample(port.payload).until(port.valid)
        ctx.set(port.ready, 0)
        out.append(payload)
    return out
