"""The ``worldplay`` command: each subcommand parses its arguments and calls library code."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from worldplay.errors import WorldplayError


def _size(text: str) -> tuple[int, int]:
    """``64`` or ``64x48`` (height x width)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected N or HxW, e.g. 64 or 64x64") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 8:
        raise argparse.ArgumentTypeError(f"{text!r}: expected N or HxW with sides >= 8")
    return parts[0], parts[1]


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers like 1,4,16; got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive whole numbers, got {text!r}")
    return values


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be >= 1")
    return n


def cmd_record(args: argparse.Namespace) -> int:
    from worldplay.data.record import record
    from worldplay.data.sources import make_source
    from worldplay.policies import make_policy

    source = make_source(args.source, size=args.size, frameskip=args.frameskip, max_steps=args.steps)
    try:
        policy = make_policy(args.policy, source.action_names, fps=source.fps)
        written = record(
            source, policy, args.out, episodes=args.episodes, steps=args.steps, seed=args.seed, progress=not args.quiet
        )
    finally:
        source.close()
    frames = 0
    if written:
        from worldplay.data.format import open_dataset

        ds = open_dataset(args.out)
        names = {p.stem for p in written}
        frames = sum(n for n, name in zip(ds.episode_lengths, ds.episode_names, strict=True) if name in names)
    print(f"recorded {len(written)} episodes ({frames} frames) into {args.out}")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from worldplay.data.probe import probe_game
    from worldplay.data.sources import make_source
    from worldplay.policies import make_policy

    if args.policy == "human":
        raise WorldplayError(
            "--policy human: a probe replays the game from saved states; use sticky, random or pkg.module:fn"
        )
    source = make_source(args.source, size=args.size, frameskip=args.frameskip)
    try:
        policy = make_policy(args.policy, source.action_names, fps=source.fps)
        result = probe_game(
            source, policy, episodes=args.episodes, steps=args.steps, horizons=args.horizons, every=args.every,
            seed=args.seed, progress=not (args.quiet or args.json),
        )  # fmt: skip
    finally:
        source.close()
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=False))
        return 0
    rows, n = result["horizons"], result["episodes"]
    print(
        f"{result['source']['source']}: {result['starts']} starts in {n} episode{'s' * (n != 1)} of the "
        f"{result['policy']} policy ({result['steps_played']} steps); identical consecutive frames "
        f"{100 * result['identical_frames']:.0f}%"
    )
    print(f"{'horizon':<44}" + "".join(f"{r['horizon']:>8d}" for r in rows))
    for key, label, fmt in (
        ("repeat_last_psnr", "repeat-last PSNR (dB): a world must beat it", "{:8.1f}"),
        ("key_effect_psnr", "PSNR of random keys against the real keys", "{:8.1f}"),
        ("key_share", "keys' effect / natural change", "{:8.2f}"),
        ("delta_at_repeat_last", "delta-PSNR of a world at repeat-last error", "{:8.2f}"),
    ):
        print(f"{label:<44}" + "".join(f"{'-':>8}" if r[key] is None else fmt.format(r[key]) for r in rows))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from worldplay.data.importer import import_videos

    names = [a.strip() for a in args.action_names.split(",")] if args.action_names else None
    written = import_videos(
        args.videos,
        args.actions,
        args.out,
        action_names=names,
        size=args.size,
        fps=args.fps,
        game=args.game,
        labeller=args.labeller,
        progress=not args.quiet,
    )
    print(f"imported {len(written)} episodes into {args.out}")
    if args.labeller:
        print(label_summary(args.out, written))
    return 0


