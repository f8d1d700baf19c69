"""Generated attention kernels against the NumPy reference, in both tiers.

Compiled kernels are checked by property tests (shapes, values, masks); the interpreted tier
(the same ``.py``) runs on a few small inputs and must agree with the compiled one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codegen.check import check_sources
from codegen.render import render_module
from codegen.state import AttentionMechanism, RSIState
from codegen.toolchain import CompileSettings
from runtime.kernels.build import CHECKS, MODULES, kernel_module, module_source
from runtime.kernels.reference import max_rel_err
from tests.runtime.kernels.cases import ARCHES, MASKS, make_case, make_state
from tests.runtime.kernels.conftest import built

M = AttentionMechanism
TOL = 1e-4
MASKED = [m for m in M if m is not M.mamba]
Kernel = Callable[..., np.ndarray]


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(ARCHES))
@pytest.mark.parametrize("mechanism", list(M), ids=lambda m: m.value)
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from([1e-3, 0.3, 1.0, 3.0]),
    mask_kind=st.sampled_from(MASKS),
)
def test_matches_reference(
    arch: str,
    mechanism: AttentionMechanism,
    kernel_cache: Path,
    data: st.DataObject,
    seed: int,
    scale: float,
    mask_kind: str,
) -> None:
    state = make_state(arch)
    n = data.draw(st.integers(1, state.architecture.seq_len), label="n")
    kernel = built(arch, "cython", kernel_cache)[mechanism].kernel
    args, expected = make_case(mechanism, state, n, seed, scale, mask_kind)
    out = kernel(*args)
    assert out.dtype == np.float32 and out.shape == (n, state.architecture.embedding_dim)
    assert np.isfinite(out).all()
    assert max_rel_err(out, expected()) <= TOL


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(ARCHES))
@pytest.mark.parametrize("mechanism", MASKED, ids=lambda m: m.value)
def test_fully_masked_rows_are_zero(
    arch: str, mechanism: AttentionMechanism, kernel_cache: Path
) -> None:
    state = make_state(arch)
    kernel = built(arch, "cython", kernel_cache)[mechanism].kernel
    n = state.architecture.seq_len
    args, _ = make_case(mechanism, state, n, seed=1, mask_kind="all")
    assert not kernel(*args).any()
    if state.architecture.causal:
        # Query 0 sees key 0 only; with key 0 masked its row is empty: zeros, never NaN.
        args, expected = make_case(mechanism, state, n, seed=2, mask_kind="first")
        out = kernel(*args)
        assert not out[0].any()
        assert max_rel_err(out, expected()) <= TOL


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(ARCHES))
@pytest.mark.parametrize("mechanism", list(M), ids=lambda m: m.value)
def test_single_token(arch: str, mechanism: AttentionMechanism, kernel_cache: Path) -> None:
    state = make_state(arch)
    kernel = built(arch, "cython", kernel_cache)[mechanism].kernel
    args, expected = make_case(mechanism, state, 1, seed=3, mask_kind="none")
    assert max_rel_err(kernel(*args), expected()) <= TOL


@pytest.mark.slow
@pytest.mark.parametrize("mechanism", list(M), ids=lambda m: m.value)
def test_tiers_agree(mechanism: AttentionMechanism, kernel_cache: Path) -> None:
    state = make_state("odd")
    compiled = built("odd", "cython", kernel_cache)[mechanism]
    interpreted = built("odd", "python", kernel_cache)[mechanism]
    assert compiled.tier == "cython" and interpreted.tier == "python"
    for n, seed in ((1, 4), (7, 5)):
        args, expected = make_case(mechanism, state, n, seed)
        a, b = compiled.kernel(*args), interpreted.kernel(*args)
        assert max_rel_err(a, b) <= TOL
        assert max_rel_err(b, expected()) <= TOL


@pytest.mark.slow
def test_every_mechanism_passes_the_build_checks(tmp_path: Path) -> None:
    """A build checks only the mechanism its state selects: each must pass guards and mypy."""
    state = make_state("odd")
    sources = {MODULES[m]: module_source(state, m) for m in M}
    sources[CHECKS] = render_module(CHECKS, state)  # the static module every kernel imports
    assert sorted(check_sources(sources, tmp_path)) == sorted(sources)


@pytest.mark.slow
@pytest.mark.parametrize("mechanism", list(M), ids=lambda m: m.value)
def test_read_only_inputs(mechanism: AttentionMechanism, kernel_cache: Path) -> None:
    """Inputs are read through const views: frozen arrays (e.g. memory-mapped) are fine."""
    state = make_state("odd")
    kernel = built("odd", "cython", kernel_cache)[mechanism].kernel
    args, expected = make_case(mechanism, state, 6, seed=9)
    frozen = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    for a in frozen:
        if isinstance(a, np.ndarray):
            a.flags.writeable = False
    assert max_rel_err(kernel(*frozen), expected()) <= TOL


@pytest.mark.slow
class TestBoundary:
    """Shapes, dtypes and layouts are checked before any loop runs: one-line ValueError."""

    @pytest.fixture
    def sdpa(self, kernel_cache: Path) -> Kernel:
        return built("odd", "cython", kernel_cache)[M.sdpa].kernel

    def test_wrong_dtype(self, sdpa: Kernel) -> None:
        q = np.zeros((4, 12))
        with pytest.raises(ValueError, match=r"^sdpa: q must be a C-contiguous float32 array "):
            sdpa(q, q, q)

    def test_wrong_width(self, sdpa: Kernel) -> None:
        q = np.zeros((4, 12), np.float32)
        with pytest.raises(ValueError, match=r"k must be .* \(4, 12\), got float32 \(4, 11\)"):
            sdpa(q, np.zeros((4, 11), np.float32), q)

    def test_not_contiguous(self, sdpa: Kernel) -> None:
        q = np.zeros((4, 24), np.float32)[:, ::2]
        with pytest.raises(ValueError, match=r"non-contiguous"):
            sdpa(q, q, q)

    def test_too_long(self, sdpa: Kernel) -> None:
        q = np.zeros((38, 12), np.float32)
        with pytest.raises(ValueError, match=r"1 to 37 rows \(architecture.seq_len\), got 38"):
            sdpa(q, q, q)

    def test_empty(self, sdpa: Kernel) -> None:
        q = np.zeros((0, 12), np.float32)
        with pytest.raises(ValueError, match=r"got 0$"):
            sdpa(q, q, q)

    def test_bad_mask(self, sdpa: Kernel) -> None:
        q = np.zeros((4, 12), np.float32)
        with pytest.raises(
            ValueError, match=r"mask must be a C-contiguous bool or uint8 array of shape \(4,\)"
        ):
            sdpa(q, q, q, np.ones(5, bool))

    def test_a_non_contiguous_mask_says_so(self, sdpa: Kernel) -> None:
        q = np.zeros((4, 12), np.float32)
        with pytest.raises(ValueError, match=r", got bool non-contiguous \(4,\)$"):
            sdpa(q, q, q, np.ones(8, bool)[::2])

    def test_a_1d_array_names_the_shape_wanted(self, sdpa: Kernel) -> None:
        q = np.zeros(12, np.float32)
        with pytest.raises(
            ValueError, match=r"^sdpa: q must be a 2-D array \(rows, columns\), got shape \(12,\)$"
        ):
            sdpa(q, q, q, np.ones(12, bool))

    def test_not_an_array(self, sdpa: Kernel) -> None:
        with pytest.raises(ValueError, match=r"^sdpa: q must be a float32 numpy array, got list$"):
            sdpa([[0.0] * 12] * 4, np.zeros((4, 12), np.float32), np.zeros((4, 12), np.float32))

    def test_read_only_inputs_accepted(self, sdpa: Kernel) -> None:
        q = np.ones((4, 12), np.float32)
        q.flags.writeable = False
        mask = np.array([True, False, True, True])
        mask.flags.writeable = False
        assert np.isfinite(sdpa(q, q, q, mask)).all()

    def test_bool_mask_accepted(self, sdpa: Kernel) -> None:
        q = np.ones((4, 12), np.float32)
        mask = np.array([True, False, True, True])
        assert np.isfinite(sdpa(q, q, q, mask)).all()

    def test_mamba_rejects_growing_state(self, kernel_cache: Path) -> None:
        state = make_state("odd")
        mamba = built("odd", "cython", kernel_cache)[M.mamba].kernel
        args, _ = make_case(M.mamba, state, 5, seed=6)
        a = args[2].copy()
        a[0, 0] = 0.5
        with pytest.raises(ValueError, match=r"^mamba: a must be <= 0"):
            mamba(args[0], args[1], a, *args[3:])


@pytest.mark.parametrize("mechanism", list(M), ids=lambda m: m.value)
def test_hot_loops_release_the_gil_and_bake_the_state(mechanism: AttentionMechanism) -> None:
    state = make_state("odd")
    source = module_source(state, mechanism)
    assert "with cython.nogil:" in source
    assert source.startswith("# rsi: cflags = -O3 -march=native")
    assert f"N: int = {state.architecture.seq_len}\n" in source
    # The same .py is the interpreted tier: nothing Cython-only at module level.
    compile(source, f"{mechanism.value}.py", "exec")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("causal", "tile", "unroll", "width"),
    [(False, 8, 3, 2), (True, 8, 3, 2), (False, 10, 4, 1), (True, 12, 4, 1)],
)
def test_tall_tiles_at_full_width(
    causal: bool, tile: int, unroll: int, width: int, kernel_cache: Path
) -> None:
    """Tiles of 8 to 12 rows at D=64 split the weighted-value rows into register-sized groups."""
    data = make_state("odd").model_dump(mode="json")
    data["architecture"].update(embedding_dim=64, heads=4, num_experts=4, seq_len=45, causal=causal)
    choice = {"variant": "blocked", "tile": tile, "unroll": unroll, "width": width}
    data["kernels"]["tuned"] = {"sdpa": choice}
    state = RSIState.model_validate_json(json.dumps(data))
    kernel = kernel_module(state, M.sdpa, CompileSettings(), kernel_cache).kernel
    for n, mask_kind in ((45, "random"), (9, "none"), (1, "none")):
        args, expected = make_case(M.sdpa, state, n, seed=n, mask_kind=mask_kind)
        assert max_rel_err(kernel(*args), expected()) <= TOL
