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


def loaded_after(imports: str, packages: tuple[str, ...]) -> list[str]:
    """The modules in or under ``packages`` a fresh interpreter holds after ``imports``."""
    code = (f"import sys\n{imports}\n"
            f"print('\\n'.join(sorted(n for n in sys.modules for p in {packages!r}\n"
            "                           if n == p or n.startswith(p + '.'))))")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_learning_imports_no_web_or_redis_modules():
    """Importing taskrank.learning pulls in no flask, redis or rq."""
    imports = ("import pkgutil, importlib, taskrank.learning as L\n"
               "for m in pkgutil.iter_modules(L.__path__):\n"
               "    importlib.import_module(f'{L.__name__}.{m.name}')")
    assert loaded_after(imports, ("flask", "redis", "rq")) == []


def test_client_needs_only_the_standard_library():
    """taskrank.client, the public HTTP client, pulls in no third-party or server module."""
    packages = ("flask", "redis", "rq", "numpy", "sklearn", "taskrank.queue", "taskrank.server")
    assert loaded_after("import taskrank.client", packages) == []


def test_no_queue_package_init_and_no_queue_module():
    """queue/ has no __init__.py and no module anywhere is named queue.py."""
    assert not (ROOT / "queue" / "__init__.py").exists()
    assert not (ROOT / "taskrank").exists()
    for folder in ("server", "learning", "queue", "scripts", "client", "tests"):
        assert not list((ROOT / folder).rglob("queue.py"))
