"""Render a trained run's final deterministic policy, one small GIF per task, for the docs.

    python -m qmp_studies.render_policy RUN_DIR --out docs/_static/policies/MultistageReacher-v0

Loads the run's newest checkpoint (or ``--checkpoint FILE``), rebuilds its actor (per-task or
multi-head, from the checkpoint's own configuration), runs one evaluation episode per task with
the evaluation protocol's seed (``seed + 10000``, as the run's evaluations) and writes
``<task name>.gif`` per task: every ``--stride``-th frame, resized to ``--size`` pixels, so a
200-step Reacher episode is a few hundred kB. Prints each task's success in that episode, so the
picture's caption can say what it shows. The docs' task galleries show these files beside each
task's picture.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import qmp_envs
from cleanrl_qmp.networks import (
    EnsembleActor,
    MultiHeadActor,
    TaskFeatures,
    deterministic_policy,
)
from qmp_envs.multitask import RenderingUnavailableError
from qmp_envs.suites import suite_facts
from qmp_harness.checkpoints import CHECKPOINT_LOAD_ERRORS, load_newest_checkpoint
from qmp_studies.qswitch_scores import per_task_actor

PER_TASK_SCRIPTS = ("sac_qmp.py", "uds_qmp.py", "dnc_sac.py", "ctpg_sac.py")


def actor_of(checkpoint: dict) -> EnsembleActor | MultiHeadActor:
    """The checkpoint's actor, rebuilt from the configuration the checkpoint records."""
    args, script = checkpoint["args"], checkpoint.get("script")
    if script in PER_TASK_SCRIPTS:
        return per_task_actor(checkpoint)
    if script != "mtsac_qmp.py":
        raise ValueError(f"cannot rebuild the actor of a {script!r} checkpoint")
    facts = suite_facts(args["env_id"])
    features = TaskFeatures(facts.feature_dim, facts.agent_feature_mask)
    actor = MultiHeadActor(
        features, facts.num_tasks, facts.action_dim, args["hidden"], args["fully_shared"]
    )
    actor.load_state_dict(checkpoint["actor"])
    return actor.eval()


def shrink(frame: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of an ``(H, W, 3)`` frame to about ``size`` pixels wide."""
    step = max(1, frame.shape[1] // size)
    return frame[::step, ::step]


def render(run_dir: Path, out: Path, checkpoint_file: Path | None, stride: int, size: int) -> dict:
    """Write one GIF per task into ``out``; return each task's success in the rendered episode."""
    import imageio.v2 as imageio

    path, checkpoint = load_newest_checkpoint(checkpoint_file or run_dir)
    args = checkpoint["args"]
    policy = deterministic_policy(actor_of(checkpoint).deterministic_act, torch.device("cpu"))
    env_kwargs = suite_facts(args["env_id"]).env_kwargs(args.get("env_compat", "official"))
    frames: dict[str, list] = {}
    out.mkdir(parents=True, exist_ok=True)
    with qmp_envs.EvaluationEnvs(
        args["env_id"], env_kwargs=env_kwargs, render_mode="rgb_array"
    ) as envs:
        result = qmp_envs.evaluate_policy(
            policy,
            envs,
            episodes_per_task=1,
            seed=args["seed"] + 10_000,
            video_dir=out / ".frames",
        )
        names = envs.task_names
    for name in names:
        raw = imageio.mimread(out / ".frames" / f"{name}.gif", memtest=False)
        frames[name] = [shrink(np.asarray(f)[..., :3], size) for f in raw[::stride]]
        imageio.mimsave(out / f"{name}.gif", frames[name], duration=40 * stride, loop=0)
        (out / ".frames" / f"{name}.gif").unlink()
    (out / ".frames").rmdir()
    print(f"rendered {path} ({args['env_id']}, step {checkpoint.get('global_step')})")
    return {name: float(s) for name, s in zip(names, result.success, strict=True)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path, help="a run folder with checkpoints/")
    parser.add_argument("--out", type=Path, required=True, help="folder for <task>.gif")
    parser.add_argument("--checkpoint", type=Path, help="this checkpoint instead of the newest")
    parser.add_argument("--stride", type=int, default=4, help="keep every this-many-th frame")
    parser.add_argument("--size", type=int, default=160, help="width in pixels, about")
    args = parser.parse_args(argv)
    if args.stride < 1 or args.size < 16:
        parser.error("--stride must be >= 1 and --size >= 16")
    try:
        rendered = render(args.run_dir, args.out, args.checkpoint, args.stride, args.size)
    except (*CHECKPOINT_LOAD_ERRORS, RenderingUnavailableError) as error:
        # a missing, damaged or foreign checkpoint, or no OpenGL context to render with
        parser.error(str(error))
    for name, success in rendered.items():
        print(
            f"{name}: success {success:.0f}, {(args.out / f'{name}.gif').stat().st_size // 1024} kB"
        )


if __name__ == "__main__":
    main()
