"""The schema of ``rsi_state.json`` and its all-or-nothing load and atomic save.

The state file is code-generation input: every value in it reaches a template. So every field
is typed and bounded, names are plain identifiers, numbers are finite, unknown fields are
errors, and nothing is rendered until the whole file has validated.
"""

from __future__ import annotations

import json
import keyword
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from codegen.errors import StateError
from codegen.fsutil import MAX_STATE_BYTES, atomic_write, read_state_file
from codegen.locking import project_lock

__all__ = [
    "SCHEMA_VERSION",
    "MAX_STATE_BYTES",
    "AttentionMechanism",
    "ExpertKind",
    "Expert",
    "ScoringCoefficients",
    "RoutingRule",
    "Direction",
    "Lexicon",
    "Association",
    "ArchitectureParams",
    "KernelVariant",
    "KernelChoice",
    "KernelParams",
    "BenchmarkSummary",
    "SafetyPolicy",
    "RSIState",
    "parse_state",
    "load_state",
    "read_state_file",
    "save_state",
    "dump_state",
    "state_sha256",
]

SCHEMA_VERSION = 1
MAX_JSON_DEPTH = 32
_MAX_INT_DIGITS = 19

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}", re.ASCII)
_WORD = re.compile(r"[a-z][a-z0-9]{0,31}", re.ASCII)
# C keywords and names Cython reserves: a generated class or constant must never collide.
_RESERVED = frozenset(
    "auto break case char const continue default do double else enum extern float for goto "
    "if inline int long register restrict return short signed sizeof static struct switch "
    "typedef union unsigned void volatile while cdef cpdef cimport ctypedef cython NULL "
    "object self cls".split()
)


def _identifier(value: str) -> str:
    if not _IDENT.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*, at most 48 chars)"
        )
    if keyword.iskeyword(value) or keyword.issoftkeyword(value) or value in _RESERVED:
        raise ValueError(f"{value!r} is a reserved word")
    if value.startswith("__") or value.endswith("__"):
        raise ValueError(f"{value!r} is a dunder name")
    return value


def _word(value: str) -> str:
    if not _WORD.fullmatch(value):
        raise ValueError(f"{value!r} is not a lowercase word ([a-z][a-z0-9]*, at most 32 chars)")
    return value


# The schema states the patterns the validators enforce (reserved words are listed by name).
Identifier = Annotated[
    str,
    AfterValidator(_identifier),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": f"^(?!__)(?!.*__$){_IDENT.pattern}$",
            "not": {"enum": sorted(_RESERVED | set(keyword.kwlist) | set(keyword.softkwlist))},
            "description": "a plain identifier: no keyword, C/Cython reserved word or dunder",
        }
    ),
]
Word = Annotated[
    str,
    AfterValidator(_word),
    WithJsonSchema({"type": "string", "pattern": f"^{_WORD.pattern}$"}),
]


def Bounded(lo: float, hi: float, default: float) -> Any:
    """A finite float field with inclusive bounds."""
    return Field(default=default, ge=lo, le=hi, allow_inf_nan=False)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class AttentionMechanism(StrEnum):
    """Attention kernels the generator can emit."""

    sdpa = "sdpa"
    multihead = "multihead"
    linear = "linear"
    flash = "flash"
    local_global = "local_global"
    moe = "moe"
    hyperbolic = "hyperbolic"
    differential = "differential"
    mamba = "mamba"


class ExpertKind(StrEnum):
    """Reasoner families; each kind selects one code block in the experts template."""

    tracking = "tracking"
    deduction = "deduction"
    spatial = "spatial"
    counting = "counting"
    motivation = "motivation"
    embedding = "embedding"


class Expert(_Strict):
    """One generated expert class."""

    kind: ExpertKind
    weight: float = Bounded(0.0, 10.0, 1.0)


class ScoringCoefficients(_Strict):
    """Coefficients the scoring module bakes in as constants."""

    entity_attribute: float = Bounded(0.0, 10.0, 1.0)
    embedding_similarity: float = Bounded(0.0, 10.0, 1.0)
    attention: float = Bounded(0.0, 10.0, 1.0)
    ntp_deduction: float = Bounded(0.0, 10.0, 1.0)
    commonsense: float = Bounded(0.0, 10.0, 1.0)
    rag: float = Bounded(0.0, 10.0, 1.0)
    temperature: float = Bounded(0.01, 100.0, 1.0)