def label_summary(dataset: str, written: Sequence[Path]) -> str:
    """What the labeller gave the episodes just imported: how often each action, and its mean confidence."""
    import numpy as np

    from worldplay.data.format import open_dataset

    ds = open_dataset(dataset)
    names = {p.stem for p in written}
    counts = np.zeros(len(ds.action_names), np.int64)
    confidence, labelled = [], 0
    for i, name in enumerate(ds.episode_names):
        conf = ds.read_confidence(i) if name in names else None
        if conf is not None:
            labelled += 1
            counts += np.bincount(ds.read_actions(i), minlength=len(ds.action_names))
            confidence.append(conf)
    if not labelled:
        return "labelled 0 episodes: every video had an action log"
    total = max(int(counts.sum()), 1)
    hist = ", ".join(f"{n} {100 * c / total:.1f}%" for n, c in zip(ds.action_names, counts, strict=True) if c)
    mean = float(np.concatenate(confidence).mean())
    return f"labelled {labelled} episodes ({total} frames), mean confidence {mean:.3f}; labels: {hist}"


def cmd_data(args: argparse.Namespace) -> int:
    from worldplay.data.format import open_dataset, summarize, temporary_files, validate_dataset

    if args.action == "info":
        info = summarize(open_dataset(args.dataset))
        if args.json:
            print(json.dumps(info, indent=2))
            return 0
        mb = info["size_on_disk_bytes"] / 1e6
        ratio = info["compression_ratio"]
        el = info["episode_length"]
        print(f"dataset      {info['path']}  (format v{info['format_version']}, {info['fingerprint']})")
        print(f"games        {', '.join(info['games']) or '-'}")
        print(f"frames       {info['frames']} of {'x'.join(map(str, info['frame_shape']))} at {info['fps']:g} fps")
        print(f"episodes     {info['episodes']} (length min {el['min']}, mean {el['mean']:.0f}, max {el['max']})")
        if info["labelled_episodes"]:
            print(f"labelled     {info['labelled_episodes']} episodes' actions come from an IDM (import --labeller)")
        print(f"on disk      {mb:.1f} MB, frames compressed {ratio:.1f}x" if ratio else f"on disk      {mb:.1f} MB")
        print("actions")
        total = max(1, info["frames"])
        for name, n in info["actions"].items():
            bar = "#" * round(40 * n / total)
            print(f"  {name:>14} {n:9d} {100 * n / total:5.1f}% {bar}")
        return 0
    ds, problems = validate_dataset(args.dataset)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    leftovers = temporary_files(args.dataset)
    if leftovers:
        print(
            f"note: {len(leftovers)} leftover temporary file(s) of interrupted writes in "
            f"{args.dataset}/episodes (invisible to readers; safe to delete)",
            file=sys.stderr,
        )
    if problems:
        print(f"{args.dataset}: INVALID, {len(problems)} problem(s)", file=sys.stderr)
        return 1
    assert ds is not None
    print(f"{args.dataset}: OK, {len(ds)} episodes, {ds.num_frames} frames, every byte checked")
    return 0


WORLD_STAGES = ("dynamics", "reward", "rate", "decoder", "idm")  # the stages `train --world` applies to


