"""An embedded bAbI-style generator: fresh stories for 12 task families from a seed.

The stories follow the bAbI text format and task numbering (1, 2, 6, 7, 8, 11, 12, 15, 16,
17, 18, 19), so ``rsi eval`` runs with no downloaded data and new hidden data can be made on
demand. Answers are computed by a small world simulation, not by the model.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from pathlib import Path

from runtime.babi.data import Story, parse_lines

__all__ = ["TASKS", "generate_task", "generate_stories", "write_dir"]

_PEOPLE = ("Mary", "John", "Sandra", "Daniel")
_PRONOUN = {"Mary": "she", "Sandra": "she", "John": "he", "Daniel": "he"}
_PLACES = ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office")
_OBJECTS = ("football", "apple", "milk")
_MOVES = ("moved to", "went to", "journeyed to", "travelled to", "went back to")
_TAKES = ("picked up", "got", "took", "grabbed")
_DROPS = ("dropped", "discarded", "put down", "left")
_NUMBERS = ("none", "one", "two", "three")
_ANIMALS = {"mouse": "mice", "cat": "cats", "wolf": "wolves", "sheep": "sheep"}
_NAMES = ("Gertrude", "Winona", "Emily", "Jessica", "Lily", "Bernhard", "Greg", "Julius")
_KINDS = ("frog", "lion", "swan", "rhino")
_COLORS = ("green", "white", "yellow", "gray")
_SHAPES = ("red square", "blue square", "red sphere", "pink rectangle", "triangle")
_POSITIONS = {
    "above": (0, 1),
    "below": (0, -1),
    "to the left of": (-1, 0),
    "to the right of": (1, 0),
}
_SIZES = ("chocolate", "box of chocolates", "box", "suitcase", "chest", "container")
_COMPASS = {"north": (0, 1, "n"), "south": (0, -1, "s"), "east": (1, 0, "e"), "west": (-1, 0, "w")}

Lines = list[str]


def generate_task(task: int, n_stories: int, rng: random.Random) -> Lines:
    """bAbI-format lines of ``n_stories`` stories of ``task`` (one of :data:`TASKS`)."""
    make = TASKS[task]
    lines: Lines = []
    for _ in range(n_stories):
        lines.extend(make(rng))
    return lines


def generate_stories(seed: int = 0, stories_per_task: int = 60) -> list[Story]:
    """Stories of every embedded task family, reproducible from ``seed``."""
    stories: list[Story] = []
    for task in sorted(TASKS):
        rng = random.Random(f"babi-gen:{seed}:{task}")
        lines = generate_task(task, stories_per_task, rng)
        stories.extend(parse_lines(lines, task, f"qa{task}_generated.txt"))
    return stories


def write_dir(directory: Path, seed: int = 0, stories_per_task: int = 60) -> list[Path]:
    """Write one ``qa{N}_generated.txt`` file per task family into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for task in sorted(TASKS):
        rng = random.Random(f"babi-gen:{seed}:{task}")
        path = directory / f"qa{task}_generated.txt"
        path.write_text("\n".join(generate_task(task, stories_per_task, rng)) + "\n")
        paths.append(path)
    return paths


class _Story:
    """Numbered lines of one story under construction."""

    def __init__(self) -> None:
        self.lines: Lines = []

    def say(self, text: str) -> None:
        self.lines.append(f"{len(self.lines) + 1} {text}")

    def ask(self, question: str, answer: str) -> None:
        # Supporting-fact IDs are not modelled; "1" keeps the format valid.
        self.lines.append(f"{len(self.lines) + 1} {question}\t{answer}\t1")


def _moves_story(rng: random.Random, ask: Callable[[_Story, dict[str, str]], None]) -> Lines:
    story = _Story()
    where: dict[str, str] = {}
    for _ in range(5):
        for _ in range(2):
            who = rng.choice(_PEOPLE)
            where[who] = rng.choice(_PLACES)
            story.say(f"{who} {rng.choice(_MOVES)} the {where[who]}.")
        ask(story, where)
    return story.lines


def _task1(rng: random.Random) -> Lines:
    def ask(story: _Story, where: dict[str, str]) -> None:
        who = rng.choice(sorted(where))
        story.ask(f"Where is {who}?", where[who])

    return _moves_story(rng, ask)


