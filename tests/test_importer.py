"""Import of video files + action logs: success in every format, and each refusal writes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from worldplay import open_dataset
from worldplay.cli import main
from worldplay.data.importer import import_videos
from worldplay.data.sources import ToyGame
from worldplay.errors import DatasetError, ImportInputError
from worldplay.video import write_video

NAMES = list(ToyGame.ACTIONS)


def _frames(T, seed=0):
    g = ToyGame()
    out = [g.reset(seed)]
    for t in range(T - 1):
        out.append(g.step(t % 5)[0])
    return np.stack(out)


def _write_csv(path: Path, actions, header="action,reward,terminal"):
    rows = [header] + [f"{a},{t * 0.5},{int(t == len(actions) - 1)}" for t, a in enumerate(actions)]
    path.write_text("\n".join(rows) + "\n")


def _inputs(tmp_path, T=12):
    vids, acts = tmp_path / "videos", tmp_path / "actions"
    vids.mkdir()
    acts.mkdir()
    f = _frames(T)
    write_video(vids / "a.mp4", f, fps=15)
    write_video(vids / "b.gif", f, fps=15)
    (vids / "c").mkdir()
    for t, frame in enumerate(f):
        Image.fromarray(frame).save(vids / "c" / f"{t:04d}.png")
    _write_csv(acts / "a.csv", [NAMES[t % 5] for t in range(T)])
    _write_csv(acts / "b.csv", [str(t % 5) for t in range(T)])
    (acts / "c.jsonl").write_text("\n".join(json.dumps({"action": NAMES[t % 5]}) for t in range(T)) + "\n")
    return vids, acts, f


def test_import_every_format(tmp_path):
    vids, acts, f = _inputs(tmp_path)
    out = tmp_path / "ds"
    rc = main(["import", "--videos", str(vids), "--actions", str(acts), "--out", str(out), "--action-names",
               ",".join(NAMES), "--quiet"])  # fmt: skip
    assert rc == 0
    ds = open_dataset(out)
    assert len(ds) == 3 and ds.action_names == tuple(NAMES)
    expected = np.arange(12) % 5
    for i in range(3):
        ep = ds[i]
        assert ep.frames.shape == (12, 64, 64, 3)
        np.testing.assert_array_equal(ep.actions, expected)
        assert np.abs(ep.frames.astype(int) - f).mean() < 12  # mp4 and gif are lossy
    np.testing.assert_array_equal(ds[2].frames, f)  # PNG frames are exact
    np.testing.assert_allclose(ds[0].rewards, np.arange(12) * 0.5)
    assert ds[0].terminals[-1] and not ds[0].terminals[:-1].any()
    assert ds[2].rewards is None
    assert ds.episode_meta(0)["video"] == "a.mp4"


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _expect_refusal(tmp_path, vids, acts, match, out_name="ds"):
    out = tmp_path / out_name
    before = _snapshot(tmp_path / "existing") if (tmp_path / "existing").exists() else None
    with pytest.raises((ImportInputError, DatasetError), match=match):
        import_videos(vids, acts, out, action_names=NAMES, progress=False)
    if out_name == "existing":
        assert _snapshot(out) == before  # an existing dataset is left byte for byte as it was
    else:
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


@pytest.mark.parametrize("into", ["ds", "existing"])
def test_refusals_name_file_and_line_and_write_nothing(tmp_path, into):
    if into == "existing":  # importing into an existing dataset must leave it untouched too
        (tmp_path / "first").mkdir()
        v0, a0, _ = _inputs(tmp_path / "first")
        import_videos(v0, a0, tmp_path / "existing", action_names=NAMES, progress=False)
    vids, acts, _ = _inputs(tmp_path)
    a_csv = acts / "a.csv"
    good_rows = a_csv.read_text()
    lines = good_rows.splitlines()

    # unknown action name, named with file and line (header is line 1)
    a_csv.write_text("\n".join([*lines[:5], "JUMP,0,0", *lines[6:]]) + "\n")
    _expect_refusal(tmp_path, vids, acts, r"a\.csv line 6: unknown action 'JUMP'", into)
    # missing rows: the video has more frames than the log has rows
    a_csv.write_text("\n".join(lines[:-2]) + "\n")
    _expect_refusal(tmp_path, vids, acts, r"a\.csv: 10 rows but .*a\.mp4 has more frames", into)
    # extra rows: named by line
    a_csv.write_text("\n".join([*lines, "UP,0,0", "UP,0,0"]) + "\n")
    _expect_refusal(tmp_path, vids, acts, r"a\.csv line 14: extra row; .*a\.mp4 has only 12 frames", into)
    # no header
    a_csv.write_text("\n".join(lines[1:]) + "\n")
    _expect_refusal(tmp_path, vids, acts, r"a\.csv line 1: the header must name an 'action' column", into)
    # empty log
    a_csv.write_text("action\n")
    _expect_refusal(tmp_path, vids, acts, r"a\.csv: no rows", into)
    a_csv.write_text(good_rows)
    # unreadable video
    (vids / "a.mp4").rename(tmp_path / "a.mp4.bak")
    (vids / "a.mp4").write_bytes(b"\x00not a video" * 100)
    _expect_refusal(tmp_path, vids, acts, r"a\.mp4: unreadable video", into)
    (tmp_path / "a.mp4.bak").replace(vids / "a.mp4")
    # bad JSONL
    c = acts / "c.jsonl"
    good_c = c.read_text()
    c.write_text(good_c.replace('{"action": "UP"}', '{"action": "UP"', 1))
    _expect_refusal(tmp_path, vids, acts, r"c\.jsonl line 2: not valid JSON", into)
    c.write_text(good_c.replace('{"action": "UP"}', '{"act": "UP"}', 1))
    _expect_refusal(tmp_path, vids, acts, r'c\.jsonl line 2: expected an object with an "action" key', into)
    c.write_text(good_c)
    # a video without a log, and a log without a video
    (acts / "b.csv").rename(tmp_path / "b.csv.bak")
    _expect_refusal(tmp_path, vids, acts, r"b\.gif: no action log", into)
    (tmp_path / "b.csv.bak").replace(acts / "b.csv")
    (acts / "zzz.csv").write_text(good_rows)
    _expect_refusal(tmp_path, vids, acts, r"zzz\.csv: no video named 'zzz'", into)
    (acts / "zzz.csv").unlink()
    # and after all that, the same inputs import fine
    import_videos(vids, acts, tmp_path / into, action_names=NAMES, progress=False)


def test_empty_input_and_missing_names(tmp_path):
    (tmp_path / "v").mkdir()
    (tmp_path / "a").mkdir()
    with pytest.raises(ImportInputError, match="no videos found"):
        import_videos(tmp_path / "v", tmp_path / "a", tmp_path / "ds", action_names=NAMES, progress=False)
    with pytest.raises(ImportInputError, match="no such folder"):
        import_videos(tmp_path / "nope", tmp_path / "a", tmp_path / "ds", action_names=NAMES, progress=False)
    (tmp_path / "x").mkdir()
    vids, acts, _ = _inputs(tmp_path / "x")
    with pytest.raises(ImportInputError, match="--action-names is required"):
        import_videos(vids, acts, tmp_path / "ds", progress=False)
    assert not (tmp_path / "ds").exists()


def test_cli_reports_error_without_traceback(tmp_path, capsys):
    (tmp_path / "v").mkdir()
    (tmp_path / "a").mkdir()
    rc = main(["import", "--videos", str(tmp_path / "v"), "--actions", str(tmp_path / "a"), "--out",
               str(tmp_path / "ds"), "--action-names", "A,B"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: --videos") and "Traceback" not in err


def test_missing_action_names_are_offered_as_a_flag_to_paste(tmp_path, capsys):
    vids, acts, _ = _inputs(tmp_path)
    (vids / "b.gif").unlink()  # b's log holds indices; a's and c's hold names
    (acts / "b.csv").unlink()
    out = tmp_path / "ds"
    assert main(["import", "--videos", str(vids), "--actions", str(acts), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    flag = err.split("--action-names ")[-1].split()[0]
    assert flag.split(",") == [NAMES[t % 5] for t in range(5)]  # the names the logs use, first seen first
    rc = main(["import", "--videos", str(vids), "--actions", str(acts), "--out", str(out), "--quiet",
               "--action-names", flag])  # fmt: skip
    assert rc == 0 and len(open_dataset(out)) == 2


def test_missing_action_names_with_index_logs_say_how_many(tmp_path):
    vids, acts, _ = _inputs(tmp_path)  # keep only b, whose log holds indices
    (acts / "a.csv").unlink()
    (acts / "c.jsonl").unlink()
    for p in vids.iterdir():
        if p.stem != "b":
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    with pytest.raises(ImportInputError, match="action indices 0 to 4: give 5 names in index order"):
        import_videos(vids, acts, tmp_path / "ds", progress=False)