def cmd_train(args: argparse.Namespace) -> int:
    from worldplay.config import load_config
    from worldplay.train.distributed import initialize

    cfg = load_config(args.config, args.set)  # refused here, before anything compiles
    from worldplay.output import check_writable
    from worldplay.train.loop import stage_train_config
    from worldplay.train.world import STAGES

    for stage in STAGES if args.stage == "world" else (args.stage,):  # the runs this command writes, no other
        runs = stage_train_config(cfg, stage).runs_dir
        check_writable(runs, f"the training run (train_{stage}.runs_dir)", folder=True)
    if args.world is not None and args.stage not in WORLD_STAGES:
        raise WorldplayError(
            f"--world {args.world}: `train {args.stage}` trains from the dataset alone; --world is for the "
            f"{', '.join(WORLD_STAGES)} stages"
        )
    initialize(args.coordinator, args.num_processes, args.process_id)
    if args.stage == "world":
        from worldplay.train.world import train_world

        result = train_world(cfg, progress=not args.quiet, project=not args.no_projection)
    else:
        from worldplay.checkpoint import resolve_world
        from worldplay.train import autoencoder, decoder, dynamics, idm, rate, reward

        train = {
            "autoencoder": autoencoder.train_autoencoder, "dynamics": dynamics.train_dynamics,
            "reward": reward.train_reward, "rate": rate.train_rate, "decoder": decoder.train_decoder,
            "idm": idm.train_idm,
        }[args.stage]  # fmt: skip
        kwargs = {}
        if args.stage in WORLD_STAGES:
            kwargs["world"] = None if args.world is None else resolve_world(args.world)
        result = train(cfg, progress=not args.quiet, **kwargs)
    import jax

    if jax.process_index() == 0:
        print(json.dumps(result, indent=2))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from worldplay import bench

    runs = {
        "data": lambda: (bench.bench_data(ale_game=None if args.no_ale else "ale:Boxing"), bench.format_data),
        "play": lambda: (
            bench.bench_play(args.world, sampling_steps=args.sampling_steps, context_noise=args.context_noise),
            bench.format_play,
        ),
        "train": lambda: (
            bench.bench_train(args.config, batch=args.batch, peak_tflops=args.peak_tflops, overrides=args.set),
            bench.format_train,
        ),
        "autoencoder": lambda: (bench.bench_autoencoder(args.config), bench.format_autoencoder),
        "rollout": lambda: (
            bench.bench_rollout(args.world, sampling_steps=args.sampling_steps, context_noise=args.context_noise),
            bench.format_rollout,
        ),
    }
    result, fmt = runs[args.what]()
    print(json.dumps(result, indent=2) if args.json else fmt(result))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from worldplay.checkpoint import resolve_world, shipped_worlds

    if args.checkpoint in shipped_worlds() and not Path(args.checkpoint).exists():
        args.checkpoint = str(resolve_world(args.checkpoint))
    from worldplay.idm import idm_folder

    if idm_folder(args.checkpoint) == Path(args.checkpoint):  # an IDM folder itself, not a world holding one
        from worldplay.idm import evaluate_idm, idm_markdown

        result = evaluate_idm(
            args.checkpoint, args.dataset, args.out, max_episodes=args.max_episodes,
            ceiling_frames=args.ceiling_frames, progress=not args.quiet,
        )  # fmt: skip
        print(idm_markdown(result, list(result["per_action"])))
        print(f"wrote {args.out}/metrics.json, metrics.md and confusion.png", file=sys.stderr)
        return 0
    if (Path(args.checkpoint) / "world.json").is_file():
        from worldplay.evaluate import evaluate_world, markdown_report

        result = evaluate_world(
            args.checkpoint, args.dataset, args.out, horizons=args.horizons, prompt=args.prompt_frames,
            windows_per_episode=args.windows_per_episode, max_episodes=args.max_episodes,
            drift_minutes=args.drift_minutes, drift_streams=args.drift_streams, env=args.env,
            env_streams=args.env_streams, env_policy=args.env_policy, guidance=args.guidance,
            sampling_steps=args.sampling_steps, context_noise=args.context_noise, seed=args.seed,
            idm=args.idm, progress=not args.quiet,
        )  # fmt: skip
        print(markdown_report(result))
        print(f"wrote {args.out}/metrics.json, metrics.md, psnr.png and rollouts.mp4", file=sys.stderr)
        return 0
    from worldplay.checkpoint import read_stage_meta, stage_step_dir
    from worldplay.evaluate import evaluate_autoencoder

    meta = read_stage_meta(stage_step_dir(args.checkpoint))
    if meta.get("stage") != "autoencoder":
        raise WorldplayError(
            f"{args.checkpoint}: a {meta.get('stage')!r} run; evaluate its world folder instead "
            f"({Path(args.checkpoint) / 'world'})"
        )
    result = evaluate_autoencoder(args.checkpoint, args.dataset, args.out, frames_per_episode=args.frames_per_episode)
    print(json.dumps(result, indent=2))
    print(f"wrote {args.out}/metrics.json and {args.out}/reconstructions.png", file=sys.stderr)
    return 0


def _load_world(args: argparse.Namespace):
    """The world named on the command line (default: the shipped one), with any sampler settings given."""
    from worldplay.checkpoint import resolve_world
    from worldplay.world import load_world

    return load_world(
        resolve_world(args.checkpoint), sampling_steps=args.sampling_steps, context_noise=args.context_noise
    )


