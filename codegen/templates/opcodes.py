"""Codes shared by the encoder, the experts and the plan: the one table of each.

A fact row of an encoded story is ``(op, a, b, c, time, sentence, 0, 0)`` with ``op`` a
fact operation; a query row is ``(qop, a, b, c, facts before it, sentences before it, 0, 0)``
with ``qop`` a question operation. ``WANTED`` marks the slot a question asks for and ``ANY``
a slot it leaves open. An expert roster row is ``(kind code, first score row)``.
"""

#: Composite answers (lists, paths) a question may make, and the words each holds.
MAX_COMPOSITE: int = 8
COMPOSITE_WIDTH: int = 4

WANTED: int = -2
ANY: int = -1

F_MOVE: int = 1
F_NOTIN: int = 2
F_EITHER: int = 3
F_TAKE: int = 4
F_DROP: int = 5
F_GIVE: int = 6
F_DIR: int = 7
F_SMALLER: int = 8
F_ISA: int = 9
F_REL: int = 10
F_ATTR: int = 11

Q_UNKNOWN: int = 0
Q_WHERE: int = 1
Q_BEFORE: int = 2
Q_IS_IN: int = 3
Q_COUNT: int = 4
Q_CARRY: int = 5
Q_GIVE: int = 6
Q_DIR: int = 7
Q_DIR_YN: int = 8
Q_SIZE_YN: int = 9
Q_PATH: int = 10
Q_REL: int = 11
Q_ATTR: int = 12
Q_WILL_GO: int = 13
Q_WHY: int = 14

FACT_OPS: tuple[tuple[str, int], ...] = (
    ("F_MOVE", F_MOVE),
    ("F_NOTIN", F_NOTIN),
    ("F_EITHER", F_EITHER),
    ("F_TAKE", F_TAKE),
    ("F_DROP", F_DROP),
    ("F_GIVE", F_GIVE),
    ("F_DIR", F_DIR),
    ("F_SMALLER", F_SMALLER),
    ("F_ISA", F_ISA),
    ("F_REL", F_REL),
    ("F_ATTR", F_ATTR),
)

QUESTION_OPS: tuple[tuple[str, int], ...] = (
    ("Q_UNKNOWN", Q_UNKNOWN),
    ("Q_WHERE", Q_WHERE),
    ("Q_BEFORE", Q_BEFORE),
    ("Q_IS_IN", Q_IS_IN),
    ("Q_COUNT", Q_COUNT),
    ("Q_CARRY", Q_CARRY),
    ("Q_GIVE", Q_GIVE),
    ("Q_DIR", Q_DIR),
    ("Q_DIR_YN", Q_DIR_YN),
    ("Q_SIZE_YN", Q_SIZE_YN),
    ("Q_PATH", Q_PATH),
    ("Q_REL", Q_REL),
    ("Q_ATTR", Q_ATTR),
    ("Q_WILL_GO", Q_WILL_GO),
    ("Q_WHY", Q_WHY),
)

#: Expert kind (``ExpertKind`` value) → the code a roster row names it by.
EXPERT_CODES: dict[str, int] = {
    "tracking": 0,
    "counting": 1,
    "deduction": 2,
    "spatial": 3,
    "motivation": 4,
    "embedding": 5,
}
