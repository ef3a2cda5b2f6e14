"""The chaos test: a mixed workload run by ``loom worker`` processes that are SIGKILLed and
restarted at random, on a PostgreSQL cluster that is restarted under them, then checked
workflow by workflow against what its seed says it must do.

``python -m tests.chaos --backend sqlite|postgres|both --workflows N --seed S`` (``make chaos``)
runs it in full; tests/test_chaos.py runs a short form under pytest.

* :mod:`chaos.plan` - what a workflow does, and must end with, as a pure function of its seed;
* :mod:`chaos.workload` - the workflow and its activities (``loom worker -m chaos.workload``);
* :mod:`chaos.cluster` - a throwaway PostgreSQL cluster (never the shared server);
* :mod:`chaos.driver` - workers, kills, restarts, starts, signals and cancels;
* :mod:`chaos.checker` - reads every history through the public API and counts anomalies.
"""
