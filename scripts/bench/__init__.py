"""``taskrank bench``: the DESIGN §7 benchmarks (``command.py`` is the command).

- ``command``: parses ``taskrank bench [NAMES...] [--quick] [--out FILE.json]``, runs each
  benchmark, prints the budget table and writes the JSON document;
- ``budgets``: every budget, its limit and how a measured figure is judged;
- one module per benchmark: ``scoring``, ``serve``, ``ingest``, ``rescore``, ``rerank``,
  ``retrain``, ``train_cap``, ``memory``; ``floor`` is the bare app the serving figures
  are compared with;
- ``items`` and ``data``: seeded items and the projects and experts they are stored in;
  ``finished``: finished items written straight into Redis (the retrain benchmark);
- ``lean_client`` and ``loops``: the raw-socket client and the timed client loops, run in
  spawned processes (so this package's ``__init__`` imports nothing);
- ``machine``: the machine's description and Redis figures (CPU, memory, fsync latency).

The processes a benchmark runs against (Redis, gunicorn, RQ workers) come from the one
process stack, ``taskrank.scripts.stack``.
"""
