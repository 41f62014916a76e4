"""The supervisor of the process stack: what exits on its own is restarted, with backoff,
while the rest keeps running."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import redis

from taskrank.queue.settings import Settings
from taskrank.scripts.stack import Child, Stack, clean_environ
from taskrank.scripts.supervisor import Backoff
from tests.waits import wait_for


def _python(stack: Stack, code: str, name: str = "python") -> Child:
    return stack.start_child(Child(name, [sys.executable, "-c", code], stack.env(),
                            subprocess.DEVNULL, subprocess.DEVNULL))


def test_supervise_restarts_a_child_that_exits_and_leaves_the_others_running():
    """A child that keeps exiting is restarted, each time after a longer wait; its sibling
    runs on untouched; supervise returns once asked to stop."""
    with Stack(Settings(), clean_environ()) as stack:
        sleeper = _python(stack, "import time; time.sleep(60)", "sleeper")
        quitter = _python(stack, "raise SystemExit(3)", "quitter")
        restarts = stack.supervisor.restarts
        stack.supervisor.backoffs[quitter] = Backoff(first=0.05, cap=1.0)
        sleeper_pid, stopping = sleeper.pid, []

        def stop_after_three_restarts() -> None:
            wait_for(lambda: restarts[quitter] >= 3, 30, "three restarts")
            stopping.append(15)

        watcher = threading.Thread(target=stop_after_three_restarts, daemon=True)
        watcher.start()
        stack.supervise(stopping)  # in this thread: children die with the thread that forked
        watcher.join()
        assert restarts[quitter] >= 3 and stack.supervisor.backoff(quitter).exits >= 3
        assert sleeper.pid == sleeper_pid and sleeper.running() and restarts[sleeper] == 0
    with Stack(Settings(), clean_environ()) as stack:
        _python(stack, "import time; time.sleep(60)", "sleeper")
        assert stack.supervise([15]) is None


def test_backoff_doubles_for_exits_in_a_row_up_to_its_cap_and_resets_after_a_long_run():
    """0.5, 1, 2, ... capped; a process that ran as long as the cap starts again at 0.5."""
    backoff = Backoff(first=0.5, cap=4.0)
    assert [backoff.exited() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert not backoff.is_due()
    backoff.started = time.monotonic() - 4.0
    assert backoff.exited() == 0.5
    backoff.due = time.monotonic()
    assert backoff.is_due()
    backoff.started_now()
    assert backoff.due is None and not backoff.is_due()


def test_heal_restarts_a_killed_embedded_redis_from_its_append_only_file(tmp_path):
    """SIGKILL of the stack's Redis: heal() starts it again on the same data dir and URL,
    with every write acknowledged before the kill."""
    with Stack(Settings(data_dir=str(tmp_path)), clean_environ()) as stack:
        server = stack.start_redis()
        stack.supervisor.backoffs[server] = Backoff(first=0.05, cap=1.0)
        url, killed = server.url, server.process.pid
        redis.Redis.from_url(url).set("label", "kept")
        server.process.kill()
        server.process.wait()

        def healed() -> bool:
            stack.heal()
            return server.running()

        wait_for(healed, 30, "the Redis restart")
        assert server.process.pid != killed and server.url == url
        assert stack.supervisor.restarts[server] == 1
        assert redis.Redis.from_url(url).get("label") == b"kept"
