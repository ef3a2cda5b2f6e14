from datetime import timedelta
from pathlib import Path

import pytest

from loom.testing import Replayer, WorkflowEnvironment
from readme_testing import Trial, charge_card


@pytest.mark.asyncio
async def test_the_trial_bills_after_thirty_days(loom_env: WorkflowEnvironment) -> None:
    loom_env.clock.auto_skip = False  # time moves only when the test moves it
    loom_env.mock_activity(charge_card, returns="r-test")
    handle = await loom_env.start_workflow(Trial, workflow_input={"customer": "bob"})
    await loom_env.clock.advance(timedelta(days=29))
    assert await handle.state() == {}
    await loom_env.clock.advance(timedelta(days=1))
    assert (await handle.result(timeout=5))["receipt"] == "r-test"


def test_recorded_histories_still_replay() -> None:
    Replayer([Trial]).replay_all(Path(__file__).parent / "histories")
