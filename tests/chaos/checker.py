"""The chaos checker: every workflow's history, read through the public API, against what its
seed says it must do and what the client did to it.

Each anomaly names its workflow, its kind, what is wrong, and the events that show it.
"""

from __future__ import annotations

import asyncio
import collections
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import loom
from chaos.driver import Client, tags_of
from chaos.plan import CHARGE_ATTEMPTS, expected_outcome, plan_for
from chaos.plan import activity_labels as planned_labels
from chaos.workload import log_path
from loom import EventType, WorkflowStatus
from loom.core.history import INPUTS, TERMINAL, WITHDRAWALS, apply_state

CANCEL_SLACK = 0.5  # a worker stamps WORKFLOW_CANCELED just before its commit lands
IDLE_CPU_LIMIT = 0.25  # share of a core an idle worker may use (polling, lease renewals)


@dataclass
class Anomaly:
    workflow_id: str
    kind: str
    detail: str
    events: list[str] = field(default_factory=list)

    def render(self) -> str:
        shown = "".join(f"\n      {line}" for line in self.events[:12])
        more = f"\n      ... {len(self.events) - 12} more" if len(self.events) > 12 else ""
        return f"  {self.workflow_id}: {self.kind}: {self.detail}{shown}{more}"


@dataclass
class Verdict:
    histories: dict[str, list[str]] = field(default_factory=dict)
    """The whole history of every anomalous workflow, for the report."""
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    anomalies: list[Anomaly] = field(default_factory=list)
    executions: int = 0
    recorded_attempts: int = 0
    reruns: int = 0
    coverage: collections.Counter[str] = field(default_factory=collections.Counter)
    """How often the run exercised each situation (a run that never did is no proof)."""
    latest_timer: tuple[float, str] = (0.0, "")
    """How late the latest timer (or signal wait timeout) fired, in seconds, and where."""

    def by_kind(self) -> collections.Counter[str]:
        return collections.Counter(a.kind for a in self.anomalies)

    def anomalous_workflows(self) -> list[str]:
        return list(dict.fromkeys(a.workflow_id for a in self.anomalies))


def show(event: loom.Event) -> str:
    payload = dict(event.payload)
    for bulky in ("state", "input"):
        if bulky in payload:
            payload[bulky] = "..."
    text = json.dumps(payload, default=str, sort_keys=True)
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{event.seq:>3} {event.timestamp:.3f} {event.type.value} {text}"


def label_of(event: loom.Event) -> str:
    name = event.payload.get("name")
    if name in ("chaos_work", "chaos_remote_work"):
        return str(event.payload["args"][2])
    return {"chaos_charge": "charge", "chaos_refund": "refund"}.get(str(name), str(name))


def read_executions(logdir: Path, workflow_id: str) -> list[tuple[str, str, int, float]]:
    """(what, label, pid, time) for every line of the workflow's execution log."""
    path = log_path(str(logdir), workflow_id)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        what, label, pid, at = line.split()
        rows.append((what, label, int(pid), float(at)))
    return rows


