"""The one strict YAML reader: what plain values mean, what it refuses (repeated keys,
anchors, tags, nesting, size), that its messages name the file, line and key and stay short,
that ``--set`` reads the same text as the same value, and that what ``yaml.safe_dump`` wrote
(every committed YAML file, every ``config.yaml``) reads back unchanged."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from condimmune.core.errors import UserError
from condimmune.experiments.config import (
    ConfigError,
    apply_overrides,
    config_to_dict,
    default_config,
    load_config,
)
from condimmune.experiments.registry import Experiment
from condimmune.experiments.yaml_reading import (
    MAX_BYTES,
    MAX_DEPTH,
    MAX_VALUES,
    parse_yaml,
    read_yaml,
)

ROOT = Path(__file__).resolve().parents[2]

VALUES: dict[str, tuple[str, object]] = {
    "decimal": ("12", 12),
    "signed": ("-3", -3),
    "plus": ("+5", 5),
    "zero": ("0", 0),
    "leading-zero-is-text": ("012", "012"),
    "leading-zero-8-9-is-text": ("0189", "0189"),
    "octal-0o-is-text": ("0o12", "0o12"),
    "hex-is-text": ("0x1F", "0x1F"),
    "underscore-is-text": ("1_000", "1_000"),
    "sexagesimal-is-text": ("1:30", "1:30"),
    "float": ("1.5", 1.5),
    "float-leading-dot": (".5", 0.5),
    "float-trailing-dot": ("2.", 2.0),
    "float-exponent": ("1.0e-05", 1e-05),
    "exponent-without-dot-is-text": ("1e3", "1e3"),
    "exponent-without-sign-is-text": ("1.5e3", "1.5e3"),
    "inf": ("-.inf", -math.inf),
    "true": ("true", True),
    "TRUE": ("TRUE", True),
    "False": ("False", False),
    "yes-is-text": ("yes", "yes"),
    "on-is-text": ("on", "on"),
    "n-is-text": ("n", "n"),
    "null": ("null", None),
    "tilde": ("~", None),
    "nothing": ("", None),
    "none-is-text": ("none", "none"),
    "date-is-text": ("2024-01-01", "2024-01-01"),
    "merge-key-is-text": ("<<", "<<"),
    "quoted-number": ("'012'", "012"),
    "tagged-text": ("!!str 12", "12"),
    "tagged-int": ("!!int 12", 12),
}


@pytest.mark.parametrize(("text", "expected"), VALUES.values(), ids=VALUES.keys())
def test_plain_values(text: str, expected: object) -> None:
    value = parse_yaml(f"key: {text}\n")
    assert isinstance(value, dict)
    assert value["key"] == expected and type(value["key"]) is type(expected)


def test_nan() -> None:
    value = parse_yaml("key: .nan\n")
    assert isinstance(value, dict) and math.isnan(value["key"])


def _aliases(levels: int) -> str:
    """A "billion laughs" document: 9 ** levels strings from a few hundred bytes."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


