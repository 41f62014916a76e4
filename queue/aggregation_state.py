"""What the Dawid–Skene passes of ``queue/reaggregate.py`` keep and read back: the
project's running sums (``State``, one JSON string), the finished items as the EM sees them
(``Row``, with the share of the sums stored in the item's hash), and the (expert, skill)
cells of a pass as array positions (``Cells``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import redis

from taskrank.queue import keys as K
from taskrank.queue.skills import GENERAL

EVERY_ITEM = "*"  # the refresh source of a class-share move: every counted item
CHUNK = 10_000  # items per pipeline of a full pass
STATE_FORMAT = 1


@dataclass(slots=True)
class Row:
    """One finished item with two labels or more, as Dawid–Skene sees it."""

    iid: str
    votes: list[tuple[str, str]]  # (expert, label) in the order given
    label: str | None  # its aggregated label now
    gold: str | None
    tag: str  # its first skill (GENERAL when untagged)
    counted: int = 0  # labels its stored share covers (0: none stored)
    counted_tag: str = ""  # the skill they were counted under
    share: list[float] | None = None  # its posterior when counted


@dataclass
class State:
    """What the project's passes learned: running sums and the refresh in progress."""

    labels: list[str]
    n: int = 0  # items counted
    mass: list[float] = field(default_factory=list)  # posterior mass per class
    prevalence: list[float] | None = None  # class shares the items were last decided at
    # "expert:skill" -> [soft right labels, labels, accuracy its items were last decided at]
    cells: dict[str, list[float]] = field(default_factory=dict)
    # source -> [next offset in its list, 1 when it moved again since the refresh began]
    refresh: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mass = self.mass or [0.0] * len(self.labels)

    def to_json(self) -> str:
        return json.dumps({"format": STATE_FORMAT, **self.__dict__})


def load_state(r: redis.Redis, project: dict) -> State | None:
    """The stored state; None without one, or for one of another format or other labels."""
    raw = r.get(K.aggregation_state_key(project["id"]))
    if raw is None:
        return None
    stored = json.loads(raw)
    if stored.pop("format", None) != STATE_FORMAT or stored["labels"] != project["labels"]:
        return None
    return State(**stored)


def source_key(pid: str, source: str) -> str:
    """The list a refresh reads: the items of an "expert:skill", or every item."""
    if source == EVERY_ITEM:
        return K.aggregation_items_key(pid)
    eid, tag = source.split(":")
    return K.aggregation_index_key(pid, eid, tag)


def read_rows(r: redis.Redis, pid: str, iids: list[str], fresh: bool = False) -> list[Row]:
    """The items among ``iids`` with two labels or more; ``fresh``: ignore stored shares."""
    rows = []
    for start in range(0, len(iids), CHUNK):
        chunk = iids[start:start + CHUNK]
        pipe = r.pipeline(transaction=False)
        for iid in chunk:
            pipe.lrange(K.item_labels_key(pid, iid), 0, -1)
            pipe.hmget(K.item_key(pid, iid), "al", "g", "s", "ds")
        replies = pipe.execute()
        rows += [_row(iid, entries, *fields, None if fresh else record)
                 for iid, entries, (*fields, record) in zip(chunk, replies[::2], replies[1::2],
                                                            strict=True)
                 if len(entries) >= 2]
    return rows


def _row(iid: str, entries: list[str], label: str | None, gold: str | None,
         tags: str | None, record: str | None) -> Row:
    row = Row(iid, [tuple(entry.split("\t", 1)) for entry in entries], label, gold or None,
              tags.split(",")[0] if tags else GENERAL)
    if record:
        counted, row.counted_tag, share = record.split(";")
        row.counted, row.share = int(counted), [float(p) for p in share.split(",")]
    return row


def share_record(row: Row, posterior: np.ndarray) -> str:
    """The item's share as stored: exactly the rounded posterior the sums hold."""
    return f"{len(row.votes)};{row.tag};{','.join(repr(float(p)) for p in posterior)}"


@dataclass
class Cells:
    """The (expert, skill) cells of a pass as array positions."""

    experts: dict[str, int]
    tags: dict[str, int]

    @classmethod
    def of(cls, state: State, rows: list[Row]) -> Cells:
        names = set(state.cells)
        for row in rows:
            names |= {f"{eid}:{row.tag}" for eid, _ in row.votes}
            names |= {f"{eid}:{row.counted_tag}" for eid, _ in row.votes[:row.counted]}
        pairs = [name.split(":") for name in sorted(names)]
        return cls({eid: i for i, eid in enumerate(sorted({e for e, _ in pairs}))},
                   {tag: i for i, tag in enumerate(sorted({t for _, t in pairs}))})

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.experts), len(self.tags)

    def triples(self, rows: list[Row], labels: dict[str, int], counted: bool) -> tuple:
        """(item, expert, label, skill) arrays of the rows' labels: all of them, or
        (``counted``) those their stored shares cover, under the skill they had then."""
        out = [], [], [], []
        for index, row in enumerate(rows):
            votes, tag = (row.votes[:row.counted], row.counted_tag) if counted else (
                row.votes, row.tag)
            for eid, label in votes:
                for column, value in zip(out, (index, self.experts[eid], labels[label],
                                               self.tags[tag]), strict=True):
                    column.append(value)
        return tuple(np.array(column, dtype=np.intp) for column in out)