def check_one(
    client: Client,
    record: loom.WorkflowSummary | None,
    described: Any,
    events: list[loom.Event],
    executions: list[tuple[str, str, int, float]],
    verdict: Verdict,
) -> None:
    wid = client.workflow_id
    found: list[Anomaly] = []

    def anomaly(kind: str, detail: str, shown: list[loom.Event] | None = None) -> None:
        found.append(Anomaly(wid, kind, detail, [show(e) for e in (shown or [])]))

    if described is None:
        if client.started.outcome == "ok":
            anomaly("missing", "start returned OK but the workflow is not in the database")
        else:
            anomaly("start_failed", f"the client could not start it ({client.started.outcome})")
        verdict.anomalies += found
        return
    status: WorkflowStatus = described.status
    verdict.statuses[status.value] += 1
    if record is None or record.status is not status:
        anomaly(
            "listing",
            f"list_workflows shows {record.status.value if record else 'nothing'}, describe "
            f"shows {status.value}",
        )

    # Sequence numbers: 1, 2, 3, ... with no gap and no duplicate.
    seqs = [e.seq for e in events]
    if seqs != list(range(1, len(events) + 1)):
        dupes = sorted(s for s, n in collections.Counter(seqs).items() if n > 1)
        gaps = sorted(set(range(1, max(seqs, default=0) + 1)) - set(seqs))
        anomaly("seq", f"sequence numbers with duplicates {dupes} and gaps {gaps}")

    # The end: terminal status, exactly one terminal event, and nothing after it.
    terminal = [e for e in events if e.type in TERMINAL]
    if status is WorkflowStatus.RUNNING:
        anomaly(
            "not_terminal",
            f"still RUNNING at step {described.current_step!r} (leased={described.leased}, "
            f"ready_at={described.ready_at}, cancel_requested={described.cancel_requested})",
            events[-6:],
        )
    else:
        if len(terminal) != 1 or terminal[0].type.value != f"WORKFLOW_{status.value}":
            anomaly("terminal_events", f"status {status.value} with terminal events", terminal)
        if terminal and terminal[0] is not events[-1]:
            after = events[events.index(terminal[0]) :]
            kind = (
                "event_after_cancel"
                if terminal[0].type is EventType.WORKFLOW_CANCELED
                else "event_after_end"
            )
            anomaly(kind, f"{len(after) - 1} event(s) after {terminal[0].type.value}", after)

    # Terminal status and final state, as the seed says (a cancel that landed: CANCELED).
    expected = expected_outcome(client.seed, client.initial)
    cancel = client.cancel
    allowed = {expected.status}
    if cancel is not None:
        if cancel.outcome in ("CANCELED", "REQUESTED"):
            allowed = {"CANCELED"}
        elif cancel.outcome != "not_running" or cancel.errored:
            allowed.add("CANCELED")  # the call did not say whether it landed
    if status is not WorkflowStatus.RUNNING and status.value not in allowed:
        said = "no cancel" if cancel is None else f"cancel answered {cancel.outcome}"
        anomaly(
            "wrong_status",
            f"{status.value}, expected {' or '.join(sorted(allowed))} ({said})",
            events[-4:],
        )
    elif status.value == expected.status:
        if described.state != expected.state:
            keys = sorted(
                k
                for k in set(described.state) | set(expected.state)
                if described.state.get(k) != expected.state.get(k)
            )
            diff = {k: (described.state.get(k), expected.state.get(k)) for k in keys}
            anomaly("wrong_state", f"state differs (got, expected): {diff}")
        error_type = (described.error or {}).get("type")
        if expected.error_type is not None and error_type != expected.error_type:
            anomaly("wrong_error", f"error {error_type!r}, expected {expected.error_type!r}")

    # The state is what the history's events build.
    rebuilt: dict[str, Any] = dict(events[0].payload.get("state") or {}) if events else {}
    for event in events:
        apply_state(rebuilt, event)
    if rebuilt != described.state:
        anomaly("state_vs_history", f"stored state {described.state} but history builds {rebuilt}")

    _cover(client, status, events, verdict)
    _check_activities(client, status, events, executions, anomaly, verdict)
    _check_signals(client, status, events, anomaly)
    _check_withdrawals(events, anomaly)
    if status is WorkflowStatus.CANCELED and terminal:
        _check_cancel(client, terminal[-1], events, executions, anomaly)
    verdict.anomalies += found
    if found:
        verdict.histories[wid] = [show(e) for e in events] + [
            f"execution: {what} {label} pid {pid} at {at:.3f}"
            for what, label, pid, at in executions
        ]


def _cover(
    client: Client, status: WorkflowStatus, events: list[loom.Event], verdict: Verdict
) -> None:
    coverage = verdict.coverage
    if client.cancel is not None:
        coverage[f"cancel {client.cancel.outcome}"] += 1
    waits = {e.seq: e for e in events if e.type is EventType.SIGNAL_WAIT_STARTED}
    first_go = min((e.timestamp for e in waits.values() if e.payload["name"] == "go"), default=None)
    for sent in client.signals.values():
        if sent.outcome == "ok":
            before = first_go is None or sent.returned_at < first_go
            coverage["signal before its wait" if before else "signal during a wait"] += 1
    due = {
        e.seq: float(e.payload["fire_at"] if "fire_at" in e.payload else e.payload["deadline"] or 0)
        for e in events
        if e.type in (EventType.TIMER_SCHEDULED, EventType.SIGNAL_WAIT_STARTED)
    }
    for e in events:
        if e.type is EventType.TIMER_FIRED and e.payload["scheduled"] in due:
            late = e.timestamp - due[e.payload["scheduled"]]
            coverage["timers fired over 5 s late"] += late > 5
            coverage["timers fired over 1 s late"] += late > 1
            verdict.latest_timer = max(verdict.latest_timer, (late, client.workflow_id))
        if e.type is EventType.TIMER_FIRED and e.payload["scheduled"] in waits:
            coverage["signal wait timed out"] += 1
        elif e.type is EventType.SIGNAL_WAIT_CANCELED:
            coverage["signal wait withdrawn (lost a race)"] += 1
        elif e.type is EventType.ACTIVITY_FAILED:
            coverage["activity attempt failed"] += 1
        if e.type is EventType.ACTIVITY_COMPLETED and e.payload.get("name") == "chaos_remote_work":
            coverage["routed activity (queue chaos-remote) completed"] += 1
    if "compensated" in (events[-1].payload.get("state") or {}):
        coverage["compensated"] += 1
    if status is WorkflowStatus.CANCELED:
        step = next(
            (e.payload["step"] for e in reversed(events) if e.type is EventType.STEP_STARTED), None
        )
        coverage[f"canceled in {step}"] += 1


