"""After each counted label: the item's aggregated label, adaptive redundancy, and the
experts' accuracy counts."""

from __future__ import annotations

import numpy as np
import redis

from taskrank.learning.aggregation import (
    agreement_credit,
    clip_accuracy,
    dawid_skene,
    vote_posterior,
)
from taskrank.learning.routing import item_fit
from taskrank.queue import keys as K
from taskrank.queue import lua
from taskrank.queue.experts import load_expert
from taskrank.queue.skills import (
    GENERAL,
    Profile,
    load_profiles,
    record_agreement,
    replace_agreement,
)


def aggregate_item(r: redis.Redis, project: dict, iid: str) -> tuple[str, float]:
    """Store the item's accuracy-weighted vote; adapt its redundancy when the strategy
    says so; when the item is finished, record it and learn from agreement."""
    pid = project["id"]
    pipe = r.pipeline()
    pipe.lrange(K.item_labels_key(pid, iid), 0, -1)
    pipe.hmget(K.item_key(pid, iid), "s", "g", "st", "want")
    entries, (tags, gold, status, want) = pipe.execute()
    tags = tags.split(",") if tags else []
    votes = [entry.split("\t", 1) for entry in entries]
    label, confidence, posterior = vote(r, project, votes, tags)
    if project["strategy"]["redundancy"]["adaptive"]:
        status = adapt_redundancy(r, project, iid, votes, confidence, int(want or 1)) or status
    pipe = r.pipeline()
    pipe.hset(K.item_key(pid, iid), mapping={"al": label, "ac": confidence})
    if status == "labeled":
        pipe.zadd(K.labeled_key(pid), {iid: 0})  # score 0: ordered by id for export cursors
        pipe.hsetnx(K.item_key(pid, iid), "learned", 1)
    *_, first_completion = pipe.execute()
    if status == "labeled" and first_completion:
        _learn_from(r, project, votes, tags, gold or None, posterior)
    return label, confidence


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
    return lua.run(r, "set_want", project["id"], [], [iid, new_want])


def vote(r: redis.Redis, project: dict, votes: list[list[str]],
         tags: list[str]) -> tuple[str, float, np.ndarray]:
    """Accuracy-weighted vote over ``[(expert, label)]`` with each expert's fit on ``tags``:
    the winning label, its confidence and the posterior over all labels (k,)."""
    labels = project["labels"]
    experts = sorted({eid for eid, _ in votes})
    profiles = load_profiles(r, project, [load_expert(r, eid) for eid in experts])
    accuracy = np.array([_fit(profile, tags) for profile in profiles])
    posterior = vote_posterior(
        np.zeros(len(votes), dtype=int), np.array([experts.index(e) for e, _ in votes]),
        np.array([labels.index(lab) for _, lab in votes]), clip_accuracy(accuracy),
        n_items=1, n_classes=len(labels))[0]
    best = int(posterior.argmax())
    return labels[best], round(float(posterior[best]), 6), posterior


def _learn_from(r: redis.Redis, project: dict, votes: list[list[str]], tags: list[str],
                gold: str | None, posterior: np.ndarray) -> None:
    # Credit is soft: the vote's probability that the label is right, so a split decision
    # does not simply confirm whoever is believed best (measured with `taskrank simulate
    # --experts`); none when a single label without gold agrees only with itself.
    labels = project["labels"]
    gold_index = None if gold is None else labels.index(gold) if gold in labels else -1
    credit = agreement_credit(np.array([labels.index(given) for _, given in votes]), posterior,
                              gold_index)
    if credit is None:
        return
    record_agreement(r, project["id"], [(eid, tags, float(c))
                                        for (eid, _), c in zip(votes, credit, strict=True)])


def _fit(profile: Profile, tags: list[str]) -> float:
    """The expert's fit on an item with ``tags`` (learning.routing.item_fit); a tag it no
    longer holds (its skills changed after the claim) counts at its general accuracy."""
    means = profile.table(profile.posterior.mean)
    general = means[GENERAL]
    tag_accuracy = np.array([means.get(tag, general) for tag in tags])
    required = np.ones((1, len(tags)), dtype=bool)
    return float(item_fit(tag_accuracy, required, default=general)[0])


