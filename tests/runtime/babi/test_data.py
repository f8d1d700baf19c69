"""The bAbI loader and the seeded splits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime.babi.data import (
    BabiFormatError,
    load_dir,
    load_file,
    parse_lines,
    questions_of,
    split_stories,
)

SAMPLE = [
    "1 Mary moved to the bathroom.",
    "2 John went to the hallway.",
    "3 Where is Mary? \tbathroom\t1",
    "4 Daniel went back to the hallway.",
    "5 Where is Daniel?\thallway\t4",
    "1 Wolves are afraid of mice.",
    "2 Winona is a wolf.",
    "3 What is winona afraid of?\tmouse\t2 1",
]


def test_parses_stories_questions_and_positions() -> None:
    stories = parse_lines(SAMPLE, 1, "qa1_x.txt")
    assert len(stories) == 2
    first = stories[0]
    assert first.sentences == (
        "Mary moved to the bathroom.",
        "John went to the hallway.",
        "Daniel went back to the hallway.",
    )
    assert first.sentence_ids == (1, 2, 4)
    q1, q2 = first.questions
    assert (q1.text, q1.answer, q1.support, q1.position) == ("Where is Mary?", "bathroom", (1,), 2)
    assert (q2.position, q2.line_id) == (3, 5)
    assert stories[1].questions[0].support == (2, 1)


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("two words", "expected 'ID text'"),
        ("7 Where is Mary?\tbathroom\t1", "does not follow"),
        ("2 Where is Mary?\t\t1", "empty question or answer"),
        ("2 Where?\tx\ty\tz", "needs 'question<TAB>answer<TAB>ids'"),
        ("2 Where is Mary?\tbathroom\tone", "must be numbers"),
    ],
)
def test_malformed_line_names_file_and_line(bad_line: str, message: str) -> None:
    with pytest.raises(BabiFormatError, match=rf"qa3_t\.txt:2: .*{message}"):
        parse_lines(["1 Mary moved to the bathroom.", bad_line], 3, "qa3_t.txt")


def test_load_file_rejects_other_names(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("1 x\n")
    with pytest.raises(BabiFormatError, match="not a bAbI file name"):
        load_file(path)


def test_load_dir_reads_train_and_test_files(tmp_path: Path) -> None:
    (tmp_path / "qa1_a_train.txt").write_text("\n".join(SAMPLE[:5]) + "\n")
    (tmp_path / "qa1_a_test.txt").write_text("\n".join(SAMPLE[5:]) + "\n")
    (tmp_path / "README").write_text("not data")
    stories = load_dir(tmp_path)
    assert [s.source for s in stories] == ["qa1_a_test.txt", "qa1_a_train.txt"]
    assert all(s.task == 1 for s in stories)


def _many(n: int, task: int) -> list[str]:
    lines = []
    for i in range(n):
        lines += [f"1 Mary moved to the room{i}.", f"2 Where is Mary?\troom{i}\t1"]
    return lines


def test_splits_are_deterministic_disjoint_and_cover_all() -> None:
    stories = parse_lines(_many(50, 1), 1, "qa1_a.txt") + parse_lines(_many(30, 2), 2, "qa2_b.txt")
    parts = {s: split_stories(stories, s, seed=7) for s in ("train", "heldout", "hidden")}
    ids = {s: {(st.task, st.index) for st in part} for s, part in parts.items()}
    assert not (ids["train"] & ids["heldout"]) and not (ids["heldout"] & ids["hidden"])
    assert len(ids["train"] | ids["heldout"] | ids["hidden"]) == 80
    assert len(ids["heldout"]) == 5 + 3
    assert split_stories(stories, "heldout", seed=7) == parts["heldout"]
    assert split_stories(stories, "heldout", seed=8) != parts["heldout"]
    assert split_stories(stories, "all") == stories


def test_split_of_one_task_does_not_depend_on_other_tasks() -> None:
    one = parse_lines(_many(40, 1), 1, "qa1_a.txt")
    other = parse_lines(_many(20, 5), 5, "qa5_b.txt")
    alone = split_stories(one, "heldout")
    together = [s for s in split_stories(one + other, "heldout") if s.task == 1]
    assert alone == together


def _real_dir() -> Path:
    value = os.environ.get("RSI_BABI_DIR")
    if not value:
        pytest.skip("RSI_BABI_DIR is not set: no real bAbI files to load")
    return Path(value)


def test_real_files_load_with_all_tasks() -> None:
    stories = load_dir(_real_dir())
    counts: dict[int, int] = {}
    for story, _ in questions_of(stories):
        counts[story.task] = counts.get(story.task, 0) + 1
    assert sorted(counts) == list(range(1, 21))
    assert all(n % 1000 == 0 for n in counts.values())
    heldout = split_stories(stories, "heldout")
    n_heldout = sum(len(s.questions) for s in heldout)
    assert 0.05 * sum(counts.values()) < n_heldout < 0.15 * sum(counts.values())
