"""The safety policy: step bound, approval list, globs, waivers; one-line refusals."""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest

from codegen.policy import PolicyError, approves, changed_paths, check_policy
from codegen.state import RSIState
from tests.conftest import SHIPPED_STATE


def state(**changes: Any) -> RSIState:
    """The shipped state with dotted-path changes (``scoring__rag=0.2``)."""
    data = json.loads(SHIPPED_STATE.read_text())
    for key, value in changes.items():
        target = data
        *parents, leaf = key.split("__")
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[leaf] = value
    return RSIState.model_validate(data, strict=False)


def refusal(old: RSIState, new: RSIState, approve: tuple[str, ...] = ()) -> str:
    with pytest.raises(PolicyError) as info:
        check_policy(old, new, approve=approve)
    return str(info.value)


def test_step_within_bound_passes_and_is_listed() -> None:
    report = check_policy(state(scoring__rag=0.2), state(scoring__rag=0.3, version=9))
    assert report.paths == ("scoring.rag",)
    assert report.changes[0].step == pytest.approx(0.5)
    assert report.approved == () and report.waived == ()


def test_step_beyond_bound_is_refused_in_one_line() -> None:
    assert refusal(state(scoring__rag=0.2), state(scoring__rag=0.9)) == (
        "scoring.rag: 0.2 -> 0.9 exceeds max_relative_step 0.5; approve with --approve scoring.rag"
    )


def test_zero_is_measured_against_a_unit_scale() -> None:
    old = state(experts__embedder__weight=0.0)
    check_policy(old, state(experts__embedder__weight=0.5))
    assert refusal(old, state(experts__embedder__weight=0.6)) == (
        "experts.embedder.weight: 0.0 -> 0.6 exceeds max_relative_step 0.5; "
        "approve with --approve experts.embedder.weight"
    )


def test_a_move_to_zero_is_a_full_step() -> None:
    assert refusal(state(scoring__rag=5.0), state(scoring__rag=0.0)).startswith(
        "scoring.rag: 5.0 -> 0.0 exceeds max_relative_step 0.5"
    )


def test_an_integer_may_always_move_by_one() -> None:
    check_policy(state(architecture__heads=1), state(architecture__heads=2))
    assert refusal(state(architecture__heads=1), state(architecture__heads=4)) == (
        "architecture.heads: 1 -> 4 exceeds max_relative_step 0.5; "
        "approve with --approve architecture.heads"
    )


def test_an_added_rule_counts_from_zero() -> None:
    rule = {"when_all": ["afraid"], "boosts": {"deducer": 3.0}}
    assert refusal(state(), state(routing=[rule])) == (
        "routing[afraid].boosts.deducer: (absent) -> 3.0 exceeds max_relative_step 0.5; "
        "approve with --approve 'routing[afraid].boosts.deducer'"  # quoted: [ ] are shell globs
    )
    small = {"when_all": ["afraid"], "boosts": {"deducer": 0.4}}
    assert check_policy(state(), state(routing=[small])).paths == (
        "routing[afraid].boosts.deducer",
    )


def test_a_rule_repeated_is_one_boost_as_large_as_their_sum() -> None:
    rule = {"when_all": ["afraid"], "boosts": {"motive": 0.45}}
    assert refusal(state(), state(routing=[rule] * 4)) == (
        "routing[afraid].boosts.motive: (absent) -> 1.8 exceeds max_relative_step 0.5; "
        "approve with --approve 'routing[afraid].boosts.motive'"
    )


def test_a_rule_moved_in_the_list_is_no_change() -> None:
    afraid = {"when_all": ["afraid"], "boosts": {"motive": 0.45}}
    bored = {"when_all": ["bored", "is"], "boosts": {"tracker": 0.2}}
    reordered = {"when_all": ["is", "bored"], "boosts": {"tracker": 0.2}}
    old = state(routing=[afraid])
    assert check_policy(old, state(routing=[bored, afraid])).paths == (
        "routing[bored,is].boosts.tracker",
    )
    assert (
        check_policy(state(routing=[afraid, bored]), state(routing=[reordered, afraid])).paths == ()
    )


def test_approval_required_path_is_refused_unless_approved() -> None:
    old, new = state(), state(architecture__attention="linear")
    assert refusal(old, new) == (
        "architecture.attention: sdpa -> linear needs approval (safety.approval_required); "
        "approve with --approve architecture.attention"
    )
    report = check_policy(old, new, approve=["architecture.attention"])
    assert report.approved == ("architecture.attention",)


def test_the_incumbents_policy_decides_and_guards_itself() -> None:
    old = state()
    looser = state(safety__max_relative_step=10.0, scoring__rag=0.1)
    assert refusal(old, looser) == (
        "safety.max_relative_step: 0.5 -> 10.0 changes the safety policy "
        "(safety.approval_required) (+1 more: scoring.rag); approve all with "
        "--approve safety.max_relative_step --approve scoring.rag"
    )
    strict = state(safety__approval_required=["scoring"])
    assert refusal(strict, state(scoring__rag=4.9, safety__approval_required=["scoring"])) == (
        "scoring.rag: 5.0 -> 4.9 needs approval (safety.approval_required); "
        "approve with --approve scoring.rag"
    )


