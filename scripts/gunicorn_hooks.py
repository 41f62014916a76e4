"""gunicorn server hooks of the process stack (``gunicorn --config python:<this module>``).

A gunicorn worker notices on its own that its master died only when its wait for a request
times out (up to half of gunicorn's ``--timeout``, 15 s); with this lifeline the kernel sends
it SIGTERM (a graceful stop) at once, so no worker outlives a killed master.
"""

from __future__ import annotations

import signal

from taskrank.queue.processes import die_with_parent


def post_fork(server, worker) -> None:  # noqa: ANN001 - gunicorn's Arbiter and Worker
    """In each new worker: a lifeline to the master."""
    die_with_parent(signal.SIGTERM, server.pid)
