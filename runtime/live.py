"""Zero-downtime serving: a project's active build in a hot slot, rebuilt and swapped live.

``rebuild(..., two_tier=True)`` follows the design's two steps: the pure-Python tier of the
new state goes live as soon as it is rendered and checked, and the compiled tier replaces it
once the compiler is done and a differential test shows both tiers agree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from codegen.errors import RSIError
from codegen.toolchain import CompileSettings
from runtime.loader import LoadedBuild, load_build
from runtime.project import BuildReport, Project, RollbackReport
from runtime.slot import HotSlot
from runtime.tiers import SELFTEST_ABS_TOL, SELFTEST_REL_TOL, agree

__all__ = ["LiveProject", "TierMismatch", "SwapReport", "differential_check"]

logger = logging.getLogger(__name__)

SELFTEST = "rsi_selftest"


class TierMismatch(RSIError):  # noqa: N818 - reads as the finding it reports
    """The compiled and interpreted tiers of one state disagree."""


@dataclass(frozen=True)
class SwapReport:
    """The builds that went live during one rebuild, in order."""

    interim: BuildReport | None
    final: BuildReport


class LiveProject:
    """A :class:`Project` whose active build is served from a :class:`HotSlot`."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.slot: HotSlot[LoadedBuild] = HotSlot(project.load_active())

    def current(self) -> LoadedBuild:
        """The build to use for one call: take it once, use it for the whole call."""
        return self.slot.get()

    def rebuild(self, settings: CompileSettings, *, two_tier: bool = False) -> SwapReport:
        """Build the state file and swap the result in; optionally the pure tier first."""
        interim = None
        if two_tier and settings.backend != "python":
            interim = self.project.build(replace(settings, backend="python"))
            interim_build = load_build(Path(interim.path), template_dir=self.project.template_dir)
            self.slot.swap(interim_build)
        final = self.project.build(settings)
        build = load_build(Path(final.path), template_dir=self.project.template_dir)
        if interim is not None:
            differential_check(interim_build, build)
        self.slot.swap(build)
        return SwapReport(interim, final)

    def rollback(self, to: int | None = None) -> RollbackReport:
        """Roll the project back and swap the restored build in."""
        report = self.project.rollback(to)
        self.slot.swap(self.project.load_active())
        return report

    def refresh(self) -> bool:
        """Follow a change made by another process (a promotion, a rollback); True when a
        new build went live."""
        active = self.project.load_active()
        if active.build_id == self.current().build_id:
            return False
        self.slot.swap(active)
        return True


def differential_check(reference: LoadedBuild, candidate: LoadedBuild) -> list[str]:
    """Raise :class:`TierMismatch` unless every module's ``rsi_selftest()`` agrees.

    Returns the names of the modules compared.

    A generated module may define ``rsi_selftest()``: a deterministic function of baked
    inputs whose result both tiers must reproduce (:func:`runtime.tiers.agree`: floats to
    :data:`runtime.tiers.SELFTEST_REL_TOL` of the scale).
    """
    compared = []
    for name, module in reference.modules.items():
        probe = getattr(module, SELFTEST, None)
        if probe is None:
            continue
        compared.append(name)
        expected = probe()
        got = getattr(candidate.module(name), SELFTEST)()
        if not agree(expected, got, rel_tol=SELFTEST_REL_TOL, abs_tol=SELFTEST_ABS_TOL):
            raise TierMismatch(
                f"module {name}: {candidate.tier} tier of build {candidate.build_id} disagrees "
                f"with the {reference.tier} tier on rsi_selftest()"
            )
        logger.debug("tiers agree on %s", name)
    return compared
