"""`worldplay play CHECKPOINT`: a trained (toy) world in a window under SDL's dummy driver, and headless."""

from __future__ import annotations

import numpy as np
import pytest

from worldplay.cli import main
from worldplay.data.format import open_dataset
from worldplay.errors import WorldplayError
from worldplay.play import GUIDANCE_STEP, play_world
from worldplay.video import iter_video
from worldplay.world import load_world

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(toy_world_run):
    return load_world(toy_world_run["world"])


def _keys(schedule: dict[int, list[tuple[str, str]]]):
    """An on_frame hook posting (KEYDOWN|KEYUP, key name) events at given loop iterations."""
    import pygame as pg

    def post(t, session):
        for kind, name in schedule.get(t, []):
            key = pg.key.key_code(name)
            event_type = pg.KEYDOWN if kind == "down" else pg.KEYUP
            pg.event.post(pg.event.Event(event_type, key=key, unicode=""))

    return post


def test_different_arrow_keys_give_different_frames(world, tmp_path):
    runs = {}
    for key in ("right", "left", "up"):
        session = play_world(world, max_frames=6, seed=3, record_dir=tmp_path, on_frame=_keys({0: [("down", key)]}))
        runs[key] = np.stack(session.shown)
        assert world.action_names[session.last_action] == key.upper()
    start = {k: v[0] for k, v in runs.items()}
    np.testing.assert_array_equal(start["right"], start["left"])  # the same start
    assert not np.array_equal(runs["right"][-1], runs["left"][-1])
    assert not np.array_equal(runs["up"][-1], runs["left"][-1])


def test_controls_change_the_session_as_documented(world, tmp_path):
    seen = {}

    def probe(t, session):
        seen[t] = (session.guidance, session.paused, session.frame_count, session.recording is not None)

    keys = _keys({
        1: [("down", "+"), ("down", "+")],  # guidance up twice
        2: [("down", "-")],  # and down once
        3: [("down", "v")],  # start recording
        4: [("down", "right")],
        8: [("down", "return")],  # pause
        11: [("down", "return")],  # resume
        13: [("down", "backspace")],  # rewind to the oldest kept frame
        14: [("down", "p")],  # screenshot
        15: [("down", "v")],  # stop recording: MP4 + dataset episode
        16: [("down", "r")],  # restart
    })  # fmt: skip

    def hook(t, session):
        probe(t, session)
        keys(t, session)

    session = play_world(world, max_frames=18, seed=0, record_dir=tmp_path, on_frame=hook)
    g0 = world.config.guidance
    assert seen[2][0] == pytest.approx(g0 + 2 * GUIDANCE_STEP)
    assert seen[3][0] == pytest.approx(g0 + GUIDANCE_STEP)
    assert seen[4][3]  # recording
    assert seen[9][1] and seen[10][1] and seen[9][2] == seen[10][2] == seen[11][2]  # paused: no new frames
    assert not seen[12][1] and seen[12][2] == seen[11][2] + 1
    assert seen[14][2] == 1  # rewound to frame 0 (3 s = 45 frames are kept), then one new frame
    assert seen[17][2] == 1 and seen[17][0] == pytest.approx(g0 + GUIDANCE_STEP)  # restarted, guidance kept
    assert session.frame_count == 2
    assert list(tmp_path.glob("frame-*.png"))
    videos = list(tmp_path.glob("play-*.mp4"))
    assert len(videos) == 1
    ds = open_dataset(tmp_path / "dataset")
    assert len(ds) == 1 and ds.action_names == world.action_names
    # recording started at frame 3; the rewind to frame 0 dropped it all and restarted it there; two frames
    # were played before V stopped it (the newest frame has no action yet: it is in the video only)
    assert len(ds[0]) == 2
    assert ds.episode_meta(0)["source"] == "world"


def test_headless_cli_writes_the_requested_frames(toy_world_run, tmp_path, capsys):
    out = tmp_path / "h.mp4"
    argv = ["play", str(toy_world_run["world"]), "--headless", "--keys", "RIGHT*5,UP*3,NOOP*2", "--video", str(out)]
    assert main(argv) == 0
    assert len(list(iter_video(out))) == 11  # the prompt's last frame and one per key


def test_prompt_image_and_errors(toy_world_run, tmp_path, capsys):
    from PIL import Image

    img = tmp_path / "start.png"
    Image.fromarray(np.full((100, 80, 3), 90, np.uint8)).save(img)
    out = tmp_path / "p.gif"
    assert main(["play", str(toy_world_run["world"]), "--prompt", str(img), "--headless", "--keys", "LEFT*2",
                 "--video", str(out)]) == 0  # fmt: skip
    assert main(["play", str(tmp_path / "nope"), "--headless", "--keys", "LEFT"]) == 2
    assert "no such world checkpoint" in capsys.readouterr().err
    (tmp_path / "bad.png").write_text("not an image")
    assert main(["play", str(toy_world_run["world"]), "--prompt", str(tmp_path / "bad.png"), "--headless",
                 "--keys", "LEFT"]) == 2  # fmt: skip
    assert "cannot read the prompt image" in capsys.readouterr().err
    assert main(["play", str(toy_world_run["world"]), "--headless", "--keys", "JUMP"]) == 2
    assert "unknown action 'JUMP'" in capsys.readouterr().err


def test_no_display_says_how_to_play_headless(monkeypatch, capsys):
    for var in ("SDL_VIDEODRIVER", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(var, raising=False)
    assert main(["play"]) == 2
    err = capsys.readouterr().err
    assert "no display" in err and "--headless --keys" in err


def test_sampler_settings_replace_the_worlds_own(toy_world_run):
    path = toy_world_run["world"]
    world = load_world(path, sampling_steps=2, context_noise=0.0)
    assert world.config.sampling_steps == 2 and world.config.context_noise_at_sampling == 0.0
    _, frame = world.step(world.start(*world.held_out_prompt(0)), 0)
    assert frame.shape == world.frame_shape
    own = load_world(path).config
    assert own.sampling_steps == toy_world_run["config"].dynamics.sampling_steps == 1
    assert own.context_noise_at_sampling == toy_world_run["config"].dynamics.context_noise
    with pytest.raises(WorldplayError, match=r"dynamics\.sampling_context_noise: must be in \[0, 1\)"):
        load_world(path, context_noise=1.5)


def test_keymap_override_from_a_file(world, tmp_path):
    (tmp_path / "keys.toml").write_text('[keymap]\n"UP" = "DOWN"\n')
    from worldplay.play import load_keymap

    session = play_world(
        world, max_frames=3, record_dir=tmp_path, keymap=load_keymap(tmp_path / "keys.toml"),
        on_frame=_keys({0: [("down", "up")]}),
    )  # fmt: skip
    assert world.action_names[session.last_action] == "DOWN"
    (tmp_path / "bad.toml").write_text('[keymap]\n"JUMP" = "UP"\n')
    with pytest.raises(Exception, match="unknown control"):
        play_world(world, headless=True, keys="UP", keymap=load_keymap(tmp_path / "bad.toml"))