def _check_activities(
    client: Client,
    status: WorkflowStatus,
    events: list[loom.Event],
    executions: list[tuple[str, str, int, float]],
    anomaly: Any,
    verdict: Verdict,
) -> None:
    plan = plan_for(client.seed)
    scheduled = [e for e in events if e.type is EventType.ACTIVITY_SCHEDULED]
    labels = [label_of(e) for e in scheduled]
    twice = sorted(label for label, n in collections.Counter(labels).items() if n > 1)
    if twice:
        anomaly("activity_rescheduled", f"scheduled more than once: {twice}", scheduled)
    if status.value == expected_outcome(client.seed, client.initial).status and status in (
        WorkflowStatus.COMPLETED,
        WorkflowStatus.FAILED,
    ):
        wanted = planned_labels(client.seed)
        if sorted(labels) != sorted(wanted):
            anomaly("activity_set", f"scheduled {labels}, expected {wanted}", scheduled)

    starts = collections.Counter(label for what, label, _, _ in executions if what == "start")
    recorded: collections.Counter[str] = collections.Counter()
    for sched, label in zip(scheduled, labels, strict=True):
        outcomes = [
            e
            for e in events
            if e.type in (EventType.ACTIVITY_COMPLETED, EventType.ACTIVITY_FAILED)
            and e.payload.get("scheduled") == sched.seq
        ]
        recorded[label] += len(outcomes)
        attempts = [int(e.payload.get("attempt", 0)) for e in outcomes]
        shown = [sched, *outcomes]
        if attempts != list(range(1, len(outcomes) + 1)):
            anomaly("activity_outcomes", f"{label}: recorded attempts {attempts}", shown)
            continue
        if any(e.seq <= sched.seq for e in outcomes):
            anomaly("activity_outcomes", f"{label}: an outcome before its scheduling", shown)
        for early in outcomes[:-1]:
            if early.type is not EventType.ACTIVITY_FAILED or early.payload.get("retry_at") is None:
                anomaly("activity_outcomes", f"{label}: an outcome after a final one", shown)
                break
        final = bool(outcomes) and (
            outcomes[-1].type is EventType.ACTIVITY_COMPLETED
            or outcomes[-1].payload.get("retry_at") is None
        )
        if status in (WorkflowStatus.COMPLETED, WorkflowStatus.FAILED) and not final:
            anomaly(
                "activity_unfinished", f"{label}: no final outcome in a finished workflow", shown
            )
        failures = sum(e.type is EventType.ACTIVITY_FAILED for e in outcomes)
        if label in plan.fail_first and failures > plan.fail_first[label]:
            anomaly(
                "activity_outcomes",
                f"{label}: {failures} failures recorded, only the first "
                f"{plan.fail_first[label]} executions fail",
                shown,
            )
        if label == "charge" and final:
            want = {"ok": 0, "declined": 1, "fatal": 1, "exhausted": CHARGE_ATTEMPTS}[plan.charge]
            if failures != want or len(outcomes) != max(1, want):
                anomaly("activity_outcomes", f"charge ({plan.charge}): attempts {attempts}", shown)
        if starts[label] < len(outcomes):
            anomaly(
                "unexecuted_outcome",
                f"{label}: {len(outcomes)} recorded attempt(s) but {starts[label]} execution(s)",
                shown,
            )
    verdict.executions += sum(starts.values())
    verdict.recorded_attempts += sum(recorded.values())
    verdict.reruns += sum(max(0, n - recorded[label]) for label, n in starts.items())


