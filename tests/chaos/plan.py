"""What a chaos workflow does and must end with: a pure function of the seed in its input.

The workflow (chaos.workload) and the checker (chaos.checker) both call :func:`plan_for`, so
the checker knows each workflow's terminal status and final state without running it. Nothing
here depends on timing: a flaky activity fails its first ``k`` executions (counted outside
Loom), and kills can only make it record fewer failures, never a different result.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

# How the charge step goes: it succeeds; fails for good at once (non-retryable) and is
# compensated; fails every attempt until its retries run out and is compensated; or fails at
# once and is not caught, so the workflow ends FAILED.
CHARGE_MODES = ("ok", "declined", "exhausted", "fatal")
CHARGE_WEIGHTS = (60, 15, 10, 15)
CHARGE_ATTEMPTS = 3  # chaos_charge: one attempt and two retries
WORK_ATTEMPTS = 5  # chaos_work: one attempt and four retries; fail_first stays below it


@dataclass(frozen=True, slots=True)
class Plan:
    seed: int
    base: int
    fan: int  # activities run together with asyncio.gather
    fail_first: dict[str, int]  # per chaos_work label: executions that fail before one succeeds
    delay_ms: dict[str, int]  # per chaos_work label: how long its work takes
    nap: float  # a durable timer, seconds
    probe_timeout: float | None  # wait for a signal nobody sends, with this timeout
    signals: int  # distinct "go" signals the workflow collects
    signal_timeout: float  # the timeout of each wait for a "go" signal
    charge: str
    remote: frozenset[str]  # chaos_work labels run on queue "chaos-remote" (routed, see driver)
    priority: int  # of its start

    @property
    def work_labels(self) -> list[str]:
        return ["prep", *(f"fan{i}" for i in range(self.fan)), "seal"]


def plan_for(seed: int) -> Plan:
    rng = random.Random(f"chaos-plan-{seed}")
    fan = rng.randint(2, 3)
    labels = ["prep", *(f"fan{i}" for i in range(fan)), "seal"]
    return Plan(
        seed=seed,
        base=rng.randint(1, 1_000_000),
        fan=fan,
        fail_first={label: rng.choice((0, 0, 0, 1, 1, 2, 3)) for label in labels},
        delay_ms={
            label: rng.randint(300, 900) if rng.random() < 0.15 else rng.randint(5, 120)
            for label in labels
        },
        nap=round(rng.uniform(0.05, 1.2), 3),
        probe_timeout=rng.choice((None, None, 0.1, 0.3)),
        signals=rng.choice((0, 1, 1, 2, 3)),
        signal_timeout=round(rng.uniform(0.2, 1.5), 3),
        charge=rng.choices(CHARGE_MODES, CHARGE_WEIGHTS)[0],
        remote=frozenset(label for label in labels if rng.random() < 0.25),
        priority=rng.choice((0, 0, 0, 1, -1)),
    )


def mix(label: str, value: int) -> int:
    """What an activity computes: a pure function of its label and argument."""
    return (value * 31 + sum(label.encode())) % 1_000_003


def signal_value(seed: int, token: int) -> int:
    """The payload value of the ``token``-th "go" signal of the workflow with ``seed``."""
    return mix(f"signal{token}", seed)


@dataclass(frozen=True, slots=True)
class Expected:
    status: str  # COMPLETED or FAILED (a cancel that lands makes it CANCELED instead)
    state: dict[str, Any]
    error_type: str | None = None


def expected_outcome(seed: int, initial: dict[str, Any]) -> Expected:
    """The terminal status and final state of the workflow with ``seed``, run without a cancel."""
    plan = plan_for(seed)
    state = dict(initial)
    prep = mix("prep", plan.base)
    state["prep"] = prep
    fan = [mix(f"fan{i}", prep + i) for i in range(plan.fan)]
    state["fan"] = fan
    state["total"] = (state.get("total") or 0) + sum(fan)
    state["naps"] = (state.get("naps") or 0) + 1
    if plan.probe_timeout is not None:
        state["probe"] = "timed out"
    state["tokens"] = list(range(plan.signals))
    state["signal_sum"] = sum(signal_value(seed, t) for t in range(plan.signals))
    if plan.charge == "fatal":
        return Expected("FAILED", state, "ActivityFailedError")
    if plan.charge == "ok":
        state["charged"] = mix("charge", state["total"])
    else:
        attempts = 1 if plan.charge == "declined" else CHARGE_ATTEMPTS
        why = "Declined" if plan.charge == "declined" else "Flaky"
        state["compensated"] = {
            "why": why,
            "attempts": attempts,
            "refund": mix("refund", state["total"]),
        }
    state["seal"] = mix("seal", state["total"])
    state["tally"] = mix("tally", state["total"])
    return Expected("COMPLETED", state)


def activity_labels(seed: int) -> list[str]:
    """Every activity label a crash-free run of the workflow schedules, once each."""
    plan = plan_for(seed)
    labels = [*plan.work_labels[:-1], "charge"]
    if plan.charge == "fatal":
        return labels
    if plan.charge in ("declined", "exhausted"):
        labels.append("refund")
    return [*labels, "seal"]
