"""bAbI files → stories, and deterministic seeded splits by story.

A file is a run of stories; a story restarts when a line's ID is 1. A statement line is
``ID text``; a question line is ``ID question<TAB>answer<TAB>supporting IDs`` (some files put a
space before the first tab). Each question keeps how many statements precede it, so a model
sees exactly the story up to the question.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from codegen.errors import RSIError

__all__ = [
    "SPLITS",
    "Split",
    "BabiFormatError",
    "Question",
    "Story",
    "parse_lines",
    "load_file",
    "load_dir",
    "data_files",
    "split_stories",
    "questions_of",
]

logger = logging.getLogger(__name__)

Split = Literal["train", "heldout", "hidden", "all"]
SPLITS: tuple[Split, ...] = ("train", "heldout", "hidden", "all")

#: Fractions of each task's stories that go to the held-out and hidden splits.
HELDOUT_FRACTION = 0.1
HIDDEN_FRACTION = 0.1

_FILE_TASK = re.compile(r"qa(\d{1,2})_[A-Za-z0-9_-]*\.txt")
_LINE = re.compile(r"(\d+) (.*)")


class BabiFormatError(RSIError):
    """A bAbI file line that does not follow the format (message names file and line)."""


@dataclass(frozen=True)
class Question:
    """One question, positioned after ``position`` statements of its story."""

    text: str
    answer: str
    support: tuple[int, ...]
    position: int
    line_id: int


@dataclass(frozen=True)
class Story:
    """Statements (with their line IDs) and the questions asked along the way."""

    task: int
    source: str
    index: int
    sentences: tuple[str, ...]
    sentence_ids: tuple[int, ...]
    questions: tuple[Question, ...]


def parse_lines(lines: Iterable[str], task: int, source: str) -> list[Story]:
    """Parse bAbI-format ``lines``; raise :class:`BabiFormatError` naming ``source:line``."""
    stories: list[Story] = []
    sentences: list[str] = []
    ids: list[int] = []
    questions: list[Question] = []
    last_id = 0
    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        where = f"{source}:{lineno}"
        match = _LINE.fullmatch(line)
        if match is None:
            raise BabiFormatError(f"{where}: expected 'ID text', got {line[:60]!r}")
        line_id = int(match.group(1))
        if line_id == 1:
            if sentences or questions:
                stories.append(_story(task, source, len(stories), sentences, ids, questions))
            sentences, ids, questions = [], [], []
        elif line_id != last_id + 1:
            raise BabiFormatError(f"{where}: line ID {line_id} does not follow {last_id}")
        last_id = line_id
        body = match.group(2)
        if "\t" in body:
            questions.append(_question(body, len(sentences), line_id, where))
        else:
            if not body.strip():
                raise BabiFormatError(f"{where}: empty statement")
            sentences.append(body.strip())
            ids.append(line_id)
    if sentences or questions:
        stories.append(_story(task, source, len(stories), sentences, ids, questions))
    return stories


def load_file(path: Path) -> list[Story]:
    """Stories of one ``qa{N}_*.txt`` file."""
    match = _FILE_TASK.fullmatch(path.name)
    if match is None:
        raise BabiFormatError(f"{path.name}: not a bAbI file name (qa<N>_<name>.txt)")
    task = int(match.group(1))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BabiFormatError(f"{path.name}: cannot read: {exc}") from None
    return parse_lines(text.splitlines(), task, path.name)


def load_dir(directory: Path) -> list[Story]:
    """Stories of every ``qa*_*.txt`` file in ``directory`` (train and test files alike)."""
    stories: list[Story] = []
    files = data_files(directory)
    for path in files:
        stories.extend(load_file(path))
    logger.debug("loaded %d stories from %d files in %s", len(stories), len(files), directory)
    return stories


def data_files(directory: Path) -> list[Path]:
    """The ``qa<N>_*.txt`` files of ``directory``, sorted; one line if there are none (a
    command checks its ``--data`` with this before it starts any work)."""
    if not directory.is_dir():
        raise BabiFormatError(f"{directory}: not a directory")
    files = sorted(p for p in directory.glob("qa*_*.txt") if _FILE_TASK.fullmatch(p.name))
    if not files:
        raise BabiFormatError(f"{directory}: no qa<N>_*.txt files")
    return files


def split_stories(stories: Sequence[Story], split: Split, seed: int = 0) -> list[Story]:
    """Stories of ``split``: a seeded shuffle by story within each task, then 80/10/10.

    ``all`` is every story. The assignment of a story depends only on the seed, its task and
    the task's story count, so adding another task's file changes no other task's split.
    """
    if split == "all":
        return list(stories)
    by_task: dict[int, list[Story]] = {}
    for story in stories:
        by_task.setdefault(story.task, []).append(story)
    chosen: list[Story] = []
    for task in sorted(by_task):
        group = by_task[task]
        order = list(range(len(group)))
        random.Random(f"babi-split:{seed}:{task}").shuffle(order)
        n_heldout = max(1, round(len(group) * HELDOUT_FRACTION)) if len(group) >= 3 else 0
        n_hidden = max(1, round(len(group) * HIDDEN_FRACTION)) if len(group) >= 3 else 0
        if split == "heldout":
            picked = order[:n_heldout]
        elif split == "hidden":
            picked = order[n_heldout : n_heldout + n_hidden]
        else:
            picked = order[n_heldout + n_hidden :]
        chosen.extend(group[i] for i in sorted(picked))
    return chosen


def questions_of(stories: Iterable[Story]) -> Iterator[tuple[Story, Question]]:
    """Every (story, question) pair in order."""
    for story in stories:
        for question in story.questions:
            yield story, question


def _question(body: str, position: int, line_id: int, where: str) -> Question:
    parts = body.split("\t")
    if len(parts) not in (2, 3):
        raise BabiFormatError(f"{where}: a question line needs 'question<TAB>answer<TAB>ids'")
    text, answer = parts[0].strip(), parts[1].strip()
    if not text or not answer:
        raise BabiFormatError(f"{where}: empty question or answer")
    support_text = parts[2].strip() if len(parts) == 3 else ""
    if support_text and not all(tok.isdigit() for tok in support_text.split()):
        raise BabiFormatError(f"{where}: supporting fact IDs must be numbers: {support_text!r}")
    support = tuple(int(tok) for tok in support_text.split())
    return Question(text, answer, support, position, line_id)


def _story(
    task: int,
    source: str,
    index: int,
    sentences: list[str],
    ids: list[int],
    questions: list[Question],
) -> Story:
    return Story(task, source, index, tuple(sentences), tuple(ids), tuple(questions))