def _check_signals(
    client: Client, status: WorkflowStatus, events: list[loom.Event], anomaly: Any
) -> None:
    received = [e for e in events if e.type is EventType.SIGNAL_RECEIVED]
    strays = [e for e in received if e.payload.get("name") != "go"]
    if strays:
        anomaly("signal_unsent", "received a signal nobody sent", strays)
    got = collections.Counter(
        int((e.payload.get("payload") or {}).get("token", -1))
        for e in received
        if e.payload.get("name") == "go"
    )
    for token, n in got.items():
        sent = client.signals.get(token)
        if sent is None or sent.outcome == "unsent":
            anomaly("signal_unsent", f"token {token} received but never sent", received)
        elif n > 1 and not sent.errored:
            anomaly("signal_duplicated", f"token {token} sent once, received {n} times", received)
    collected = [
        e
        for e in events
        if e.type is EventType.STEP_COMPLETED and e.payload.get("step") == "collect"
    ]
    if not collected:
        return  # it never finished collecting (canceled first): nothing it had to receive
    waits = {
        e.seq: e
        for e in events
        if e.type is EventType.SIGNAL_WAIT_STARTED and e.payload.get("name") == "go"
    }
    timeouts = [
        (waits[e.payload["scheduled"]], e)
        for e in events
        if e.type is EventType.TIMER_FIRED and e.payload.get("scheduled") in waits
    ]
    for token, sent in sorted(client.signals.items()):
        if sent.outcome != "ok" or got[token]:
            continue
        # The send returned at `returned_at`, so the signal was stored before then. A wait for
        # it whose deadline came later should have received it; it timed out instead.
        missed = [(w, t) for w, t in timeouts if float(w.payload["deadline"]) > sent.returned_at]
        if missed:
            wait, fired = missed[0]
            anomaly(
                "signal_lost",
                f"token {token} accepted by {sent.returned_at:.3f}; the wait at seq {wait.seq} "
                f"(deadline {float(wait.payload['deadline']):.3f}) timed out instead, and the "
                "signal was never delivered",
                [wait, fired, collected[0]],
            )
        else:
            anomaly(
                "signal_late",
                f"token {token} accepted at {sent.returned_at:.3f}, after the deadline of every "
                f"wait that timed out; the workflow gave up at {collected[0].timestamp:.3f} (the "
                "client took longer than the workflow's patience to send it)",
                [*[e for w, t in timeouts for e in (w, t)][-8:], collected[0]],
            )


async def _check_children(
    db: loom.Database, children: list[Any], known: set[str], verdict: Verdict
) -> None:
    """Every child (``chaos_Tally``) belongs to a workflow the driver started and ended: it
    completed after continuing as new once, or was canceled with its parent."""
    for child in children:
        where = child.workflow_id
        if child.parent_id not in known:
            verdict.anomalies.append(Anomaly(where, "unknown_parent", f"of {child.parent_id!r}"))
            continue
        verdict.coverage["child workflows"] += 1
        if child.status is WorkflowStatus.COMPLETED:
            runs = await db.get_workflow(where).runs()
            if [r.status for r in runs] != ["CONTINUED_AS_NEW", "COMPLETED"]:
                verdict.anomalies.append(
                    Anomaly(where, "child_runs", f"runs {[r.status for r in runs]}")
                )
            verdict.coverage["children continued as new"] += 1
        elif child.status is WorkflowStatus.CANCELED:
            parent = await db.get_workflow(str(child.parent_id)).status()
            if parent is WorkflowStatus.RUNNING:
                verdict.anomalies.append(Anomaly(where, "child_canceled", "its parent runs on"))
            verdict.coverage["children canceled with their parent"] += 1
        else:
            verdict.anomalies.append(Anomaly(where, "child_status", child.status.value))


def _check_withdrawals(events: list[loom.Event], anomaly: Any) -> None:
    """A withdrawn call (the task awaiting it was cancelled) is answered by nothing after its
    withdrawal, and is withdrawn once."""
    withdrawn: dict[int, int] = {}
    for e in events:
        scheduled = e.payload.get("scheduled")
        if e.type in WITHDRAWALS.values():
            if scheduled in withdrawn:
                anomaly("withdrawn_twice", f"seq {scheduled} withdrawn twice", e)
            withdrawn[scheduled] = e.seq
        elif scheduled in withdrawn and e.type in INPUTS:
            anomaly("withdrawn_answered", f"seq {scheduled} answered after its withdrawal", e)


