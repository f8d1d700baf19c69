"""Calibration of the gate: how often it promotes what it must not, and rejects what it must.

Four kinds of trial, each on its own split seed (so every trial sees different held-out and
hidden questions; without data the generator's stories change with the seed as well):

* ``aa-identical``: the incumbent against a copy of its state with the version bumped (the
  same build id, evaluated again by a fresh model). A deterministic model on the same
  questions answers identically, so there is no discordant question and McNemar's test is
  never exercised: this trial checks the plumbing (determinism, fixed question order), not
  the statistics. "better" must say ``not significant``, "not-worse" must ``promote``.
* ``aa-exchanged``: the statistical null. The real outcomes of the incumbent X and of a
  different build W on the same questions are dealt out question by question by a fair coin
  (seeded by the trial): each arm gets X's outcome or W's, so the two arms are exchangeable
  and equal in expected accuracy, yet they disagree on about half of the questions where X
  and W differ. This is exactly McNemar's null hypothesis (a discordant question goes either
  way with probability 1/2), with real discordance patterns. W is the trial's known-worse
  build, so the discordance is substantial.
* ``worse``: the incumbent against a known-worse candidate: the state with one expert's
  weight or one scoring coefficient zeroed, kept when that costs at least ``worse_margin``
  accuracy on the *train* split (the screening never looks at held-out or hidden data);
  of those, the ``max_worse`` cheapest are used, the hardest to tell from the incumbent.
* ``better``: the same pair the other way round (the worse build as the incumbent): the
  power of the "better" question.

Every pair is decided under both questions. The latency noise floor comes from interleaved
A/A timings of the incumbent against itself, one set per trial.
"""

from __future__ import annotations

import json
import logging
import random
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from codegen.errors import RSIError
from codegen.state import RSIState, dump_state, parse_state
from codegen.toolchain import Backend
from runtime.babi.builds import BuiltModel, build_model, model_of
from runtime.evidence import gather, measure_latency, outcome
from runtime.gate import (
    REQUIRES,
    Decision,
    Evidence,
    GateSettings,
    Require,
    SplitOutcome,
    Verdict,
    decide,
)

__all__ = [
    "TrialKind",
    "CalibrationError",
    "CalibrationSettings",
    "KnownWorse",
    "Trial",
    "CalibrationReport",
    "calibrate",
    "exchange",
]

logger = logging.getLogger(__name__)

TrialKind = Literal["aa-identical", "aa-exchanged", "worse", "better"]
TRIAL_KINDS: tuple[TrialKind, ...] = ("aa-identical", "aa-exchanged", "worse", "better")


class CalibrationError(RSIError):
    """Calibration settings out of range, or no candidate known to be worse."""


@dataclass(frozen=True)
class CalibrationSettings:
    """How many trials, on which seeds, with which candidates.

    ``worse_margin = 0.02``: a known-worse candidate costs at least 2 points on the train
    split (the issue's margin); ``max_worse``: how many of them the trials cycle through
    (the cheapest ones above the margin). ``ablate``: the dotted paths screened (e.g.
    ``experts.tracker.weight``, ``scoring.rag``); empty means every positive expert weight
    and scoring coefficient but the temperature.
    """

    trials: int = 20
    first_seed: int = 1
    worse_margin: float = 0.02
    max_worse: int = 3
    latency: bool = True
    backend: Backend = "cython"
    ablate: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.trials <= 10_000:
            raise CalibrationError(f"trials={self.trials}: use 1 to 10000 trials")
        if not 0.0 < self.worse_margin <= 1.0:
            raise CalibrationError(f"worse_margin={self.worse_margin}: use a value in (0, 1]")
        if not 1 <= self.max_worse <= 64:
            raise CalibrationError(f"max_worse={self.max_worse}: use 1 to 64 candidates")


@dataclass(frozen=True)
class KnownWorse:
    """A candidate known to be worse: its label, build and cost on the train split."""

    label: str
    build_id: str
    train_cost: float


