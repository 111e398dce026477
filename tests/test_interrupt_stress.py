"""The bounded run of ``tests/stress_interrupt.py`` (the full one is run by hand: see
docs/contributing/testing.rst): SIGINT at random moments of 17 fits of every kind, on one and
two threads, with a CPU hog running, one of them in a child compiling with an empty cache.

The run depends on timing (a busy machine delays a child's reply to its interrupt), so it is
marked ``stress`` and deselected from the default ``pytest`` run (pyproject.toml's ``addopts``);
``pytest -m stress tests/test_interrupt_stress.py`` runs it, and ``.ci/run`` does in a step of
its own. The plan's test below is deterministic and always runs."""

import io
import os

import pytest
import stress_interrupt

pytestmark = pytest.mark.skipif(os.name != "posix", reason="sends SIGINT to child processes (POSIX)")


def test_the_plan_covers_warm_and_cold_children_on_one_and_two_threads():
    specs = stress_interrupt.plan(17, 8, 0.2, list(stress_interrupt.KINDS), 0)
    assert sum(len(spec["kinds"]) for spec in specs) == 17
    assert [spec["cold"] for spec in specs] == [False, False, True]
    assert {spec["threads"] for spec in specs} == {1, 2}


@pytest.mark.stress
def test_no_ctrl_c_is_lost_in_seventeen_random_interrupts():
    log = io.StringIO()
    # Numba's cache is filled first (warm_timeout), so that the warm children load it rather than
    # compile; then each child is bounded: start_timeout to announce itself, grace (and
    # cold_grace for the compiling child) for each KeyboardInterrupt, then killed; the hog is
    # killed at the end.
    summary = stress_interrupt.run(
        interrupts=17,
        episodes=8,
        jobs=1,
        hogs=1,
        cold=0.2,
        seed=0,
        grace=30.0,
        cold_grace=90.0,
        start_timeout=240.0,
        warm_timeout=1200.0,
        log=log,
    )
    summary.report(out=log)  # every lost or failed interrupt, with the child's stderr
    report = log.getvalue()
    assert summary.lost == [] and summary.failed == [], report
    assert summary.sent == 17, report
    assert summary.received == 17, report
