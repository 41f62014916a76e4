"""Label Studio's JSON, read and written: its tasks as taskrank items, its choices
annotations as labels, taskrank's predictions as Label Studio predictions.

No Redis here: the ML backend (``queue/label_studio_backend.py``, ``server/label_studio.py``)
and ``taskrank ingest`` of a Label Studio export share these rules.

- A task's item id is its ``data.taskrank_id`` when it has one, else its Label Studio task id.
- ``data.features`` (a list of numbers), when present, becomes the item's features; the whole
  ``data`` object is the item's payload.
- A Label Studio prediction is one chosen class with a ``score``: it becomes the probability
  row that gives the chosen label ``score`` and shares ``1 - score`` evenly over the others.
  Its ``model_version`` names the model (predictions taskrank made itself are skipped).
- A prediction taskrank returns has ``score = 1 - priority``: Label Studio serves the task of
  lowest score first (uncertainty sampling) and sorts "Prediction score" ascending, so its
  order is taskrank's priority order; with the default strategy the score is the margin
  between the two likeliest labels.
"""

from __future__ import annotations

import functools
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from taskrank.queue.validation import ID_PATTERN

ITEM_ID_KEY = "taskrank_id"
FEATURES_KEY = "features"
MODEL_VERSION_PREFIX = "taskrank-"
_NOT_ID = re.compile(r"[^A-Za-z0-9._-]+")


class NotUsable(ValueError):
    """One task, prediction or annotation cannot be used; the message says why."""


@dataclass(frozen=True)
class ChoicesControl:
    """The ``<Choices>`` tag of a labeling config whose choices are the project's labels."""

    from_name: str
    to_name: str
    choices: tuple[str, ...]


@functools.lru_cache(maxsize=64)
def choices_control(label_config: str, labels: tuple[str, ...]) -> ChoicesControl:
    """The ``<Choices>`` control whose values are exactly ``labels`` (in any order)."""
    try:
        root = ET.fromstring(label_config or "")
    except ET.ParseError as error:
        raise NotUsable(f"the labeling config is not valid XML: {error}") from None
    found = []
    for tag in root.iter():
        if tag.tag.lower() != "choices":
            continue
        values = tuple(choice.get("value", "") for choice in tag.iter()
                       if choice.tag.lower() == "choice")
        if set(values) == set(labels) and len(values) == len(labels):
            return ChoicesControl(tag.get("name", ""), tag.get("toName", ""), values)
        found.append(f"{tag.get('name')!r} {list(values)}")
    detail = f"its Choices: {'; '.join(found)}" if found else "it has no <Choices> tag"
    raise NotUsable(f"the labeling config needs a <Choices> tag whose values are the "
                    f"project's labels {list(labels)}; {detail}")


def task_item_id(task: dict) -> str:
    """The taskrank item id of a Label Studio task (``data.taskrank_id``, else its id)."""
    data = task.get("data")
    given = data.get(ITEM_ID_KEY) if isinstance(data, dict) else None
    if given is not None:
        if not isinstance(given, str) or not ID_PATTERN.fullmatch(given):
            raise NotUsable(f"data.{ITEM_ID_KEY} must be 1-128 characters of A-Z a-z 0-9 . _ -,"
                            f" got {given!r}"[:200])
        return given
    task_id = task.get("id")
    if isinstance(task_id, bool) or not isinstance(task_id, int | str) or not ID_PATTERN.fullmatch(
            str(task_id)):
        raise NotUsable(f"a task needs an 'id' (Label Studio's) or data.{ITEM_ID_KEY}, "
                        f"got id {task_id!r}"[:200])
    return str(task_id)


def task_item(task: object, labels: list[str]) -> dict:
    """The item (as ``POST /items`` takes it) of one Label Studio task."""
    if not isinstance(task, dict):
        raise NotUsable(f"a task must be a JSON object, got {type(task).__name__}")
    data = task.get("data")
    if not isinstance(data, dict):
        raise NotUsable("a task needs a 'data' object")
    item: dict = {"id": task_item_id(task), "payload": data}
    if data.get(FEATURES_KEY) is not None:
        item["features"] = data[FEATURES_KEY]
    predictions = task_predictions(task.get("predictions") or [], labels)
    if predictions:
        item["predictions"] = predictions
    gold = ground_truth(task.get("annotations") or [], labels)
    if gold is not None:
        item["gold"] = gold
    if "features" not in item and "predictions" not in item:
        raise NotUsable(f"a task needs data.{FEATURES_KEY} (numbers) or a prediction that "
                        "chooses one of the project's labels with a score")
    return item