def _check_cancel(
    client: Client,
    canceled: loom.Event,
    events: list[loom.Event],
    executions: list[tuple[str, str, int, float]],
    anomaly: Any,
) -> None:
    """No activity execution may begin once the cancel is final."""
    cancel = client.cancel
    if cancel is not None and cancel.outcome == "CANCELED":
        final_at = cancel.returned_at  # canceled at once, in the call
    else:
        final_at = canceled.timestamp + CANCEL_SLACK
    late = [
        (label, pid, at) for what, label, pid, at in executions if what == "start" and at > final_at
    ]
    if late:
        how = cancel.outcome if cancel else "no cancel call"
        anomaly(
            "activity_after_cancel",
            f"cancel ({how}) final at {final_at:.3f}; executions began after it: "
            + ", ".join(
                f"{label} in pid {pid} at +{at - final_at:.3f} s" for label, pid, at in late
            ),
            events[-5:],
        )


def check_idle_workers(idle_cpu: dict[int, float], verdict: Verdict) -> None:
    """Once every workflow has ended, a worker that keeps a core busy is in a hot loop."""
    for pid, share in sorted(idle_cpu.items()):
        if share > IDLE_CPU_LIMIT:
            verdict.anomalies.append(
                Anomaly(
                    f"worker pid {pid}",
                    "hot_idle_worker",
                    f"used {share:.0%} of a core for 3 s with no workflow left to run",
                )
            )


async def check(db: loom.Database, clients: list[Client], logdir: Path) -> Verdict:
    """Read every workflow through the public API and check it."""
    verdict = Verdict()
    listed = await db.list_workflows(limit=len(clients) * 3 + 10)
    known = {c.workflow_id for c in clients}
    summaries = {s.workflow_id: s for s in listed if s.parent_id is None}
    for extra in sorted(set(summaries) - known):
        verdict.anomalies.append(Anomaly(extra, "unknown_workflow", "listed but never started"))
    await _check_children(db, [s for s in listed if s.parent_id is not None], known, verdict)

    async def read(client: Client) -> tuple[Any, list[loom.Event]]:
        handle = db.get_workflow(client.workflow_id)
        try:
            described = await handle.describe()
        except loom.WorkflowNotFoundError:
            return None, []
        tags, wanted = await handle.tags(), tags_of(client)
        if (tags, described.priority) != (wanted, plan_for(client.seed).priority):
            verdict.anomalies.append(
                Anomaly(
                    client.workflow_id,
                    "start_options",
                    f"tags {tags} priority {described.priority}, started with {wanted} "
                    f"priority {plan_for(client.seed).priority}",
                )
            )
        return described, await handle.events()

    for chunk in range(0, len(clients), 50):
        batch = clients[chunk : chunk + 50]
        read_back = await asyncio.gather(*(read(c) for c in batch))
        for client, (described, events) in zip(batch, read_back, strict=True):
            check_one(
                client,
                summaries.get(client.workflow_id),
                described,
                events,
                read_executions(logdir, client.workflow_id),
                verdict,
            )
    await _check_tags_and_queues(db, clients, summaries, verdict)
    return verdict


async def _check_tags_and_queues(
    db: loom.Database,
    clients: list[Client],
    summaries: dict[str, loom.WorkflowSummary],
    verdict: Verdict,
) -> None:
    """A tag finds exactly the workflows started with it; and once every workflow has ended,
    no queue holds work: every routed activity's task was deleted with its outcome."""
    group = "3"
    wanted = {
        c.workflow_id
        for c in clients
        if c.workflow_id in summaries and tags_of(c)["chaos-group"] == group
    }
    listed = await db.list_workflows(limit=len(clients) + 10, tags={"chaos-group": group})
    found = {s.workflow_id for s in listed}
    if found != wanted:
        verdict.anomalies.append(
            Anomaly(
                f"tag chaos-group={group}",
                "tag_listing",
                f"missing {sorted(wanted - found)[:5]}, extra {sorted(found - wanted)[:5]}",
            )
        )
    if all(s.status is not WorkflowStatus.RUNNING for s in summaries.values()):
        for queue in await db.queues():
            if queue.depth:
                verdict.anomalies.append(
                    Anomaly(f"queue {queue.name}", "queue_left_work", f"depth {queue.depth}")
                )
