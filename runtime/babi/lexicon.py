"""Verb classes learned from the training split's supporting facts.

The encoder needs to know which verbs move someone, take, drop or give something. Those
classes live in the state's lexicon; this module learns them from training questions whose
answer pins down what their supporting sentence did, so a seed lexicon with one verb per
class (the verbs questions are asked with: go, get, drop, give) grows the rest:

- "Where is X?" with one supporting sentence: the verb after X moved X;
- "What is X carrying?" answered "nothing": the verb after X in the last supporting sentence
  dropped something; answered with objects: the verb after X in the last supporting sentence
  naming each object took it;
- "What did X give to Y?" with one supporting sentence: the verb after X gave.

A verb joins a class when it was seen there ``min_count`` times and at least ``min_share`` of
its votes went to that class.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from codegen.state import Lexicon
from runtime.babi.data import Question, Story

__all__ = ["CLASSES", "learn_verb_classes", "with_learned_verbs"]

#: Lexicon fields this module can learn.
CLASSES: tuple[str, ...] = ("move", "take", "drop", "give")

_WORD = re.compile(r"[a-z][a-z0-9]{0,31}")


def learn_verb_classes(
    stories: Iterable[Story], min_count: int = 3, min_share: float = 0.9
) -> dict[str, tuple[str, ...]]:
    """Verbs per class (sorted), learned from supporting sentences of ``stories``."""
    votes: dict[str, Counter[str]] = {name: Counter() for name in CLASSES}
    for story in stories:
        lines = dict(zip(story.sentence_ids, story.sentences, strict=True))
        for question in story.questions:
            for name, verb in _votes(question, lines):
                votes[name][verb] += 1
    totals: Counter[str] = Counter()
    for counter in votes.values():
        totals.update(counter)
    learned: dict[str, tuple[str, ...]] = {}
    for name, counter in votes.items():
        learned[name] = tuple(
            sorted(
                verb
                for verb, n in counter.items()
                if n >= min_count and n / totals[verb] >= min_share and _WORD.fullmatch(verb)
            )
        )
    return learned


def with_learned_verbs(lexicon: Lexicon, learned: dict[str, tuple[str, ...]]) -> Lexicon:
    """``lexicon`` with the learned verbs appended to their classes (seed order kept)."""
    update = {}
    for name in CLASSES:
        known: tuple[str, ...] = getattr(lexicon, name)
        update[name] = known + tuple(v for v in learned.get(name, ()) if v not in known)
    return Lexicon.model_validate_json(lexicon.model_copy(update=update).model_dump_json())


def _votes(question: Question, lines: dict[int, str]) -> list[tuple[str, str]]:
    words = _tokens(question.text)
    support = [_tokens(lines[i]) for i in question.support if i in lines]
    if not support or not words:
        return []
    answer = question.answer.lower()
    if words[:2] == ["where", "is"] and len(words) == 3 and len(support) == 1:
        verb = _verb_after(support[0], words[2])
        return [("move", verb)] if verb and verb != "is" else []
    if words[:2] == ["what", "is"] and len(words) == 4 and words[3] == "carrying":
        who = words[2]
        if answer == "nothing":
            verb = _verb_after(support[-1], who)
            return [("drop", verb)] if verb else []
        out = []
        for thing in answer.split(","):
            naming = [s for s in support if thing in s]
            verb = _verb_after(naming[-1], who) if naming else None
            if verb:
                out.append(("take", verb))
        return out
    if words[:2] == ["what", "did"] and "to" in words and len(support) == 1:
        verb = _verb_after(support[0], words[2])
        return [("give", verb)] if verb else []
    return []


def _verb_after(tokens: list[str], subject: str) -> str | None:
    if subject not in tokens:
        return None
    i = tokens.index(subject) + 1
    while i < len(tokens) and tokens[i] == "and":  # "X and Y went": skip the other subject
        i += 2
    return tokens[i] if i < len(tokens) else None


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())
