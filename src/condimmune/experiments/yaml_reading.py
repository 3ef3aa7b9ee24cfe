"""YAML read strictly: the one reader of config files (``--config``) and of a run
directory's ``config.yaml``, and the text rules that ``--set`` values share with them.

PyYAML's ``safe_load`` follows YAML 1.1, where ``012`` is 10 (octal), ``yes`` is true,
``1:30`` is 90 and a repeated key silently keeps its last value. :func:`read_yaml` reads one
document by these rules instead:

* **Plain (unquoted) values** are a number, a boolean or null only in the forms on which
  YAML 1.1 and YAML 1.2 agree; any other plain value is text:

  - null: nothing, ``~``, ``null``, ``Null``, ``NULL``;
  - booleans: ``true``, ``True``, ``TRUE``, ``false``, ``False``, ``FALSE``;
  - integers: decimal digits without a leading zero, optionally signed (``0``, ``-3``,
    ``12``) -- :data:`INT_TEXT`;
  - floats: digits with a dot (``1.5``, ``.5``, ``2.``) and an optional exponent with its
    sign (``1.0e-05``), ``.inf``, ``-.inf``, ``.nan``.

  So ``012``, ``0x1F``, ``1_000``, ``1:30``, ``yes``, ``on`` and ``2024-01-01`` are text: a
  key of type int refuses ``012`` instead of reading 10 (YAML 1.1) or 12 (YAML 1.2), and
  ``--set`` refuses it too; a key of type str reads it as written. A float key also takes
  a number written as text (``lr: 1e-3``), in a file and in ``--set`` alike. ``yaml.safe_dump``
  (which writes ``config.yaml``) quotes every text YAML 1.1 would read as something else, a
  superset of these forms, so what it writes reads back unchanged, and a ``config.yaml``
  written before reads as it did.
* **Keys** are text, and each appears once in its mapping (a repeated key is refused, naming
  its dotted path and both lines).
* **No anchors or aliases** (``&name``, ``*name``, ``<<: *name``): a config never needs
  them, and they are how a small file expands to billions of values. Explicit tags other
  than ``!!str``, ``!!int``, ``!!float``, ``!!bool``, ``!!null``, ``!!seq`` and ``!!map`` are
  refused, and those take only the forms above.
* **Limits**: at most :data:`MAX_BYTES` bytes of UTF-8, :data:`MAX_DEPTH` levels of nesting
  (a config has 3) and :data:`MAX_VALUES` keys and values (a run's ``config.yaml`` has fewer
  than 200).

Every problem is a :class:`~condimmune.core.errors.UserError` naming the file, the line and
column (and the dotted key where there is one); it never echoes more than
:data:`ECHO_CHARS` characters of the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from condimmune.core.errors import UserError

__all__ = [
    "BOOL_TEXT",
    "ECHO_CHARS",
    "INT_TEXT",
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_VALUES",
    "NULL_TEXT",
    "parse_yaml",
    "read_yaml",
    "shorten",
]

MAX_BYTES = 1 << 20
"""A YAML file of more bytes (1 MiB) is refused unread (a config file has about 2 KB)."""
MAX_DEPTH = 32
"""Levels of nesting (the document is level 1; a config has 3)."""
MAX_VALUES = 10_000
"""Keys and values (scalars, lists and mappings) in one file."""
ECHO_CHARS = 80
"""The most characters of a file (a key, a tag, a value) that a message quotes."""

NULL_TEXT = frozenset({"", "~", "null", "Null", "NULL"})
"""The plain texts that are null (in ``--set``: for a key that may be null)."""
BOOL_TEXT = {s: s.lower() == "true" for s in ("true", "True", "TRUE", "false", "False", "FALSE")}
"""The plain texts that are booleans, and their values."""
INT_TEXT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\Z", re.ASCII)
"""The plain texts that are integers (``match`` reads the whole text)."""
_FLOAT_PLAIN = re.compile(
    r"(?:[-+]?[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+][0-9]+)?\Z|[-+]?\.(?:inf|Inf|INF)\Z"
    r"|\.(?:nan|NaN|NAN)\Z",
    re.ASCII,
)

_TAG = "tag:yaml.org,2002:"
_STR, _SEQ, _MAP, _NULL, _BOOL, _INT, _FLOAT = (
    _TAG + t for t in ("str", "seq", "map", "null", "bool", "int", "float")
)


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML that these rules refuse (its ``problem`` says why)."""


def shorten(text: str) -> str:
    """``text`` on one line, cut to :data:`ECHO_CHARS` characters (what a message quotes of
    a file or a value)."""
    line = " ".join(text.split())
    return line if len(line) <= ECHO_CHARS else f"{line[: ECHO_CHARS - 1]}…"


def _refuse(problem: str, mark: yaml.Mark | None, note: str | None = None) -> _Refused:
    return _Refused(None, None, problem, mark, note)


_FORMS = {
    "null": "null (or nothing, ~)",
    "bool": "true or false",
    "int": "an integer (decimal digits without a leading zero)",
    "float": "a float (digits with a dot: 1.5, 1.0e-05, .inf)",
}