@dataclass(frozen=True)
class Trial:
    """One decision of the calibration."""

    kind: TrialKind
    seed: int
    partner: str
    decision: Decision

    @property
    def wrong(self) -> bool:
        """True when the verdict is an error of the gate for this kind of trial.

        A/A: a promotion under "better", a rejection under "not-worse". Known-worse: any
        promotion, and (under "not-worse") anything but a rejection. Known-better: anything
        but a promotion.
        """
        verdict, require = self.decision.verdict, self.decision.require
        if self.kind in ("aa-identical", "aa-exchanged"):
            return verdict is (Verdict.PROMOTE if require == "better" else Verdict.REJECT)
        if self.kind == "worse":
            return verdict is Verdict.PROMOTE or (
                require == "not-worse" and verdict is not Verdict.REJECT
            )
        return verdict is not Verdict.PROMOTE


@dataclass(frozen=True)
class CalibrationReport:
    """Every trial's decision, the candidates used and the latency A/A samples."""

    trials: tuple[Trial, ...]
    worse: tuple[KnownWorse, ...]
    latency_changes: tuple[float, ...]
    latency_flagged: int
    gate: GateSettings
    seconds: float

    def count(self, kind: TrialKind, require: Require) -> tuple[int, int]:
        """``(wrong, total)`` over the trials of ``kind`` decided under ``require``."""
        chosen = [t for t in self.trials if t.kind == kind and t.decision.require == require]
        return sum(t.wrong for t in chosen), len(chosen)

    def causes(self, kind: TrialKind, require: Require) -> dict[str, int]:
        """The checks that decided the wrong verdicts of ``kind`` under ``require``."""
        out: dict[str, int] = {}
        for t in self.trials:
            if t.kind == kind and t.decision.require == require and t.wrong:
                check = str(t.decision.stats["decided_by"])
                out[check] = out.get(check, 0) + 1
        return out

    @property
    def latency_noise_floor(self) -> float:
        """Largest relative median difference between A/A timings (0 when not measured)."""
        return max((abs(c) for c in self.latency_changes), default=0.0)

    def to_json(self) -> dict[str, object]:
        """The summary object of ``rsi gate calibrate --json``."""
        rates: dict[str, object] = {}
        for kind in TRIAL_KINDS:
            for require in REQUIRES:
                wrong, total = self.count(kind, require)
                rates[f"{kind}/{require}"] = {
                    "wrong": wrong,
                    "trials": total,
                    "decided_by": self.causes(kind, require),
                }
        discordant = [
            int(t.decision.stats["heldout_gains"] or 0)
            + int(t.decision.stats["heldout_losses"] or 0)
            for t in self.trials
            if t.kind == "aa-exchanged" and t.decision.require == "better"
        ]
        return {
            "trials": rates,
            "false_promotion_aa_better": self.count("aa-exchanged", "better")[0]
            + self.count("aa-identical", "better")[0],
            "worse_rejected_not_worse": sum(
                1
                for t in self.trials
                if t.kind == "worse"
                and t.decision.require == "not-worse"
                and t.decision.verdict is Verdict.REJECT
            ),
            "worse_promoted_any": sum(
                1 for t in self.trials if t.kind == "worse" and t.decision.promoted
            ),
            "aa_exchanged_discordant_median": statistics.median(discordant) if discordant else 0,
            "known_worse": [
                {"label": w.label, "build": w.build_id, "train_cost": round(w.train_cost, 4)}
                for w in self.worse
            ],
            "wrong": [
                {
                    "kind": t.kind,
                    "require": t.decision.require,
                    "seed": t.seed,
                    "partner": t.partner,
                    "reason": t.decision.reason,
                }
                for t in self.trials
                if t.wrong
            ],
            "latency_noise_floor": round(self.latency_noise_floor, 4),
            "latency_changes": [round(c, 4) for c in self.latency_changes],
            "latency_aa_flagged": self.latency_flagged,
            "alpha": self.gate.alpha,
            "seconds": round(self.seconds, 1),
        }

    def table(self) -> str:
        """Error counts per kind of trial and question, then the candidates and the floor."""
        lines = ["trial         question   wrong/trials  (wrong = the gate erred)"]
        for kind in TRIAL_KINDS:
            for require in REQUIRES:
                wrong, total = self.count(kind, require)
                causes = ", ".join(
                    f"{c} {n}" for c, n in sorted(self.causes(kind, require).items())
                )
                lines.append(
                    f"{kind:<13} {require:<10} {wrong:>5}/{total:<6}"
                    + (f" decided by: {causes}" if causes else "")
                )
        for w in self.worse:
            lines.append(f"known worse: {w.label} (build {w.build_id}), train -{w.train_cost:.2%}")
        if self.latency_changes:
            lines.append(
                f"latency A/A: noise floor {self.latency_noise_floor:.1%} (largest median "
                f"difference of {len(self.latency_changes)} interleaved A/A sets), "
                f"{self.latency_flagged} flagged by the gate; tolerance "
                f"{self.gate.latency_tolerance:.0%}"
            )
            if self.latency_noise_floor > self.gate.latency_tolerance:
                lines.append(
                    f"latency noise floor {self.latency_noise_floor:.1%} exceeds the tolerance "
                    f"{self.gate.latency_tolerance:.0%}: on this machine set latency_tolerance "
                    "above the floor"
                )
        lines.append(f"{len(self.trials)} decisions in {self.seconds:.1f} s")
        return "\n".join(lines)


