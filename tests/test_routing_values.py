"""Odd values through a routed activity: whatever an activity returns or raises, a routed attempt
records the same outcome a local one does (the same value, or the same failure), on both
backends. NaN, a value JSON cannot hold, NUL and control characters, unicode, a large value,
an exception that cannot be printed, ``SystemExit``."""

from __future__ import annotations

import asyncio
import json
import math
import sys
from typing import Any

import loom
from support.workers import worker

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]
QUEUE = "odd-remote"


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("cannot describe me")

    def __repr__(self) -> str:
        raise RuntimeError("nor represent me")


def odd(kind: str, text: str) -> Any:
    if kind == "nan":
        return math.nan
    if kind == "inf":
        return [math.inf, -math.inf]
    if kind == "object":
        return object()
    if kind == "set":
        return {1, 2}
    if kind == "text":
        return text
    if kind == "large":
        return "x" * 2_000_000
    if kind == "big_int":
        return 2**200
    if kind == "unprintable":
        raise Unprintable()
    if kind == "exit":
        sys.exit(7)
    if kind == "cancelled":  # raised by the code itself: nobody cancelled the attempt
        raise asyncio.CancelledError("gave up")
    raise ValueError(kind)


@loom.activity(name="odd_local")
def odd_local(kind: str, text: str) -> Any:
    return odd(kind, text)


@loom.activity(name="odd_remote", queue=QUEUE)
def odd_remote(kind: str, text: str) -> Any:
    return odd(kind, text)


KINDS = ["nan", "inf", "object", "set", "text", "large", "big_int"]
KINDS += ["unprintable", "exit", "cancelled"]
TEXT = "nul\x00 bell\x07 esc\x1b[31m snow\u2603 surrogate-free \U0001f600 rtl\u202e"


@loom.workflow(name="odd_Values")
class OddValues(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def each(self, ctx: Ctx) -> None:
        call = odd_remote if ctx.input["routed"] else odd_local
        seen: dict[str, Any] = {}
        for kind in KINDS:
            try:
                value = await ctx.activity(call, kind, TEXT)
            except loom.ActivityFailedError as exc:
                seen[kind] = {"failed": exc.error_type}
            else:
                seen[kind] = {"ok": value if kind != "large" else len(value)}
        await ctx.state.set("seen", seen)


def comparable(state: dict[str, Any]) -> str:
    return json.dumps(state, sort_keys=True)


async def test_a_routed_attempt_records_what_a_local_one_does(db: loom.Database) -> None:
    local = await db.start_workflow(OddValues, workflow_input={"routed": False})
    routed = await db.start_workflow(OddValues, workflow_input={"routed": True})
    async with worker(db, queues=["default"]), worker(db, queues=[QUEUE]):
        here = await local.result(timeout=60)
        there = await routed.result(timeout=60)
    assert comparable(there) == comparable(here)
    seen = there["seen"]
    assert seen["text"] == {"ok": TEXT}
    assert seen["large"] == {"ok": 2_000_000}
    assert seen["unprintable"] == {"failed": "Unprintable"}
    assert seen["exit"] == {"failed": "SystemExit"}
    assert seen["cancelled"] == {"failed": "CancelledError"}
