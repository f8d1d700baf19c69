"""The safety policy, enforced on a candidate state before anything is built.

The incumbent's ``safety`` section decides (a candidate cannot relax the policy that judges
it). Two rules, each refused with one line naming the field, the old and new value and the
way to approve:

- **Step bound.** Each numeric value may move by at most ``max_relative_step`` times its old
  magnitude: ``|new - old| <= max_relative_step * |old|``. A value at zero (or absent: a new
  routing boost, association or expert, which contributes nothing until it exists) is
  measured against a unit scale instead, ``|new| <= max_relative_step``: every float the
  schema bounds is a weight, boost or coefficient whose neutral default is 1.0, so switching
  a zeroed term on takes a few bounded steps or an approval. An integer may always move by
  one (its smallest step), so ``heads`` 1 -> 2 is not refused where ``max_relative_step``
  is below 1. A removed value is a move to zero.
- **Approval list.** A change to a path listed in ``safety.approval_required`` (or below it:
  listing ``architecture`` covers ``architecture.heads``) is refused unless approved. So is
  any change to ``safety`` itself: the policy guards itself.

Kernel knobs (``kernels``: tile, unroll, width) select a loop structure, not a magnitude:
the step bound does not apply to them (their results agree to float32 rounding; the gate
checks the kernel against its reference and times the build). They still need approval when
``safety.approval_required`` lists them.

Approval patterns name paths with shell-style ``*`` and ``?`` (``architecture.attention``,
``'scoring.*'``, ``'*'``); a pattern also approves everything below the path it names. An
approved path is exempt from the step bound too. A pattern that names no field of the
schema (nor of either state: expert names, list positions) is refused with the closest
field, so a typo never approves nothing silently; one that names fields no change touches
is fine. A refusal names every path that needs approval and the ``--approve`` arguments
that approve them all. ``version`` and ``benchmark`` change freely (they never reach
generated code).

Paths are written as the state's error messages write them: ``scoring.rag``,
``experts.tracker.weight``; a routing boost by its rule's sorted condition words,
``routing[afraid,what].boosts.deducer``: rules on one condition add up (as the generated code
applies them), and their order in the list changes nothing. Other lists compare by position.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
import shlex
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from codegen.errors import RSIError
from codegen.state import RSIState

__all__ = [
    "PolicyError",
    "Change",
    "PolicyReport",
    "check_policy",
    "changed_paths",
    "approves",
]

logger = logging.getLogger(__name__)

#: Fields that never reach generated code, so the policy ignores them.
FREE_FIELDS = frozenset({"version", "benchmark"})
#: Sections the step bound does not apply to (kernel knobs are choices, not magnitudes).
UNBOUNDED = ("kernels",)
#: Changes under this section always need approval.
SELF_GUARDED = "safety"
_ABSENT = object()


class PolicyError(RSIError):
    """A candidate state breaks the incumbent's safety policy."""

    # Every path refused and every ``--approve`` argument for them: cut, the line would not
    # approve what it says it does. A state has at most a few thousand leaves.
    max_chars = 200_000


@dataclass(frozen=True)
class Change:
    """One leaf that differs between incumbent and candidate.

    ``old``/``new`` are ``None`` for an absent leaf; ``step`` is the relative step of a
    numeric change (see the module docstring), else ``None``.
    """

    path: str
    old: Any
    new: Any
    step: float | None
    violation: str | None  # the one-line refusal, None when the change is allowed


@dataclass(frozen=True)
class PolicyReport:
    """What the policy saw: every change, which were approved, which checks were waived."""

    changes: tuple[Change, ...]
    approved: tuple[str, ...]  # paths a pattern in ``approve`` let through
    waived: tuple[str, ...]  # the refusals ``waive=True`` turned into notes

    @property
    def paths(self) -> tuple[str, ...]:
        """The changed paths, in order."""
        return tuple(c.path for c in self.changes)


def check_policy(
    incumbent: RSIState,
    candidate: RSIState,
    *,
    approve: Sequence[str] = (),
    waive: bool = False,
) -> PolicyReport:
    """Check ``candidate`` against ``incumbent.safety``; raise :class:`PolicyError` if refused.

    With ``waive=True`` (a person approved the whole edit, as in watch mode) nothing is
    refused; the refusals that would have been made are returned in ``waived``.
    """
    safety = incumbent.safety
    required = (*safety.approval_required, SELF_GUARDED)
    before, after = _leaves(incumbent), _leaves(candidate)
    _check_patterns(approve, [*before, *after])
    changes: list[Change] = []
    approved: list[str] = []
    for path, old, new in _diff(before, after):
        step = _relative_step(old, new)
        violation = None
        if any(approves(pattern, path) for pattern in approve):
            approved.append(path)
        elif any(approves(listed, path) for listed in required):
            why = "changes the safety policy" if approves(SELF_GUARDED, path) else "needs approval"
            violation = (
                f"{path}: {_show(old)} -> {_show(new)} {why} (safety.approval_required); "
                f"approve with --approve {shlex.quote(path)}"
            )
        elif (
            step is not None
            and step > safety.max_relative_step
            and not _unit_step(old, new)
            and not any(approves(section, path) for section in UNBOUNDED)
        ):
            violation = (
                f"{path}: {_show(old)} -> {_show(new)} exceeds max_relative_step "
                f"{safety.max_relative_step:g}; approve with --approve {shlex.quote(path)}"
            )
        changes.append(Change(path, _plain(old), _plain(new), step, violation))
    refused = [c for c in changes if c.violation is not None]
    # Approval refusals first: they name the larger decision.
    refused.sort(key=lambda c: "exceeds max_relative_step" in str(c.violation))
    refusals = [str(c.violation) for c in refused]
    if refusals and not waive:
        raise PolicyError(_refusal(refused))
    for line in refusals:
        logger.info("policy waived: %s", line)
    return PolicyReport(tuple(changes), tuple(approved), tuple(refusals) if waive else ())