class RoutingRule(_Strict):
    """When every word of ``when_all`` is in the question, add ``boosts`` to expert weights."""

    when_all: tuple[Word, ...] = Field(min_length=1, max_length=4)
    boosts: dict[Identifier, Annotated[float, Field(ge=-10.0, le=10.0, allow_inf_nan=False)]] = (
        Field(min_length=1, max_length=16)
    )

    @field_validator("when_all")
    @classmethod
    def _distinct_words(cls, words: tuple[str, ...]) -> tuple[str, ...]:
        # A repeated word is the same condition: the safety policy adds up the boosts of the
        # rules on one condition, which a rule written ``[w, w]`` would slip past.
        for word in words:
            if words.count(word) > 1:
                raise ValueError(f"{word!r} is listed twice; a rule's words are a set")
        return words


class Direction(_Strict):
    """A relation word with its unit vector; ``short`` is how a path answer spells it."""

    word: Word
    dx: int = Field(ge=-1, le=1)
    dy: int = Field(ge=-1, le=1)
    short: Word


class Lexicon(_Strict):
    """Word classes the story encoder needs, rendered as constants.

    The verb classes (move, take, drop, give) can be learned from a seed of the verbs that
    questions use: see ``runtime.babi.lexicon``. The rest is grammar the encoder relies on.
    """

    move: tuple[Word, ...] = Field(
        default=("went", "moved", "journeyed", "travelled", "go"), max_length=64
    )
    take: tuple[Word, ...] = Field(
        default=("got", "took", "picked", "grabbed", "get", "take"), max_length=64
    )
    drop: tuple[Word, ...] = Field(
        default=("dropped", "discarded", "left", "put", "drop"), max_length=64
    )
    give: tuple[Word, ...] = Field(default=("gave", "handed", "passed", "give"), max_length=64)
    receive: tuple[Word, ...] = Field(default=("received", "receive"), max_length=64)
    pronouns: tuple[Word, ...] = Field(default=("he", "she", "they"), max_length=64)
    particles: tuple[Word, ...] = Field(default=("back", "up", "down", "there"), max_length=64)
    discourse: tuple[Word, ...] = Field(
        default=("then", "after", "afterwards", "following", "that"), max_length=64
    )
    negation: tuple[Word, ...] = Field(default=("not", "no"), max_length=64)
    #: Time words in chronological order; sentences without one keep story order.
    times: tuple[Word, ...] = Field(
        default=("yesterday", "morning", "afternoon", "evening"), max_length=64
    )
    #: Number words for 0, 1, 2, ...
    numbers: tuple[Word, ...] = Field(
        default=(
            "none",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
        ),
        max_length=64,
    )
    relations: tuple[Word, ...] = Field(default=("afraid",), max_length=64)
    smaller: tuple[Word, ...] = Field(default=("fits", "fit"), max_length=64)
    bigger: tuple[Word, ...] = Field(default=("bigger",), max_length=64)
    directions: tuple[Direction, ...] = Field(
        default=(
            Direction(word="north", dx=0, dy=1, short="n"),
            Direction(word="south", dx=0, dy=-1, short="s"),
            Direction(word="east", dx=1, dy=0, short="e"),
            Direction(word="west", dx=-1, dy=0, short="w"),
            Direction(word="above", dx=0, dy=1, short="above"),
            Direction(word="below", dx=0, dy=-1, short="below"),
            Direction(word="right", dx=1, dy=0, short="right"),
            Direction(word="left", dx=-1, dy=0, short="left"),
        ),
        max_length=32,
    )
    plurals: dict[Word, Word] = Field(
        default_factory=lambda: {"mice": "mouse", "wolves": "wolf", "sheep": "sheep"},
        max_length=256,
    )


class Association(_Strict):
    """Learned commonsense: an attribute ``cue`` suggests ``answer`` (e.g. hungry → kitchen)."""

    cue: Word
    answer: Word
    weight: float = Bounded(0.0, 10.0, 1.0)


