"""``rsi report``: a static HTML page with PNG plots (matplotlib, Agg) of a loop run.

Accuracy per iteration on train (screened), held-out and hidden (the gate's evidence of the
incumbent after the iteration); every decision with its statistics; the generated-code diff
of each promotion (:meth:`Project.diff`); where the time went.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from codegen.errors import RSIError
from runtime.loader import LoadError
from runtime.project import Project
from runtime.promote import format_p
from runtime.rsi.manifest import RunManifest

__all__ = ["ReportError", "ReportFiles", "write_report", "time_split", "TIME_PHASES"]

logger = logging.getLogger(__name__)

#: Phases of the time split and the timing keys (of the iterations, and of the run outside
#: them: ``start``, ``evidence``) that make each up.
TIME_PHASES: Mapping[str, tuple[str, ...]] = {
    "screen": ("screen", "evidence"),
    "tune": ("knobs",),
    "compile": ("start", "executor_build", "promote_build"),
    "evaluate": ("executor_evaluate", "promote_sandbox", "promote_evaluate"),
    "gate": ("promote_gate", "promote_commit"),
}


class ReportError(RSIError):
    """The report cannot be written where it was asked for."""


@dataclass(frozen=True)
class ReportFiles:
    """The page and its plots."""

    index: Path
    plots: tuple[Path, ...]


def time_split(manifest: RunManifest) -> dict[str, float]:
    """Seconds per phase (:data:`TIME_PHASES`) summed over the run's iterations and every
    process of a resumed run, and ``other``: the run's elapsed time not in a phase (none
    when parallel candidate jobs make the phases sum to more than the elapsed time)."""
    out = dict.fromkeys(TIME_PHASES, 0.0)
    for seconds in (manifest.seconds, *(it["seconds"] for it in manifest.iterations)):
        for phase, keys in TIME_PHASES.items():
            out[phase] += sum(float(seconds.get(k, 0.0)) for k in keys)
    out["other"] = max(0.0, manifest.elapsed_s - sum(out.values()))
    return out


def write_report(project: Project, manifest: RunManifest, out: Path) -> ReportFiles:
    """Write ``index.html`` and its PNG plots into ``out`` (a run without iterations, one
    stopped before its first, gets a page that says so)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ReportError(
            f"--out {out}: a file, not a directory; give a directory for the report "
            "(or move the file aside)"
        ) from None
    plots = (
        _accuracy_plot(manifest, out / "accuracy.png"),
        _decision_plot(manifest, out / "decisions.png"),
        _time_plot(manifest, out / "time.png"),
    )
    body = [
        f"<h1>RSI loop run {html.escape(manifest.run_id)}</h1>",
        _summary(manifest),
        '<h2>Accuracy per iteration</h2><img alt="accuracy" src="accuracy.png">',
        '<h2>Decisions</h2><img alt="decisions" src="decisions.png">',
        _decision_table(manifest.decisions),
        _refused(manifest),
        '<h2>Where the time went</h2><img alt="time" src="time.png">',
        _time_table(time_split(manifest)),
        "<h2>Generated-code diff of each promotion</h2>",
        *_diffs(project, manifest.decisions),
        "<h2>Manifest</h2>",
        _manifest_table(manifest),
    ]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>rsi loop report</title>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )
    index = out / "index.html"
    index.write_text(page)
    return ReportFiles(index, plots)


