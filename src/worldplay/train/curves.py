"""Learning curves of a world's training against wall-clock hours, with a reference world's figures.

    python -m worldplay.train.curves --config configs/boxing-cpu.toml --reference boxing \
        --out docs/images/boxing-cpu-curves.png

reads ``<runs>/<name>/{autoencoder,dynamics,reward,decoder}/logs/metrics.jsonl`` and plots the dynamics
stage's cheap held-out evaluation (PSNR at h1 and delta-PSNR at h4, see ``train.dynamics.rollout_metrics``)
against the hours since the world's training began (the autoencoder stage's hours first). A run with a
decoder stage adds that stage's held-out one-step PSNR (against the real frames, not the autoencoder's
reconstructions: a series of its own) after the dynamics and reward stages' hours. The reference world (e.g.
the shipped GPU world) is scored by the same function on the same held-out windows, so its lines are
comparable with the curves. Markdown tables of the points go to standard output.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from worldplay.config import Config, load_config
from worldplay.train.loop import run_dir


def read_log(path: Path) -> tuple[list[dict[str, Any]], float]:
    """The evaluations of a stage's ``metrics.jsonl`` with their wall-clock seconds, and the stage's total.

    Lines written before the loop logged ``elapsed_s`` get it from their ``time`` since the first line (a
    run that was never interrupted; resumed runs log ``elapsed_s`` themselves).
    """
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return [], 0.0
    t0 = rows[0]["time"] - rows[0].get("elapsed_s", 0.0)
    for r in rows:
        r.setdefault("elapsed_s", r["time"] - t0)
    return [r for r in rows if "eval" in r], max(r["elapsed_s"] for r in rows)


def reference_scores(world_path: str, cfg: Config) -> dict[str, float]:
    """A world's cheap rollout scores on the held-out windows the dynamics stage of ``cfg`` evaluates."""
    from worldplay.train.dynamics import EVAL_STREAMS, eval_window, rollout_metrics
    from worldplay.train.loop import held_out_batches
    from worldplay.world import load_world

    world = load_world(world_path)  # a folder or a shipped world's name
    # the windows the stage evaluates, read as frames (the stage reads its own autoencoder's latents)
    batches = held_out_batches(cfg, "dynamics", eval_window(cfg), dataset=cfg.data.dataset)
    frames = np.concatenate([b["frames"] for b in batches])[:EVAL_STREAMS]
    actions = np.concatenate([b["actions"] for b in batches])[:EVAL_STREAMS]
    n, T = frames.shape[:2]
    z = np.asarray(world.encode(frames.reshape(n * T, *frames.shape[2:])))
    return rollout_metrics(world, z.reshape(n, T, *z.shape[1:]), actions)[0]


def _stage_log(cfg: Config, stage: str, *, optional: bool = False) -> tuple[list[dict[str, Any]], float]:
    """:func:`read_log` of a stage of the run of ``cfg``; an ``optional`` stage that did not run reads empty."""
    path = run_dir(cfg, stage) / "logs" / "metrics.jsonl"
    return ([], 0.0) if optional and not path.is_file() else read_log(path)


def plot(
    cfg: Config, reference: dict[str, float] | None, reference_name: str, out: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Draw the curves to ``out``; -> (the dynamics stage's points, the decoder stage's points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, ae_total = _stage_log(cfg, "autoencoder")
    evals, dyn_total = _stage_log(cfg, "dynamics")
    _, reward_total = _stage_log(cfg, "reward", optional=True)
    dec_evals, _ = _stage_log(cfg, "decoder", optional=True)
    points = [{"step": r["step"], "hours": (ae_total + r["elapsed_s"]) / 3600, **r["eval"]} for r in evals]
    dec_start = ae_total + dyn_total + reward_total  # the stages run in this order (`train world`)
    dec_points = [{"step": r["step"], "hours": (dec_start + r["elapsed_s"]) / 3600, **r["eval"]} for r in dec_evals]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, title in (
        (axes[0], "psnr_h1", "held-out PSNR at h1 (dB)"),
        (axes[1], "delta_psnr_h4", "delta-PSNR at h4 (dB): recorded vs shuffled keys"),
    ):
        ax.plot([p["hours"] for p in points], [p[key] for p in points], "o-", ms=3, label=cfg.name)
        if key == "psnr_h1" and dec_points:
            label = "decoder stage (one-step PSNR against the real frames)"
            ax.plot([p["hours"] for p in dec_points], [p[key] for p in dec_points], "s-", ms=3, label=label)
        if reference and key in reference:
            ax.axhline(reference[key], color="k", ls="--", lw=1, label=reference_name)
        ax.axvline(ae_total / 3600, color="grey", ls=":", lw=1)
        ax.set_xlabel("wall-clock hours since training began (autoencoder, then dynamics, ...)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return points, dec_points


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m worldplay.train.curves", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--reference", default=None, help="a world scored on the same windows (e.g. boxing)")
    p.add_argument("--out", required=True, help="PNG to write")
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.set)
    ref = reference_scores(args.reference, cfg) if args.reference else None
    points, dec_points = plot(cfg, ref, args.reference or "", Path(args.out))
    keys = ["psnr_h1", "psnr_h4", "psnr_h8", "delta_psnr_h4", "delta_psnr_h8", "margin_repeat_h4"]
    print("| step | hours | " + " | ".join(keys) + " |")
    print("|---:|---:|" + "---:|" * len(keys))

    def cells(values: dict[str, Any]) -> str:
        return " | ".join(f"{values.get(k, float('nan')):.2f}" for k in keys)

    for pt in points:
        print(f"| {pt['step']} | {pt['hours']:.2f} | {cells(pt)} |")
    if ref:
        print(f"| {args.reference} | - | {cells(ref)} |")
    if dec_points:
        print("\nThe decoder stage (held-out frames, against the real frames):\n")
        print("| step | hours | psnr_h1 | psnr_encoded |\n|---:|---:|---:|---:|")
        for pt in dec_points:
            encoded = pt.get("psnr_encoded", float("nan"))
            print(f"| {pt['step']} | {pt['hours']:.2f} | {pt['psnr_h1']:.2f} | {encoded:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
