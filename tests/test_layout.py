"""The layout rules of DESIGN §1 hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_stdlib_queue_is_not_shadowed_from_the_repo_root():
    """From the repository root, `import queue` is the standard library and redis imports."""
    result = run_python("import queue, redis, rq; queue.LifoQueue; print(queue.__file__)")
    assert result.returncode == 0, result.stderr
    assert str(ROOT) not in result.stdout


def test_learning_imports_no_web_or_redis_modules():
    """Importing taskrank.learning pulls in no flask, redis or rq."""
    code = ("import sys, pkgutil, importlib, taskrank.learning as L\n"
            "for m in pkgutil.iter_modules(L.__path__):\n"
            "    importlib.import_module(f'{L.__name__}.{m.name}')\n"
            "print(sorted(n for n in sys.modules if n.split('.')[0] in ('flask', 'redis', 'rq')))")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_client_needs_only_the_standard_library():
    """taskrank.client, the public HTTP client, pulls in no third-party or server module."""
    code = ("import sys, taskrank.client\n"
            "print(sorted(n for n in sys.modules if n.split('.')[0] in "
            "('flask', 'redis', 'rq', 'numpy', 'sklearn') or n.startswith('taskrank.queue')))")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_no_queue_package_init_and_no_queue_module():
    """queue/ has no __init__.py and no module anywhere is named queue.py."""
    assert not (ROOT / "queue" / "__init__.py").exists()
    assert not (ROOT / "taskrank").exists()
    for folder in ("server", "learning", "queue", "scripts", "client", "tests"):
        assert not list((ROOT / folder).rglob("queue.py"))
