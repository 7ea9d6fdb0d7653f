"""World evaluation (`worldplay eval WORLD`) and agent rollouts (`worldplay rollout`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TOY_EVAL_HORIZONS
from worldplay.cli import main
from worldplay.data.format import open_dataset
from worldplay.evaluate import (
    frame_errors,
    frechet_distance,
    latent_features,
    psnr_from_mse,
    summarize,
)
from worldplay.metrics import PSNR_CAP_DB

# ---------------------------------------------------------------------------
# Metrics on known cases
# ---------------------------------------------------------------------------


def _frames(n=6, seed=0):
    return np.random.default_rng(seed).integers(20, 200, (n, 64, 64, 3), dtype=np.uint8)


def test_identical_frames_give_the_capped_psnr_and_ssim_one():
    a = _frames()
    mse, s = frame_errors(a, a.copy())
    assert np.all(mse == 0)
    np.testing.assert_allclose(s, 1.0, atol=1e-6)
    assert np.all(psnr_from_mse(mse) == PSNR_CAP_DB)
    r = summarize(mse.reshape(3, 2), s.reshape(3, 2), np.array([0, 1, 2]))
    assert r["psnr"] == [PSNR_CAP_DB, PSNR_CAP_DB] and r["ssim"] == pytest.approx([1.0, 1.0])


def test_a_known_brightness_shift_gives_the_known_psnr():
    a = _frames()
    b = a + np.uint8(10)  # every pixel off by 10: MSE 100
    mse, s = frame_errors(a, b)
    np.testing.assert_allclose(mse, 100.0)
    np.testing.assert_allclose(psnr_from_mse(mse), 10 * np.log10(255.0**2 / 100.0), rtol=1e-9)
    assert np.all(s < 1.0) and np.all(s > 0.9)  # structure kept, luminance off


def test_an_episode_psnr_pools_its_squared_error():
    """One exact window and one with MSE 100 in the same episode: PSNR of MSE 50, not the mean of 100 dB and 28."""
    mse = np.array([[0.0], [100.0], [100.0]])
    r = summarize(mse, np.ones_like(mse), np.array([7, 7, 8]))
    expected = [10 * np.log10(255.0**2 / 50.0), 10 * np.log10(255.0**2 / 100.0)]
    assert r["psnr"][0] == pytest.approx(np.mean(expected))
    lo, hi = r["psnr_ci95"][0]
    assert lo < r["psnr"][0] < hi


def test_frechet_distance_of_known_gaussians():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 4))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    shifted = x + np.array([3.0, 0, 0, 0])  # same covariance, mean moved by 3: distance 9
    assert frechet_distance(x, shifted) == pytest.approx(9.0, rel=1e-6)
    scaled = 2 * rng.normal(size=(20000, 4))  # covariances I and 4I: trace(I + 4I - 2*2I) = 4
    assert frechet_distance(x, scaled) == pytest.approx(4.0, rel=0.05)
    assert latent_features(np.zeros((5, 8, 8, 16))).shape == (5, 64)


# ---------------------------------------------------------------------------
# The trained toy world against its baselines, end to end through the CLI
# ---------------------------------------------------------------------------

HORIZONS = TOY_EVAL_HORIZONS  # `worldplay eval` of the trained toy world runs in its job (conftest)


@pytest.mark.slow
def test_metrics_json_keeps_its_keys(toy_world_eval):
    out, m = toy_world_eval
    assert {"horizons", "psnr", "ssim", "delta_psnr", "drift"} <= set(m)
    assert m["horizons"] == HORIZONS
    for key in ("psnr", "ssim"):
        assert set(m[key]) == {"world", "repeat_last", "random_actions"}
        assert all(len(v) == len(HORIZONS) and np.isfinite(v).all() for v in m[key].values())
    assert m["delta_psnr"] == pytest.approx(np.subtract(m["psnr"]["world"], m["psnr"]["random_actions"]).tolist())
    d = m["drift"]
    assert len(d["minutes"]) == len(d["frechet"]) == len(d["frame_change"]) >= 1 and d["frechet"][0] > 0
    assert d["frames_per_stream"] == round(0.2 * 60 * 15)
    for name in ("metrics.md", "psnr.png", "rollouts.mp4"):
        assert (out / name).stat().st_size > 0, name
    assert "| 4 |" in (out / "metrics.md").read_text()
    # the reward model on held-out real frames, and on the world's one-step predictions of the same transitions
    rw = m["reward"]
    assert 0 <= rw["f1"] <= 1 and 0 <= rw["world_frames"]["f1"] <= 1
    assert rw["world_frames"]["positive"]["real"] == rw["positive"]["real"] > 0
    assert "positive, world's one-step frames" in (out / "metrics.md").read_text()


@pytest.mark.slow
def test_trained_toy_world_beats_both_baselines(toy_world_eval):
    """On held-out episodes, from the same real frames: closer to the real frames than repeating the last one,
    and closer with the recorded actions than with random ones (the keys matter), at every horizon."""
    _, m = toy_world_eval
    p = m["psnr"]
    summary = json.dumps(p)
    for i, h in enumerate(HORIZONS):
        assert p["world"][i] > p["repeat_last"][i], (h, summary)
        assert m["delta_psnr"][i] > 0.5, (h, summary)


@pytest.mark.slow
def test_live_game_comparison(toy_world_eval):
    """--env toy: the real game and the world get the same actions from the same start; the world tracks it."""
    _, m = toy_world_eval
    e = m["env"]
    assert e["game"] == "toy" and e["streams"] == 4
    assert all(len(e["psnr"][k]) == len(HORIZONS) for k in ("world", "repeat_last", "random_actions"))
    assert e["psnr"]["world"][0] > e["psnr"]["random_actions"][0], json.dumps(e["psnr"])


@pytest.mark.slow
def test_world_follows_the_keys_by_the_idm(toy_world_eval):
    """eval scores action following with the IDM: keys present, accuracies in range, the world's rollouts read
    by the IDM as the commanded actions far more often than chance (1 in 5)."""
    out, m = toy_world_eval
    af = m["action_following"]
    assert {"real_accuracy", "world_accuracy", "ratio", "by_horizon", "by_group"} <= set(af)
    assert af["ratio"] == pytest.approx(af["world_accuracy"] / af["real_accuracy"])
    assert af["world_accuracy"] > 0.5, af
    assert "Action-following ratio" in (out / "metrics.md").read_text()


# ---------------------------------------------------------------------------
# worldplay rollout
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_rollout_writes_videos_a_dataset_and_a_summary(toy_world_run, tmp_path, capsys):
    out = tmp_path / "roll"
    argv = ["rollout", str(toy_world_run["world"]), "--policy", "sticky", "--episodes", "3", "--steps", "6",
            "--batch", "2", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 3 and summary["policy"] == "sticky"
    ds = open_dataset(out / "dataset")
    assert len(ds) == 3
    for i, ep in enumerate(summary["episode_list"]):
        assert (out / ep["video"]).stat().st_size > 0
        P = ds.episode_meta(i)["prompt_frames"]
        assert ds.episode_lengths[i] == P + 6 == ep["frames"]
        assert len(ds.read_actions(i)) == ds.episode_lengths[i]
        assert ds.episode_meta(i)["source"].startswith("world:")
    assert main(["data", "validate", str(out / "dataset")]) == 0
    # a second run appends to the same dataset
    assert main([*argv[:5], "1", *argv[6:]]) == 0
    assert len(open_dataset(out / "dataset")) == 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 1 and summary["total_episodes"] == 4 and len(summary["runs"]) == 2
    assert [e["episode"] for e in summary["episode_list"]] == open_dataset(out / "dataset").episode_names


def test_rollout_refuses_a_human_with_several_streams(tmp_path, capsys):
    assert main(["rollout", "--policy", "human", "--batch", "2", "--episodes", "2", "--out", str(tmp_path)]) == 2
    assert "--batch 1" in capsys.readouterr().err
