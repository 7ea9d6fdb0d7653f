"""From keys held down to a world's named action.

Action names follow the Atari convention: a direction made of ``UP``/``DOWN`` and
``LEFT``/``RIGHT`` followed by ``FIRE`` (``UPRIGHT``, ``DOWNLEFTFIRE``, ``NOOP``).
A :class:`Keymap` parses every name of an action set into its parts once, then
turns the set of held controls (arrows and space) into the action whose parts
match best, so the same code drives the toy world, any ALE game and any trained
world. Explicit bindings from a config override the derived ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from worldplay.errors import WorldplayError

CONTROLS = ("UP", "DOWN", "LEFT", "RIGHT", "FIRE")
_TOKEN = re.compile(r"UP|DOWN|LEFT|RIGHT|FIRE|NOOP")


def action_parts(name: str) -> frozenset[str] | None:
    """``"UPRIGHTFIRE"`` -> ``{"UP", "RIGHT", "FIRE"}``; ``"NOOP"`` -> ``{}``; unparsable -> None."""
    tokens = _TOKEN.findall(name.upper())
    if "".join(tokens) != name.upper():
        return None
    return frozenset(t for t in tokens if t != "NOOP")


class Keymap:
    """Maps held controls (a subset of :data:`CONTROLS`) to an action index."""

    def __init__(self, action_names: Sequence[str], overrides: Mapping[str, str] | None = None):
        self.action_names = tuple(action_names)
        self._by_parts: dict[frozenset[str], int] = {}
        for i, name in enumerate(self.action_names):
            parts = action_parts(name)
            if parts is not None and parts not in self._by_parts:
                self._by_parts[parts] = i
        for combo, action in (overrides or {}).items():
            parts = frozenset(p.strip().upper() for p in combo.split("+") if p.strip())
            unknown = parts - set(CONTROLS)
            if unknown:
                raise WorldplayError(
                    f"keymap: {combo!r} uses unknown control(s) {sorted(unknown)}; use {'+'.join(CONTROLS)}"
                )
            self._by_parts[parts] = self.index(action)
        self.noop = self._by_parts.get(frozenset(), 0)

    def index(self, action: str | int) -> int:
        """The index of an action given by name (case-insensitive) or index."""
        if isinstance(action, int) or (isinstance(action, str) and action.isdigit()):
            i = int(action)
            if not 0 <= i < len(self.action_names):
                raise WorldplayError(f"action index {i} is out of range [0, {len(self.action_names)})")
            return i
        upper = [a.upper() for a in self.action_names]
        if action.upper() not in upper:
            raise WorldplayError(f"unknown action {action!r}; this world's actions are: {', '.join(self.action_names)}")
        return upper.index(action.upper())

    def action(self, held: Iterable[str]) -> int:
        """The action for the held controls; opposite directions cancel.

        If the exact combination is not in the action set, FIRE is dropped first,
        then the vertical, then the horizontal direction, so a game without
        diagonals still moves when two arrows are held.
        """
        parts = set(held)
        for a, b in (("UP", "DOWN"), ("LEFT", "RIGHT")):
            if a in parts and b in parts:
                parts -= {a, b}
        candidates = [parts, parts - {"FIRE"}]
        for drop in ({"UP", "DOWN"}, {"LEFT", "RIGHT"}):
            candidates += [c - drop for c in list(candidates)]
        for c in candidates:
            if frozenset(c) in self._by_parts:
                return self._by_parts[frozenset(c)]
        return self.noop


def parse_key_script(script: str, action_names: Sequence[str]) -> list[int]:
    """``"RIGHT*20,UPRIGHT*10,FIRE"`` -> 31 action indices. Errors name the bad item."""
    keymap = Keymap(action_names)
    out: list[int] = []
    for k, item in enumerate(script.split(",")):
        item = item.strip()
        if not item:
            continue
        name, _, count = item.partition("*")
        try:
            n = int(count) if count else 1
        except ValueError:
            raise WorldplayError(f"--keys item {k + 1} {item!r}: repeat count {count!r} is not an integer") from None
        if n < 0:
            raise WorldplayError(f"--keys item {k + 1} {item!r}: repeat count must be >= 0")
        try:
            out += [keymap.index(name.strip())] * n
        except WorldplayError as e:
            raise WorldplayError(f"--keys item {k + 1} {item!r}: {e}") from None
    if not out:
        raise WorldplayError("--keys is empty; give e.g. --keys 'RIGHT*20,UP*10'")
    return out
