"""What a project learns of each expert, per skill, and the routing profile built from it.

Kept per project, in the project's slot (``keys.expert_skill_key``), per skill tag
(``_general`` for untagged items):

- ``a:``/``d:`` agreement evidence: soft credit as multi-label items finish
  (``aggregate.py``), replaced by Dawid–Skene's at every re-aggregation;
- ``gn:``/``gr:`` gold items answered and answered right (the LABEL script);
- ``n:``/``sec:``/``usd:`` counted labels, their seconds and dollars (the LABEL script);
- ``gold_debt``: the running gold share of the CLAIM script.

The expert's declared levels (``queue/experts.py``) are the prior of every posterior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import redis
from scipy.stats import beta as beta_distribution

from taskrank.learning import routing
from taskrank.queue import keys as K
from taskrank.queue.cache import TtlCache
from taskrank.queue.exceptions import NoSuchExpertError
from taskrank.queue.experts import GENERAL, general_level, load_expert


@dataclass(frozen=True)
class Profile:
    """One expert in one project, per skill (``tags``: the declared ones, then
    ``_general``), as routing sees it; every array is aligned with ``tags``."""

    expert: dict
    tags: list[str]
    posterior: routing.BetaPosterior
    gold_seen: np.ndarray
    gold_right: np.ndarray
    agree: np.ndarray  # agreement evidence: labels' worth that agreed
    evidence: np.ndarray  # labels' worth of agreement evidence in all
    labels: np.ndarray
    seconds_spent: np.ndarray
    dollars: np.ndarray
    seconds: np.ndarray  # predicted seconds of the next label
    state: np.ndarray  # learning.routing gate codes
    gold_share: np.ndarray
    review_share: np.ndarray
    qualify: dict  # the project's qa.qualify

    def table(self, values: np.ndarray, keep: np.ndarray | None = None) -> dict[str, float]:
        return {tag: float(values[i]) for i, tag in enumerate(self.tags)
                if keep is None or keep[i]}

    def fits(self) -> tuple[dict[str, float], float | None]:
        """{skill: posterior mean} of the declared skills it may get real items of
        (not flagged), and that of untagged items (None when flagged there)."""
        allowed = self.state != routing.FLAGGED
        skills = self.table(self.posterior.mean, allowed)
        general = skills.pop(GENERAL, None)
        return skills, general

    def cost(self) -> np.ndarray:
        """US dollars of one label per skill."""
        return routing.label_cost(self.expert["cost_per_hour"], self.seconds)

    def worth(self, fit_exponent: float, cost_exponent: float) -> np.ndarray:
        return routing.worth(self.posterior.mean, self.cost(), fit_exponent, cost_exponent)


def build_profile(expert: dict, fields: dict[str, str], gold_counts: dict[str, int],
                  project: dict) -> Profile:
    """The profile from the stored fields (``expert_skill_key``) and the project's gold
    items per skill; pure."""
    skills = expert["skills"]
    tags = [*skills, GENERAL]

    def column(prefix: str) -> np.ndarray:
        return np.array([float(fields.get(f"{prefix}:{tag}", 0)) for tag in tags])

    levels = np.array([*skills.values(), general_level(skills)])
    gold_seen, gold_right = column("gn"), column("gr")
    agree, disagree = column("a"), column("d")
    posterior = routing.accuracy_posterior(levels, agree + gold_right,
                                           disagree + gold_seen - gold_right)
    labels, seconds_spent = column("n"), column("sec")
    overall = routing.predicted_seconds(seconds_spent.sum(), labels.sum())
    qa = project["strategy"]["qa"]
    gold_available = np.array([gold_counts.get(tag, 0) for tag in tags])
    state = routing.gate(gold_seen, gold_right, gold_available, agree + disagree, posterior.mean,
                         routing.gold_to_qualify(qa["qualify"]["min_gold"],
                                                 int(project["redundancy"])),
                         qa["qualify"]["min_accuracy"])
    return Profile(
        expert=expert, tags=tags, posterior=posterior, gold_seen=gold_seen,
        gold_right=gold_right, agree=agree, evidence=agree + disagree, labels=labels,
        seconds_spent=seconds_spent, dollars=column("usd"),
        seconds=routing.predicted_seconds(seconds_spent, labels, overall), state=state,
        gold_share=routing.gold_share(posterior, qa["gold_rate"]),
        review_share=routing.gold_share(posterior, qa["review_rate"]),
        qualify=qa["qualify"])


def load_profiles(r: redis.Redis, project: dict, experts: list[dict]) -> list[Profile]:
    """Profiles of ``experts`` in ``project``, read in one round trip."""
    pid = project["id"]
    tags = sorted({tag for expert in experts for tag in expert["skills"]} | {GENERAL})
    pipe = r.pipeline(transaction=False)
    for tag in tags:
        pipe.zcard(K.gold_key(pid, tag))
    for expert in experts:
        pipe.hgetall(K.expert_skill_key(pid, expert["id"]))
    replies = pipe.execute()
    gold_counts = dict(zip(tags, replies[:len(tags)], strict=True))
    return [build_profile(expert, fields, gold_counts, project)
            for expert, fields in zip(experts, replies[len(tags):], strict=True)]


def load_profile(r: redis.Redis, project: dict, expert: dict) -> Profile:
    return load_profiles(r, project, [expert])[0]


def record_agreement(r: redis.Redis, pid: str,
                     outcomes: list[tuple[str, list[str], float]]) -> None:
    """Add agreement evidence: (expert, item tags, credit) per label, where credit in
    [0, 1] is the probability that the label was right."""
    pipe = r.pipeline()
    for eid, tags, credit in outcomes:
        key = K.expert_skill_key(pid, eid)
        for tag in tags or [GENERAL]:
            if credit > 0:
                pipe.hincrbyfloat(key, f"a:{tag}", round(credit, 6))
            if credit < 1:
                pipe.hincrbyfloat(key, f"d:{tag}", round(1.0 - credit, 6))
    pipe.execute()


def replace_agreement(r: redis.Redis, pid: str,
                      evidence: dict[tuple[str, str], tuple[float, float]]) -> None:
    """Set the agreement evidence of each (expert, tag) to (right, wrong) label counts,
    as Dawid–Skene estimated them over every multi-label item."""
    pipe = r.pipeline()
    for (eid, tag), (right, wrong) in evidence.items():
        pipe.hset(K.expert_skill_key(pid, eid),
                  mapping={f"a:{tag}": round(right, 6), f"d:{tag}": round(wrong, 6)})
    pipe.execute()


def quality_report(profile: Profile, level: float = 0.9) -> dict[str, dict]:
    """Per skill: gold accuracy, agreement, learned accuracy with its ``level`` credible
    interval, labels, hours, dollars and the gate's verdict (with its reason)."""
    post, tail = profile.posterior, (1.0 - level) / 2
    low = beta_distribution.ppf(tail, post.alpha, post.beta)
    high = beta_distribution.ppf(1.0 - tail, post.alpha, post.beta)
    report = {}
    for i, tag in enumerate(profile.tags):
        if profile.labels[i] == 0 and profile.gold_seen[i] == 0 and profile.evidence[i] == 0:
            continue
        agreement = (round(float(profile.agree[i] / profile.evidence[i]), 4)
                     if profile.evidence[i] else None)
        report[tag] = {
            "labels": int(profile.labels[i]),
            "gold_answered": int(profile.gold_seen[i]),
            "gold_accuracy": (round(float(profile.gold_right[i] / profile.gold_seen[i]), 4)
                              if profile.gold_seen[i] else None),
            "agreement": agreement,
            "accuracy": round(float(post.mean[i]), 4),
            "accuracy_interval": [round(float(low[i]), 4), round(float(high[i]), 4)],
            "hours": round(float(profile.seconds_spent[i] / 3600.0), 4),
            "dollars": round(float(profile.dollars[i]), 2),
            "predicted_seconds": round(float(profile.seconds[i]), 1),
            **_verdict(profile, i),
        }
    return report


