"""Every command that writes checks, before its work starts, that it can write there, and says so in one line."""

from __future__ import annotations

import pytest

from worldplay import world as world_module
from worldplay.cli import main


@pytest.fixture
def no_work(monkeypatch):
    """Loading a world or recording is the work: neither may start when the output cannot be written."""

    def refuse(*args, **kwargs):
        raise AssertionError("the work started before the output was checked")

    monkeypatch.setattr(world_module, "load_world", refuse)
    monkeypatch.setattr("worldplay.data.record.record", refuse)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["play", "--headless", "--keys", "UP*3", "--video", "/proc/x.mp4"], "/proc/x.mp4: cannot write the video"),
        (["rollout", "--out", "/proc/r"], "/proc/r: cannot write the rollouts"),
        (["eval", "boxing", "--dataset", "data/x", "--out", "/proc/e"], "/proc/e: cannot write the evaluation"),
        (["record", "--source", "toy", "--out", "/proc/d"], "/proc/d: cannot write the dataset"),
        (["import", "--videos", "v", "--actions", "a", "--out", "/proc/d"], "/proc/d: cannot write the dataset"),
    ],
)
def test_unwritable_output_is_refused_before_the_work(argv, message, no_work, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "choose a folder you can write to" in err, err


def test_an_output_under_a_file_is_refused(tmp_path, no_work, capsys):
    (tmp_path / "f").write_text("")
    assert main(["record", "--source", "toy", "--out", str(tmp_path / "f" / "d")]) == 2
    assert f"{tmp_path / 'f'} is a file, not a folder" in capsys.readouterr().err


def test_training_refuses_an_unwritable_runs_folder(capsys):
    assert main(["train", "world", "--config", "configs/toy.toml", "--set", "train_dynamics.runs_dir=/proc/runs"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train_dynamics.runs_dir" in err, err
    # a stage checks only its own runs folder (the others' are left alone, not even probed)
    argv = ["train", "autoencoder", "--config", "configs/toy.toml", "--set", "data.dataset=/nonexistent/ds"]
    assert main([*argv, "--set", "train_dynamics.runs_dir=/proc/runs"]) == 2
    err = capsys.readouterr().err
    assert "runs_dir" not in err and "/nonexistent/ds" in err, err


@pytest.mark.parametrize("stage", ["world", "autoencoder"])
def test_world_is_refused_where_a_stage_has_no_use_for_it(stage, capsys):
    assert main(["train", stage, "--config", "configs/toy.toml", "--world", "boxing"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--world boxing: `train {stage}` trains from the dataset alone" in err, err
