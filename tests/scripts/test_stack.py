"""The process stack: it stops what it started (and only that), its children die with it,
and it hands its children the settings without the caller's TASKRANK_* variables."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taskrank.queue.settings import Settings
from taskrank.scripts.stack import Child, Stack, child_pids, clean_environ, started_at
from tests.waits import wait_for

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(),
                                reason="process checks read Linux /proc")

# A parent that ignores SIGTERM and forks a grandchild: only a kill of its group stops both.
STUBBORN = ("import os, signal, subprocess, sys, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "time.sleep(60)\n")


def _python(stack: Stack, code: str, name: str = "python") -> Child:
    return stack.start_child(Child(name, [sys.executable, "-c", code], stack.env(),
                            subprocess.DEVNULL, subprocess.DEVNULL))


def _gone(pid: int, started: int) -> bool:
    """The process exited (a zombie waiting for init counts) or its pid was reused."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return int(fields[19]) != started or fields[0] == "Z"




def test_stop_terms_then_kills_the_group_of_a_stubborn_child():
    """A child that ignores SIGTERM is killed with what it forked past the timeout; a
    process the stack did not start is left alone."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stack = Stack(Settings(), clean_environ())
        child = _python(stack, STUBBORN)
        wait_for(lambda: child_pids(child.pid), 10, "the child's child")
        grandchild = child_pids(child.pid)[0]
        born = started_at(grandchild)
        began = time.monotonic()
        stack.stop(timeout=0.5)
        assert time.monotonic() - began >= 0.4, "SIGKILL came before the SIGTERM timeout"
        assert child.returncode is not None and stack.children == []
        wait_for(lambda: _gone(grandchild, born), 10, "the grandchild to be gone")
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_a_child_dies_with_the_process_that_started_it(tmp_path):
    """SIGKILL of a process running a stack: the kernel ends its children too (lifeline)."""
    script = ("import subprocess, sys, time\n"
              "from taskrank.queue.settings import Settings\n"
              "from taskrank.scripts.stack import Child, Stack, clean_environ\n"
              "stack = Stack(Settings(), clean_environ())\n"
              "child = stack.start_child(Child('sleeper', [sys.executable, '-c', "
              "'import time; time.sleep(60)'], stack.env()))\n"
              "print(child.pid, flush=True)\n"
              "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        born = started_at(child)
        assert not _gone(child, born)
        parent.kill()
        parent.wait(10)
        wait_for(lambda: _gone(child, born), 10, "the child to die with its parent")
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()


def test_gunicorn_workers_die_with_a_sigkilled_master(tmp_path):
    """gunicorn's workers get SIGTERM from the kernel when their master is SIGKILLed (the
    server hooks' lifeline), instead of serving on until their wait times out."""
    app = tmp_path / "hello_app.py"
    app.write_text("def app(environ, start_response):\n"
                   "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
                   "    return [b'ok']\n")
    stack = Stack(Settings(), {**clean_environ(), "PYTHONPATH": str(tmp_path)},
                  stdout=tmp_path / "web.log", stderr=subprocess.STDOUT)
    workers: dict[int, int] = {}
    try:
        web = stack.start_web(app="hello_app:app", workers=2, port=0)
        wait_for(lambda: len(web.workers()) == 2, 30, f"two workers\n{web.output()}")
        workers = {pid: started_at(pid) for pid in web.workers()}
        os.kill(web.pid, signal.SIGKILL)
        web.process.wait(10)
        wait_for(lambda: all(_gone(pid, born) for pid, born in workers.items()), 10,
                 "gunicorn's workers to die with their master")
    finally:
        stack.kill()
        for pid, born in workers.items():  # orphans are no longer in the master's group
            if not _gone(pid, born):
                os.kill(pid, signal.SIGKILL)


def test_children_get_the_settings_not_the_callers_taskrank_variables(monkeypatch):
    """With clean_environ the caller's TASKRANK_* are dropped; the settings and extras win."""
    monkeypatch.setenv("TASKRANK_CLAIM_DEPTH", "7")
    monkeypatch.setenv("TASKRANK_SOMETHING_ELSE", "x")
    stack = Stack(Settings(claim_depth=9), clean_environ())
    env = stack.env(TASKRANK_LOG_LEVEL="WARNING")
    assert env["TASKRANK_CLAIM_DEPTH"] == "9" and env["TASKRANK_LOG_LEVEL"] == "WARNING"
    assert "TASKRANK_SOMETHING_ELSE" not in env and env["PATH"] == os.environ["PATH"]
    assert Stack(Settings()).env()["TASKRANK_SOMETHING_ELSE"] == "x"  # serve keeps ours


def test_a_web_server_that_cannot_start_is_reported_with_its_output(tmp_path):
    """gunicorn exiting before it answers raises at once, its log in the message."""
    log = tmp_path / "web.log"
    with Stack(Settings(), clean_environ(), stdout=log, stderr=subprocess.STDOUT) as stack:
        web = stack.start_web(app="taskrank_no_such_module:app", workers=1, port=0)
        assert "--graceful-timeout" in web.command and web.url.startswith("http://127.0.0.1:")
        with pytest.raises(RuntimeError, match="exited") as caught:
            web.wait_ready(timeout=30)
        assert "taskrank_no_such_module" in str(caught.value)
