"""The dotted paths of RQ jobs queued before the jobs were split by concern (issue 13).

RQ stores a job's function as a dotted path and imports it when a worker runs the job, so a
retrain, pool map, evaluation or re-score chunk queued by an older version names
``taskrank.queue.jobs.<function>``.  These aliases keep such jobs (and re-score runs resumed
across the upgrade) working; new jobs name their own modules.  Import from those modules.
"""

from taskrank.queue.pool_map_jobs import map_pool
from taskrank.queue.rescore import rescore_chunk
from taskrank.queue.retrain import evaluate_model, retrain

__all__ = ["evaluate_model", "map_pool", "rescore_chunk", "retrain"]