def _add_sampler_args(parser: argparse.ArgumentParser, steps_default: str = "the world's own") -> None:
    parser.add_argument(
        "--sampling-steps", type=_positive, default=None, help=f"denoising steps per frame (default: {steps_default})"
    )
    parser.add_argument(
        "--context-noise", type=float, default=None,
        help="noise level of the context frames at sampling (default: the world's own)",
    )  # fmt: skip


def cmd_rollout(args: argparse.Namespace) -> int:
    from worldplay.evaluate import record_rollouts

    world = _load_world(args)
    prompt = None
    if args.prompt:
        from worldplay.video import prompt_from_image

        prompt = prompt_from_image(args.prompt, world.frame_shape)
    summary = record_rollouts(
        world, args.policy, args.out, episodes=args.episodes, steps=args.steps, batch=args.batch, seed=args.seed,
        guidance=args.guidance, prompt=prompt, progress=not args.quiet,
    )  # fmt: skip
    rate = summary["generated_frames_per_s"]
    speed = "" if rate is None else f", {rate:.1f} generated frames/s over {min(args.batch, args.episodes)} streams"
    print(
        f"rolled out {summary['episodes']} episodes of {args.steps} frames{speed} into {args.out}: "
        "dataset/, videos/, summary.json"
    )
    return 0