def _task6(rng: random.Random) -> Lines:
    def ask(story: _Story, where: dict[str, str]) -> None:
        who = rng.choice(sorted(where))
        place = where[who] if rng.random() < 0.5 else rng.choice(_PLACES)
        story.ask(f"Is {who} in the {place}?", "yes" if place == where[who] else "no")

    return _moves_story(rng, ask)


def _task11(rng: random.Random) -> Lines:
    story = _Story()
    where: dict[str, str] = {}
    for _ in range(5):
        who = rng.choice(_PEOPLE)
        first, second = rng.sample(_PLACES, 2)
        story.say(f"{who} {rng.choice(_MOVES)} the {first}.")
        lead = rng.choice(("Then", "After that", "Afterwards", "Following that"))
        story.say(f"{lead} {_PRONOUN[who]} {rng.choice(_MOVES)} the {second}.")
        where[who] = second
        asked = rng.choice(sorted(where))
        story.ask(f"Where is {asked}?", where[asked])
    return story.lines


def _task12(rng: random.Random) -> Lines:
    story = _Story()
    where: dict[str, str] = {}
    for _ in range(5):
        for _ in range(2):
            a, b = rng.sample(_PEOPLE, 2)
            place = rng.choice(_PLACES)
            where[a] = where[b] = place
            story.say(f"{a} and {b} {rng.choice(_MOVES)} the {place}.")
        asked = rng.choice(sorted(where))
        story.ask(f"Where is {asked}?", where[asked])
    return story.lines