def test_a_refusal_names_every_path_and_the_arguments_that_approve_them() -> None:
    rule = {"when_all": ["afraid"], "boosts": {"deducer": 3.0}}
    new = state(routing=[rule], scoring__rag=0.1, architecture__attention="linear")
    line = refusal(state(), new)
    assert line == (
        "architecture.attention: sdpa -> linear needs approval (safety.approval_required) "
        "(+2 more: routing[afraid].boosts.deducer, scoring.rag); approve all with "
        "--approve architecture.attention --approve 'routing[afraid].boosts.deducer' "
        "--approve scoring.rag"
    )
    approvals = tuple(shlex.split(line.split("approve all with ")[1])[1::2])
    assert check_policy(state(), new, approve=approvals).approved == (
        "architecture.attention",
        "routing[afraid].boosts.deducer",
        "scoring.rag",
    )


def test_a_long_refusal_is_not_cut_short() -> None:
    """Twelve refused paths: the line is long, and pasting its arguments approves them all."""
    rules = [{"when_all": [f"w{i}"], "boosts": {"deducer": 3.0}} for i in range(12)]
    line = refusal(state(), state(routing=rules))
    assert len(line) > 400 and not line.endswith("...")
    approvals = tuple(shlex.split(line.split("approve all with ")[1])[1::2])
    assert len(check_policy(state(), state(routing=rules), approve=approvals).approved) == 12


@pytest.mark.parametrize(
    ("pattern", "hint"),
    [
        ("scoring.atention", "did you mean scoring.attention?"),
        ("experts.trackr", "did you mean experts.tracker?"),
        ("zzzz", "see `rsi schema` for the fields"),
        ("routing[7]", "did you mean routing?"),
    ],
)
def test_an_approval_that_names_no_field_is_refused_with_the_closest(
    pattern: str, hint: str
) -> None:
    assert refusal(state(), state(scoring__rag=0.1), (pattern,)) == (
        f"--approve {shlex.quote(pattern)}: matches no field of the state schema; {hint}"
    )


def test_an_approval_of_fields_nothing_changed_is_fine() -> None:
    report = check_policy(
        state(),
        state(scoring__rag=4.9),
        approve=["architecture.heads", "safety.approval_required", "experts.tracker", "version"],
    )
    assert report.paths == ("scoring.rag",) and report.approved == ()


def test_globs_approve_and_lift_the_step_bound() -> None:
    old = state(scoring__rag=0.2, experts__tracker__weight=1.0)
    new = state(scoring__rag=0.9, experts__tracker__weight=5.0)
    assert refusal(old, new, ("scoring.*",)).startswith("experts.tracker.weight: 1.0 -> 5.0")
    report = check_policy(old, new, approve=["scoring.*", "experts"])
    assert report.approved == ("experts.tracker.weight", "scoring.rag")
    assert check_policy(old, new, approve=["*"]).approved == report.approved


def test_waive_refuses_nothing_and_records_what_it_waived() -> None:
    report = check_policy(
        state(scoring__rag=0.2),
        state(scoring__rag=0.9, architecture__attention="flash"),
        waive=True,
    )
    assert report.waived == (
        "architecture.attention: sdpa -> flash needs approval (safety.approval_required); "
        "approve with --approve architecture.attention",
        "scoring.rag: 0.2 -> 0.9 exceeds max_relative_step 0.5; approve with --approve scoring.rag",
    )


def test_version_and_benchmark_change_freely() -> None:
    assert changed_paths(state(), state(version=99, benchmark__mean=0.5)) == ()


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("scoring.*", "scoring.rag", True),
        ("scoring", "scoring.rag", True),
        ("scoring", "scoring_x", False),
        ("score", "scoring.rag", False),
        ("*", "routing[3].boosts.deducer", True),
        ("routing[0]", "routing[0].boosts.deducer", True),
        ("routing[0]", "routing0", False),
        ("experts.?racker.weight", "experts.tracker.weight", True),
    ],
)
def test_approves(pattern: str, path: str, expected: bool) -> None:
    assert approves(pattern, path) is expected


def test_kernel_knobs_are_choices_not_magnitudes() -> None:
    """The autotuner's tile 4 -> 10 (or a first choice, from absent) is no step violation;
    listing ``kernels`` in approval_required still guards them."""
    base = state(kernels={"tuned": {"sdpa": {"tile": 4, "unroll": 4}}, "fingerprint": ""})
    tuned = state(kernels={"tuned": {"sdpa": {"tile": 10, "unroll": 2}}, "fingerprint": "ab"})
    report = check_policy(base, tuned)
    assert set(report.paths) == {
        "kernels.fingerprint",
        "kernels.tuned.sdpa.tile",
        "kernels.tuned.sdpa.unroll",
    }
    check_policy(state(), tuned)  # from no tuned choice at all
    guarded = state(
        kernels={"tuned": {"sdpa": {"tile": 4, "unroll": 4}}, "fingerprint": ""},
        safety__approval_required=["kernels"],
    )
    assert refusal(guarded, tuned).startswith("kernels.fingerprint: -> ab needs approval")
