"""From training stories to the uniform state and the tuned state (train split only)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from codegen.state import BenchmarkSummary, RSIState
from codegen.toolchain import Backend
from runtime.babi.builds import build_model
from runtime.babi.data import Story
from runtime.babi.learn import learn_associations, learn_vocabulary, with_knowledge
from runtime.babi.lexicon import learn_verb_classes, with_learned_verbs
from runtime.babi.tune import TuneResult, collect_evidence, state_from_data, tune

__all__ = ["uniform_state", "TunedStates", "tune_states"]

logger = logging.getLogger(__name__)


def uniform_state(base: RSIState) -> RSIState:
    """``base`` with every expert weight and coefficient 1, no routing rules, no benchmark."""
    data = base.model_dump(mode="json")
    data["benchmark"] = BenchmarkSummary().model_dump(mode="json")
    for expert in data["experts"].values():
        expert["weight"] = 1.0
    for key in data["scoring"]:
        data["scoring"][key] = 1.0
    data["routing"] = []
    return state_from_data(data)


@dataclass(frozen=True)
class TunedStates:
    """The uniform starting state (learned knowledge, uniform weights) and the tuned one."""

    uniform: RSIState
    tuned: RSIState
    search: TuneResult


def tune_states(
    base: RSIState,
    train: Sequence[Story],
    generated_dir: Path,
    *,
    seed: int = 0,
    proposals: int = 400,
    backend: Backend = "cython",
) -> TunedStates:
    """Learn verbs, vocabulary and associations from ``train``; search weights and rules."""
    lexicon = with_learned_verbs(base.lexicon, learn_verb_classes(train))
    start = uniform_state(base).model_copy(update={"lexicon": lexicon})
    vocabulary = learn_vocabulary(train)
    with_vocab = with_knowledge(start, vocabulary, ())
    learner = build_model(with_vocab, generated_dir, "python").model
    associations = learn_associations(learner, train)
    uniform = with_knowledge(with_vocab, vocabulary, associations)
    logger.info("learned %d answer words, %d associations", len(vocabulary), len(associations))
    model = build_model(uniform, generated_dir, backend, full_evidence=True).model
    evidence = collect_evidence(model, train)
    search = tune(uniform, evidence, seed=seed, proposals=proposals)
    tuned = search.state.model_copy(update={"version": base.version + 1})
    return TunedStates(uniform, tuned, search)
