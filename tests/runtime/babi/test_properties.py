"""Properties of the model and the screener (hypothesis).

Renaming people consistently must not change what the model concludes: the experts reason
over structure, not over particular names. Scaling every weight of a routing-free state by a
positive constant must not change any screened choice.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codegen.state import RSIState
from runtime.babi.builds import BuiltModel, build_model
from runtime.babi.generate import generate_stories
from runtime.babi.tune import Evidence, collect_evidence, screen, state_from_data

_PEOPLE = ("Mary", "John", "Sandra", "Daniel")
_FRESH = ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy")
_STORIES = [
    s for s in generate_stories(seed=77, stories_per_task=4) if s.task in (1, 2, 6, 7, 8, 11, 12)
]


def _rename(text: str, names: dict[str, str]) -> str:
    return re.sub(r"\b(" + "|".join(names) + r")\b", lambda m: names[m.group(1)], text)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    index=st.integers(min_value=0, max_value=len(_STORIES) - 1),
    fresh=st.permutations(_FRESH),
)
def test_renaming_people_renames_answers(
    python_model: BuiltModel, index: int, fresh: list[str]
) -> None:
    story = _STORIES[index]
    names = dict(zip(_PEOPLE, fresh, strict=False))
    model = python_model.model
    questions = [(q.text, q.position) for q in story.questions]
    before = model.answer_all(model.prepare(story.sentences, questions))
    renamed = model.answer_all(
        model.prepare(
            [_rename(s, names) for s in story.sentences],
            [(_rename(t, names), p) for t, p in questions],
        )
    )
    assert [_rename(choice, names) for choice, _ in before] == [choice for choice, _ in renamed]


@pytest.fixture(scope="module")
def uniform_evidence(uniform_state: RSIState, babi_generated: Path) -> Evidence:
    """Evidence of a few generated stories under the uniform state (all rows computed)."""
    model = build_model(uniform_state, babi_generated, "python", full_evidence=True).model
    return collect_evidence(model, generate_stories(seed=13, stories_per_task=2))


@settings(max_examples=20, deadline=None)
@given(scale=st.sampled_from([0.125, 0.25, 0.5, 2.0, 4.0, 8.0]))
def test_scaling_all_weights_keeps_choices(
    uniform_state: RSIState, uniform_evidence: Evidence, scale: float
) -> None:
    # Powers of two scale every product exactly, so even exact ties must stay ties.
    data = uniform_state.model_dump(mode="json")
    for expert in data["experts"].values():
        expert["weight"] = expert["weight"] * scale
    scaled = screen(state_from_data(data), uniform_evidence)
    assert (scaled.choices == screen(uniform_state, uniform_evidence).choices).all()
