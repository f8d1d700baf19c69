"""Wall time of a gate decision on the compiled tier, and the gate's calibration numbers.

    PYTHONPATH=. .venv/bin/python tools/bench_gate.py --data "$RSI_BABI_DIR" --trials 20
    PYTHONPATH=. .venv/bin/python tools/bench_gate.py --data "$RSI_BABI_DIR" \
        --candidate states/uniform.json     # a heavier model: every expert and attention on

A gate decision is what ``rsi promote`` and the loop pay once both builds exist: the
candidate's evidence (held-out and hidden splits on the compiled tier, the differential
tier test and the kernel check) plus :func:`runtime.gate.decide`. The incumbent's evidence
is cached by the caller (the ledger keys it by build id, split, seed and fingerprint), and
the data files are parsed once per process; both are timed separately, as are the builds
(excluded). The first decision of a fresh candidate imports its pure tier; later ones are
repeated to give a distribution (raw samples kept in the JSON). The default candidate is
the state with one loop-sized step; the evaluation's cost is the model's, so a heavier
candidate (``states/uniform.json`` computes attention and similarity evidence for every
question) takes longer.

``--sandboxed N`` then times what ``rsi promote`` pays for the same decision since the
candidate runs only in the sandbox child, against the old in-process way, interleaved in
the same run (N rounds): *before* = the first run in a child, then the candidate's
evidence gathered in this process; *after* = one child doing the first run and the
evidence (:func:`runtime.sandbox.first_run` with an :class:`~runtime.sandbox.Evaluation`);
and the same pair with the interleaved latency A/B added (a hot-path change). The
ratios after/before are of medians; raw samples are in the JSON.

``--worst-case`` times the slowest legitimate sandbox run, which sets the default of
``rsi promote --timeout-s`` (:data:`runtime.sandbox.DEFAULT_EVALUATE_TIMEOUT_S`): pure-tier
builds of ``--state`` and ``states/uniform.json`` (the heaviest model), neither's evidence
cached, and the latency A/B, in one sandbox child.

``--trials N`` then runs ``rsi gate calibrate`` on the same state and data.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from codegen.state import RSIState, dump_state, load_state, parse_state
from runtime.babi.builds import build_model, model_of
from runtime.babi.evaluate import evaluate
from runtime.calibrate import CalibrationSettings, calibrate
from runtime.evidence import gather, measure_latency, stories_of
from runtime.gate import Evidence, GateSettings, decide
from runtime.loader import LoadedBuild
from runtime.sandbox import DEFAULT_EVALUATE_TIMEOUT_S, Evaluation, first_run

TARGET_S = 2.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="default: $RSI_BABI_DIR")
    parser.add_argument("--state", type=Path, default=Path("rsi_state.json"))
    parser.add_argument("--candidate", type=Path, default=None, help="candidate state file")
    parser.add_argument(
        "--set",
        default="scoring.commonsense=0.0375",
        metavar="PATH=VALUE",
        help="without --candidate: the state with this one change (default: a loop-sized "
        "step, commonsense x1.5)",
    )
    parser.add_argument("--generated", type=Path, default=Path("generated"))
    parser.add_argument("--repeats", type=int, default=5, help="warm decisions timed")
    parser.add_argument("--trials", type=int, default=0, help="calibration trials (0: none)")
    parser.add_argument(
        "--sandboxed", type=int, default=0, help="rounds of in-process vs sandboxed (0: none)"
    )
    parser.add_argument(
        "--worst-case", action="store_true", help="time the slowest legitimate sandbox run"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    data = args.data or (
        Path(os.environ["RSI_BABI_DIR"]) if os.environ.get("RSI_BABI_DIR") else None
    )
    gate = GateSettings()
    t0 = time.perf_counter()
    incumbent = build_model(load_state(args.state), args.generated, "cython").build
    cand_state = (
        load_state(args.candidate) if args.candidate else _with(load_state(args.state), args.set)
    )
    candidate = build_model(cand_state, args.generated, "cython").build
    builds_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    n_heldout = sum(len(s.questions) for s in stories_of(data, "heldout"))
    n_hidden = sum(len(s.questions) for s in stories_of(data, "hidden"))
    parse_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    inc_ev = gather(incumbent, data=data)
    incumbent_s = time.perf_counter() - t0

    decisions: list[float] = []
    plain: list[float] = []  # evaluation alone, interleaved: the floor a decision stands on
    verdict = ""
    for _ in range(1 + args.repeats):
        t0 = time.perf_counter()
        model = model_of(candidate)
        evaluate(model, stories_of(data, "heldout"))
        evaluate(model, stories_of(data, "hidden"))
        plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        cand_ev = gather(candidate, data=data)
        d = decide(inc_ev, cand_ev, require="not-worse", settings=gate)
        decisions.append(time.perf_counter() - t0)
        verdict = f"{d.verdict}: {d.reason}"

    t0 = time.perf_counter()
    measure_latency(incumbent, candidate, repeats=gate.latency_repeats, data=data)
    latency_s = time.perf_counter() - t0

    first, warm = decisions[0], decisions[1:]
    warm_median = statistics.median(warm) if warm else first
    print(f"data {data or 'generator'}: {n_heldout} held-out + {n_hidden} hidden questions")
    print(
        f"builds (excluded): {builds_s:.1f} s; parse + fingerprint, once a process: {parse_s:.2f} s"
    )
    print(f"incumbent evidence (cached by the caller): {incumbent_s:.2f} s")
    print(
        f"gate decision: first {first:.2f} s, then median {warm_median:.2f} s of {len(warm)} "
        f"({', '.join(f'{x:.2f}' for x in warm)}); target {TARGET_S:.1f} s: "
        f"first/target {first / TARGET_S:.2f}, median/target {warm_median / TARGET_S:.2f}"
    )
    plain_median = statistics.median(plain)
    print(
        f"evaluation alone (both splits, no checks): median {plain_median:.2f} s; "
        f"decision/evaluation {warm_median / plain_median:.2f}"
    )
    print(f"latency A/B, {gate.latency_repeats} interleaved repetitions each: {latency_s:.2f} s")
    print(f"verdict: {verdict}")
    report: dict[str, object] = {
        "questions": {"heldout": n_heldout, "hidden": n_hidden},
        "builds_s": round(builds_s, 2),
        "parse_s": round(parse_s, 3),
        "incumbent_evidence_s": round(incumbent_s, 3),
        "decision_first_s": round(first, 3),
        "decision_warm_s": [round(x, 3) for x in warm],
        "evaluation_alone_s": [round(x, 3) for x in plain],
        "latency_ab_s": round(latency_s, 3),
    }
    if args.sandboxed:
        report["sandboxed"] = _sandboxed(
            incumbent, candidate, inc_ev, data=data, gate=gate, rounds=args.sandboxed
        )
    if args.worst_case:
        report["worst_case"] = _worst_case(args.state, args.generated, data, gate)
    if args.trials:
        cal = calibrate(
            load_state(args.state),
            args.generated,
            data=data,
            settings=CalibrationSettings(trials=args.trials),
            gate=gate,
        )
        print(cal.table())
        report["calibration"] = cal.to_json()
    if args.json:
        print(json.dumps(report, sort_keys=True))
    return 0


def _sandboxed(
    incumbent: LoadedBuild,
    candidate: LoadedBuild,
    inc_ev: Evidence,
    *,
    data: Path | None,
    gate: GateSettings,
    rounds: int,
) -> dict[str, object]:
    """Before (evidence and latency in this process) against after (in the sandbox child),
    interleaved; with the incumbent's evidence cached, as ``rsi promote`` has it."""

    def before(latency: bool) -> float:
        t0 = time.perf_counter()
        assert first_run(candidate.path, timeout_s=DEFAULT_EVALUATE_TIMEOUT_S).ok
        cand_ev = gather(candidate, data=data)
        samples = (
            measure_latency(incumbent, candidate, repeats=gate.latency_repeats, data=data)
            if latency
            else None
        )
        decide(inc_ev, cand_ev, require="not-worse", settings=gate, latency=samples)
        return time.perf_counter() - t0

    def after(latency: bool) -> float:
        t0 = time.perf_counter()
        evaluation = Evaluation(
            data=data,
            seed=0,
            gather=(candidate.path,),
            latency=(incumbent.path, candidate.path) if latency else None,
            repeats=gate.latency_repeats,
        )
        sandbox = first_run(
            candidate.path, timeout_s=DEFAULT_EVALUATE_TIMEOUT_S, evaluation=evaluation
        )
        assert sandbox.ok, sandbox.reason
        (cand_ev,) = sandbox.evidence
        decide(inc_ev, cand_ev, require="not-worse", settings=gate, latency=sandbox.latency)
        return time.perf_counter() - t0

    samples: dict[str, list[float]] = {k: [] for k in ("before", "after", "before_ab", "after_ab")}
    for r in range(rounds):
        order = ((before, "before"), (after, "after"))
        for fn, name in order if r % 2 == 0 else order[::-1]:
            samples[name].append(fn(False))
            samples[f"{name}_ab"].append(fn(True))
    med = {k: statistics.median(v) for k, v in samples.items()}
    print(
        f"promote's decision (first run + candidate evidence + gate), {rounds} interleaved "
        f"rounds: in-process median {med['before']:.2f} s, sandboxed {med['after']:.2f} s, "
        f"after/before {med['after'] / med['before']:.2f}"
    )
    print(
        f"with the latency A/B: in-process median {med['before_ab']:.2f} s, sandboxed "
        f"{med['after_ab']:.2f} s, after/before {med['after_ab'] / med['before_ab']:.2f}"
    )
    return {
        "samples_s": {k: [round(x, 3) for x in v] for k, v in samples.items()},
        "ratio_after_before": round(med["after"] / med["before"], 3),
        "ratio_after_before_ab": round(med["after_ab"] / med["before_ab"], 3),
    }