class _World:
    """People moving and carrying objects (for tasks 2, 7 and 8)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.where: dict[str, str] = {}
        self.holder: dict[str, str] = {}
        self.obj_at: dict[str, str] = {}
        self.first: dict[str, int] = {}
        self.first_by: dict[str, str] = {}
        self.clock = 0

    def step(self, story: _Story) -> None:
        rng = self.rng
        self.clock += 1
        placed = sorted(self.where)
        roll = rng.random()
        if roll < 0.5 or not placed:
            who = rng.choice(_PEOPLE)
            self.where[who] = rng.choice(_PLACES)
            for obj, holder in self.holder.items():
                if holder == who:
                    self.obj_at[obj] = self.where[who]
            story.say(f"{who} {rng.choice(_MOVES)} the {self.where[who]}.")
            return
        who = rng.choice(placed)
        carried = sorted(o for o, h in self.holder.items() if h == who)
        free = sorted(o for o in _OBJECTS if o not in self.holder)
        if roll < 0.8 and free:
            obj = rng.choice(free)
            self.holder[obj] = who
            self.obj_at[obj] = self.where[who]
            if self.first_by.get(obj) != who:
                self.first[obj], self.first_by[obj] = self.clock, who
            story.say(f"{who} {rng.choice(_TAKES)} the {obj} there.")
        elif carried:
            obj = rng.choice(carried)
            del self.holder[obj]
            story.say(f"{who} {rng.choice(_DROPS)} the {obj}.")

    def carried_by(self, who: str) -> list[str]:
        return sorted((o for o, h in self.holder.items() if h == who), key=self.first.__getitem__)


def _world_story(rng: random.Random, ask: Callable[[_Story, _World], bool]) -> Lines:
    story = _Story()
    world = _World(rng)
    asked = 0
    while asked < 5 and len(story.lines) < 60:
        world.step(story)
        if len(story.lines) >= 3 and ask(story, world):
            asked += 1
    return story.lines


def _task2(rng: random.Random) -> Lines:
    def ask(story: _Story, world: _World) -> bool:
        if not world.obj_at or rng.random() < 0.5:
            return False
        obj = rng.choice(sorted(world.obj_at))
        story.ask(f"Where is the {obj}?", world.obj_at[obj])
        return True

    return _world_story(rng, ask)


def _task7(rng: random.Random) -> Lines:
    def ask(story: _Story, world: _World) -> bool:
        if not world.where or rng.random() < 0.5:
            return False
        who = rng.choice(sorted(world.where))
        story.ask(f"How many objects is {who} carrying?", _NUMBERS[len(world.carried_by(who))])
        return True

    return _world_story(rng, ask)


def _task8(rng: random.Random) -> Lines:
    def ask(story: _Story, world: _World) -> bool:
        if not world.where or rng.random() < 0.5:
            return False
        who = rng.choice(sorted(world.where))
        story.ask(f"What is {who} carrying?", ",".join(world.carried_by(who)) or "nothing")
        return True

    return _world_story(rng, ask)


def _task15(rng: random.Random) -> Lines:
    story = _Story()
    kinds = list(_ANIMALS)
    for kind in kinds:
        story.say(f"{_ANIMALS[kind].capitalize()} are afraid of {_ANIMALS[rng.choice(kinds)]}.")
    fears = {}
    for line in story.lines:
        words = line.split()
        plural_subject, plural_object = words[1].lower(), words[-1].rstrip(".")
        singular = {v: k for k, v in _ANIMALS.items()}
        fears[singular[plural_subject]] = singular[plural_object]
    names = rng.sample(_NAMES, 4)
    kind_of = {name: rng.choice(kinds) for name in names}
    for name in names:
        story.say(f"{name} is a {kind_of[name]}.")
    for name in rng.sample(names, 3):
        story.ask(f"What is {name.lower()} afraid of?", fears[kind_of[name]])
    return story.lines


def _task16(rng: random.Random) -> Lines:
    story = _Story()
    names = rng.sample(_NAMES, 5)
    kinds = rng.sample(_KINDS, 2)
    color = {kind: rng.choice(_COLORS) for kind in kinds}
    for name in names[:4]:
        kind = kinds[names.index(name) % 2]
        story.say(f"{name} is a {kind}.")
        story.say(f"{name} is {color[kind]}.")
    kind = rng.choice(kinds)
    story.say(f"{names[4]} is a {kind}.")
    story.ask(f"What color is {names[4]}?", color[kind])
    return story.lines


def _task17(rng: random.Random) -> Lines:
    story = _Story()
    a, b, c = rng.sample(_SHAPES, 3)
    rel1, rel2 = rng.choice(list(_POSITIONS)), rng.choice(list(_POSITIONS))
    story.say(f"The {a} is {rel1} the {b}.")
    story.say(f"The {c} is {rel2} the {a}.")
    pos = {b: (0, 0)}
    pos[a] = _POSITIONS[rel1]
    pos[c] = (pos[a][0] + _POSITIONS[rel2][0], pos[a][1] + _POSITIONS[rel2][1])
    for _ in range(4):
        x, y = rng.sample([b, c], 2)
        rel = rng.choice(list(_POSITIONS))
        dx, dy = _POSITIONS[rel]
        offset = (pos[x][0] - pos[y][0]) * dx + (pos[x][1] - pos[y][1]) * dy
        story.ask(f"Is the {x} {rel} the {y}?", "yes" if offset > 0 else "no")
    return story.lines


def _task18(rng: random.Random) -> Lines:
    story = _Story()
    order = rng.sample(_SIZES, 4)  # smallest first
    for small, big in itertools.pairwise(order):
        if rng.random() < 0.5:
            story.say(f"The {small} fits inside the {big}.")
        else:
            story.say(f"The {big} is bigger than the {small}.")
    for _ in range(4):
        x, y = rng.sample(order, 2)
        if rng.random() < 0.5:
            story.ask(
                f"Does the {x} fit in the {y}?", "yes" if order.index(x) < order.index(y) else "no"
            )
        else:
            story.ask(
                f"Is the {x} bigger than the {y}?",
                "yes" if order.index(x) > order.index(y) else "no",
            )
    return story.lines


def _task19(rng: random.Random) -> Lines:
    story = _Story()
    places = rng.sample(_PLACES, 3)
    steps = [rng.choice(list(_COMPASS)), rng.choice(list(_COMPASS))]
    while _COMPASS[steps[1]][:2] == tuple(-v for v in _COMPASS[steps[0]][:2]):
        steps[1] = rng.choice(list(_COMPASS))
    facts = [
        f"The {places[1]} is {steps[0]} of the {places[0]}.",
        f"The {places[2]} is {steps[1]} of the {places[1]}.",
    ]
    rng.shuffle(facts)
    for fact in facts:
        story.say(fact)
    story.ask(
        f"How do you go from the {places[0]} to the {places[2]}?",
        ",".join(_COMPASS[s][2] for s in steps),
    )
    return story.lines


TASKS: dict[int, Callable[[random.Random], Lines]] = {
    1: _task1,
    2: _task2,
    6: _task6,
    7: _task7,
    8: _task8,
    11: _task11,
    12: _task12,
    15: _task15,
    16: _task16,
    17: _task17,
    18: _task18,
    19: _task19,
}
