"""runstack's supervisor (`make run`) with stand-in components: a process that dies is restarted with
backoff and the state file says it is down meanwhile; a stop is bounded by the grace, whatever a
process does with SIGTERM, and takes the processes the components started with them."""

from __future__ import annotations

import json
import sys
import threading

import psutil
import pytest

from backend.jobs.management.commands.runstack import Component, Supervisor

IGNORES_SIGTERM = (
    "import os, signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    # and a child of its own that ignores it too, left behind if only the component were killed
    "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)']); time.sleep(600)"
)


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


@pytest.fixture
def supervisor(tmp_path, settings):
    settings.RUNSTACK_RESTART_DELAY_SECONDS = 0.2
    made: list[Supervisor] = []

    def make(components: list[Component], grace: float = 1.0) -> Supervisor:
        sup = Supervisor(components, state_file=tmp_path / "state.json", grace=grace, log=lines.append)
        made.append(sup)
        return sup

    lines: list[str] = []
    make.lines = lines  # type: ignore[attr-defined]
    yield make
    for sup in made:
        sup.shutdown()


def test_a_component_that_dies_is_restarted_with_backoff(supervisor, tmp_path):
    dying = Component("worker", _python("import sys; sys.exit(3)"), env={})
    steady = Component("web", _python("import time; time.sleep(600)"), env={})
    sup = supervisor([dying, steady])
    for c in sup.components:
        c.start()
    dying.proc.wait(30)

    assert sup.supervise()  # noticed: down, restart scheduled
    sup.write_state()
    state = json.loads((tmp_path / "state.json").read_text())["components"]
    assert state["worker"]["state"] == "down" and state["worker"]["last_exit"] == 3
    assert state["web"]["state"] == "up"
    done = threading.Event()
    while not done.wait(0.05):  # the restart is due after its backoff
        if sup.supervise() and dying.proc is not None:
            done.set()
    assert dying.restarts == 1
    dying.proc.wait(30)
    sup.supervise()
    assert dying.backoff == 0.4  # a second death in a row waits twice as long
    assert any("event=component_died component=worker returncode=3" in line for line in supervisor.lines)
    assert any("event=component_restarted component=worker restarts=1" in line for line in supervisor.lines)
    assert steady.up


def test_a_stop_is_bounded_by_the_grace_whatever_sigterm_does(supervisor):
    stubborn = Component("worker", _python(IGNORES_SIGTERM), env={})
    polite = Component("web", _python("import time; time.sleep(600)"), env={})
    sup = supervisor([stubborn, polite], grace=1.0)
    for c in sup.components:
        c.start()
    parent = psutil.Process(stubborn.proc.pid)
    wait = threading.Event()
    while not parent.children() and not wait.wait(0.05):
        pass
    grandchild = parent.children()[0]

    sup.shutdown()
    assert not stubborn.up and not polite.up
    _, alive = psutil.wait_procs([grandchild], timeout=5)  # killed; reaped by init
    assert not alive
    assert any("event=stack_killed" in line for line in supervisor.lines)
    assert any("event=stack_stopped" in line for line in supervisor.lines)
