"""Shipped worlds open by name from any folder; a folder of the same name wins; a wrong name says what exists."""

from __future__ import annotations

import pytest

from worldplay.checkpoint import CheckpointError, default_world, resolve_world, shipped_worlds
from worldplay.cli import main


def test_a_shipped_world_opens_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "boxing" in shipped_worlds()
    assert resolve_world("boxing") == default_world("boxing")
    assert resolve_world(None) == default_world()
    (tmp_path / "boxing").mkdir()
    assert resolve_world("boxing").resolve() == (tmp_path / "boxing").resolve()  # a folder of that name wins


def test_an_unknown_name_lists_the_shipped_worlds(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="shipped: .*boxing"):
        resolve_world("no-such-world")
    assert main(["play", "no-such-world", "--headless", "--keys", "NOOP"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no-such-world: neither a world folder nor a shipped world" in err
