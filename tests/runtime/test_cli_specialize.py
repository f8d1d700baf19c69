"""``rsi build --specialize``: the targets reach the compile settings."""

from __future__ import annotations

from runtime.cli import build_parser, settings_from


def test_specialize_targets_reach_the_settings() -> None:
    args = build_parser().parse_args(
        ["build", "--backend", "python", "--specialize", "a.b:f", "--specialize", "c:g"]
    )
    settings = settings_from(args)
    assert (settings.backend, settings.specialize) == ("python", ("a.b:f", "c:g"))


def test_no_specialize_option_specializes_nothing() -> None:
    assert settings_from(build_parser().parse_args(["build"])).specialize == ()