def reaggregate_project(r: redis.Redis, project: dict) -> dict:
    """Dawid–Skene over every finished item with two labels or more: labels and each
    expert's accuracy per skill learned together, and those accuracies fed back into the
    routing posteriors (as the agreement evidence of ``queue/skills.py``).

    Runs before each retrain, so the model trains on the jointly estimated labels. Each
    (expert, skill) starts from its declared level and its gold answers. An item with one
    label keeps the vote it got (its expert's answer): one label says nothing about its
    expert, and in the EM it is decided by class prevalence against accuracies it cannot
    inform, which, on imbalanced classes, turned every single-label item into the majority
    class (taskrank demo, breast_cancer: 200 labels of both classes aggregated to one, so
    no model could train). Returns how many aggregated labels changed.
    """
    pid, labels = project["id"], project["labels"]
    ids = r.zrange(K.labeled_key(pid), 0, -1)
    pipe = r.pipeline()
    for iid in ids:
        pipe.lrange(K.item_labels_key(pid, iid), 0, -1)
        pipe.hmget(K.item_key(pid, iid), "al", "g", "s")
    replies = pipe.execute()
    rows = [(iid, replies[2 * i], *replies[2 * i + 1]) for i, iid in enumerate(ids)
            if len(replies[2 * i]) >= 2]
    triples, experts, tags = [], {}, {}
    for index, (_, entries, _, _, item_tags) in enumerate(rows):
        tag = item_tags.split(",")[0] if item_tags else GENERAL  # its first skill
        for entry in entries:
            eid, label = entry.split("\t", 1)
            triples.append((index, experts.setdefault(eid, len(experts)),
                            tags.setdefault(tag, len(tags)), labels.index(label)))
    if len(experts) < 2:
        return {"items": len(rows), "changed": 0}
    items, who, skill, given = (np.array(column) for column in zip(*triples, strict=True))
    alpha0, beta0 = _skill_prior(r, project, list(experts), list(tags))
    label, confidence, accuracy = dawid_skene(
        items, who, given, len(rows), len(experts), len(labels), item_tag=skill,
        n_tags=len(tags), prior=(alpha0, beta0))
    _feed_posteriors(r, pid, list(experts), list(tags), who, skill, accuracy, alpha0, beta0)
    pipe, changed = r.pipeline(), 0
    for index, (iid, _, current, gold, _) in enumerate(rows):
        new = gold or labels[int(label[index])]
        conf = 1.0 if gold else round(float(confidence[index]), 6)
        changed += new != current
        pipe.hset(K.item_key(pid, iid), mapping={"al": new, "ac": conf})
    pipe.execute()
    return {"items": len(rows), "changed": changed}


def _skill_prior(r: redis.Redis, project: dict, experts: list[str],
                 tags: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Beta pseudo-counts (n_experts, n_tags) of declared levels plus gold answers: the
    posteriors without their agreement evidence, which the EM re-estimates."""
    profiles = load_profiles(r, project, [load_expert(r, eid) for eid in experts])
    alpha0, beta0 = np.empty((len(experts), len(tags))), np.empty((len(experts), len(tags)))
    for row, profile in enumerate(profiles):
        column = {tag: i for i, tag in enumerate(profile.tags)}
        post = profile.posterior
        alpha = post.alpha - profile.agree
        beta = post.beta - (profile.evidence - profile.agree)
        for j, tag in enumerate(tags):
            i = column.get(tag, column[GENERAL])  # a skill no longer declared
            alpha0[row, j], beta0[row, j] = alpha[i], beta[i]
    return alpha0, beta0


def _feed_posteriors(r, pid, experts, tags, who, skill, accuracy, alpha0, beta0) -> None:
    """Each (expert, skill)'s Dawid–Skene accuracy, as counts of right and wrong labels,
    becomes its agreement evidence."""
    total = np.zeros(accuracy.shape)
    np.add.at(total, (who, skill), 1.0)
    right = np.clip(accuracy * (total + alpha0 + beta0) - alpha0, 0.0, total)
    replace_agreement(r, pid, {(experts[e], tags[t]): (float(right[e, t]),
                                                        float(total[e, t] - right[e, t]))
                               for e, t in zip(*np.nonzero(total), strict=True)})