def _accuracy_plot(manifest: RunManifest, path: Path) -> Path:
    """Point i is the incumbent before iteration i; the last point is after the last one."""
    its = manifest.iterations
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    if not its:
        return _empty_plot(fig, ax, path, "no iterations ran")
    x = list(range(len(its) + 1))
    train = [it["train_mean_before"] for it in its]
    ax.plot(x[: len(train)], train, "o-", label="train mean (screened)")
    for split, style in (("heldout", "s-"), ("hidden", "^-")):
        per_task = [it.get(f"{split}_per_task_before", {}) for it in its]
        per_task.append(its[-1][f"{split}_per_task"])
        ax.plot(x, [_mean(p) for p in per_task], style, label=f"{split} mean")
        ax.plot(
            x, [_min(p) for p in per_task], style[0] + ":", alpha=0.6, label=f"{split} worst task"
        )
    ax.axhline(0.95, color="grey", lw=0.8, ls="--", label="pass mark 0.95")
    ax.set_xlabel("iteration (incumbent before it; last point: after the last)")
    ax.set_ylabel("accuracy")
    ax.set_xticks(x)
    ax.set_ylim(0.0, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _decision_plot(manifest: RunManifest, path: Path) -> Path:
    decisions = manifest.decisions
    fig, ax = plt.subplots(figsize=(8, 3), dpi=100)
    if not decisions:
        return _empty_plot(fig, ax, path, "no decisions made")
    colours = {"promote": "tab:green", "reject": "tab:red", "not significant": "tab:orange"}
    for i, d in enumerate(decisions):
        p = d.get("p_value")
        height = -_log10(float(p)) if p is not None else 0.0
        ax.bar(i, height, color=colours.get(str(d["verdict"]), "grey"))
    alpha = manifest.config.get("gate", {}).get("alpha", 0.01)
    ax.axhline(-_log10(float(alpha)), color="black", ls="--", lw=0.8, label=f"alpha {alpha:g}")
    ax.set_xlabel("decision")
    ax.set_xticks(range(len(decisions)))
    ax.set_ylabel("-log10 p (held-out gain)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _time_plot(manifest: RunManifest, path: Path) -> Path:
    split = time_split(manifest)
    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    ax.barh(list(split), list(split.values()), color="tab:blue")
    ax.set_xlabel("seconds (summed over iterations; executor jobs may overlap)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _empty_plot(fig: Any, ax: Any, path: Path, text: str) -> Path:
    """A plot of nothing that says why (a run stopped before its first iteration)."""
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=14, color="tab:red")
    ax.set_axis_off()
    fig.savefig(path)
    plt.close(fig)
    return path


def _summary(manifest: RunManifest) -> str:
    promoted = sum(1 for d in manifest.decisions if d["promoted"])
    if not manifest.iterations:
        return (
            f"<p><strong>No iterations ran</strong>: the run stopped before its first "
            f"({html.escape(manifest.stop_reason or manifest.status)}), after "
            f"{manifest.elapsed_s:.1f} s; seed {manifest.seed}; data "
            f"{html.escape(manifest.data_fingerprint[:24])}</p>"
        )
    return (
        f"<p>{len(manifest.iterations)} iterations, {len(manifest.decisions)} decisions, "
        f"{promoted} promotions, {manifest.elapsed_s:.1f} s; status {manifest.status} "
        f"({html.escape(manifest.stop_reason)}); seed {manifest.seed}; data "
        f"{html.escape(manifest.data_fingerprint[:24])}</p>"
    )


def _decision_table(decisions: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        "<table><tr><th>#</th><th>iteration</th><th>kind</th><th>verdict</th><th>p</th>"
        "<th>held-out gains/losses</th><th>latency</th><th>changes</th><th>reason</th></tr>"
    ]
    for i, d in enumerate(decisions):
        stats = d.get("stats", {})
        p = d.get("p_value")
        rows.append(
            f"<tr><td>{i}</td><td>{d['iteration']}</td>"
            f"<td>{html.escape(', '.join(d.get('kinds', [])))}</td>"
            f"<td>{html.escape(str(d['verdict']))}</td><td>{format_p(p)}</td>"
            f"<td>{stats.get('heldout_gains', '')}/{stats.get('heldout_losses', '')}</td>"
            f"<td>{_latency(stats)}</td>"
            f"<td>{'<br>'.join(html.escape(c) for c in d.get('changes', []))}</td>"
            f"<td>{html.escape(str(d['reason']))}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _latency(stats: Mapping[str, Any]) -> str:
    """The gate's latency change (timed only when kernels or shapes changed)."""
    change = stats.get("latency_change")
    return "" if not isinstance(change, int | float) else f"{change * 100:+.1f}%"


def _refused(manifest: RunManifest) -> str:
    """Build-knob proposals not made for want of an approval (once each)."""
    lines = sorted({line for it in manifest.iterations for line in it.get("refused", [])})
    if not lines:
        return ""
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return f"<h3>Not proposed without approval</h3><ul>{items}</ul>"


def _time_table(split: Mapping[str, float]) -> str:
    total = sum(split.values()) or 1.0
    cells = "".join(
        f"<tr><td>{k}</td><td>{v:.1f} s</td><td>{v / total:.0%}</td></tr>" for k, v in split.items()
    )
    return f"<table><tr><th>phase</th><th>seconds</th><th>share</th></tr>{cells}</table>"


def _diffs(project: Project, decisions: Sequence[Mapping[str, Any]]) -> list[str]:
    out = []
    for d in decisions:
        if not d["promoted"]:
            continue
        try:
            diff = project.diff(str(d["incumbent"]), str(d["candidate"]))
        except LoadError as exc:
            diff = f"(diff unavailable: {exc})"
        out.append(
            f"<h3>iteration {d['iteration']}: {html.escape(str(d['incumbent']))} -&gt; "
            f"{html.escape(str(d['candidate']))}</h3><pre>{_coloured(diff)}</pre>"
        )
    return out or ["<p>no promotions</p>"]


def _manifest_table(manifest: RunManifest) -> str:
    items = {
        "git revision": manifest.git_revision,
        "data fingerprint": manifest.data_fingerprint,
        **{f"config.{k}": v for k, v in manifest.config.items()},
        **{f"package {k}": v for k, v in manifest.packages.items()},
    }
    cells = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in items.items()
    )
    return f"<table>{cells}</table>"


def _coloured(diff: str) -> str:
    lines = []
    for line in diff.splitlines():
        cls = "add" if line.startswith("+") else "del" if line.startswith("-") else ""
        lines.append(
            f"<span class='{cls}'>{html.escape(line)}</span>" if cls else html.escape(line)
        )
    return "\n".join(lines)


def _mean(per_task: Mapping[str, float]) -> float:
    return sum(per_task.values()) / len(per_task) if per_task else float("nan")


def _min(per_task: Mapping[str, float]) -> float:
    return min(per_task.values()) if per_task else float("nan")


def _log10(p: float) -> float:
    return math.log10(max(p, 1e-300))


_CSS = (
    "body{font-family:sans-serif;margin:2em;max-width:1100px}"
    "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;"
    "vertical-align:top}pre{background:#f6f6f6;padding:8px;font-size:12px;overflow-x:auto}"
    ".add{color:#060}.del{color:#a00}img{border:1px solid #ddd}"
)
