"""Schema validation: every bad input is one line naming the field, before any rendering."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from codegen.errors import StateError
from codegen.state import (
    RSIState,
    dump_state,
    load_state,
    parse_state,
    save_state,
)

SHIPPED = Path(__file__).resolve().parents[2] / "rsi_state.json"


def mutated(**paths: Any) -> bytes:
    data = json.loads(SHIPPED.read_text())
    for path, value in paths.items():
        *parents, leaf = path.split("__")
        target = data
        for part in parents:
            target = target[part]
        target[leaf] = value
    return json.dumps(data).encode()


def first_expert() -> str:
    return next(iter(json.loads(SHIPPED.read_text())["experts"]))


class TestShippedState:
    def test_loads(self) -> None:
        assert load_state(SHIPPED).version >= 1

    def test_dump_round_trips(self) -> None:
        state = load_state(SHIPPED)
        assert parse_state(dump_state(state)) == state


class TestErrorLine:
    def test_every_failing_field_is_named(self) -> None:
        data = json.loads(SHIPPED.read_text())
        data["experts"]["tracker"]["weight"] = 10.5
        data["lexicon"]["move"] = [*data["lexicon"]["move"], "Went"]
        with pytest.raises(StateError) as info:
            parse_state(json.dumps(data).encode())
        assert str(info.value) == (
            "rsi_state.json: experts.tracker.weight: Input should be less than or equal to 10 "
            f"(+1 more: lexicon.move[{len(data['lexicon']['move']) - 1}])"
        )

    def test_a_bad_word_is_one_error_not_also_an_empty_list(self) -> None:
        data = json.loads(SHIPPED.read_text())
        data["routing"] = [{"when_all": ["Where"], "boosts": {"tracker": 1.0}}]
        with pytest.raises(StateError) as info:
            parse_state(json.dumps(data).encode())
        assert str(info.value).endswith(
            "'Where' is not a lowercase word ([a-z][a-z0-9]*, at most 32 chars)"
        )


class TestHostileInput:
    def test_expert_name_with_code(self) -> None:
        data = json.loads(SHIPPED.read_text())
        data["experts"]["x:\n import os"] = {"kind": "tracking", "weight": 1.0}
        with pytest.raises(
            StateError,
            match=r"experts\['x:\\n import os'\] \(key\): "
            r"'x:\\n import os' is not a plain identifier",
        ):
            parse_state(json.dumps(data).encode())

    def test_nan_weight(self) -> None:
        raw = mutated(**{f"experts__{first_expert()}__weight": 1234.5}).replace(b"1234.5", b"NaN")
        with pytest.raises(
            StateError,
            match=rf"^rsi_state.json: experts.{first_expert()}.weight: NaN is not a finite number$",
        ):
            parse_state(raw)

    def test_out_of_bounds_weight(self) -> None:
        raw = mutated(**{f"experts__{first_expert()}__weight": 11.0})
        with pytest.raises(
            StateError,
            match=rf"experts.{first_expert()}.weight: Input should be less than or equal to 10",
        ):
            parse_state(raw)

    def test_unknown_field(self) -> None:
        with pytest.raises(
            StateError, match=r"^rsi_state.json: bogus: Extra inputs are not permitted$"
        ):
            parse_state(mutated(bogus=1))

    def test_truncated_file(self) -> None:
        with pytest.raises(
            StateError, match=r"^rsi_state.json: invalid JSON at line \d+ column \d+"
        ):
            parse_state(SHIPPED.read_bytes()[:120])

    def test_duplicate_key(self) -> None:
        with pytest.raises(StateError, match=r"duplicate key 'version'"):
            parse_state(b'{"version": 1, "version": 2}')

    def test_string_where_number_expected(self) -> None:
        raw = mutated(**{f"experts__{first_expert()}__weight": "1"})
        with pytest.raises(StateError, match=r"weight: Input should be a valid number"):
            parse_state(raw)

    def test_routing_rule_names_unknown_expert(self) -> None:
        raw = mutated(routing=[{"when_all": ["afraid"], "boosts": {"nobody": 1.0}}])
        with pytest.raises(
            StateError, match=r"routing\[0\]\.boosts\.nobody: no expert is named 'nobody'"
        ):
            parse_state(raw)

    def test_errors_are_one_line(self) -> None:
        data = json.loads(SHIPPED.read_text())
        data["experts"]["a\nb"] = {"kind": "nope", "weight": "x"}
        with pytest.raises(StateError) as info:
            parse_state(json.dumps(data).encode())
        assert "\n" not in str(info.value)


class TestFiles:
    def test_empty_file(self, tmp_path: Path) -> None:
        path = tmp_path / "rsi_state.json"
        path.write_bytes(b"")
        with pytest.raises(StateError, match=r"^rsi_state.json: file is empty$"):
            load_state(path)

    def test_directory(self, tmp_path: Path) -> None:
        (tmp_path / "rsi_state.json").mkdir()
        with pytest.raises(StateError, match=r"is not a regular file"):
            load_state(tmp_path / "rsi_state.json")

    def test_symlink(self, tmp_path: Path) -> None:
        (tmp_path / "rsi_state.json").symlink_to(SHIPPED)
        with pytest.raises(StateError, match=r"is a symlink"):
            load_state(tmp_path / "rsi_state.json")


class TestSave:
    def test_atomic_save_round_trips_and_leaves_no_temp(self, tmp_path: Path) -> None:
        path = tmp_path / "rsi_state.json"
        state = load_state(SHIPPED).model_copy(update={"version": 7})
        written = save_state(path, state)
        assert path.read_bytes() == written
        assert load_state(path) == state
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []

    def test_frozen(self) -> None:
        state = load_state(SHIPPED)
        with pytest.raises(ValueError):
            state.version = 3  # type: ignore[misc]
        assert isinstance(state, RSIState)
