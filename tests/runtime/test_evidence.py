"""Evidence for the gate: per-question outcomes in a fixed order, tier and kernel checks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from codegen.state import load_state
from runtime.babi.builds import BuiltModel, build_model
from runtime.babi.data import Split
from runtime.babi.evaluate import evaluate, load_split
from runtime.babi.model import reference_sdpa
from runtime.evidence import (
    data_fingerprint,
    gather,
    kernels_agree,
    measure_latency,
    pure_tier,
    stories_of,
    tiers_agree,
)
from runtime.gate import SplitOutcome
from runtime.loader import LoadedBuild, LoadError, load_build

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory, module_cache: Path) -> Path:
    root = tmp_path_factory.mktemp("evidence") / "generated"
    root.mkdir()
    (root / ".cache").symlink_to(module_cache)
    return root


@pytest.fixture(scope="module")
def python_built(generated: Path) -> BuiltModel:
    return build_model(load_state(REPO / "rsi_state.json"), generated, "python")


@pytest.fixture(scope="module")
def compiled_built(generated: Path) -> BuiltModel:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: the compiled tier cannot be built")
    return build_model(load_state(REPO / "rsi_state.json"), generated, "cython")


def test_gather_on_generated_stories_keeps_the_split_order(
    python_built: BuiltModel,
) -> None:
    ev = gather(python_built.build, data=None, seed=0)
    assert ev.build_id == python_built.build.build_id
    pairs: tuple[tuple[SplitOutcome, Split], ...] = (
        (ev.heldout, "heldout"),
        (ev.hidden, "hidden"),
    )
    for outcome, split in pairs:
        stories = load_split(None, split, seed=0)
        result = evaluate(python_built.model, stories, keep_answers=True)
        assert outcome.split == split and outcome.seed == 0
        assert outcome.data_fingerprint == "generated:0"
        assert outcome.tasks == tuple(s.task for s in stories for _ in s.questions)
        assert outcome.correct == tuple(a.correct for a in result.answers)
        assert outcome.mean == pytest.approx(result.mean)
    assert ev.tiers_agree and ev.kernels_agree  # one tier: nothing to disagree


def test_another_seed_is_other_questions(python_built: BuiltModel) -> None:
    a = stories_of(None, "heldout", 0)
    b = stories_of(None, "heldout", 1)
    assert data_fingerprint(None, 1) == "generated:1"
    assert [s.sentences for s in a] != [s.sentences for s in b]


@pytest.mark.slow  # compiles the shipped state
def test_compiled_build_agrees_with_its_pure_tier(
    compiled_built: BuiltModel, python_built: BuiltModel
) -> None:
    build = compiled_built.build
    pure = pure_tier(build)
    assert pure.tier == "python" and set(pure.modules) == set(build.modules)
    assert pure_tier(build) is pure  # imported once per process
    ev = gather(build, data=None, seed=0)
    assert ev.tiers_agree and ev.kernels_agree
    slow = gather(python_built.build, data=None, seed=0)
    assert (ev.heldout, ev.hidden) == (slow.heldout, slow.hidden)


def _copy_build(build: LoadedBuild, dest: Path, build_id: str) -> Path:
    shutil.copytree(build.path, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["build_id"] = build_id
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def _edit_source(build_dir: Path, name: str, old: str, new: str, *, manifest: bool) -> None:
    source = build_dir / f"{name}.py"
    text = source.read_text()
    assert old in text
    source.write_text(text.replace(old, new))
    if manifest:
        data = json.loads((build_dir / "manifest.json").read_text())
        data["modules"][name]["source_sha256"] = hashlib.sha256(source.read_bytes()).hexdigest()
        (build_dir / "manifest.json").write_text(json.dumps(data))


@pytest.mark.slow  # compiles the shipped state
def test_pure_tier_that_computes_otherwise_is_a_disagreement(
    compiled_built: BuiltModel, tmp_path: Path
) -> None:
    copy = _copy_build(compiled_built.build, tmp_path / "feedfacefeed0001", "feedfacefeed0001")
    _edit_source(
        copy,
        "scoring",
        "w[0] = 1.25",
        "w[0] = 0.0",
        manifest=True,
    )
    build = load_build(copy)
    assert not tiers_agree(build, stories_of(None, "heldout", 0))
    assert tiers_agree(compiled_built.build, stories_of(None, "heldout", 0))


@pytest.mark.slow  # compiles the shipped state
def test_pure_tier_refuses_a_source_edited_after_the_build(
    compiled_built: BuiltModel, tmp_path: Path
) -> None:
    copy = _copy_build(compiled_built.build, tmp_path / "feedfacefeed0002", "feedfacefeed0002")
    _edit_source(copy, "scoring", "w[5] * 5.0", "w[5] * 4.0", manifest=False)
    # The loader verifies every rendered source before it imports anything.
    with pytest.raises(LoadError) as err:
        pure_tier(load_build(copy))
    assert str(err.value) == (
        "feedfacefeed0002: scoring.py of module scoring does not match its manifest"
    )


def _with_attention(build: LoadedBuild, kernel: object) -> LoadedBuild:
    attention = types.ModuleType("attention")
    attention.N, attention.D, attention.CAUSAL = 12, 8, False  # type: ignore[attr-defined]
    attention.sdpa = kernel  # type: ignore[attr-defined]
    modules = dict(build.modules, attention=attention)
    return replace(build, modules=modules)


def test_kernel_that_ignores_the_mask_disagrees_with_the_reference(
    python_built: BuiltModel,
) -> None:
    def unmasked(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return reference_sdpa(q, k, v)

    assert not kernels_agree(_with_attention(python_built.build, unmasked))
    assert kernels_agree(_with_attention(python_built.build, reference_sdpa))


@pytest.mark.slow  # compiles the shipped state
def test_generated_kernel_agrees_with_the_reference(compiled_built: BuiltModel) -> None:
    assert "attention" in compiled_built.build.modules
    assert kernels_agree(compiled_built.build)


@pytest.mark.slow  # compiles the shipped state
def test_measure_latency_interleaves_repetitions(compiled_built: BuiltModel) -> None:
    samples = measure_latency(
        compiled_built.build, compiled_built.build, repeats=9, data=None, seed=0
    )
    assert len(samples.incumbent_s) == len(samples.candidate_s) == 9
    assert min(samples.incumbent_s + samples.candidate_s) > 0


def test_fingerprint_follows_the_bytes_of_the_files(tmp_path: Path) -> None:
    story = "1 Mary went to the kitchen.\n2 Where is Mary?\tkitchen\t1\n"
    (tmp_path / "qa1_single-supporting-fact_train.txt").write_text(story * 3)
    first = data_fingerprint(tmp_path)
    assert len(first) == 64 and first == data_fingerprint(tmp_path)
    assert len(stories_of(tmp_path, "all")) == 3
    (tmp_path / "qa1_single-supporting-fact_train.txt").write_text(story * 4)
    assert data_fingerprint(tmp_path) != first
    assert len(stories_of(tmp_path, "all")) == 4  # the parse cache follows the files


def _real_data() -> Path:
    value = os.environ.get("RSI_BABI_DIR")
    if not value:
        pytest.skip("RSI_BABI_DIR is not set: no real bAbI files to gather evidence on")
    return Path(value)


@pytest.mark.slow  # compiles the shipped state
def test_gather_on_the_real_files(compiled_built: BuiltModel) -> None:
    data = _real_data()
    ev = gather(compiled_built.build, data=data, seed=0)
    assert ev.heldout.data_fingerprint == data_fingerprint(data) != "generated:0"
    assert len(ev.heldout.correct) > 1500 and len(ev.hidden.correct) > 1500
    assert len(set(ev.heldout.tasks)) == 20
    assert ev.tiers_agree and ev.kernels_agree
