"""Declaring schedules: the one place a schedule's definition is checked, for ``loom.schedule``
in code and ``Database.create_schedule`` (so the CLI and the dashboard) alike.

A schedule declared in code is a *desired* schedule, as a Temporal schedule created by a
deploy script is: every worker whose registry has it (and ``loom schedule sync``) writes it to
the database when it starts, creating it or bringing its definition up to date. An operator's
``pause`` survives that, and so does the schedule's progress (its next slot, unless the timing
changed, and its last run). Removing the declaration from the code does not delete the
schedule: ``loom schedule delete`` does.
"""

from __future__ import annotations

import time
from typing import Any

from loom import codec, limits
from loom.definitions import Registry, default_registry, workflow_definition
from loom.errors import InvalidScheduleError
from loom.schedule_spec import (
    MAX_CATCH_UP_LIMIT,
    ScheduleSpec,
    Timing,
    catch_up_policy,
    check_never_fires,
    overlap_policy,
)

MAX_NAME_LENGTH = 150
"""A schedule name leaves room in a run's id for the ``schedule:`` prefix and the slot."""


def check_name(name: Any) -> str:
    """``name`` if it is a valid schedule name: the id rule, at most :data:`MAX_NAME_LENGTH`
    characters, and no ``:`` (it ends the name in a run's id) nor ``/`` (a URL separator)."""
    reason = limits.problem(name, "schedule name")
    if reason is None and len(name) > MAX_NAME_LENGTH:
        reason = f"schedule name {name[:40]!r}... is {len(name)} characters long; the limit is "
        reason += str(MAX_NAME_LENGTH)
    if reason is None and (":" in name or "/" in name):
        reason = f"schedule name {name!r} contains ':' or '/'; use letters, digits, '-', '_' or '.'"
    if reason is not None:
        raise InvalidScheduleError(reason)
    return str(name)


def workflow_name(workflow: Any) -> str:
    """The registered name of ``workflow``: a ``@loom.workflow`` class, or a name."""
    if isinstance(workflow, str):
        return limits.check_id(workflow, "workflow name")
    return workflow_definition(workflow).name


def make_spec(
    name: Any,
    workflow: Any,
    *,
    cron: Any = None,
    every: Any = None,
    timezone: Any = None,
    input: Any = None,
    overlap: Any = "skip",
    catch_up: Any = "latest",
    catch_up_limit: Any = 10,
    max_payload_bytes: int = limits.DEFAULT_MAX_PAYLOAD_BYTES,
) -> ScheduleSpec:
    """A checked :class:`ScheduleSpec`; :class:`~loom.errors.InvalidScheduleError` (or a
    ``PayloadError`` for an input that cannot be stored) says what is wrong."""
    checked = check_name(name)
    timing = Timing.parse(cron, every, timezone)
    check_never_fires(timing, time.time())
    if (
        isinstance(catch_up_limit, bool)
        or not isinstance(catch_up_limit, int)
        or not 1 <= catch_up_limit <= MAX_CATCH_UP_LIMIT
    ):
        raise InvalidScheduleError(
            f"catch_up_limit must be a whole number from 1 to {MAX_CATCH_UP_LIMIT}, "
            f"got {catch_up_limit!r}"
        )
    what = f"the input of schedule {checked!r}"
    data = codec.dumps(input, what=what, root="input")
    limits.check_size(data, max_payload_bytes, what)
    return ScheduleSpec(
        name=checked,
        workflow=workflow_name(workflow),
        timing=timing,
        input=codec.loads(data),
        overlap=overlap_policy(overlap),
        catch_up=catch_up_policy(catch_up),
        catch_up_limit=catch_up_limit,
    )


def schedule(
    name: str,
    workflow: Any,
    *,
    cron: str | None = None,
    every: str | None = None,
    timezone: str | None = None,
    input: Any = None,
    overlap: str = "skip",
    catch_up: str = "latest",
    catch_up_limit: int = 10,
    registry: Registry | None = None,
) -> ScheduleSpec:
    """Declare a schedule in code: start ``workflow`` (a ``@loom.workflow`` class or its name)
    with ``input`` at every slot of ``cron`` (in ``timezone``, default UTC) or ``every``
    (``"30s"``, ``"5m"``, ``"2h"``, ``"1d"``). Workers with it in their registry (default:
    ``loom.default_registry``) create or update it in the database when they start, as does
    ``loom schedule sync``; the rest is as for ``Database.create_schedule``. Checked now: a
    mistake raises ``InvalidScheduleError`` when the module is imported."""
    spec = make_spec(
        name,
        workflow,
        cron=cron,
        every=every,
        timezone=timezone,
        input=input,
        overlap=overlap,
        catch_up=catch_up,
        catch_up_limit=catch_up_limit,
    )
    (registry or default_registry).add_schedule(spec)
    return spec
