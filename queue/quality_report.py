"""Each expert's quality across projects: ``queue/skills.py``'s report per project and
skill, and the skills the qualification gate flagged (no real items until they rise).

The API (``GET /v1/experts/{eid}``) and the operator page read the same functions, so the
page shows what the platform is told.
"""

from __future__ import annotations

import redis

from taskrank.queue import keys as K
from taskrank.queue.experts import load_expert
from taskrank.queue.projects import list_projects
from taskrank.queue.skills import load_profiles, quality_report


def quality_by_expert(r: redis.Redis, projects: list[dict],
                      experts: list[dict]) -> dict[str, dict[str, dict[str, dict]]]:
    """{expert id: {project id: {skill: report}}} over the (project, expert) pairs with a
    record (``keys.expert_skill_key``) and a non-empty report; one read per project."""
    pipe = r.pipeline(transaction=False)
    for project in projects:
        for expert in experts:
            pipe.exists(K.expert_skill_key(project["id"], expert["id"]))
    recorded = iter(pipe.execute())
    quality: dict[str, dict[str, dict[str, dict]]] = {expert["id"]: {} for expert in experts}
    for project in projects:
        present = [expert for expert in experts if next(recorded)]
        if not present:
            continue
        for profile in load_profiles(r, project, present):
            report = quality_report(profile)
            if report:
                quality[profile.expert["id"]][project["id"]] = report
    return quality


def flagged_skills(quality: dict[str, dict[str, dict]]) -> list[dict]:
    """[{project_id, skill, reason}] of every flagged skill in one expert's ``quality``."""
    return [{"project_id": pid, "skill": tag, "reason": report["reason"]}
            for pid, skills in sorted(quality.items())
            for tag, report in sorted(skills.items()) if report["status"] == "flagged"]


def expert_quality(r: redis.Redis, expert: dict) -> dict:
    """``{"quality": {pid: {skill: report}}, "flagged": [...]}`` of one expert over every
    project."""
    quality = quality_by_expert(r, list_projects(r), [expert])[expert["id"]]
    return {"quality": quality, "flagged": flagged_skills(quality)}


def experts_quality(r: redis.Redis) -> list[dict]:
    """Every declared expert (by id) with its quality and flagged skills, for the page."""
    experts = [load_expert(r, eid) for eid in sorted(r.smembers(K.experts_key()))]
    quality = quality_by_expert(r, list_projects(r), experts)
    return [{"expert": expert, "quality": quality[expert["id"]],
             "flagged": flagged_skills(quality[expert["id"]])} for expert in experts]
