"""The ledger's evaluations (raw per-question samples, cached by build/split/seed/data) and
decisions (every statistic, the candidate's exact bytes, newest first)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from codegen.errors import LedgerError
from runtime.gate import Decision, Evidence, LatencySamples, SplitOutcome, Stat, Verdict
from runtime.ledger import Active, CommitRequest, Ledger


def outcome(
    split: str, correct: tuple[bool, ...], fingerprint: str = "generated:0"
) -> SplitOutcome:
    tasks = tuple(1 + i % 20 for i in range(len(correct)))
    return SplitOutcome(split, 0, fingerprint, tasks, correct)


def evidence(build_id: str, n: int = 2001, *, fingerprint: str = "generated:0") -> Evidence:
    correct = tuple(i % 3 != 0 for i in range(n))
    return Evidence(
        build_id,
        outcome("heldout", correct, fingerprint),
        outcome("hidden", correct[::-1], fingerprint),
        tiers_agree=True,
        kernels_agree=False,
    )


def decision(verdict: Verdict, candidate: str = "c" * 16) -> Decision:
    stats: dict[str, Stat] = {
        "heldout_p_loss": 0.5,
        "heldout_gains": 3,
        "hidden_tasks_lost": "",
        "x": None,
    }
    return Decision(verdict, "not-worse", candidate, "i" * 16, "the reason", stats)


def test_evidence_round_trips_bit_for_bit(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ev = evidence("a" * 16)
    ledger.record_evidence(ev)
    assert ledger.evidence("a" * 16, 0, "generated:0") == ev
    assert ledger.evaluation("a" * 16, "hidden", 0, "generated:0") == ev.hidden
    # The cache key is (build, split, seed, data): another seed or data is a miss.
    assert ledger.evidence("a" * 16, 1, "generated:0") is None
    assert ledger.evaluation("a" * 16, "heldout", 0, "sha256-of-other-data") is None
    assert ledger.evidence("b" * 16, 0, "generated:0") is None


def test_samples_are_compact(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.record_evidence(evidence("a" * 16, n=2000))
    with sqlite3.connect(ledger.path) as db:
        sizes = db.execute("SELECT length(tasks), length(correct) FROM evaluations").fetchall()
    assert sizes == [(2000, 250), (2000, 250)]


def test_decisions_newest_first_with_stats_and_candidate_bytes(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    first = ledger.record_decision(
        decision(Verdict.REJECT), candidate_data=b'{"v": 2}', candidate_version=2
    )
    latency = LatencySamples((0.1, 0.2), (0.3, 0.4))
    second = ledger.record_decision(
        decision(Verdict.PROMOTE, "d" * 16),
        candidate_data=b'{"v": 3}',
        candidate_version=3,
        waived=("scoring.rag: 0.2 -> 0.9 exceeds ...",),
        latency=latency,
    )
    ledger.commit(3, b'{"v": 3}', "d" * 16, "python", limit=10)
    ledger.mark_committed(second, 3)
    newest, oldest = ledger.decisions()
    assert (newest.id, oldest.id) == (second, first)
    assert newest.verdict == "promote" and oldest.verdict == "reject"
    assert newest.stats == {
        "heldout_p_loss": 0.5,
        "heldout_gains": 3,
        "hidden_tasks_lost": "",
        "x": None,
    }
    assert newest.latency == {"incumbent_s": [0.1, 0.2], "candidate_s": [0.3, 0.4]}
    assert newest.waived == ("scoring.rag: 0.2 -> 0.9 exceeds ...",)
    assert (newest.committed_version, oldest.committed_version) == (3, None)
    assert ledger.decision_candidate(first) == b'{"v": 2}'
    assert [d.id for d in ledger.decisions(limit=1)] == [second]
    ledger.check_gate_records()


def test_a_commit_not_yet_marked_still_reads_as_committed(tmp_path: Path) -> None:
    """A kill between the commit and mark_committed: the decision reads as committed."""
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    kept = decision(Verdict.NOT_SIGNIFICANT)
    ledger.record_decision(kept, candidate_data=b"v3", candidate_version=3)
    ledger.record_decision(decision(Verdict.PROMOTE), candidate_data=b"v3", candidate_version=3)
    assert [d.committed_version for d in ledger.decisions()] == [None, None]
    ledger.commit(3, b"v3", "c" * 16, "python", limit=10)
    # Only the promotion reads as committed, not the earlier decision about the same bytes.
    assert [d.committed_version for d in ledger.decisions()] == [3, None]


def test_a_promotion_is_decided_and_committed_in_one_transaction(tmp_path: Path) -> None:
    """No instant exists where the promotion is decided but not committed: a kill there left
    a decision that the rerun of `rsi promote` decided a second time (red team, gate)."""
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.commit(1, b"v1", "i" * 16, "python", limit=10)
    promoted = ledger.record_decision(
        decision(Verdict.PROMOTE),
        candidate_data=b"v2",
        candidate_version=2,
        commit_as=CommitRequest("c" * 16, "python", limit=10),
    )
    assert ledger.decision(promoted).committed_version == 2
    assert ledger.active() == Active(2, "c" * 16, "python")
    with pytest.raises(LedgerError, match="version 2 is already committed with different"):
        ledger.record_decision(
            decision(Verdict.PROMOTE),
            candidate_data=b"other v2",
            candidate_version=2,
            commit_as=CommitRequest("d" * 16, "python", limit=10),
        )
    assert [d.id for d in ledger.decisions()] == [promoted]  # the failed one left nothing


def test_torn_records_are_found(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.record_evidence(evidence("a" * 16, n=16))
    decision_id = ledger.record_decision(
        decision(Verdict.REJECT), candidate_data=b"v2", candidate_version=2
    )
    with sqlite3.connect(ledger.path) as db:
        db.execute("UPDATE decisions SET candidate_data = ? WHERE id = ?", (b"v2!", decision_id))
    with pytest.raises(LedgerError, match=f"^ledger: decision {decision_id} candidate is torn$"):
        ledger.check_gate_records()
    with sqlite3.connect(ledger.path) as db:
        db.execute("UPDATE decisions SET candidate_data = ?", (b"v2",))
        db.execute("UPDATE evaluations SET correct = ? WHERE split = 'hidden'", (b"\x00",))
    with pytest.raises(LedgerError, match=f"^ledger: evaluation of {'a' * 16} on hidden is torn$"):
        ledger.check_gate_records()


def test_missing_decision_is_one_line(tmp_path: Path) -> None:
    message = (
        r"^decision 7 is not in the ledger; `rsi history` lists the decisions with their numbers$"
    )
    with pytest.raises(LedgerError, match=message):
        Ledger(tmp_path / "ledger.sqlite3").decision_candidate(7)
    with pytest.raises(LedgerError, match=message):
        Ledger(tmp_path / "ledger.sqlite3").decision(7)


def test_the_latest_measured_noise_floor_is_kept(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    assert ledger.latency_noise_floor() is None
    first = ledger.record_calibration(
        latency_noise_floor=0.04, latency_changes=[0.01, -0.04], summary={"trials": 2}
    )
    ledger.record_calibration(latency_noise_floor=None, latency_changes=[], summary={})
    assert ledger.latency_noise_floor() == 0.04  # a run without latency measures no floor
    second = ledger.record_calibration(latency_noise_floor=0.02, latency_changes=[0.02], summary={})
    assert second > first and ledger.latency_noise_floor() == 0.02


def test_a_damaged_ledger_says_how_to_recover(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    path.write_bytes(b"this is not SQLite at all" * 100)
    with pytest.raises(LedgerError) as caught:
        Ledger(path).versions()
    assert str(caught.value) == (
        f"ledger {path}: file is not a database; the history is damaged: restore the file "
        "from a backup, or move it aside to start a new history (the builds are kept)"
    )