REFUSED: dict[str, tuple[str, str]] = {
    "duplicate-key": (
        "train:\n  epochs: 2\n  lr: 0.1\n  epochs: 3\n",
        "duplicate key train.epochs at line 4, column 3 (first at line 2)",
    ),
    "duplicate-section": ("train: {}\nseed: 1\ntrain: {}\n", "duplicate key train at line 3"),
    "duplicate-in-list": ("a:\n  - b: 1\n    b: 2\n", "duplicate key a[0].b at line 3"),
    "duplicate-flow": ("{a: 1, a: 2}\n", "duplicate key a at line 1, column 8"),
    "int-key": ("1: x\n", "key that is not text at line 1, column 1 (quote it)"),
    "bool-key": ("true: x\n", "key that is not text"),
    "list-key": ("? [a]\n: x\n", "key that is not text"),
    "anchor": ("a: &x 1\n", "anchor or alias not allowed at line 1, column 4"),
    "merge": ("base: &b {x: 1}\nrun:\n  <<: *b\n", "anchor or alias not allowed at line 1"),
    "billion-laughs": (_aliases(9), "anchor or alias not allowed at line 1, column 5"),
    "python-tag": ("seed: !!python/object/apply:os.system ['true']\n", "tag !!python/object"),
    "timestamp-tag": ("day: !!timestamp 2024-01-01\n", "tag !!timestamp not allowed"),
    "set-tag": ("s: !!set {a, b}\n", "tag !!set not allowed"),
    "local-tag": ("s: !mine 1\n", "tag !mine not allowed"),
    "tagged-octal": ("seed: !!int 012\n", "!!int '012' is not an integer"),
    "tagged-yes": ("flag: !!bool yes\n", "!!bool 'yes' is not true or false"),
    "tagged-exponent": ("lr: !!float 1e3\n", "!!float '1e3' is not a float"),
    "too-many-digits": ("seed: " + "9" * 5000 + "\n", "integer with too many digits"),
    "two-documents": ("a: 1\n---\nb: 2\n", "not valid YAML (expected a single document"),
    "syntax": ("train: [1, 2\n", "not valid YAML (expected ',' or ']'"),
    "tab": ("train:\n\tepochs: 2\n", "not valid YAML (found character '\\t'"),
    "nul-character": ("a: 1\nb: \x00\n", "not valid YAML (character #x0000 is not allowed"),
    "deep-flow-list": ("[" * 100_000 + "]" * 100_000, f"nested deeper than {MAX_DEPTH} levels"),
    "deep-block-list": ("- " * 5_000 + "x\n", f"nested deeper than {MAX_DEPTH} levels"),
    "deep-mappings": (
        "".join(f"{'  ' * i}k{i}:\n" for i in range(40)),
        f"nested deeper than {MAX_DEPTH} levels at line 32",
    ),
    "too-many-values": ("[" + "0, " * MAX_VALUES + "0]", f"more than {MAX_VALUES:,} keys"),
}