def _worst_case(
    state: Path, generated: Path, data: Path | None, gate: GateSettings
) -> dict[str, object]:
    """Seconds of a pure-tier sandbox run with nothing cached and the latency A/B."""
    incumbent = build_model(load_state(state), generated, "python").build.path
    heavy = build_model(load_state(Path("states/uniform.json")), generated, "python").build.path
    evaluation = Evaluation(
        data=data,
        seed=0,
        gather=(incumbent, heavy),
        latency=(incumbent, heavy),
        repeats=gate.latency_repeats,
    )
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    sandbox = first_run(heavy, timeout_s=4 * DEFAULT_EVALUATE_TIMEOUT_S, evaluation=evaluation)
    seconds = time.perf_counter() - t0
    assert sandbox.ok, sandbox.reason
    print(
        f"worst case (pure tier, 2 builds uncached, latency A/B): {seconds:.1f} s, of which "
        f"evaluation {sandbox.evaluate_s:.1f} s; load average {load:.1f} at start; default "
        f"limit {DEFAULT_EVALUATE_TIMEOUT_S:g} s, limit/run "
        f"{DEFAULT_EVALUATE_TIMEOUT_S / seconds:.2f}"
    )
    return {"seconds": round(seconds, 1), "evaluate_s": round(sandbox.evaluate_s, 1), "load": load}


def _with(state: RSIState, assignment: str) -> RSIState:
    """``state`` with one dotted path set to a JSON value (``scoring.rag=2.5``)."""
    path, _, value = assignment.partition("=")
    data = json.loads(dump_state(state))
    *parents, leaf = path.split(".")
    target = data
    for part in parents:
        target = target[part]
    target[leaf] = json.loads(value)
    return parse_state(json.dumps(data).encode(), f"--set {assignment}")


if __name__ == "__main__":
    raise SystemExit(main())