def exchange(x: SplitOutcome, w: SplitOutcome, rng: random.Random) -> tuple[SplitOutcome, ...]:
    """Deal ``x``'s and ``w``'s per-question outcomes to two arms by a fair coin each."""
    a: list[bool] = []
    b: list[bool] = []
    for ox, ow in zip(x.correct, w.correct, strict=True):
        first, second = (ox, ow) if rng.random() < 0.5 else (ow, ox)
        a.append(first)
        b.append(second)
    return replace(x, correct=tuple(a)), replace(x, correct=tuple(b))


def calibrate(
    state: RSIState,
    generated_dir: Path,
    *,
    data: Path | None,
    settings: CalibrationSettings,
    gate: GateSettings,
    progress: Callable[[str], None] | None = None,
) -> CalibrationReport:
    """Run the calibration trials of ``state``'s build (see the module docstring)."""
    start = time.perf_counter()
    note = progress or (lambda _msg: None)
    note("building the incumbent")
    incumbent = build_model(state, generated_dir, settings.backend)
    bumped = build_model(
        state.model_copy(update={"version": state.version + 1}), generated_dir, settings.backend
    )
    worse = _known_worse(state, incumbent, generated_dir, data, settings, note)
    flags = {b.build.build_id: gather(b.build, data=data) for b in (incumbent, bumped)}
    flags.update({w.build_id: gather(b.build, data=data) for w, b in worse})
    trials: list[Trial] = []
    changes: list[float] = []
    flagged = 0
    for i in range(settings.trials):
        seed = settings.first_seed + i
        known, partner = worse[i % len(worse)]
        note(f"trial {i + 1}/{settings.trials} (seed {seed}, partner {known.label})")
        ev_x = _evidence(incumbent, flags, data, seed)
        ev_copy = _evidence(bumped, flags, data, seed, fresh=True)
        ev_w = _evidence(partner, flags, data, seed)
        rng = random.Random(f"gate-calibrate:{seed}")
        held_a, held_b = exchange(ev_x.heldout, ev_w.heldout, rng)
        hid_a, hid_b = exchange(ev_x.hidden, ev_w.hidden, rng)
        arm_a = replace(ev_x, build_id="arm-a", heldout=held_a, hidden=hid_a)
        arm_b = replace(ev_x, build_id="arm-b", heldout=held_b, hidden=hid_b)
        pairs: list[tuple[TrialKind, Evidence, Evidence]] = [
            ("aa-identical", ev_x, ev_copy),
            ("aa-exchanged", arm_a, arm_b),
            ("worse", ev_x, ev_w),
            ("better", ev_w, ev_x),
        ]
        for kind, inc, cand in pairs:
            for require in REQUIRES:
                d = decide(inc, cand, require=require, settings=gate)
                trials.append(Trial(kind, seed, known.label, d))
        if settings.latency:
            samples = measure_latency(
                incumbent.build, bumped.build, repeats=gate.latency_repeats, data=data, seed=seed
            )
            d = decide(ev_x, ev_copy, require="not-worse", settings=gate, latency=samples)
            changes.append(float(d.stats["latency_change"] or 0.0))
            flagged += d.verdict is Verdict.REJECT
    return CalibrationReport(
        trials=tuple(trials),
        worse=tuple(w for w, _ in worse),
        latency_changes=tuple(changes),
        latency_flagged=flagged,
        gate=gate,
        seconds=time.perf_counter() - start,
    )