def cmd_eval_agents(args: argparse.Namespace) -> int:
    from worldplay.agents import evaluate_agents, markdown, reading
    from worldplay.checkpoint import resolve_world
    from worldplay.world import load_world

    path = resolve_world(args.checkpoint)
    score, sampling_steps, guidance = reading(path, args.score, args.sampling_steps, args.guidance)
    world = load_world(path, sampling_steps=sampling_steps, context_noise=args.context_noise)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    result = evaluate_agents(
        world, policies, env=args.env, starts=args.starts, steps=args.steps, batch=args.batch, seed=args.seed,
        guidance=guidance, score=score, out=args.out, progress=not args.quiet,
    )  # fmt: skip
    print(markdown(result))
    plot = ", returns.png" if args.env else ""
    print(f"wrote {args.out}/metrics.json, metrics.md{plot}", file=sys.stderr)
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    if args.game is not None:
        from worldplay.data.sources import make_source
        from worldplay.play import play_source

        source = make_source(args.game, max_steps=10**9)
        print(f"playing the real game {args.game} (not a world model). Arrow keys move, Esc quits.", file=sys.stderr)
        frames = play_source(
            source, title=f"worldplay: {args.game} (the real game)", seed=args.seed, headless=args.headless,
            keys=args.keys, video=args.video,
        )  # fmt: skip
        if args.video:
            print(f"wrote {len(frames)} frames to {args.video}")
        return 0
    from worldplay.play import play_world, require_display

    if not args.headless:
        require_display()  # before the world loads, which takes seconds
    world = _load_world(args)
    keymap = None
    if args.keymap:
        from worldplay.play import load_keymap

        keymap = load_keymap(args.keymap)
    session = play_world(
        world, prompt=args.prompt, headless=args.headless, keys=args.keys, video=args.video, seed=args.seed,
        guidance=args.guidance, smooth=args.smooth, window_px=args.size, record_dir=args.record_dir, keymap=keymap,
    )  # fmt: skip
    if args.video:
        print(f"wrote {len(session.shown)} frames to {args.video}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="worldplay", description="Play, record and train interactive world models.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("record", help="record gameplay episodes into a dataset")
    r.add_argument("--source", required=True, help="toy, toy:push, or ale:<GameId> (e.g. ale:Boxing)")
    r.add_argument(
        "--policy", default="sticky", help="random | sticky | hold | human | pkg.module:function (default sticky)"
    )
    r.add_argument("--episodes", type=_positive, default=1)
    r.add_argument(
        "--steps",
        type=_positive,
        default=None,
        help="frames per episode at most (default: until the game ends; toy: 1000)",
    )
    r.add_argument("--seed", type=int, default=0, help="episode i uses seed S+i")
    r.add_argument("--size", type=_size, default=(64, 64), help="frame size N or HxW (default 64)")
    r.add_argument("--frameskip", type=_positive, default=4, help="ALE frame skip (default 4: 15 fps)")
    r.add_argument("--out", required=True, help="dataset folder (created, or appended to)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_record)

    pr = sub.add_parser(
        "probe", help="measure a game before recording it: repeat-last PSNR and how much the keys change the frames"
    )
    pr.add_argument("source", help="toy, toy:push, or ale:<GameId> (e.g. ale:Boxing)")
    pr.add_argument(
        "--policy", default="sticky", help="the recording policy: sticky | hold | random | pkg.module:function"
    )
    pr.add_argument("--episodes", type=_positive, default=4)
    pr.add_argument("--steps", type=_positive, default=800, help="steps per episode at most (default 800)")
    pr.add_argument("--horizons", type=_int_list, default=(1, 4, 8, 16), help="default 1,4,8,16")
    pr.add_argument("--every", type=_positive, default=29, help="steps between starts (default 29)")
    pr.add_argument("--seed", type=int, default=0, help="episode i uses seed S+i")
    pr.add_argument("--size", type=_size, default=(64, 64), help="frame size N or HxW (default 64)")
    pr.add_argument("--frameskip", type=_positive, default=4, help="ALE frame skip (default 4: 15 fps)")
    pr.add_argument("--json", action="store_true", help="the figures as JSON")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=cmd_probe)

    i = sub.add_parser("import", help="import video files and action logs into a dataset")
    i.add_argument("--videos", required=True, help="folder of NAME.mp4 / NAME.gif / NAME/ (PNG frames)")
    i.add_argument(
        "--actions", default=None,
        help="folder of NAME.csv / NAME.jsonl, one row per frame (videos without a log need --labeller)",
    )  # fmt: skip
    i.add_argument(
        "--labeller", default=None,
        help="an IDM folder (or a world with idm/) that labels the videos without an action log; logs win",
    )  # fmt: skip
    i.add_argument("--out", required=True, help="dataset folder (created, or appended to)")
    i.add_argument("--action-names", help="comma-separated action set, e.g. NOOP,UP,DOWN (required for a new dataset)")
    i.add_argument("--size", type=_size, default=(64, 64), help="frame size N or HxW (default 64)")
    i.add_argument("--fps", type=float, default=15.0)
    i.add_argument("--game", default=None, help="game name stored in each episode's metadata")
    i.add_argument("--quiet", action="store_true")
    i.set_defaults(func=cmd_import)

    d = sub.add_parser("data", help="inspect or validate a dataset")
    d.add_argument("action", choices=["info", "validate"])
    d.add_argument("dataset")
    d.add_argument("--json", action="store_true", help="info as JSON")
    d.set_defaults(func=cmd_data)

    t = sub.add_parser("train", help="train a world (every stage) or one stage; resumes from the latest checkpoint")
    t.add_argument(
        "stage", choices=["world", "autoencoder", "dynamics", "reward", "decoder", "idm", "rate"],
        help="world: every stage in order, each resuming; or one stage (autoencoder, then dynamics, reward and "
        "decoder); idm: the inverse-dynamics model, on its own; rate: the model of expected rewards that "
        "eval-agents --score rate uses, on its own",
    )  # fmt: skip
    t.add_argument("--config", required=True, help="TOML config, e.g. configs/toy.toml")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--no-projection", action="store_true", help="world: skip the timed warm-up and projection")
    t.add_argument(
        "--world", default=None,
        help="reward, rate: add the model to this world (folder or shipped name), trained on its autoencoder's "
        "latents, instead of the run's own world; decoder: fine-tune this world's decoder instead of the run's "
        "own world's (the result goes to <runs>/<name>/decoder/world); idm: also add the IDM to this world; "
        "dynamics: fine-tune this world on the config's dataset (start from its dynamics, on its autoencoder)",
    )  # fmt: skip
    t.add_argument("--coordinator", default=None, metavar="HOST:PORT", help="multi-process: process 0's address")
    t.add_argument("--num-processes", type=_positive, default=None, help="multi-process: processes in the run")
    t.add_argument("--process-id", type=int, default=None, help="multi-process: this process's index, from 0")
    t.set_defaults(func=cmd_train)

    b = sub.add_parser("bench", help="measure speed on this machine")
    b.add_argument("what", choices=["play", "train", "data", "autoencoder", "rollout"])
    b.add_argument(
        "--world", default=None, help="play, rollout: a world folder or a shipped world's name (default: boxing)"
    )
    b.add_argument(
        "--config",
        default=None,
        help="train, autoencoder: the config whose model to time "
        "(train: default configs/boxing.toml, else the shipped world's)",
    )
    b.add_argument("--batch", type=int, default=None, help="train: sequences per step (default: the config's)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="train: override a config key")
    b.add_argument(
        "--peak-tflops", type=float, default=None,
        help="train: the device's dense peak in TFLOP/s, for MFU (default: known for H100, H200, A100)",
    )  # fmt: skip
    _add_sampler_args(b)
    b.add_argument("--json", action="store_true")
    b.add_argument("--no-ale", action="store_true", help="skip the Atari recording benchmark")
    b.set_defaults(func=cmd_bench)

    e = sub.add_parser("eval", help="evaluate a world or an autoencoder on held-out episodes")
    e.add_argument(
        "checkpoint", help="a world folder or a shipped world's name (boxing), an IDM folder, or an autoencoder run"
    )
    e.add_argument("--dataset", required=True)
    e.add_argument("--out", required=True, help="folder for metrics.json and images")
    e.add_argument(
        "--frames-per-episode", type=_positive, default=None, help="autoencoder: sample this many (default all)"
    )
    e.add_argument("--horizons", type=_int_list, default=(1, 2, 4, 8, 16, 32, 64), help="world: e.g. 1,4,16,64")
    e.add_argument("--prompt-frames", type=_positive, default=None, help="world: real frames first (8, or window-1)")
    e.add_argument("--windows-per-episode", type=_positive, default=8, help="world: paired windows per episode (8)")
    e.add_argument("--max-episodes", type=_positive, default=None, help="world: use at most this many episodes")
    e.add_argument("--drift-minutes", type=float, default=10.0, help="world: minutes generated per stream (10; 0: no)")
    e.add_argument("--drift-streams", type=_positive, default=4, help="world: streams for the drift test (4)")
    e.add_argument("--env", default=None, help="world: also compare against the live game, e.g. ale:Boxing")
    e.add_argument("--env-streams", type=_positive, default=8, help="world: live games at once (8)")
    e.add_argument("--env-policy", default="sticky", help="world: the policy playing the live game (sticky)")
    e.add_argument("--guidance", type=float, default=None, help="world: guidance scale (default: the world's own)")
    e.add_argument("--idm", default=None, help="world: the IDM scoring action following (default: the world's idm/)")
    e.add_argument(
        "--ceiling-frames", type=int, default=4000,
        help="IDM: frames replayed in the emulator to measure the accuracy ceiling (ALE data; 0: skip)",
    )  # fmt: skip
    _add_sampler_args(e)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.set_defaults(func=cmd_eval)

    ro = sub.add_parser("rollout", help="record a policy's episodes inside a world (video, dataset, summary)")
    ro.add_argument(
        "checkpoint", nargs="?", default=None, help="a world folder or a shipped world's name (default: boxing)"
    )
    ro.add_argument(
        "--policy", default="sticky", help="random | sticky | hold | human | pkg.module:function (default sticky)"
    )
    ro.add_argument("--episodes", type=_positive, default=1)
    ro.add_argument("--steps", type=_positive, default=150, help="generated frames per episode (default 150)")
    ro.add_argument("--batch", type=_positive, default=8, help="streams stepped at once (default 8)")
    ro.add_argument("--prompt", default=None, help="start every episode from this image (default: held-out prompts)")
    ro.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the world's own)")
    _add_sampler_args(ro)
    ro.add_argument("--seed", type=int, default=0, help="episode i uses seed S+i")
    ro.add_argument("--out", required=True, help="output folder (dataset/ is created, or appended to)")
    ro.add_argument("--quiet", action="store_true", help="no progress bar")
    ro.set_defaults(func=cmd_rollout)

    ea = sub.add_parser(
        "eval-agents", help="score and rank policies inside a world, and against the real game with --env"
    )
    ea.add_argument("checkpoint", help="a world folder or a shipped world's name (boxing)")
    ea.add_argument(
        "--policies", required=True,
        help="comma-separated: random, sticky, hold or pkg.module:function, e.g. worldplay.policies.boxing:chase",
    )  # fmt: skip
    ea.add_argument("--env", default=None, help="the real game to compare with, e.g. ale:Boxing (default: world only)")
    ea.add_argument("--starts", type=_positive, default=16, help="start states per policy (16)")
    ea.add_argument("--steps", type=_positive, default=300, help="frames per episode (300: 20 s at 15 fps)")
    ea.add_argument("--batch", type=_positive, default=16, help="world streams stepped at once (16)")
    ea.add_argument(
        "--guidance", type=float, default=None,
        help="guidance scale (default: with --score rate the rate model's own, rate.guidance, else the world's own)",
    )  # fmt: skip
    ea.add_argument(
        "--score", choices=["events", "rate"], default=None,
        help="rate: the rate model's expected reward of each step (worldplay train rate; docs/agents.md), the "
        "default for a world that has one; events: the reward model's predicted points, the default otherwise",
    )  # fmt: skip
    _add_sampler_args(ea, "with --score rate the rate model's own, rate.sampling_steps, else the world's own")
    ea.add_argument("--seed", type=int, default=0)
    ea.add_argument("--out", required=True, help="folder for metrics.json, metrics.md and returns.png")
    ea.add_argument("--quiet", action="store_true", help="no progress bars")
    ea.set_defaults(func=cmd_eval_agents)

    pl = sub.add_parser("play", help="play a world with the arrow keys")
    pl.add_argument(
        "checkpoint", nargs="?", default=None, help="a world folder or a shipped world's name (default: boxing)"
    )
    pl.add_argument("--prompt", default=None, help="start the world from this image (resized to the world's frames)")
    pl.add_argument("--guidance", type=float, default=None, help="initial guidance scale (default: the world's own)")
    pl.add_argument("--size", type=_positive, default=512, help="window size in pixels (default 512)")
    pl.add_argument("--smooth", action="store_true", help="smooth scaling instead of sharp pixels")
    pl.add_argument("--record-dir", default="recordings", help="where P (PNG) and V (MP4 + dataset) write")
    pl.add_argument("--keymap", default=None, help='TOML with a [keymap] table, e.g. "UP+FIRE" = "UPFIRE"')
    pl.add_argument("--game", default=None, help="play a real game instead of a world: toy, toy:push or ale:<GameId>")
    pl.add_argument("--headless", action="store_true", help="no window: play --keys and write --video")
    pl.add_argument("--keys", default=None, help="scripted actions, e.g. 'RIGHT*20,UP*10,NOOP*5'")
    pl.add_argument("--video", default=None, help="write what was played to this MP4 or GIF")
    _add_sampler_args(pl)
    pl.add_argument("--seed", type=int, default=0)
    pl.set_defaults(func=cmd_play)
    return p


# the outputs of each command: (argument, what it is, a folder?) checked before any work starts
OUTPUTS = {
    "record": [("out", "the dataset", True)],
    "import": [("out", "the dataset", True)],
    "eval": [("out", "the evaluation", True)],
    "rollout": [("out", "the rollouts", True)],
    "eval-agents": [("out", "the agent evaluation", True)],
    "play": [("video", "the video", False)],
}


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse, in one line and before anything runs, an output the command could not write."""
    from worldplay.output import check_writable

    for attr, what, folder in OUTPUTS.get(args.command, []):
        if getattr(args, attr, None):
            check_writable(getattr(args, attr), what, folder=folder)
    if args.command == "play" and not args.headless and args.game is None:
        check_writable(args.record_dir, "recordings (the P and V keys)", folder=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_outputs(args)
        return int(args.func(args) or 0)
    except WorldplayError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
