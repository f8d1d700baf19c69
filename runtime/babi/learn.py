"""Knowledge learned from the training split only: answer vocabulary and associations.

The vocabulary is every training answer word that its story does not contain (yes/no/maybe,
numbers, directions, "nothing", singular kinds, places people are drawn to): a candidate the
story cannot supply. Associations pair an attribute a person has ("hungry") with where such a
person is said to go ("kitchen"), counted over training questions the experts parse as "where
will X go".
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from codegen.plan import FACT_OPS, QUESTION_OPS
from codegen.state import Association, RSIState
from runtime.babi.data import Story
from runtime.babi.model import BabiModel

__all__ = ["learn_vocabulary", "learn_associations", "with_knowledge"]

_WORD = re.compile(r"[a-z][a-z0-9]{0,31}")
#: Question operation and fact operations of the generated encoder (see encoding.py.j2).
_Q_WILL_GO = dict(QUESTION_OPS)["Q_WILL_GO"]
_F_ATTR = dict(FACT_OPS)["F_ATTR"]


def learn_vocabulary(stories: Iterable[Story], limit: int = 512) -> tuple[str, ...]:
    """Answer words of ``stories`` absent from their story text, most frequent first."""
    counts: Counter[str] = Counter()
    for story in stories:
        for question in story.questions:
            seen = " ".join(story.sentences[: question.position]).lower()
            present = set(re.findall(r"[a-z0-9]+", seen))
            for word in question.answer.lower().split(","):
                if _WORD.fullmatch(word) and word not in present:
                    counts[word] += 1
    ranked = sorted(counts, key=lambda w: (-counts[w], w))
    return tuple(ranked[:limit])


def learn_associations(
    model: BabiModel, stories: Sequence[Story], min_count: int = 2, min_share: float = 0.5
) -> tuple[Association, ...]:
    """(attribute → answer) pairs behind training "where will X go" questions.

    A pair is kept when it was seen ``min_count`` times and is at least ``min_share`` of its
    attribute's answers; its weight is that share.
    """
    pairs: Counter[tuple[str, str]] = Counter()
    for story in stories:
        enc = model.encode(story.sentences, [(q.text, q.position) for q in story.questions])
        for index, question in enumerate(story.questions):
            query = enc.queries[index]
            if int(query[0]) != _Q_WILL_GO or int(query[1]) < 0:
                continue
            cue_id = _last_attribute(enc.facts, int(query[4]), int(query[1]))
            if cue_id >= 0:
                pairs[(str(enc.words[cue_id]).lower(), question.answer.lower())] += 1
    by_cue: Counter[str] = Counter()
    for (cue, _), n in pairs.items():
        by_cue[cue] += n
    kept = []
    for (cue, answer), n in sorted(pairs.items()):
        share = n / by_cue[cue]
        if (
            n >= min_count
            and share >= min_share
            and _WORD.fullmatch(cue)
            and _WORD.fullmatch(answer)
        ):
            kept.append(Association(cue=cue, answer=answer, weight=round(share, 4)))
    return tuple(kept[:256])


def with_knowledge(
    state: RSIState, vocabulary: tuple[str, ...], associations: tuple[Association, ...]
) -> RSIState:
    """``state`` with a learned vocabulary and associations (validated again)."""
    data = state.model_dump(mode="json")
    data["answer_vocabulary"] = list(vocabulary)
    data["associations"] = [a.model_dump(mode="json") for a in associations]
    return RSIState.model_validate_json(json.dumps(data))


def _last_attribute(facts: object, n_facts: int, who: int) -> int:
    rows = facts  # numpy int32 array (n, 8)
    for i in range(n_facts - 1, -1, -1):
        row = rows[i]  # type: ignore[index]
        if int(row[0]) == _F_ATTR and int(row[1]) == who:
            return int(row[2])
    return -1
