"""The gate: pure functions over raw samples that decide whether a candidate build replaces
the incumbent.

:func:`decide` answers one of two questions, chosen by the caller:

* ``"better"`` (the RSI loop's question): promote only on a significant gain (held-out
  accuracy by McNemar's exact test, or latency by Mann-Whitney U beyond the tolerance) and
  no regression anywhere. Anything else is ``not significant`` (the incumbent is kept: an
  answer, not an error) or ``reject``.
* ``"not-worse"`` (a person's edit, a refactor): promote unless the candidate is
  significantly worse on held-out, fails the hidden split's non-inferiority checks, or is
  significantly slower beyond the tolerance. A candidate that changes no answer is promoted.

Checks, in order (the first failing one is the reason):

1. correctness: the candidate's compiled and pure tiers agree, its attention kernel agrees
   with the NumPy reference (flags measured by :mod:`runtime.evidence`);
2. held-out: paired comparison of per-question correctness; McNemar's exact test is a
   binomial test of the discordant questions (gains vs losses, p = 1/2 under the null);
3. hidden: non-inferiority: no task that passed (>= ``pass_mark``) may fall below it, and
   the mean may not drop *significantly* by more than ``hidden_mean_tolerance`` (a one-sided
   exact test on the discordant hidden questions, :func:`drop_p_value`, at ``alpha``; the
   measured drop must also exceed the tolerance);
4. latency (only when samples are given, i.e. code on the hot path changed): interleaved
   A/B repetitions, one-sided Mann-Whitney U plus a minimum effect size (relative change of
   the medians): the larger of ``latency_tolerance`` and ``latency_noise_floor``, the
   largest A/A change the latest ``rsi gate calibrate`` measured (kept in the ledger and
   passed in by :func:`runtime.promote.promote`); both are in the decision's statistics.

Why ``alpha = 0.01``: the loop proposes many candidates per run, and every "better" decision
is a chance of a false promotion; false promotions accumulate (20 candidates at 0.05 make
one expected false promotion per run, at 0.01 one per five runs), and a promoted build
becomes the next incumbent, so an error is never undone by later tests. The price is power,
and with about 2,000 held-out questions the price is small: a candidate that fixes 30
questions and breaks none (1.5 points) has p = 2^-30; even with 10 losses among the 40
discordant questions (net +1.5 points) p is about 0.001. ``rsi gate calibrate`` measures
both error rates.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from scipy import stats as sps

from codegen.errors import RSIError

__all__ = [
    "REQUIRES",
    "Require",
    "Verdict",
    "GateError",
    "GateSettings",
    "SplitOutcome",
    "Evidence",
    "LatencySamples",
    "Decision",
    "Stat",
    "decide",
    "drop_p_value",
    "mcnemar_exact",
]

logger = logging.getLogger(__name__)

Require = Literal["better", "not-worse"]
REQUIRES: tuple[Require, ...] = ("better", "not-worse")

Stat = float | int | str | bool | None

# A mean of per-task fractions carries rounding error: a drop of exactly the tolerance
# (0.875 -> 0.870) computes as 0.0050000000000000044 and must not count as more.
_FLOAT_SLACK = 1e-9


class Verdict(StrEnum):
    """What the gate says about a candidate."""

    PROMOTE = "promote"
    REJECT = "reject"
    NOT_SIGNIFICANT = "not significant"


class GateError(RSIError):
    """Gate settings out of range, or evidence that cannot be compared."""


@dataclass(frozen=True)
class GateSettings:
    """Thresholds of the gate; every default is documented with its reason.

    * ``alpha = 0.01``: significance of McNemar's exact test on held-out (module docstring:
      many candidates per loop run, so false promotions would accumulate at 0.05).
    * ``hidden_mean_tolerance = 0.005``: the hidden mean may drop by half a point (about 10
      of 2,000 questions) so that a real held-out gain is not blocked by a few flipped hidden
      answers. A drop beyond it rejects only when it is significant at ``alpha``
      (:func:`drop_p_value`): a candidate that changes many answers moves the hidden mean by
      chance (about 0.7 points when 10% of answers change, as in ``rsi gate calibrate``'s
      exchanged A/A trials), and a bare margin refused 7 of 20 such A/A candidates.
    * ``pass_mark = 0.95``: the usual bAbI bar (:data:`runtime.babi.evaluate.PASS_MARK`).
    * ``latency_repeats = 9``: interleaved repetitions of each build, the least that gives
      Mann-Whitney U an exact one-sided p below 0.01 with room to spare (min p = 1/48620).
    * ``latency_tolerance = 0.10``: a relative change of the median below 10% is never acted
      on; it must exceed the noise floor ``rsi gate calibrate`` measures (a few percent on a
      quiet machine; a shared machine is noisier: re-check there).
    * ``latency_alpha = 0.01``: as ``alpha``.
    * ``latency_noise_floor = 0.0``: the largest relative median change between A/A timings
      that ``rsi gate calibrate`` measured (0: never measured). A latency change must exceed
      :attr:`latency_min_effect`, the larger of the two, before it is acted on.
    """

    alpha: float = 0.01
    hidden_mean_tolerance: float = 0.005
    pass_mark: float = 0.95
    latency_repeats: int = 9
    latency_tolerance: float = 0.10
    latency_alpha: float = 0.01
    latency_noise_floor: float = 0.0

    @property
    def latency_min_effect(self) -> float:
        """The relative latency change below which nothing is acted on."""
        return max(self.latency_tolerance, self.latency_noise_floor)

    def __post_init__(self) -> None:
        _bounded("alpha", self.alpha, 1e-6, 0.2)
        _bounded("hidden_mean_tolerance", self.hidden_mean_tolerance, 0.0, 0.2)
        _bounded("pass_mark", self.pass_mark, 0.5, 1.0)
        _bounded("latency_repeats", self.latency_repeats, 9, 1000)
        _bounded("latency_tolerance", self.latency_tolerance, 0.0, 1.0)
        _bounded("latency_alpha", self.latency_alpha, 1e-6, 0.2)
        _bounded("latency_noise_floor", self.latency_noise_floor, 0.0, 10.0)


@dataclass(frozen=True)
class SplitOutcome:
    """One build on one split: per question its task and correctness, in a fixed order.

    The order is fixed by ``(split, seed, data_fingerprint)``: two outcomes with equal keys
    and equal ``tasks`` are about the same questions, question by question.
    """

    split: str
    seed: int
    data_fingerprint: str
    tasks: tuple[int, ...]
    correct: tuple[bool, ...]

    def __post_init__(self) -> None:
        if len(self.tasks) != len(self.correct):
            raise GateError(
                f"{self.split} outcome: {len(self.tasks)} task numbers but "
                f"{len(self.correct)} correctness flags; they must pair up"
            )

    @property
    def accuracy(self) -> float:
        """Fraction of questions answered correctly."""
        return sum(self.correct) / len(self.correct) if self.correct else 0.0

    def per_task(self) -> dict[int, float]:
        """Accuracy of each task."""
        right: dict[int, int] = {}
        total: dict[int, int] = {}
        for task, ok in zip(self.tasks, self.correct, strict=True):
            total[task] = total.get(task, 0) + 1
            right[task] = right.get(task, 0) + int(ok)
        return {task: right[task] / total[task] for task in sorted(total)}

    @property
    def mean(self) -> float:
        """Mean of the per-task accuracies (as :attr:`runtime.babi.evaluate.EvalResult.mean`)."""
        acc = self.per_task()
        return sum(acc.values()) / len(acc) if acc else 0.0


@dataclass(frozen=True)
class Evidence:
    """Everything measured about one build."""

    build_id: str
    heldout: SplitOutcome
    hidden: SplitOutcome
    tiers_agree: bool
    kernels_agree: bool


@dataclass(frozen=True)
class LatencySamples:
    """Interleaved A/B repetitions: raw seconds per repetition of each build."""

    incumbent_s: tuple[float, ...]
    candidate_s: tuple[float, ...]


@dataclass(frozen=True)
class Decision:
    """The verdict, the question asked, every statistic and the reason in one line.

    ``stats["decided_by"]`` names the check that decided: ``tiers``, ``kernels``,
    ``heldout``, ``hidden_pass_mark``, ``hidden_mean``, ``latency``, ``unchanged`` (no
    answer changed) or ``all`` (every "not-worse" check passed).
    """

    verdict: Verdict
    require: Require
    candidate: str
    incumbent: str
    reason: str
    stats: Mapping[str, Stat]

    @property
    def promoted(self) -> bool:
        """True when the candidate replaces the incumbent."""
        return self.verdict is Verdict.PROMOTE


def mcnemar_exact(gains: int, losses: int) -> tuple[float, float]:
    """One-sided exact McNemar p-values ``(p_gain, p_loss)`` from the discordant counts.

    ``p_gain`` tests "the candidate is more often right where the two differ" (gains > 1/2
    of the discordant questions), ``p_loss`` the opposite. No discordant question: both 1.
    """
    n = gains + losses
    if n == 0:
        return 1.0, 1.0
    p_gain = float(sps.binomtest(gains, n, 0.5, alternative="greater").pvalue)
    p_loss = float(sps.binomtest(losses, n, 0.5, alternative="greater").pvalue)
    return p_gain, p_loss


def drop_p_value(gains: int, losses: int, questions: int, tolerance: float) -> float:
    """One-sided exact p-value that the accuracy drop exceeds ``tolerance``.

    Conditional on the ``gains + losses`` discordant questions (of ``questions``), a drop of
    exactly ``tolerance`` means losses make a share ``(1 + tolerance * questions / n) / 2`` of
    them; the p-value is the binomial tail of the observed losses above that share. With too
    few discordant questions to ever exceed the tolerance, 1.
    """
    n = gains + losses
    if n == 0 or questions == 0:
        return 1.0
    share = (1.0 + tolerance * questions / n) / 2.0
    if share >= 1.0:
        return 1.0
    return float(sps.binomtest(losses, n, share, alternative="greater").pvalue)


def decide(
    incumbent: Evidence,
    candidate: Evidence,
    *,
    require: Require,
    settings: GateSettings,
    latency: LatencySamples | None = None,
) -> Decision:
    """Gate ``candidate`` against ``incumbent``; see the module docstring for the checks."""
    if require not in REQUIRES:
        raise GateError(f"require={require!r} is not a gate question; use 'better' or 'not-worse'")
    _same_questions(incumbent.heldout, candidate.heldout, candidate.build_id, incumbent.build_id)
    _same_questions(incumbent.hidden, candidate.hidden, candidate.build_id, incumbent.build_id)
    s = settings
    held = _heldout(incumbent.heldout, candidate.heldout)
    hidden = _hidden(incumbent.hidden, candidate.hidden, s)
    lat = _latency(latency, s) if latency is not None else {}
    record: dict[str, Stat] = {
        "tiers_agree": candidate.tiers_agree,
        "kernels_agree": candidate.kernels_agree,
        **held,
        **hidden,
        **lat,
        "alpha": s.alpha,
        "hidden_mean_tolerance": s.hidden_mean_tolerance,
        "pass_mark": s.pass_mark,
        "latency_tolerance": s.latency_tolerance,
        "latency_noise_floor": s.latency_noise_floor,
        "latency_min_effect": s.latency_min_effect,
        "latency_alpha": s.latency_alpha,
    }
    verdict, record["decided_by"], reason = _verdict(record, require, s, latency is not None)
    logger.info(
        "gate %s %s vs %s: %s (%s)",
        require,
        candidate.build_id,
        incumbent.build_id,
        verdict,
        reason,
    )
    return Decision(verdict, require, candidate.build_id, incumbent.build_id, reason, record)


def _verdict(
    r: Mapping[str, Stat], require: Require, s: GateSettings, timed: bool
) -> tuple[Verdict, str, str]:
    """The verdict, the check that decided it (``stats["decided_by"]``) and the reason."""
    if not r["tiers_agree"]:
        return Verdict.REJECT, "tiers", "compiled and pure tiers disagree (differential self-test)"
    if not r["kernels_agree"]:
        return Verdict.REJECT, "kernels", "attention kernel disagrees with its NumPy reference"
    held = (
        f"held-out {_f(r['heldout_acc_incumbent'])} -> {_f(r['heldout_acc_candidate'])} "
        f"({r['heldout_gains']} gains, {r['heldout_losses']} losses"
    )
    p_gain, p_loss = float(_num(r["heldout_p_gain"])), float(_num(r["heldout_p_loss"]))
    if p_loss < s.alpha:
        return (
            Verdict.REJECT,
            "heldout",
            f"{held}, McNemar exact p={p_loss:.3g} < alpha {s.alpha:g}): worse",
        )
    if r["hidden_tasks_lost"]:
        return (
            Verdict.REJECT,
            "hidden_pass_mark",
            (f"hidden task(s) {r['hidden_tasks_lost']} fell below the pass mark {s.pass_mark:g}"),
        )
    drop = -float(_num(r["hidden_delta"]))
    p_drop = float(_num(r["hidden_p_drop"]))
    if drop > s.hidden_mean_tolerance + _FLOAT_SLACK and p_drop < s.alpha:
        return (
            Verdict.REJECT,
            "hidden_mean",
            (
                f"hidden mean {_f(r['hidden_mean_incumbent'])} -> {_f(r['hidden_mean_candidate'])}"
                f" fell {drop * 100:.3f} points, more than the tolerance "
                f"{s.hidden_mean_tolerance * 100:.2f} (p={p_drop:.3g} < alpha {s.alpha:g})"
            ),
        )
    slower = faster = False
    lat = ""
    if timed:
        change = float(_num(r["latency_change"]))
        lat = (
            f"latency {change * 100:+.1f}% (median {_ms(r['latency_median_incumbent_s'])} -> "
            f"{_ms(r['latency_median_candidate_s'])}"
        )
        p_slow, p_fast = float(_num(r["latency_p_slower"])), float(_num(r["latency_p_faster"]))
        slower = p_slow < s.latency_alpha and change > s.latency_min_effect
        faster = p_fast < s.latency_alpha and -change > s.latency_min_effect
        if slower:
            return (
                Verdict.REJECT,
                "latency",
                f"{lat}, Mann-Whitney p={p_slow:.3g} < {s.latency_alpha:g}, {_beyond(s)}): slower",
            )
    if require == "better":
        if p_gain < s.alpha:
            return (
                Verdict.PROMOTE,
                "heldout",
                f"{held}, McNemar exact p={p_gain:.3g} < alpha {s.alpha:g})",
            )
        if faster:
            p_fast = float(_num(r["latency_p_faster"]))
            return (
                Verdict.PROMOTE,
                "latency",
                f"{lat}, Mann-Whitney p={p_fast:.3g}): faster, not worse",
            )
        return (
            Verdict.NOT_SIGNIFICANT,
            "heldout",
            (
                f"{held}, McNemar exact p={p_gain:.3g} >= alpha {s.alpha:g}): no significant gain, "
                "incumbent kept"
            ),
        )
    if not r["heldout_gains"] and not r["heldout_losses"] and not r["hidden_changed"]:
        return Verdict.PROMOTE, "unchanged", "changes no answer on held-out or hidden: not worse"
    return (
        Verdict.PROMOTE,
        "all",
        (
            f"{held}, McNemar exact p={p_loss:.3g} for worse), hidden mean "
            f"{_f(r['hidden_mean_incumbent'])} -> {_f(r['hidden_mean_candidate'])}: not worse"
        ),
    )


def _heldout(inc: SplitOutcome, cand: SplitOutcome) -> dict[str, Stat]:
    gains = sum(1 for a, b in zip(inc.correct, cand.correct, strict=True) if b and not a)
    losses = sum(1 for a, b in zip(inc.correct, cand.correct, strict=True) if a and not b)
    p_gain, p_loss = mcnemar_exact(gains, losses)
    return {
        "heldout_questions": len(inc.correct),
        "heldout_acc_incumbent": inc.accuracy,
        "heldout_acc_candidate": cand.accuracy,
        "heldout_delta": cand.accuracy - inc.accuracy,
        "heldout_gains": gains,
        "heldout_losses": losses,
        "heldout_p_gain": p_gain,
        "heldout_p_loss": p_loss,
    }


def _hidden(inc: SplitOutcome, cand: SplitOutcome, s: GateSettings) -> dict[str, Stat]:
    before, after = inc.per_task(), cand.per_task()
    lost = [t for t in before if before[t] >= s.pass_mark and after[t] < s.pass_mark]
    gains = sum(1 for a, b in zip(inc.correct, cand.correct, strict=True) if b and not a)
    losses = sum(1 for a, b in zip(inc.correct, cand.correct, strict=True) if a and not b)
    mean_inc, mean_cand = inc.mean, cand.mean
    return {
        "hidden_questions": len(inc.correct),
        "hidden_mean_incumbent": mean_inc,
        "hidden_mean_candidate": mean_cand,
        "hidden_delta": mean_cand - mean_inc,
        "hidden_passed_incumbent": sum(1 for a in before.values() if a >= s.pass_mark),
        "hidden_passed_candidate": sum(1 for a in after.values() if a >= s.pass_mark),
        "hidden_tasks_lost": ", ".join(f"{t} ({before[t]:.3f} -> {after[t]:.3f})" for t in lost),
        "hidden_changed": gains + losses,
        "hidden_gains": gains,
        "hidden_losses": losses,
        "hidden_p_drop": drop_p_value(gains, losses, len(inc.correct), s.hidden_mean_tolerance),
    }


def _latency(samples: LatencySamples, s: GateSettings) -> dict[str, Stat]:
    inc, cand = samples.incumbent_s, samples.candidate_s
    if min(len(inc), len(cand)) < s.latency_repeats:
        raise GateError(
            f"latency: {len(inc)} incumbent and {len(cand)} candidate repetitions; the gate "
            f"needs at least latency_repeats={s.latency_repeats} of each"
        )
    if min(min(inc), min(cand)) <= 0:
        raise GateError("latency: every repetition must take a positive number of seconds")
    med_inc, med_cand = statistics.median(inc), statistics.median(cand)
    # Exact p-values unless timings tie (then the normal approximation with tie correction).
    method = "exact" if len(set(inc) | set(cand)) == len(inc) + len(cand) else "asymptotic"
    slower = sps.mannwhitneyu(cand, inc, alternative="greater", method=method)
    faster = sps.mannwhitneyu(cand, inc, alternative="less", method=method)
    return {
        "latency_repeats": min(len(inc), len(cand)),
        "latency_median_incumbent_s": med_inc,
        "latency_median_candidate_s": med_cand,
        "latency_change": med_cand / med_inc - 1.0,
        "latency_u": float(slower.statistic),
        "latency_p_slower": float(slower.pvalue),
        "latency_p_faster": float(faster.pvalue),
    }


def _same_questions(inc: SplitOutcome, cand: SplitOutcome, cand_id: str, inc_id: str) -> None:
    if (inc.split, inc.seed, inc.data_fingerprint, inc.tasks) != (
        cand.split,
        cand.seed,
        cand.data_fingerprint,
        cand.tasks,
    ):
        raise GateError(
            f"{cand.split} evidence of {cand_id} (seed {cand.seed}, data "
            f"{cand.data_fingerprint[:16]}, {len(cand.tasks)} questions) is not about the "
            f"questions of {inc_id}'s {inc.split} evidence (seed {inc.seed}, data "
            f"{inc.data_fingerprint[:16]}, {len(inc.tasks)} questions); gather both with the "
            "same data and seed"
        )


def _beyond(s: GateSettings) -> str:
    """Which minimum effect a latency change exceeded: the tolerance or the noise floor."""
    if s.latency_noise_floor > s.latency_tolerance:
        return (
            f"beyond the noise floor {s.latency_noise_floor * 100:.1f}% (rsi gate calibrate; "
            f"tolerance {s.latency_tolerance * 100:.0f}%)"
        )
    return f"beyond the tolerance {s.latency_tolerance * 100:.0f}%"


def _bounded(name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise GateError(f"gate settings: {name}={value!r} is outside [{lo:g}, {hi:g}]")


def _num(value: Stat) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _f(value: Stat) -> str:
    return f"{_num(value):.4f}"


def _ms(value: Stat) -> str:
    return f"{_num(value) * 1000:.2f} ms"