@pytest.mark.parametrize(("text", "fragment"), REFUSED.values(), ids=REFUSED.keys())
def test_refusals_name_the_line_and_key(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        read_yaml(path, "the fix")
    message = str(err.value)
    assert fragment in message and message.endswith(f": {path}; the fix")
    assert len(message) < 200 + len(str(path)), message


def test_the_limits_leave_room_for_real_configs() -> None:
    """A config nested exactly MAX_DEPTH deep, with MAX_VALUES values, reads."""
    deep = "[" * (MAX_DEPTH - 1) + "1" + "]" * (MAX_DEPTH - 1)
    assert parse_yaml(deep) is not None
    assert parse_yaml("[" + "0, " * (MAX_VALUES - 2) + "0]") == [0] * (MAX_VALUES - 1)


FILES: dict[str, tuple[bytes, str]] = {
    "too-large": (b"# " + b"x" * (5 * 10**6) + b"\n", "larger than 1 MiB"),
    "just-too-large": (b"a: " + b"x" * MAX_BYTES, "larger than 1 MiB"),
    "not-utf8": (b"train: \xff\xfe\n", "not UTF-8 text"),
    "huge-value-in-wrong-place": (b"a: 1\n" + b"a: " + b"x" * 500_000 + b"\n", "duplicate key a"),
}


@pytest.mark.parametrize(("content", "fragment"), FILES.values(), ids=FILES.keys())
def test_files_refused_with_a_short_message(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        read_yaml(path, "fix it")
    assert fragment in str(err.value) and str(path) in str(err.value)
    assert len(str(err.value)) < 200 + len(str(path))


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot be read"):
        read_yaml(tmp_path, "fix it")


def test_a_file_of_exactly_the_limit_reads(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"a: " + b"x" * (MAX_BYTES - 3))
    assert read_yaml(path, "") == {"a": "x" * (MAX_BYTES - 3)}


# ------------------------------------------------------- a file and --set: one reading
SAME_TEXT: dict[str, tuple[str, str]] = {
    "int": ("train.epochs", "12"),
    "int-leading-zero": ("train.epochs", "012"),
    "int-octal": ("train.epochs", "0o12"),
    "int-underscore": ("train.epochs", "1_000"),
    "int-sexagesimal": ("train.epochs", "1:30"),
    "int-exponent": ("train.epochs", "1e3"),
    "float": ("train.lr", "0.5"),
    "float-leading-zero": ("train.lr", "012"),
    "float-exponent": ("train.lr", "1e-3"),
    "float-int": ("train.lr", "5"),
    "bool": ("data.drop_collinear", "false"),
    "bool-yes": ("data.drop_collinear", "yes"),
    "bool-on": ("data.drop_collinear", "on"),
    "bool-one": ("data.drop_collinear", "1"),
    "null": ("data.root", "null"),
    "null-tilde": ("data.root", "~"),
    "none-is-a-path": ("data.root", "none"),
    "digits-path": ("data.root", "0123"),
}


def _from_file(tmp_path: Path, key: str, text: str) -> Any:
    section, name = key.split(".")
    path = tmp_path / "c.yaml"
    path.write_text(f"experiment: mnist-pair\n{section}:\n  {name}: {text}\n")
    return getattr(getattr(load_config(path), section), name)


def _from_set(key: str, text: str) -> Any:
    section, name = key.split(".")
    config = apply_overrides(default_config("mnist-pair"), [f"{key}={text}"])
    return getattr(getattr(config, section), name)


@pytest.mark.parametrize(("key", "text"), SAME_TEXT.values(), ids=SAME_TEXT.keys())
def test_a_file_and_set_read_the_same_text_alike(tmp_path: Path, key: str, text: str) -> None:
    """The same text is the same value in a config file and in ``--set``, or refused by both
    for the same reason (the file's message may show the text as a number: got 1, got '1')."""
    outcomes = []
    for read in (lambda: _from_file(tmp_path, key, text), lambda: _from_set(key, text)):
        try:
            outcomes.append(("value", read(), type(read())))
        except ConfigError as exc:
            reason = str(exc).removeprefix(f"config file {tmp_path / 'c.yaml'}: ")
            outcomes.append(("refused", reason.split(" got ")[0], reason.rsplit(" (", 1)[-1]))
    assert outcomes[0] == outcomes[1]


# ------------------------------------------------------------- what was written reads back
def test_every_committed_yaml_file_reads_as_yaml_safe_load() -> None:
    paths = sorted(
        p for top in ("src", "tests", "docs") for p in (ROOT / top).rglob("*.y*ml") if p.is_file()
    )
    assert len(paths) >= 2, paths  # the packaged GPU config and the golden test cases
    for path in paths:
        text = path.read_text()
        assert parse_yaml(text) == yaml.safe_load(text), path


@pytest.mark.parametrize("experiment", [e.value for e in Experiment])
def test_a_runs_config_yaml_reads_back(experiment: str) -> None:
    """What the runner writes (config_to_dict plus versions, by yaml.safe_dump)."""
    resolved = config_to_dict(default_config(experiment))
    resolved["versions"] = {"python": "3.11.4", "torch": "2.5.1+cpu", "numpy": "2.0"}
    assert parse_yaml(yaml.safe_dump(resolved, sort_keys=False)) == resolved


TRICKY = [
    *("012", "0189", "0o12", "0x1F", "1_000", "1:30", "1e3", "1.5e3", "-.5", "+.5", "1."),
    *("yes", "No", "on", "OFF", "y", "~", "null", "Null", "none", "", " ", "true", "True"),
    *("2024-01-01", ".inf", ".nan", "<<", "=", "00", "-0", "3.11", "3.11.4", "!x", "&a"),
    *("*a", "a: b", "- x", "#c", "x #c", "'q'", '"q"', "\t", "é", "\x85", "\u2028", "[1]"),
]


@pytest.mark.parametrize("text", TRICKY)
def test_safe_dump_quotes_every_text_the_reader_would_read_otherwise(text: str) -> None:
    assert parse_yaml(yaml.safe_dump({text: text, "list": [text]})) == {text: text, "list": [text]}


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(st.characters(codec="utf-8", exclude_categories=["Cs"])),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=12,
    )
)
def test_whatever_safe_dump_writes_reads_back(value: object) -> None:
    assert parse_yaml(yaml.safe_dump(value)) == value
