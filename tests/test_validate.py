"""`worldplay data validate` finds corruption and names the file and the reason; `info` reports."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from worldplay.cli import main
from worldplay.data.format import encode_episode


@pytest.fixture
def ds(tmp_path, toy_dataset):
    path = tmp_path / "ds"
    shutil.copytree(toy_dataset, path)
    return path


def _validate(path, capsys):
    rc = main(["data", "validate", str(path)])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_clean_dataset_validates(ds, capsys):
    rc, out = _validate(ds, capsys)
    assert rc == 0 and "OK, 6 episodes, 720 frames" in out


def _flip(path, offset_from_end):
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


def test_truncated_file(ds, capsys):
    ep = ds / "episodes" / "000002.episode"
    ep.write_bytes(ep.read_bytes()[:-100])
    rc, out = _validate(ds, capsys)
    assert rc == 1 and "000002.episode: file is truncated" in out


def test_altered_frame_bytes(ds, capsys):
    _flip(ds / "episodes" / "000001.episode", 50)
    rc, out = _validate(ds, capsys)
    assert rc == 1 and "000001.episode: frame chunk" in out and "checksum" in out


def test_altered_actions(ds, capsys):
    ep = ds / "episodes" / "000003.episode"
    raw = bytearray(ep.read_bytes())
    header_len = int.from_bytes(raw[8:16], "little")
    header = json.loads(raw[16 : 16 + header_len])
    raw[16 + header_len + header["arrays"]["actions"]["offset"]] ^= 0x01
    ep.write_bytes(bytes(raw))
    rc, out = _validate(ds, capsys)
    assert rc == 1 and "000003.episode: actions array fails its checksum" in out


def test_action_out_of_range_and_wrong_shape(ds, capsys):
    frames = np.zeros((5, 64, 64, 3), np.uint8)
    (ds / "episodes" / "000010.episode").write_bytes(encode_episode(frames, np.array([0, 1, 9, 0, 0])))
    (ds / "episodes" / "000011.episode").write_bytes(
        encode_episode(np.zeros((5, 32, 32, 3), np.uint8), np.zeros(5, np.int32))
    )
    rc, out = _validate(ds, capsys)
    assert rc == 1
    assert "000010.episode: action 9 at frame 2 is out of range [0, 5)" in out
    assert "000011.episode: frames are (32, 32, 3), but the dataset's frame shape is (64, 64, 3)" in out
    assert "2 problem(s)" in out


def test_garbage_file_and_missing_dataset(ds, tmp_path, capsys):
    (ds / "episodes" / "000012.episode").write_bytes(b"hello")
    rc, out = _validate(ds, capsys)
    assert rc == 1 and "000012.episode: file is truncated (no header)" in out
    rc, out = _validate(tmp_path / "nothing", capsys)
    assert rc == 1 and "no such dataset folder" in out


def test_info(ds, capsys):
    assert main(["data", "info", str(ds), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["episodes"] == 6 and info["frames"] == 720
    assert sum(info["actions"].values()) == 720 and list(info["actions"]) == ["NOOP", "UP", "DOWN", "LEFT", "RIGHT"]
    assert info["compression_ratio"] > 5 and info["size_on_disk_bytes"] > 0
    assert main(["data", "info", str(ds)]) == 0
    assert "compressed" in capsys.readouterr().out