def _verdict(profile: Profile, i: int) -> dict:
    """The gate's verdict on skill ``i``: status and, unless qualified, why."""
    state = int(profile.state[i])
    if state == routing.QUALIFIED:
        return {"status": "qualified"}
    qualify = profile.qualify
    if state == routing.NEEDS_GOLD:
        seen, right = int(profile.gold_seen[i]), int(profile.gold_right[i])
        if seen < qualify["min_gold"]:
            return {"status": "qualifying", "reason": (
                f"answered {seen} of the {qualify['min_gold']} gold items "
                "qa.qualify.min_gold asks before real items of this skill")}
        return {"status": "qualifying", "reason": (
            f"{right} of {seen} gold answers right, below qa.qualify.min_accuracy "
            f"{qualify['min_accuracy']:g}: answering more gold before real items of this skill")}
    mean = profile.posterior.mean[i]
    gold = f"{int(profile.gold_right[i])}/{int(profile.gold_seen[i])}"
    minimum = f"qa.qualify.min_accuracy {qualify['min_accuracy']:g}"
    if mean < qualify["min_accuracy"]:
        return {"status": "flagged", "reason": (
            f"learned accuracy {mean:.3f} (gold {gold}) is below {minimum}: no real items "
            "of this skill until it rises")}
    return {"status": "flagged", "reason": (
        f"gold answers right {gold}, below {minimum} (learned accuracy {mean:.3f}): no real "
        "items of this skill until more gold items of it test it again")}


# The hold-back needs a recent view of who is best, not an exact one; it follows the one
# cache policy (queue/cache.py).
best_experts_cache = TtlCache()


def best_experts_by_tag(r: redis.Redis, project: dict, now: float,
                        top: int = 3) -> dict[str, list[list]]:
    """{tag: [[expert, worth, capacity], ...]}: the ``top`` experts per tag by value per
    dollar (fit^a / cost^b) among those active, not flagged on the tag, and working in
    the project (a claim within ``routing.holdback_seconds``); cached at most
    ``TASKRANK_CACHE_SECONDS``."""
    return best_experts_cache.get(
        (project["id"], project["strategy_version"], top),
        lambda: _rank_experts(r, project, now, top))


def _rank_experts(r: redis.Redis, project: dict, now: float, top: int) -> dict[str, list[list]]:
    rule = project["strategy"]["routing"]
    working = r.zrangebyscore(K.working_experts_key(project["id"]),
                              now - rule["holdback_seconds"], "+inf")
    experts = [expert for expert in (_declared(r, eid) for eid in working)
               if expert is not None and expert["active"]]
    ranked: dict[str, list[list]] = {}
    for profile in load_profiles(r, project, experts):
        worth = profile.worth(rule["fit_exponent"], rule["cost_exponent"])
        for i, tag in enumerate(profile.tags[:-1]):  # not _general: untagged items wait not
            if profile.state[i] != routing.FLAGGED:
                ranked.setdefault(tag, []).append(
                    [profile.expert["id"], float(worth[i]), profile.expert["capacity"]])
    return {tag: sorted(rows, key=lambda row: -row[1])[:top] for tag, rows in ranked.items()}


def _declared(r: redis.Redis, eid: str) -> dict | None:
    try:
        return load_expert(r, eid)
    except NoSuchExpertError:  # removed since its last claim
        return None
