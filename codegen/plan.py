"""Every decision a state implies, made once in Python: the plan templates write down.

:func:`plan` turns a validated :class:`RSIState` into frozen value objects: the score rows
each expert writes, the words routing rules test, the words with fixed ids, the opposite of
each direction, the evidence a state can use, the kernel knobs with the schema's defaults and
the opcodes the encoder and the experts share. Templates only format these values, and the
runtime (model, screener, kernel tuner) reads the same plan, never a compiled module's
constants.
"""

from __future__ import annotations

from dataclasses import dataclass

from codegen.state import AttentionMechanism, ExpertKind, KernelChoice, RSIState
from codegen.templates.opcodes import (
    COMPOSITE_WIDTH,
    EXPERT_CODES,
    FACT_OPS,
    MAX_COMPOSITE,
    QUESTION_OPS,
)

__all__ = [
    "CHANNELS",
    "COMPOSITE_WIDTH",
    "MAX_COMPOSITE",
    "WORK_ROWS",
    "FACT_OPS",
    "QUESTION_OPS",
    "ScoreRow",
    "ExpertPlan",
    "RoutePlan",
    "DirectionPlan",
    "AssociationPlan",
    "KernelPlan",
    "Plan",
    "plan",
    "kernel_plan",
    "route_words",
]

#: Evidence channels per expert kind: each becomes one score row, weighted in scoring by the
#: expert's weight times the scoring coefficient of the same name.
CHANNELS: dict[ExpertKind, tuple[str, ...]] = {
    ExpertKind.tracking: ("entity_attribute", "ntp_deduction"),
    ExpertKind.deduction: ("entity_attribute", "ntp_deduction"),
    ExpertKind.spatial: ("entity_attribute", "ntp_deduction"),
    ExpertKind.counting: ("entity_attribute", "commonsense"),
    ExpertKind.motivation: ("entity_attribute", "commonsense"),
    ExpertKind.embedding: ("embedding_similarity", "attention", "rag"),
}

#: Rows of the experts' integer work buffer (one int per word each).
WORK_ROWS = 15


@dataclass(frozen=True)
class ScoreRow:
    """One row of evidence: written by ``expert``, weighted by ``coefficient``."""

    expert: str
    expert_index: int
    channel: str
    channel_index: int
    coefficient: float


@dataclass(frozen=True)
class ExpertPlan:
    """One expert: its reasoner (``kind``), base weight and first score row."""

    name: str
    kind: str
    weight: float
    first_row: int

    @property
    def code(self) -> int:
        """The code of ``kind`` in the experts' roster table (``opcodes.EXPERT_CODES``)."""
        return EXPERT_CODES[self.kind]


@dataclass(frozen=True)
class RoutePlan:
    """A routing rule: when every flag in ``flags`` is set, add ``adds`` to the expert weights.

    ``needs`` is ``flags`` as a row of the scoring module's table: 1 per route word the rule
    needs. ``adds`` holds the rule's boost per expert, in the plan's expert order (0.0: none).
    """

    flags: tuple[int, ...]  # route word indices, in the rule's own order
    needs: tuple[int, ...]
    adds: tuple[float, ...]


@dataclass(frozen=True)
class DirectionPlan:
    """A direction word with its unit vector, opposite direction and path-answer word id."""

    index: int
    word: str
    dx: int
    dy: int
    opposite: int
    short_id: int


@dataclass(frozen=True)
class AssociationPlan:
    """A learned association between two fixed word ids."""

    cue_id: int
    answer_id: int
    weight: float


@dataclass(frozen=True)
class KernelPlan:
    """The loop structure of one attention mechanism: tuned, else the schema's default."""

    mechanism: str
    variant: str
    tile: int
    unroll: int
    width: int


@dataclass(frozen=True)
class Plan:
    """Every derived decision of one state."""

    experts: tuple[ExpertPlan, ...]
    rows: tuple[ScoreRow, ...]
    route_words: tuple[str, ...]
    routes: tuple[RoutePlan, ...]
    vocabulary: tuple[str, ...]
    yes_id: int
    no_id: int
    maybe_id: int
    nothing_id: int
    number_ids: tuple[int, ...]  # by number n: the fixed id of its word (-1: not in vocabulary)
    directions: tuple[DirectionPlan, ...]
    associations: tuple[AssociationPlan, ...]
    association_rows: tuple[int, ...]  # the commonsense row of every motivation expert
    uses_similarity: bool
    uses_attention: bool
    kernel: KernelPlan  # of the selected mechanism (architecture.attention)
    kernels: tuple[KernelPlan, ...]  # of every mechanism, for the kernel tooling

    @property
    def n_rows(self) -> int:
        """How many score rows the experts write."""
        return len(self.rows)

    def kernel_for(self, mechanism: str) -> KernelPlan:
        """The knobs the kernel of ``mechanism`` renders with."""
        return next(k for k in self.kernels if k.mechanism == mechanism)

    def fixed_id(self, word: str) -> int:
        """The id ``word`` has in every story (-1: not in the vocabulary)."""
        return self.vocabulary.index(word) if word in self.vocabulary else -1


