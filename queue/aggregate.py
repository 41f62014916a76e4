"""After each counted label: the item's aggregated label, adaptive redundancy, and the
experts' accuracy counts.

A label brought in without a lease and without an expert (``label_import.py``) votes as
``ANONYMOUS`` at ``ANONYMOUS_ACCURACY``: it counts toward the item's label, and teaches no
expert anything.
"""

from __future__ import annotations

import numpy as np
import redis

from taskrank.learning.aggregation import (
    agreement_credit,
    clip_accuracy,
    vote_posterior,
)
from taskrank.learning.routing import DEFAULT_GENERAL_LEVEL, accuracy_posterior, item_fit
from taskrank.queue import keys as K
from taskrank.queue import lua
from taskrank.queue.experts import load_expert
from taskrank.queue.skills import (
    GENERAL,
    Profile,
    load_profiles,
    record_agreement,
)

ANONYMOUS = ""  # the voter of a label without an expert (no expert id is empty)
# What a label without an expert is taken to be worth: the prior of an expert who declared
# no skill.
ANONYMOUS_ACCURACY = DEFAULT_GENERAL_LEVEL


def aggregate_item(r: redis.Redis, project: dict, iid: str) -> tuple[str, float]:
    """Store the item's accuracy-weighted vote; adapt its redundancy when the strategy
    says so; when the item is finished, record it and learn from agreement."""
    return aggregate_items(r, project, [iid])[iid]


def aggregate_items(r: redis.Redis, project: dict,
                    iids: list[str]) -> dict[str, tuple[str, float]]:
    """``aggregate_item`` for many items (labels posted in one batch) in a few round trips:
    the same reads, one vote over them all, the same writes; {item: (label, confidence)}."""
    pid = project["id"]
    iids = list(dict.fromkeys(iids))
    pipe = r.pipeline()
    for iid in iids:
        pipe.lrange(K.item_labels_key(pid, iid), 0, -1)
        pipe.hmget(K.item_key(pid, iid), "s", "g", "st", "want")
    replies = pipe.execute()
    rows = [([entry.split("\t", 1) for entry in entries], tags.split(",") if tags else [],
             gold, status, want)
            for entries, (tags, gold, status, want) in zip(replies[::2], replies[1::2],
                                                           strict=True)]
    decided = vote_many(r, project, [(votes, tags) for votes, tags, *_ in rows])
    statuses = [status for *_, status, _ in rows]
    if project["strategy"]["redundancy"]["adaptive"]:
        statuses = [adapt_redundancy(r, project, iid, votes, confidence, int(want or 1))
                    or status for iid, (votes, _, _, status, want), (_, confidence, _)
                    in zip(iids, rows, decided, strict=True)]
    pipe = r.pipeline()
    for iid, (label, confidence, _), status in zip(iids, decided, statuses, strict=True):
        pipe.hset(K.item_key(pid, iid), mapping={"al": label, "ac": confidence})
        if status == "labeled":
            pipe.zadd(K.labeled_key(pid), {iid: 0})  # score 0: ordered by id for export cursors
            pipe.sadd(K.relabeled_key(pid), iid)  # the next retrain's new labels
            pipe.hsetnx(K.item_key(pid, iid), "learned", 1)
    replies = iter(pipe.execute())
    outcomes = []
    for (votes, tags, gold, _, _), (_, _, posterior), status in zip(rows, decided, statuses,
                                                                   strict=True):
        next(replies)  # HSET
        if status != "labeled":
            continue
        next(replies)  # ZADD
        next(replies)  # SADD
        if next(replies):  # HSETNX 'learned': finished just now, so learn from it once
            outcomes += _credit(project, votes, tags, gold or None, posterior)
    if outcomes:
        record_agreement(r, pid, outcomes)
    return {iid: (label, confidence) for iid, (label, confidence, _) in zip(iids, decided,
                                                                              strict=True)}


def adapt_redundancy(r: redis.Redis, project: dict, iid: str, votes: list, confidence: float,
                     want: int) -> str | None:
    """Stop early when two or more labels agree confidently; ask for one more label when
    they disagree with low confidence (up to ``redundancy.max_labels``).

    Returns the item's new status, or None when the wanted count did not change.
    """
    rule = project["strategy"]["redundancy"]
    agree = len({label for _, label in votes}) == 1
    new_want = want
    if len(votes) >= 2 and agree and confidence >= rule["stop_confidence"]:
        new_want = min(want, len(votes))
    elif len(votes) >= want and not agree and confidence < rule["stop_confidence"]:
        new_want = max(want, min(want + 1, rule["max_labels"]))
    if new_want == want:
        return None
    return lua.run(r, "set_want", project["id"], [K.item_key(project["id"], iid)],
                   [iid, new_want])