def _typed(loader: yaml.SafeLoader, node: ScalarNode) -> object:
    """A null, boolean, integer or float (implicit or tagged) in the forms allowed."""
    text = loader.construct_scalar(node)
    if node.tag == _NULL and text in NULL_TEXT:
        return None
    if node.tag == _BOOL and text in BOOL_TEXT:
        return BOOL_TEXT[text]
    if node.tag == _INT and INT_TEXT.match(text):
        try:
            return int(text)
        except ValueError:  # more digits than Python converts
            raise _refuse("integer with too many digits", node.start_mark) from None
    if node.tag == _FLOAT and _FLOAT_PLAIN.match(text):  # .inf, -.inf, .nan: Python's inf, nan
        return float(text.replace(".", "", 1) if text[-1].isalpha() else text)
    kind = node.tag.removeprefix(_TAG)
    raise _refuse(f"!!{kind} {shorten(text)!r} is not {_FORMS[kind]}", node.start_mark)


def _other_tag(loader: yaml.SafeLoader, node: Node) -> object:
    tag = shorten(node.tag.replace(_TAG, "!!"))
    raise _refuse(f"tag {tag} not allowed", node.start_mark, "write plain values")


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader with the module docstring's values, keys and limits."""

    yaml_implicit_resolvers: dict[Any, Any] = {}  # noqa: RUF012 - filled below, not YAML 1.1's
    yaml_constructors: ClassVar[dict[Any, Any]] = {
        _STR: yaml.SafeLoader.construct_yaml_str,
        _SEQ: yaml.SafeLoader.construct_yaml_seq,
        _MAP: yaml.SafeLoader.construct_yaml_map,
        **dict.fromkeys((_NULL, _BOOL, _INT, _FLOAT), _typed),
        None: _other_tag,
    }

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0
        self._values = 0
        self._path: list[str] = []
        """The keys (and ``[i]`` list positions) from the document down to this node."""

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        """Count the node and its depth, refuse an anchor or alias, and track its key path
        (``index``: the key node of a mapping's value, the position of a list item)."""
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _refuse("anchor or alias not allowed", event.start_mark, "write the value out")
        self._values += 1
        if self._values > MAX_VALUES:
            raise _refuse(f"more than {MAX_VALUES:,} keys and values", event.start_mark)
        if self._depth == MAX_DEPTH:
            raise _refuse(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        part = index.value if isinstance(index, ScalarNode) else None
        if isinstance(index, int):
            part = f"[{index}]"
        self._depth += 1
        if part is not None:
            self._path.append(part)
        node = super().compose_node(parent, index)
        if part is not None:
            self._path.pop()
        self._depth -= 1
        return node

    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        """The mapping, refusing a key that is not text or that repeats an earlier one."""
        node = super().compose_mapping_node(anchor)
        first: dict[str, yaml.Mark] = {}
        for key, _value in node.value:
            if not (isinstance(key, ScalarNode) and key.tag == _STR):
                raise _refuse("key that is not text", key.start_mark, "quote it")
            if key.value in first:
                dotted = "".join(p if p[0] == "[" else f".{p}" for p in [*self._path, key.value])
                line = first[key.value].line + 1
                raise _refuse(
                    f"duplicate key {shorten(dotted.lstrip('.'))}",
                    key.start_mark,
                    f"first at line {line}",
                )
            first[key.value] = key.start_mark
        return node


def _one_of(texts: Iterable[str]) -> re.Pattern[str]:
    return re.compile("(?:" + "|".join(re.escape(t) for t in sorted(texts)) + r")\Z")


for _tag, _pattern, _starts in (
    (_NULL, _one_of(NULL_TEXT), ["~", "n", "N", ""]),
    (_BOOL, _one_of(BOOL_TEXT), list("tTfF")),
    (_INT, INT_TEXT, list("-+0123456789")),
    (_FLOAT, _FLOAT_PLAIN, list("-+0123456789.")),
):
    _StrictLoader.add_implicit_resolver(_tag, _pattern, _starts)


def parse_yaml(text: str) -> object:
    """The one document of ``text`` by the module docstring's rules (``None`` when empty);
    raises ``yaml.YAMLError`` (its problem and mark say what and where)."""
    loader = _StrictLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _problem(exc: yaml.YAMLError, text: str) -> str:
    """What is wrong with ``text`` and where, in one short line."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or ""
        if exc.context and not exc.context.startswith("while"):  # not "while scanning a ..."
            problem = f"{exc.context} {problem}"
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        note = f" ({exc.note})" if exc.note else ""
        what = f"{shorten(problem or type(exc).__name__)}{where}{note}"
    elif isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        what = f"character #x{exc.character:04x} is not allowed, at line {line}"
    else:
        what = shorten(str(exc))
    return what if isinstance(exc, _Refused) else f"not valid YAML ({what})"


def read_yaml(path: Path, fix: str) -> object:
    """The one document of the YAML file ``path`` (a regular file) by the module docstring's
    rules (``None`` when empty). Any problem is a :class:`UserError` naming ``path`` (and the
    line, and the key where there is one) with ``fix``."""
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_BYTES + 1)
    except OSError as exc:
        raise UserError(f"cannot be read ({exc.strerror or exc})", path, fix) from None
    if len(data) > MAX_BYTES:
        raise UserError(f"larger than {MAX_BYTES >> 20} MiB, the limit of a config file", path, fix)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError("not UTF-8 text", path, fix) from None
    try:
        return parse_yaml(text)
    except yaml.YAMLError as exc:
        raise UserError(_problem(exc, text), path, fix) from None