class ArchitectureParams(_Strict):
    """Attention mechanism and shapes; every value here is baked into generated kernels.

    Each ``attention*`` module reads only the knobs of its own mechanism, so changing one
    knob recompiles one module. ``seq_len`` is the largest sequence a kernel accepts (a
    call may pass fewer rows); ``embedding_dim`` is the model width (``heads`` heads of
    ``embedding_dim // heads`` for multi-head, ``num_experts`` heads for MoE attention, two
    halves for differential attention).
    """

    attention: AttentionMechanism = AttentionMechanism.sdpa
    embedding_dim: int = Field(default=64, ge=4, le=1024)
    heads: int = Field(default=1, ge=1, le=64)
    seq_len: int = Field(default=128, ge=1, le=4096)
    window: int = Field(default=16, ge=1, le=4096)
    global_tokens: int = Field(default=1, ge=0, le=64)
    block_size: int = Field(default=32, ge=1, le=1024)
    num_experts: int = Field(default=4, ge=1, le=64)
    top_k: int = Field(default=2, ge=1, le=64)
    curvature: float = Bounded(0.001, 10.0, 1.0)
    random_features: int = Field(default=64, ge=1, le=1024)
    state_dim: int = Field(default=16, ge=1, le=256)
    diff_lambda: float = Bounded(0.0, 1.0, 0.5)
    causal: bool = False

    @model_validator(mode="after")
    def _consistent_shapes(self) -> ArchitectureParams:
        if self.embedding_dim % self.heads:
            raise ValueError(
                f"embedding_dim {self.embedding_dim} must be divisible by heads {self.heads}"
            )
        if self.embedding_dim % self.num_experts:
            raise ValueError(
                f"embedding_dim {self.embedding_dim} must be divisible by num_experts "
                f"{self.num_experts} (each MoE expert is one head)"
            )
        if self.embedding_dim % 2:
            raise ValueError(
                f"embedding_dim {self.embedding_dim} must be even (differential attention "
                "splits it in two)"
            )
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k {self.top_k} must not exceed num_experts {self.num_experts}")
        return self


class KernelVariant(StrEnum):
    """Loop structures the attention templates can emit."""

    blocked = "blocked"  # query rows in register blocks: scores, softmax, P @ V per block


class KernelChoice(_Strict):
    """One kernel variant (a value object: equal knobs, equal code).

    ``tile`` query rows share each loaded key/value row; ``unroll`` reduction steps share
    each load/store of an accumulator; ``width`` blocks of 16 keys share each loaded query
    value. They only change speed, never results beyond float32 rounding. Bounded so a
    block's registers and scratch stay small (tile x seq_len floats).
    """

    variant: KernelVariant = KernelVariant.blocked
    tile: int = Field(default=4, ge=1, le=16)
    unroll: int = Field(default=4, ge=1, le=8)
    width: int = Field(default=1, ge=1, le=4)  # 16-key vectors per register block (SDPA)


class KernelParams(_Strict):
    """Kernel knobs; ``tuned`` and ``fingerprint`` are written by ``rsi tune kernels``.

    A mechanism missing from ``tuned`` renders with the default :class:`KernelChoice`;
    ``fingerprint`` names the machine the choices were measured on.
    """

    tuned: dict[AttentionMechanism, KernelChoice] = Field(default_factory=dict)
    fingerprint: str = Field(default="", pattern=r"^[0-9a-f]{0,64}$")


class BenchmarkSummary(_Strict):
    """The last measured accuracy of this state (informational, never rendered as code)."""

    mean: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    passed: int = Field(default=0, ge=0, le=20)
    per_task: dict[Annotated[str, Field(pattern=r"^[0-9]{1,2}$")], float] = Field(
        default_factory=dict, max_length=20
    )
    questions: int = Field(default=0, ge=0, le=10_000_000)
    split: Literal["train", "heldout", "hidden", "all", ""] = ""

    @model_validator(mode="after")
    def _accuracies_are_fractions(self) -> BenchmarkSummary:
        for task, acc in self.per_task.items():
            if not (0.0 <= acc <= 1.0):
                raise ValueError(f"per_task[{task!r}] must be a fraction in [0, 1]")
        return self


class SafetyPolicy(_Strict):
    """What the RSI loop may change on its own."""

    history_limit: int = Field(default=50, ge=2, le=1000)
    approval_required: tuple[
        Annotated[str, Field(pattern=r"^[a-z_]+(\.[a-z_]+)*$", max_length=64)], ...
    ] = Field(default=("architecture.attention",), max_length=64)
    max_relative_step: float = Bounded(0.01, 10.0, 0.5)


class RSIState(_Strict):
    """The whole persisted state (``rsi_state.json``)."""

    schema_version: Literal[1] = 1
    version: int = Field(ge=1, le=2**53)
    experts: dict[Identifier, Expert] = Field(min_length=1, max_length=64)
    scoring: ScoringCoefficients = ScoringCoefficients()
    routing: tuple[RoutingRule, ...] = Field(default=(), max_length=256)
    answer_vocabulary: tuple[Word, ...] = Field(default=(), max_length=512)
    lexicon: Lexicon = Lexicon()
    associations: tuple[Association, ...] = Field(default=(), max_length=256)
    architecture: ArchitectureParams = ArchitectureParams()
    kernels: KernelParams = KernelParams()
    benchmark: BenchmarkSummary = BenchmarkSummary()
    safety: SafetyPolicy = SafetyPolicy()

    @model_validator(mode="after")
    def _rules_name_known_experts(self) -> RSIState:
        for i, rule in enumerate(self.routing):
            for name in rule.boosts:
                if name not in self.experts:
                    known = ", ".join(self.experts)
                    raise ValueError(
                        f"routing[{i}].boosts.{name}: no expert is named {name!r} "
                        f"(experts: {known})"
                    )
        return self


