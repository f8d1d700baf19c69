"""The RSI loop end to end on the embedded generated stories, through the real gate; its
report (rendered in headless Chromium); the Ray executor against the local one.

Slow (it builds and gates candidates); the first run fills the session's module cache, so
the determinism, resume and Ray runs find their candidates compiled already.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread

from runtime.evidence import data_fingerprint
from runtime.project import Project
from runtime.rsi.loop import LoopResult, LoopSettings, run_loop
from runtime.rsi.manifest import load_manifest, runs_dir
from runtime.rsi.report import time_split, write_report

REPO = Path(__file__).resolve().parents[2]
UNIFORM = REPO / "states" / "uniform.json"
ITERATIONS = 2
# The runs without a budget skip the kernel autotuner (minutes of compiling on a cold cache);
# the budget test keeps it, bounded by the budget.
UNBUDGETED = LoopSettings(start=UNIFORM, iterations=ITERATIONS, seed=0, knobs=False)

pytestmark = pytest.mark.slow


def new_project(root: Path, module_cache: Path) -> Project:
    """A project dir holding the uniform state, sharing the session's module cache."""
    (root / "generated").mkdir(parents=True)
    (root / "generated" / ".cache").symlink_to(module_cache)
    (root / "rsi_state.json").write_bytes(UNIFORM.read_bytes())
    return Project(root / "rsi_state.json")


def decisions_of(result: LoopResult) -> list[tuple[Any, ...]]:
    """What must not differ between two runs of the same seed (no timings)."""
    return [
        (d["iteration"], d["candidate"], d["verdict"], d["p_value"], tuple(d["changes"]))
        for d in result.manifest.decisions
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, module_cache: Path) -> LoopResult:
    """One loop run: from the uniform state, two iterations, seed 0."""
    project = new_project(tmp_path_factory.mktemp("loop") / "ref", module_cache)
    return run_loop(project, UNBUDGETED)


def test_loop_promotes_a_routing_rule_mined_from_failures(reference: LoopResult) -> None:
    manifest = reference.manifest
    first = manifest.decisions[0]
    assert first["verdict"] == "promote" and first["promoted"]
    assert first["p_value"] < manifest.config["gate"]["alpha"]
    assert any(c.startswith("rule:") and "train failures" in c for c in first["changes"])
    project = Project(Path(manifest.config["state"]))
    state = json.loads(project.state_path.read_text())
    assert state["routing"], "the promoted state has no routing rule"
    assert project.state_path.read_bytes() == project.ledger.state(first["state_version"]).data
    held = manifest.iterations[-1]["heldout_per_task"]
    assert min(held.values()) >= 0.95


def test_a_small_budget_is_kept(reference: LoopResult, tmp_path: Path, module_cache: Path) -> None:
    """The run ends within its budget but for one gate decision (the module cache is warm,
    so setting up, which is never interrupted, takes a fraction of it)."""
    budget_s = 45.0
    project = new_project(tmp_path / "budget", module_cache)
    result = run_loop(project, LoopSettings(start=UNIFORM, budget_s=budget_s, seed=0))
    manifest = result.manifest
    setup_s = manifest.seconds["start"] + manifest.seconds["evidence"]
    assert setup_s < budget_s / 2
    if not manifest.stop_reason.startswith(f"budget {budget_s:g} s spent"):
        # Done before the budget ran out (a quiet machine): nothing left to bound.
        assert manifest.elapsed_s <= budget_s, manifest.stop_reason
    gates = [
        sum(float(d["seconds"].get(k, 0.0)) for k in ("build", "sandbox", "evaluate", "gate"))
        for d in manifest.decisions
    ]
    assert manifest.elapsed_s <= budget_s + max([0.0, *gates]) + 2.0
    assert time_split(manifest)["compile"] >= manifest.seconds["start"]


def test_run_manifest_records_what_a_replay_needs(reference: LoopResult) -> None:
    manifest = load_manifest(reference.path)
    assert manifest == reference.manifest
    assert manifest.status == "finished" and manifest.stop_reason
    assert manifest.seed == 0 and manifest.config["iterations"] == ITERATIONS
    assert manifest.data_fingerprint == data_fingerprint(None, 0)
    assert len(manifest.git_revision) >= 40
    assert {"python", "numpy", "scipy", "cython"} <= set(manifest.packages)
    assert manifest.pending is None
    ledger = Project(Path(manifest.config["state"])).ledger
    assert len(ledger.decisions(limit=100)) == len(manifest.decisions)