def plan(state: RSIState) -> Plan:
    """The plan of ``state``: pure, deterministic, and cheap (no rendering)."""
    experts, rows = _experts_and_rows(state)
    words = route_words(state)
    routes = tuple(
        RoutePlan(
            flags=tuple(words.index(w) for w in rule.when_all),
            needs=tuple(int(w in rule.when_all) for w in words),
            adds=tuple(rule.boosts.get(e.name, 0.0) for e in experts),
        )
        for rule in state.routing
    )
    vocabulary = _vocabulary(state)
    fixed = {w: i for i, w in enumerate(vocabulary)}
    embedding = any(
        e.kind is ExpertKind.embedding
        and (e.weight > 0 or any(rule.boosts.get(name, 0) > 0 for rule in state.routing))
        for name, e in state.experts.items()
    )
    return Plan(
        experts=experts,
        rows=rows,
        route_words=words,
        routes=routes,
        vocabulary=vocabulary,
        yes_id=fixed.get("yes", -1),
        no_id=fixed.get("no", -1),
        maybe_id=fixed.get("maybe", -1),
        nothing_id=fixed.get("nothing", -1),
        number_ids=tuple(fixed.get(w, -1) for w in state.lexicon.numbers),
        directions=_directions(state, fixed),
        associations=tuple(
            AssociationPlan(fixed[a.cue], fixed[a.answer], a.weight) for a in state.associations
        ),
        association_rows=tuple(
            r
            for r, row in enumerate(rows)
            if state.experts[row.expert].kind is ExpertKind.motivation and row.channel_index == 1
        ),
        uses_similarity=embedding and state.scoring.embedding_similarity > 0,
        uses_attention=embedding and state.scoring.attention > 0,
        kernel=kernel_plan(state, state.architecture.attention),
        kernels=tuple(kernel_plan(state, m) for m in AttentionMechanism),
    )


def kernel_plan(state: RSIState, mechanism: AttentionMechanism) -> KernelPlan:
    """The knobs ``mechanism`` renders with: ``kernels.tuned``, else :class:`KernelChoice`."""
    choice = state.kernels.tuned.get(mechanism) or KernelChoice()
    return KernelPlan(
        mechanism.value, choice.variant.value, choice.tile, choice.unroll, choice.width
    )


def route_words(state: RSIState) -> tuple[str, ...]:
    """Words the routing rules test, sorted: a query carries one 0/1 flag per word."""
    return tuple(sorted({w for rule in state.routing for w in rule.when_all}))


def _experts_and_rows(state: RSIState) -> tuple[tuple[ExpertPlan, ...], tuple[ScoreRow, ...]]:
    experts: list[ExpertPlan] = []
    rows: list[ScoreRow] = []
    for i, (name, expert) in enumerate(state.experts.items()):
        experts.append(ExpertPlan(name, expert.kind.value, expert.weight, len(rows)))
        for c, channel in enumerate(CHANNELS[expert.kind]):
            coefficient = float(getattr(state.scoring, channel))
            rows.append(ScoreRow(name, i, channel, c, coefficient))
    return tuple(experts), tuple(rows)


def _vocabulary(state: RSIState) -> tuple[str, ...]:
    """Words with fixed ids in every story: the answer vocabulary, then association words."""
    words = [*state.answer_vocabulary]
    for a in state.associations:
        words += [a.cue, a.answer]
    return tuple(dict.fromkeys(words))


def _directions(state: RSIState, fixed: dict[str, int]) -> tuple[DirectionPlan, ...]:
    dirs = state.lexicon.directions
    out = []
    for i, d in enumerate(dirs):
        # The opposite is the nearest direction in the list with the negated vector.
        candidates = [j for j, e in enumerate(dirs) if e.dx == -d.dx and e.dy == -d.dy]
        opposite = min(candidates, key=lambda j: abs(j - i), default=-1)
        out.append(DirectionPlan(i, d.word, d.dx, d.dy, opposite, fixed.get(d.short, -1)))
    return tuple(out)
