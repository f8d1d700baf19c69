"""The gate's decisions on constructed samples: every verdict path and its exact reason."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from runtime.calibrate import exchange
from runtime.gate import (
    Evidence,
    GateError,
    GateSettings,
    LatencySamples,
    SplitOutcome,
    Verdict,
    decide,
    drop_p_value,
    mcnemar_exact,
)

GATE = GateSettings()


def split(
    correct: list[bool], tasks: list[int] | None = None, name: str = "heldout"
) -> SplitOutcome:
    """An outcome on ``len(correct)`` questions (all of task 1 unless ``tasks`` is given)."""
    return SplitOutcome(name, 0, "generated:0", tuple(tasks or [1] * len(correct)), tuple(correct))


def evidence(
    build_id: str,
    heldout: list[bool],
    hidden: list[bool] | None = None,
    hidden_tasks: list[int] | None = None,
    **flags: bool,
) -> Evidence:
    hid = hidden if hidden is not None else [True] * 100
    return Evidence(
        build_id,
        split(heldout),
        split(hid, hidden_tasks, "hidden"),
        flags.get("tiers_agree", True),
        flags.get("kernels_agree", True),
    )


def flip(correct: list[bool], gains: int, losses: int) -> list[bool]:
    """``correct`` with the first ``gains`` wrong answers fixed and ``losses`` right ones broken."""
    out = list(correct)
    wrong = [i for i, ok in enumerate(out) if not ok][:gains]
    right = [i for i, ok in enumerate(out) if ok][:losses]
    assert len(wrong) == gains and len(right) == losses
    for i in wrong:
        out[i] = True
    for i in right:
        out[i] = False
    return out


BASE = [True] * 140 + [False] * 60  # 200 questions at 0.70


def test_unchanged_candidate_is_not_significant_for_better_and_promoted_for_not_worse() -> None:
    inc, cand = evidence("inc", BASE), evidence("cand", BASE)
    better = decide(inc, cand, require="better", settings=GATE)
    assert better.verdict is Verdict.NOT_SIGNIFICANT
    assert better.reason == (
        "held-out 0.7000 -> 0.7000 (0 gains, 0 losses, McNemar exact p=1 >= alpha 0.01): "
        "no significant gain, incumbent kept"
    )
    worse = decide(inc, cand, require="not-worse", settings=GATE)
    assert worse.verdict is Verdict.PROMOTE
    assert worse.reason == "changes no answer on held-out or hidden: not worse"
    assert (better.stats["decided_by"], worse.stats["decided_by"]) == ("heldout", "unchanged")
    assert (worse.candidate, worse.incumbent, worse.require) == ("cand", "inc", "not-worse")


def test_significant_gain_is_promoted_with_its_p_value() -> None:
    d = decide(
        evidence("i", BASE), evidence("c", flip(BASE, 20, 0)), require="better", settings=GATE
    )
    assert d.verdict is Verdict.PROMOTE
    assert d.reason == (
        "held-out 0.7000 -> 0.8000 (20 gains, 0 losses, McNemar exact p=9.54e-07 < alpha 0.01)"
    )
    assert d.stats["heldout_p_gain"] == pytest.approx(0.5**20)
    assert d.stats["heldout_gains"] == 20 and d.stats["heldout_losses"] == 0
    assert d.stats["heldout_delta"] == pytest.approx(0.1)


def test_gain_that_is_not_significant_keeps_the_incumbent() -> None:
    cand = evidence("c", flip(BASE, 5, 2))
    d = decide(evidence("i", BASE), cand, require="better", settings=GATE)
    assert d.verdict is Verdict.NOT_SIGNIFICANT
    assert d.reason == (
        "held-out 0.7000 -> 0.7150 (5 gains, 2 losses, McNemar exact p=0.227 >= alpha 0.01): "
        "no significant gain, incumbent kept"
    )
    nw = decide(evidence("i", BASE), cand, require="not-worse", settings=GATE)
    assert nw.verdict is Verdict.PROMOTE
    assert nw.reason == (
        "held-out 0.7000 -> 0.7150 (5 gains, 2 losses, McNemar exact p=0.938 for worse), "
        "hidden mean 1.0000 -> 1.0000: not worse"
    )


def test_significant_loss_is_rejected_under_both_questions() -> None:
    inc, cand = evidence("i", BASE), evidence("c", flip(BASE, 1, 15))
    for require in ("better", "not-worse"):
        d = decide(inc, cand, require=require, settings=GATE)
        assert d.verdict is Verdict.REJECT
        assert d.reason == (
            "held-out 0.7000 -> 0.6300 (1 gains, 15 losses, McNemar exact p=0.000259 "
            "< alpha 0.01): worse"
        )


def test_small_loss_that_is_not_significant_is_not_worse() -> None:
    d = decide(
        evidence("i", BASE), evidence("c", flip(BASE, 0, 3)), require="not-worse", settings=GATE
    )
    assert d.verdict is Verdict.PROMOTE
    assert d.stats["heldout_p_loss"] == pytest.approx(0.125)


def test_tier_disagreement_is_rejected_first() -> None:
    cand = evidence("c", flip(BASE, 30, 0), tiers_agree=False)
    d = decide(evidence("i", BASE), cand, require="better", settings=GATE)
    assert d.verdict is Verdict.REJECT
    assert d.reason == "compiled and pure tiers disagree (differential self-test)"
    assert d.stats["decided_by"] == "tiers"
    assert d.stats["tiers_agree"] is False


def test_kernel_disagreement_is_rejected() -> None:
    cand = evidence("c", BASE, kernels_agree=False)
    d = decide(evidence("i", BASE), cand, require="not-worse", settings=GATE)
    assert d.verdict is Verdict.REJECT
    assert d.reason == "attention kernel disagrees with its NumPy reference"


def test_hidden_task_that_passed_may_not_fall_below_the_pass_mark() -> None:
    tasks = [1] * 50 + [2] * 50
    inc_hidden = [True] * 100
    cand_hidden = [True] * 50 + [False] * 3 + [True] * 47  # task 2: 1.00 -> 0.94
    inc = evidence("i", BASE, inc_hidden, tasks)
    cand = evidence("c", flip(BASE, 30, 0), cand_hidden, tasks)
    d = decide(inc, cand, require="better", settings=GATE)
    assert d.verdict is Verdict.REJECT
    assert d.reason == "hidden task(s) 2 (1.000 -> 0.940) fell below the pass mark 0.95"
    assert d.stats["decided_by"] == "hidden_pass_mark"
    assert d.stats["hidden_passed_incumbent"] == 2 and d.stats["hidden_passed_candidate"] == 1


def test_hidden_mean_drop_beyond_tolerance_is_rejected_when_significant() -> None:
    tasks = [1] * 50 + [2] * 50
    inc_hidden = [True] * 50 + [False] * 10 + [True] * 40  # task 2 at 0.80: not passed
    cand_hidden = [True] * 50 + [False] * 18 + [True] * 32  # 0.64: 8 losses, no gain
    inc = evidence("i", BASE, inc_hidden, tasks)
    cand = evidence("c", BASE, cand_hidden, tasks)
    d = decide(inc, cand, require="not-worse", settings=GATE)
    assert d.verdict is Verdict.REJECT
    assert d.reason == (
        "hidden mean 0.9000 -> 0.8200 fell 8.000 points, more than the tolerance 0.50 "
        "(p=0.00634 < alpha 0.01)"
    )
    assert d.stats["decided_by"] == "hidden_mean"
    assert d.stats["hidden_p_drop"] == pytest.approx(drop_p_value(0, 8, 100, 0.005))
    lenient = decide(
        inc, cand, require="not-worse", settings=GateSettings(hidden_mean_tolerance=0.1)
    )
    assert lenient.verdict is Verdict.PROMOTE
    assert lenient.stats["decided_by"] == "all"


def test_hidden_mean_drop_within_chance_is_not_a_regression() -> None:
    # One flipped hidden answer of 100 moves the mean by a point, beyond the tolerance, but
    # chance explains it (p=0.75): "not worse" promotes.
    tasks = [1] * 50 + [2] * 50
    inc_hidden = [True] * 50 + [False] * 10 + [True] * 40
    cand_hidden = [True] * 50 + [False] * 10 + [True] * 39 + [False]
    inc = evidence("i", BASE, inc_hidden, tasks)
    cand = evidence("c", BASE, cand_hidden, tasks)
    d = decide(inc, cand, require="not-worse", settings=GATE)
    assert d.verdict is Verdict.PROMOTE and d.stats["decided_by"] == "all"
    assert d.stats["hidden_p_drop"] == pytest.approx(0.75)


def test_drop_p_value_matches_the_binomial_tail() -> None:
    assert drop_p_value(0, 0, 100, 0.005) == 1.0
    assert drop_p_value(0, 2, 2000, 0.005) == 1.0  # 2 losses can never exceed 10 questions
    # 10 of 10 discordant are losses, the null share at a 0.5-point drop of 1000 is 0.75.
    assert drop_p_value(0, 10, 1000, 0.005) == pytest.approx(0.75**10)


def _latency(inc_ms: float, cand_ms: float, n: int = 9) -> LatencySamples:
    jitter = [0.001 * i for i in range(n)]
    return LatencySamples(
        tuple(inc_ms / 1000 * (1 + j) for j in jitter),
        tuple(cand_ms / 1000 * (1 + j) for j in jitter),
    )


def test_significantly_slower_beyond_tolerance_is_rejected() -> None:
    inc, cand = evidence("i", BASE), evidence("c", flip(BASE, 30, 0))
    d = decide(inc, cand, require="better", settings=GATE, latency=_latency(10.0, 12.0))
    assert d.verdict is Verdict.REJECT
    assert d.reason == (
        "latency +20.0% (median 10.04 ms -> 12.05 ms, Mann-Whitney p=2.06e-05 < 0.01, beyond "
        "the tolerance 10%): slower"
    )
    assert d.stats["latency_p_slower"] == pytest.approx(1 / 48620)  # exact: 1 / C(18, 9)


def test_significantly_slower_within_tolerance_is_not_acted_on() -> None:
    d = decide(
        evidence("i", BASE),
        evidence("c", BASE),
        require="not-worse",
        settings=GATE,
        latency=_latency(10.0, 10.5),
    )
    assert d.verdict is Verdict.PROMOTE
    assert d.stats["latency_p_slower"] is not None and float(d.stats["latency_p_slower"]) < 0.01


def test_the_noise_floor_raises_the_minimum_effect() -> None:
    noisy = replace(GATE, latency_noise_floor=0.25)
    d = decide(
        evidence("i", BASE),
        evidence("c", BASE),
        require="not-worse",
        settings=noisy,
        latency=_latency(10.0, 12.0),
    )
    assert d.verdict is Verdict.PROMOTE and d.stats["decided_by"] == "unchanged"
    assert (d.stats["latency_noise_floor"], d.stats["latency_min_effect"]) == (0.25, 0.25)
    slower = decide(
        evidence("i", BASE),
        evidence("c", BASE),
        require="not-worse",
        settings=replace(GATE, latency_noise_floor=0.15),
        latency=_latency(10.0, 12.0),
    )
    assert slower.reason == (
        "latency +20.0% (median 10.04 ms -> 12.05 ms, Mann-Whitney p=2.06e-05 < 0.01, beyond "
        "the noise floor 15.0% (rsi gate calibrate; tolerance 10%)): slower"
    )
    quiet = decide(
        evidence("i", BASE),
        evidence("c", BASE),
        require="not-worse",
        settings=replace(GATE, latency_noise_floor=0.03),
        latency=_latency(10.0, 12.0),
    )
    assert quiet.verdict is Verdict.REJECT and quiet.stats["latency_min_effect"] == 0.10


def test_faster_and_not_worse_is_a_gain_for_better() -> None:
    d = decide(
        evidence("i", BASE),
        evidence("c", BASE),
        require="better",
        settings=GATE,
        latency=_latency(10.0, 8.0),
    )
    assert d.verdict is Verdict.PROMOTE
    assert d.reason == (
        "latency -20.0% (median 10.04 ms -> 8.03 ms, Mann-Whitney p=2.06e-05): faster, not worse"
    )


def test_too_few_latency_repetitions_is_an_error() -> None:
    with pytest.raises(GateError) as err:
        decide(
            evidence("i", BASE),
            evidence("c", BASE),
            require="better",
            settings=GATE,
            latency=_latency(10.0, 8.0, n=5),
        )
    assert str(err.value) == (
        "latency: 5 incumbent and 5 candidate repetitions; the gate needs at least "
        "latency_repeats=9 of each"
    )


def test_evidence_on_other_questions_is_an_error() -> None:
    inc = evidence("inc", BASE)
    cand = replace(evidence("cand", BASE), heldout=replace(split(BASE), seed=3))
    with pytest.raises(GateError) as err:
        decide(inc, cand, require="better", settings=GATE)
    assert str(err.value) == (
        "heldout evidence of cand (seed 3, data generated:0, 200 questions) is not about the "
        "questions of inc's heldout evidence (seed 0, data generated:0, 200 questions); gather "
        "both with the same data and seed"
    )


def test_unknown_question_is_an_error() -> None:
    with pytest.raises(GateError) as err:
        decide(evidence("i", BASE), evidence("c", BASE), require="best", settings=GATE)  # type: ignore[arg-type]
    assert str(err.value) == "require='best' is not a gate question; use 'better' or 'not-worse'"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("alpha", 0.5, "gate settings: alpha=0.5 is outside [1e-06, 0.2]"),
        ("latency_repeats", 5, "gate settings: latency_repeats=5 is outside [9, 1000]"),
        ("pass_mark", 1.5, "gate settings: pass_mark=1.5 is outside [0.5, 1]"),
    ],
)
def test_settings_out_of_bounds(field: str, value: float, message: str) -> None:
    with pytest.raises(GateError) as err:
        GateSettings(**cast(dict[str, Any], {field: value}))
    assert str(err.value) == message


def test_outcome_lengths_must_pair_up() -> None:
    with pytest.raises(GateError) as err:
        SplitOutcome("hidden", 0, "generated:0", (1, 2), (True,))
    assert (
        str(err.value)
        == "hidden outcome: 2 task numbers but 1 correctness flags; they must pair up"
    )


def test_mcnemar_exact_is_the_binomial_test_of_the_discordant_questions() -> None:
    assert mcnemar_exact(0, 0) == (1.0, 1.0)
    assert mcnemar_exact(5, 0) == pytest.approx((1 / 32, 1.0))
    p_gain, p_loss = mcnemar_exact(30, 10)
    assert p_gain == pytest.approx(sps.binomtest(30, 40, alternative="greater").pvalue)
    assert p_gain == pytest.approx(0.00111, rel=1e-2)
    assert p_loss == pytest.approx(sps.binomtest(10, 40, alternative="greater").pvalue)


def _aa_trial(rng: random.Random, n: int = 1000) -> tuple[Evidence, Evidence]:
    """Two exchangeable arms dealt from a build X and a different build W by a fair coin."""
    acc = rng.uniform(0.6, 0.99)
    churn = rng.uniform(0.01, 0.1)
    x = [rng.random() < acc for _ in range(n)]
    w = [(not ok) if rng.random() < churn else ok for ok in x]
    tasks = [1 + i % 20 for i in range(n)]
    hx, hw = split(x, tasks, "hidden"), split(w, tasks, "hidden")
    a, b = exchange(split(x, tasks), split(w, tasks), rng)
    ha, hb = exchange(hx, hw, rng)
    return Evidence("a", a, ha, True, True), Evidence("b", b, hb, True, True)


def test_aa_with_resampled_exchangeable_data_rarely_promotes() -> None:
    """Under McNemar's null the false-promotion rate of "better" stays at or below alpha.

    The same trials at alpha 0.2 promote far more often: the bound is not vacuous.
    """
    trials = 200

    def promotions(gate: GateSettings) -> int:
        rng = random.Random(11)
        return sum(
            decide(*_aa_trial(rng), require="better", settings=gate).promoted for _ in range(trials)
        )

    # Binomial(200, 0.01): P(X > 6) < 0.5%; the exact test is conservative besides.
    assert promotions(GATE) <= 6
    assert promotions(GateSettings(alpha=0.2)) > 12


def test_candidates_two_points_worse_are_rejected() -> None:
    """Power at the issue's margin: 2 points net worse on 2,000 questions, with churn."""
    rng = random.Random(5)
    rejected = 0
    trials = 100
    for _ in range(trials):
        base = [rng.random() < 0.9 for _ in range(2000)]
        churn = rng.randint(0, 40)
        cand = flip(base, churn, churn + 40)
        d = decide(evidence("i", base), evidence("c", cand), require="not-worse", settings=GATE)
        rejected += d.verdict is Verdict.REJECT
    assert rejected >= 99