def _own_errors(exc: ValidationError) -> list[Any]:
    """``exc``'s errors without the echoes of another: a list that is "too short" only
    because an item inside it failed (pydantic counts the valid items)."""
    errors = exc.errors()
    inner = [e["loc"] for e in errors]
    return [
        e
        for e in errors
        if not (
            e["type"] == "too_short"
            and any(loc[: len(e["loc"])] == e["loc"] and loc != e["loc"] for loc in inner)
        )
    ]


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            out += " (key)"
        elif _IDENT.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out or "(top level)"


class _Defect:
    """Stands in for a JSON value the plain parse refuses, so its path can be named."""

    def __init__(self, problem: str) -> None:
        self.problem = problem


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            return {"": _Defect(f"duplicate key {key!r}")}
        seen[key] = value
    return seen


def _first_defect(value: Any, loc: tuple[int | str, ...] = ()) -> tuple[str, str] | None:
    """``(field path, problem)`` of the first :class:`_Defect` in a plain-parsed document."""
    if isinstance(value, _Defect):
        return _format_loc(loc), value.problem
    if isinstance(value, dict):
        if "" in value and isinstance(value[""], _Defect):
            return _format_loc(loc), value[""].problem
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _first_defect(item, (*loc, key))
        if found:
            return found
    return None


def _json_depth_ok(text: str) -> bool:
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def _reject_constant(token: str) -> _Defect:
    return _Defect(f"{token} is not a finite number")


def _bounded_int(token: str) -> int | _Defect:
    # Python refuses to convert integers of over 4300 digits with a bare ValueError; no
    # bounded field needs more than 16, so anything longer is reported here, by field.
    if len(token.lstrip("-")) > _MAX_INT_DIGITS:
        return _Defect(f"integer literal of {len(token)} digits is out of range")
    return int(token)


def parse_state(data: bytes, source: str = "rsi_state.json") -> RSIState:
    """Validate raw bytes into an :class:`RSIState`, or raise a one-line :class:`StateError`."""
    if len(data) > MAX_STATE_BYTES:
        raise StateError(f"{source}: file is {len(data)} bytes, the limit is {MAX_STATE_BYTES}")
    if not data.strip():
        raise StateError(f"{source}: file is empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StateError(f"{source}: not UTF-8 at byte {exc.start}") from None
    if not _json_depth_ok(text):
        raise StateError(f"{source}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        # A first plain parse catches what pydantic's parser would let through silently:
        # duplicate keys (last one wins) and NaN/Infinity literals.
        raw = json.loads(
            text,
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
            parse_int=_bounded_int,
        )
    except json.JSONDecodeError as exc:
        raise StateError(
            f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    defect = _first_defect(raw)
    if defect:
        raise StateError(f"{source}: {defect[0]}: {defect[1]}")
    if not isinstance(raw, dict):
        raise StateError(f"{source}: top level must be a JSON object")
    try:
        return RSIState.model_validate_json(text)
    except ValidationError as exc:
        first, *rest = _own_errors(exc)
        # The other fields are named too, so one round of fixes can mend them all.
        others = ", ".join(dict.fromkeys(_format_loc(e["loc"]) for e in rest))
        more = f" (+{len(rest)} more: {others})" if rest else ""
        msg = first["msg"].removeprefix("Value error, ")
        # A check across fields (no location of its own) names the field in its message.
        where = f"{_format_loc(first['loc'])}: " if first["loc"] else ""
        raise StateError(f"{source}: {where}{msg}{more}") from None


def load_state(path: Path) -> RSIState:
    """Read and validate ``path``."""
    return parse_state(read_state_file(path), path.name)


def dump_state(state: RSIState) -> bytes:
    """Serialize canonically: stable key order, two-space indent, trailing newline."""
    return (json.dumps(state.model_dump(mode="json"), indent=2) + "\n").encode()


def state_sha256(data: bytes) -> str:
    """Hash of the state file's exact bytes."""
    import hashlib

    return hashlib.sha256(data).hexdigest()


def save_state(path: Path, state: RSIState, *, lock_timeout_s: float = 10.0) -> bytes:
    """Atomically replace ``path`` with ``state`` under the project lock; return the bytes."""
    data = dump_state(state)
    parse_state(data, path.name)  # never write what we could not read back
    with project_lock(path, timeout_s=lock_timeout_s):
        atomic_write(path, data)
    return data