def _evidence(
    built: BuiltModel,
    flags: dict[str, Evidence],
    data: Path | None,
    seed: int,
    *,
    fresh: bool = False,
) -> Evidence:
    """A build's outcomes on ``seed``'s splits, with the correctness flags measured once."""
    model = model_of(built.build) if fresh else built.model
    base = flags[built.build.build_id]
    return replace(
        base,
        heldout=outcome(model, data, "heldout", seed),
        hidden=outcome(model, data, "hidden", seed),
    )


def _known_worse(
    state: RSIState,
    incumbent: BuiltModel,
    generated_dir: Path,
    data: Path | None,
    settings: CalibrationSettings,
    note: Callable[[str], None],
) -> list[tuple[KnownWorse, BuiltModel]]:
    """The single ablations closest to ``worse_margin`` (at or above it) on the train split."""
    base = outcome(incumbent.model, data, "train", 0).accuracy
    found: list[tuple[KnownWorse, BuiltModel]] = []
    for name, variant in _ablations(state, settings.ablate):
        note(f"screening: {name} zeroed (train split)")
        built = build_model(variant, generated_dir, settings.backend)
        cost = base - outcome(built.model, data, "train", 0).accuracy
        logger.info("%s zeroed costs %.4f on train", name, cost)
        if cost >= settings.worse_margin:
            found.append((KnownWorse(f"{name} zeroed", built.build.build_id, cost), built))
    # The cheapest ablations above the margin: the hardest known-worse candidates to catch.
    found.sort(key=lambda item: item[0].train_cost)
    if not found:
        raise CalibrationError(
            f"no expert weight or scoring coefficient of the state costs >= "
            f"{settings.worse_margin:.0%} on the train split when zeroed; calibrate a state "
            "whose experts matter (e.g. rsi_state.json)"
        )
    return found[: settings.max_worse]


def _ablations(state: RSIState, only: tuple[str, ...]) -> Iterator[tuple[str, RSIState]]:
    """The state with one expert's weight, or one scoring coefficient, set to zero."""
    raw = json.loads(dump_state(state))
    paths = [f"experts.{name}.weight" for name in raw["experts"]]
    paths += [f"scoring.{name}" for name in raw["scoring"] if name != "temperature"]
    unknown = [path for path in only if path not in paths]
    if unknown:
        raise CalibrationError(
            f"ablate {unknown[0]!r}: not an expert weight or scoring coefficient of the state; "
            f"use one of {', '.join(paths)}"
        )
    for path in only or paths:
        data = json.loads(dump_state(state))
        *parents, leaf = path.split(".")
        target = data
        for part in parents:
            target = target[part]
        if target[leaf] > 0:
            target[leaf] = 0.0
            yield path, parse_state(json.dumps(data).encode(), f"{path} zeroed")