@settings(max_examples=60, deadline=None)
@given(
    correct=st.lists(st.booleans(), min_size=1, max_size=300),
    seed=st.integers(0, 2**32 - 1),
    flips=st.floats(0.0, 0.5),
)
def test_a_significant_gain_reversed_is_a_rejection(
    correct: list[bool], seed: int, flips: float
) -> None:
    rng = random.Random(seed)
    other = [(not ok) if rng.random() < flips else ok for ok in correct]
    a, b = evidence("a", correct), evidence("b", other)
    forward = decide(a, b, require="better", settings=GATE)
    backward = decide(b, a, require="not-worse", settings=GATE)
    if forward.verdict is Verdict.PROMOTE:
        assert backward.verdict is Verdict.REJECT
    if forward.verdict is Verdict.REJECT:
        assert decide(b, a, require="better", settings=GATE).verdict is Verdict.PROMOTE
    assert decide(a, a, require="not-worse", settings=GATE).verdict is Verdict.PROMOTE
    assert decide(a, a, require="better", settings=GATE).verdict is Verdict.NOT_SIGNIFICANT


def test_hidden_drop_exactly_at_the_tolerance_is_accepted() -> None:
    """0.875 -> 0.870 is a drop of 0.005 (in floats 0.0050000000000000044), not more."""
    tasks = [1] * 400 + [2] * 400
    inc_hidden = [True] * 300 + [False] * 100 + [True] * 400  # task 1 at 0.75, task 2 at 1
    cand_hidden = [True] * 296 + [False] * 104 + [True] * 400  # task 1 at 0.74
    inc = evidence("i", BASE, inc_hidden, tasks)
    cand = evidence("c", BASE, cand_hidden, tasks)
    assert inc.hidden.mean - cand.hidden.mean > 0.005  # the float difference
    d = decide(inc, cand, require="not-worse", settings=GATE)
    assert d.stats["decided_by"] == "all", d.reason
