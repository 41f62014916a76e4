"""learning/ stays pure: importing it pulls in no web, Redis or queue libraries."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import taskrank.learning

FORBIDDEN = ("flask", "redis", "rq")


def test_learning_modules_import_no_flask_redis_or_rq():
    """Importing taskrank.learning and each of its modules loads none of flask, redis, rq."""
    found = pkgutil.iter_modules(taskrank.learning.__path__)
    modules = [f"taskrank.learning.{info.name}" for info in found]
    assert "taskrank.learning.priority" in modules
    code = "\n".join(
        [
            "import importlib, sys",
            "import taskrank.learning",
            f"for name in {modules!r}:",
            "    importlib.import_module(name)",
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"learning/ imported {result.stdout.strip()}"
