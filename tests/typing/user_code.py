"""User code as the README writes it; must pass ``mypy --strict``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import loom
from loom.core.context import WorkflowContext
from loom.core.workflow import Workflow
from loom.schemas.state import Input, State


class QuizInput(Input):
    lesson_id: str


class QuizState(State):
    quiz_id: str | None
    score: int | None


@dataclass
class Grade:
    score: int


@loom.activity(name="typing_generate")
async def generate(lesson_id: str) -> str:
    return f"quiz-{lesson_id}"


@loom.activity(name="typing_grade", retry_count=2, heartbeat_timeout=5.0)
def grade(quiz_id: str) -> Grade:
    info: loom.ActivityInfo = loom.activity_info()
    start: int = info.heartbeat_details or 0
    deadline: float | None = info.deadline
    if info.is_cancelled() or deadline is None:
        raise loom.ActivityCancelledError(info.activity_name, info.workflow_id, "typing")
    loom.heartbeat({"from": start, "attempt": info.attempt})
    return Grade(score=len(quiz_id))


@loom.workflow(name="typing_Quiz", version="1.0.0")
class QuizWorkflow(Workflow[QuizInput, QuizState]):
    @loom.step(name="generate")
    async def make(self, ctx: WorkflowContext[QuizInput, QuizState]) -> None:
        quiz_id: str = await ctx.activity(generate, ctx.input["lesson_id"])
        await ctx.state.set("quiz_id", quiz_id)

    @loom.step
    async def assess(self, ctx: WorkflowContext[QuizInput, QuizState]) -> None:
        result: Grade = await ctx.activity(grade, str(ctx.state["quiz_id"]))
        await ctx.state.set("score", result.score)

    @loom.query
    def score(self, ctx: loom.QueryContext[QuizInput, QuizState]) -> int:
        return ctx.state.get("score") or 0

    @loom.query(name="lesson")
    async def lesson_of(self, ctx: loom.QueryContext[QuizInput, QuizState], prefix: str) -> str:
        return prefix + ctx.input["lesson_id"]


async def main() -> QuizState:
    async with loom.Database("sqlite:///typing.db") as db:
        handle: loom.WorkflowHandle[QuizState] = await db.start_workflow(
            QuizWorkflow, workflow_input=QuizInput(lesson_id="l1"), initial_state=None
        )
        status: loom.WorkflowStatus = await handle.status()
        assert status in loom.WorkflowStatus
        other = await QuizWorkflow.start({"lesson_id": "l2"})
        await other.signal("go", {"x": 1})
        print(await handle.query("score"), await other.query("lesson", "lesson "))
        beats: list[loom.ActivityHeartbeat] = await handle.heartbeats()
        assert all(b.at >= 0 and b.seq > 0 for b in beats)
        return await handle.result(timeout=5)


if __name__ == "__main__":
    asyncio.run(main())