def test_same_seed_same_decisions_and_final_state(
    reference: LoopResult, tmp_path: Path, module_cache: Path
) -> None:
    project = new_project(tmp_path / "again", module_cache)
    again = run_loop(project, UNBUDGETED)
    assert decisions_of(again) == decisions_of(reference)
    ref_state = Path(reference.manifest.config["state"]).read_bytes()
    assert project.state_path.read_bytes() == ref_state


def test_finished_run_is_not_repeated(reference: LoopResult) -> None:
    project = Project(Path(reference.manifest.config["state"]))
    again = run_loop(project, UNBUDGETED)
    assert again.resumed and again.manifest == reference.manifest


def test_killed_loop_resumes_without_losing_or_repeating_a_decision(
    reference: LoopResult, tmp_path: Path, module_cache: Path
) -> None:
    project = new_project(tmp_path / "killed", module_cache)
    command = [
        sys.executable, "-m", "runtime.cli", "loop", "--state", str(project.state_path),
        "--from", str(UNIFORM), "--iterations", str(ITERATIONS), "--seed", "0", "--no-knobs",
        "--json",
    ]  # fmt: skip
    child = subprocess.Popen(command, cwd=REPO, start_new_session=True)
    manifests = runs_dir(project.state_path)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and child.poll() is None:
        found = list(manifests.glob("*.json")) if manifests.exists() else []
        if found and load_manifest(found[0]).pending is not None:
            break  # a promotion has started: kill it midway
        time.sleep(0.05)
    assert child.poll() is None, "the loop ended before it could be killed"
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["resumed"] is True
    resumed = load_manifest(Path(summary["manifest"]))
    assert [(d["iteration"], d["candidate"], d["verdict"]) for d in resumed.decisions] == [
        (d["iteration"], d["candidate"], d["verdict"]) for d in reference.manifest.decisions
    ]
    assert len(project.ledger.decisions(limit=100)) == len(resumed.decisions)
    assert project.state_path.read_bytes() == Path(reference.manifest.config["state"]).read_bytes()


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """One local Ray for the whole test run."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install .[ray])")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_executor_reaches_the_local_decisions(
    local_ray: None, reference: LoopResult, tmp_path: Path, module_cache: Path
) -> None:
    project = new_project(tmp_path / "ray", module_cache)
    settings = LoopSettings(
        start=UNIFORM, iterations=ITERATIONS, seed=0, executor="ray", knobs=False
    )
    result = run_loop(project, settings)
    assert decisions_of(result) == decisions_of(reference)
    local_state = Path(reference.manifest.config["state"]).read_bytes()
    assert project.state_path.read_bytes() == local_state


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_has_plots_decisions_and_the_promotion_diff(
    reference: LoopResult, tmp_path: Path
) -> None:
    project = Project(Path(reference.manifest.config["state"]))
    files = write_report(project, reference.manifest, tmp_path / "report")
    page = files.index.read_text()
    for plot in files.plots:
        pixels = imread(plot)
        assert pixels.shape[0] > 100 and float(np.std(pixels)) > 0.01, f"{plot.name} is blank"
        assert f'src="{plot.name}"' in page
    first = reference.manifest.decisions[0]
    assert html.escape(first["reason"]) in page
    assert "ROUTE_WORDS" in page, "the promotion's generated-code diff is missing"


def test_report_renders_in_headless_chromium(reference: LoopResult, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    project = Project(Path(reference.manifest.config["state"]))
    files = write_report(project, reference.manifest, tmp_path / "report")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--screenshot={shot}", "--window-size=1200,2400", files.index.as_uri(),
        ],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    pixels = imread(shot)
    assert pixels.shape[:2] == (2400, 1200)
    # The plots are drawn: many pixels are neither white nor the page's text grey.
    coloured = np.abs(pixels[..., 0] - pixels[..., 2]) > 0.2
    assert coloured.sum() > 2000