def vote(r: redis.Redis, project: dict, votes: list[list[str]],
         tags: list[str]) -> tuple[str, float, np.ndarray]:
    """Accuracy-weighted vote over ``[(expert, label)]`` with each expert's fit on ``tags``:
    the winning label, its confidence and the posterior over all labels (k,)."""
    return vote_many(r, project, [(votes, tags)])[0]


def vote_many(r: redis.Redis, project: dict, ballots: list[tuple[list[list[str]], list[str]]]
              ) -> list[tuple[str, float, np.ndarray]]:
    """``vote`` for each (votes, tags) of ``ballots``, in one weighted vote: each label
    weighs its voter's fit on its item's tags (``ANONYMOUS_ACCURACY`` without an expert)."""
    labels = project["labels"]
    voters = sorted({eid for votes, _ in ballots for eid, _ in votes})
    profiles = expert_profiles(r, project, voters)
    items, given, accuracy = [], [], []
    for row, (votes, tags) in enumerate(ballots):
        fits: dict[str, float] = {}
        for eid, label in votes:
            if eid not in fits:
                fits[eid] = (ANONYMOUS_ACCURACY if eid == ANONYMOUS
                             else _fit(profiles[eid], tags))
            items.append(row)
            given.append(labels.index(label))
            accuracy.append(fits[eid])
    posterior = vote_posterior(
        np.array(items, dtype=int), np.arange(len(items)), np.array(given, dtype=int),
        clip_accuracy(np.array(accuracy, dtype=float)), n_items=len(ballots),
        n_classes=len(labels))
    best = posterior.argmax(axis=1)
    return [(labels[b], round(float(p[b]), 6), p) for b, p in zip(best, posterior, strict=True)]


def expert_profiles(r: redis.Redis, project: dict, experts: list[str]) -> dict[str, Profile]:
    """{expert: its profile in the project} of the experts among ``experts``."""
    known = [eid for eid in experts if eid != ANONYMOUS]
    if not known:
        return {}
    return dict(zip(known, load_profiles(r, project, [load_expert(r, eid) for eid in known]),
                    strict=True))


def _credit(project: dict, votes: list[list[str]], tags: list[str], gold: str | None,
            posterior: np.ndarray) -> list[tuple[str, list[str], float]]:
    """The agreement evidence of a finished item: (expert, tags, credit) per label of an
    expert (``record_agreement``)."""
    # Credit is soft: the vote's probability that the label is right, so a split decision
    # does not simply confirm whoever is believed best (measured with `taskrank simulate
    # --experts`); none when a single label without gold agrees only with itself.
    labels = project["labels"]
    gold_index = None if gold is None else labels.index(gold) if gold in labels else -1
    credit = agreement_credit(np.array([labels.index(given) for _, given in votes]), posterior,
                              gold_index)
    if credit is None:
        return []
    return [(eid, tags, float(c)) for (eid, _), c in zip(votes, credit, strict=True)
            if eid != ANONYMOUS]


def _fit(profile: Profile, tags: list[str]) -> float:
    """The expert's fit on an item with ``tags`` (learning.routing.item_fit); a tag it no
    longer holds (its skills changed after the claim) counts at its general accuracy."""
    means = profile.table(profile.posterior.mean)
    general = means[GENERAL]
    tag_accuracy = np.array([means.get(tag, general) for tag in tags])
    required = np.ones((1, len(tags)), dtype=bool)
    return float(item_fit(tag_accuracy, required, default=general)[0])


def skill_prior(r: redis.Redis, project: dict, experts: list[str],
                tags: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Beta pseudo-counts (n_experts, n_tags) of declared levels plus gold answers: the
    posteriors without their agreement evidence, which the EM re-estimates (labels without
    an expert: ``ANONYMOUS_ACCURACY`` as a declared level)."""
    alpha0, beta0 = np.empty((len(experts), len(tags))), np.empty((len(experts), len(tags)))
    profiles = expert_profiles(r, project, experts)
    anonymous = accuracy_posterior(ANONYMOUS_ACCURACY, 0.0, 0.0)
    for row, eid in enumerate(experts):
        if eid == ANONYMOUS:
            alpha0[row], beta0[row] = anonymous.alpha, anonymous.beta
            continue
        profile = profiles[eid]
        column = {tag: i for i, tag in enumerate(profile.tags)}
        post = profile.posterior
        alpha = post.alpha - profile.agree
        beta = post.beta - (profile.evidence - profile.agree)
        for j, tag in enumerate(tags):
            i = column.get(tag, column[GENERAL])  # a skill no longer declared
            alpha0[row, j], beta0[row, j] = alpha[i], beta[i]
    return alpha0, beta0