def task_predictions(predictions: object, labels: list[str]) -> dict[str, list[float]]:
    """Model name -> probability row for each usable Label Studio prediction of a task."""
    if not isinstance(predictions, list):
        raise NotUsable("a task's 'predictions' must be a list")
    rows: dict[str, list[float]] = {}
    for index, prediction in enumerate(predictions):
        if not isinstance(prediction, dict):
            raise NotUsable(f"predictions[{index}] must be an object")
        version = str(prediction.get("model_version") or "")
        if version.startswith(MODEL_VERSION_PREFIX):
            continue  # taskrank's own answer to an earlier predict
        row = prediction_row(prediction, labels, f"predictions[{index}]")
        if row is not None:
            rows[_model_name(version, index)] = row
    return rows


def prediction_row(prediction: dict, labels: list[str], where: str) -> list[float] | None:
    """The probability row of one prediction; None when it chooses nothing."""
    region = _choices_region(prediction.get("result") or [], where)
    if region is None:
        return None
    label = _one_choice(region, labels, where)
    score = region.get("score", prediction.get("score"))
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        raise NotUsable(f"{where} must have a score from 0 to 1 (the chosen label's "
                        f"probability), got {score!r}"[:200])
    rest = round((1.0 - score) / (len(labels) - 1), 12)
    return [float(score) if name == label else rest for name in labels]


def annotation_label(annotation: dict, labels: list[str]) -> str:
    """The label one Label Studio annotation chose (NotUsable: skipped or none chosen)."""
    if annotation.get("was_cancelled"):
        raise NotUsable("the annotation was skipped (was_cancelled)")
    region = _choices_region(annotation.get("result") or [], "the annotation")
    if region is None:
        raise NotUsable("the annotation chooses no label (no 'choices' result)")
    return _one_choice(region, labels, "the annotation")


def ground_truth(annotations: object, labels: list[str]) -> str | None:
    """The label of a task's ground-truth annotation, if it has one (becomes ``gold``)."""
    if not isinstance(annotations, list):
        raise NotUsable("a task's 'annotations' must be a list")
    for annotation in annotations:
        if isinstance(annotation, dict) and annotation.get("ground_truth"):
            return annotation_label(annotation, labels)
    return None


def ls_prediction(control: ChoicesControl, proba: list[float] | None, labels: list[str],
                  priority: float | None, model_version: str) -> dict:
    """One task's answer to ``/predict``: the likeliest label, ``score = 1 - priority``."""
    result = []
    if proba is not None:
        best = max(range(len(labels)), key=proba.__getitem__)
        result.append({"from_name": control.from_name, "to_name": control.to_name,
                       "type": "choices", "value": {"choices": [labels[best]]},
                       "score": round(float(proba[best]), 6)})
    return {"result": result, "score": ls_score(priority), "model_version": model_version}


def ls_score(priority: float | None) -> float | None:
    """The Label Studio prediction score of a priority: lower score, labeled sooner."""
    return None if priority is None else round(1.0 - float(priority), 12)


def model_version_name(model_version: int, strategy_version: int) -> str:
    """What Label Studio sees as the model version: it changes whenever the ranking does
    (a new model or a new strategy), so Label Studio fetches predictions again."""
    return f"{MODEL_VERSION_PREFIX}v{model_version}-s{strategy_version}"


def _choices_region(result: object, where: str) -> dict | None:
    if not isinstance(result, list):
        raise NotUsable(f"{where}: 'result' must be a list")
    for region in result:
        if isinstance(region, dict) and str(region.get("type", "")).lower() == "choices":
            return region
    return None


def _one_choice(region: dict, labels: list[str], where: str) -> str:
    value = region.get("value")
    chosen = value.get("choices") if isinstance(value, dict) else None
    if not isinstance(chosen, list) or len(chosen) != 1:
        raise NotUsable(f"{where} must choose exactly one label, got {chosen!r}"[:200])
    if chosen[0] not in labels:
        raise NotUsable(f"{where} chose {chosen[0]!r}, not one of the project's labels "
                        f"{labels}"[:300])
    return chosen[0]


def _model_name(version: str, index: int) -> str:
    name = _NOT_ID.sub("-", version).strip(".-")[:128]
    return name if name and ID_PATTERN.fullmatch(name) else f"ls-prediction-{index}"