def changed_paths(incumbent: RSIState, candidate: RSIState) -> tuple[str, ...]:
    """Paths of every leaf that differs (policy-relevant fields only)."""
    return tuple(path for path, _, _ in _diff(_leaves(incumbent), _leaves(candidate)))


def approves(pattern: str, path: str) -> bool:
    """True when ``pattern`` (``*`` and ``?`` wildcards) names ``path`` or a path above it."""
    regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(f"{regex}(?:[.\\[].*)?", path, flags=re.DOTALL) is not None


def _check_patterns(patterns: Sequence[str], paths: Iterable[str]) -> None:
    """Refuse an approval pattern that names no schema field and no path of either state."""
    known = {*paths, *_field_paths(RSIState, "")}
    for pattern in patterns:
        if any(approves(pattern, path) for path in known):
            continue
        names = sorted(known | {a for path in known for a in _ancestors(path)})
        close = difflib.get_close_matches(pattern, names, n=1)
        hint = f"did you mean {close[0]}?" if close else "see `rsi schema` for the fields"
        raise PolicyError(
            f"--approve {shlex.quote(pattern)}: matches no field of the state schema; {hint}"
        )


def _field_paths(model: type[BaseModel], prefix: str) -> Iterator[str]:
    """Dotted paths of the schema's fields, through nested models (not dict keys)."""
    for name, field in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        yield path
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            yield from _field_paths(nested, path)


def _ancestors(path: str) -> Iterator[str]:
    """``experts.tracker.weight`` -> ``experts``, ``experts.tracker``."""
    for match in re.finditer(r"[.\[]", path):
        if match.start():
            yield path[: match.start()]


def _refusal(refused: Sequence[Change]) -> str:
    """One line: the first refusal, every other path refused, and the approval for all."""
    first = str(refused[0].violation)
    if len(refused) == 1:
        return first
    head = first.rsplit("; approve with ", 1)[0]
    others = ", ".join(c.path for c in refused[1:])
    args = " ".join(f"--approve {shlex.quote(c.path)}" for c in refused)
    return f"{head} (+{len(refused) - 1} more: {others}); approve all with {args}"


def _leaves(state: RSIState) -> dict[str, Any]:
    data = state.model_dump(mode="json", exclude=set(FREE_FIELDS))
    data["routing"] = _routing_by_condition(data.get("routing", []))
    return dict(_walk(data, ""))


def _routing_by_condition(rules: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Routing rules as the generated code applies them: keyed by their sorted condition
    words (``routing[afraid,what]``), with the boosts of rules on the same condition summed.

    So a rule moved in the list is no change, and a rule repeated four times is one boost
    four times as large, bounded like any other.
    """
    merged: dict[str, dict[str, Any]] = {}
    for rule in rules:
        key = ",".join(sorted(rule["when_all"]))
        boosts = merged.setdefault(key, {"boosts": {}})["boosts"]
        for expert, boost in rule["boosts"].items():
            boosts[expert] = boosts.get(expert, 0.0) + boost
    return merged


def _walk(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if path == "routing":
        for key, item in value.items():
            yield from _walk(item, f"routing[{key}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]")
    else:
        yield path, value


def _diff(old: dict[str, Any], new: dict[str, Any]) -> Iterator[tuple[str, Any, Any]]:
    for path in sorted(old.keys() | new.keys()):
        a, b = old.get(path, _ABSENT), new.get(path, _ABSENT)
        if a is _ABSENT or b is _ABSENT or type(a) is not type(b) or a != b:
            yield path, a, b


def _number(value: Any) -> float | None:
    if value is _ABSENT:
        return 0.0
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _relative_step(old: Any, new: Any) -> float | None:
    """``|new - old| / |old|``, against a unit scale when ``old`` is zero; None if not numeric."""
    a, b = _number(old), _number(new)
    if a is None or b is None:
        return None
    scale = abs(a) if a != 0.0 else 1.0
    step = abs(b - a) / scale
    return step if math.isfinite(step) else math.inf


def _unit_step(old: Any, new: Any) -> bool:
    """An integer moving by one: always allowed (it is the smallest step there is)."""
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (old, new))
    return ints and abs(new - old) == 1


def _plain(value: Any) -> Any:
    return None if value is _ABSENT else value


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "(absent)"
    if isinstance(value, float):
        return repr(value)
    return str(value)
