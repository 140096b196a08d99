"""Checkpoint bytes before and after compact replay buffers, at 10k and 100k env steps.

For each env (default: Multistage Reacher with its paper preset, 2M-step budget, so each task's
buffer holds 400k transitions) this builds a run exactly as ``sac_qmp.py`` does (vector env +
QMP wrapper, per-task SAC networks and Adam optimisers after one update, per-task buffer), fills
the buffer with N transitions and writes the run's checkpoint twice: as the code stored it before
(the buffer pickled at full capacity) and now (only the filled rows). It prints both sizes and
the ratio of checkpoint bytes to the raw bytes of the transitions stored (observation, next
observation, action, reward, done and timeout flags, float32), total and for the buffer alone,
then what a long run keeps on disk with the default retention (2 checkpoints).

    python benchmarks/checkpoint_size.py [--steps 10000 100000] [--env-ids qmp/MetaWorldMT10-v0]
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from cleanrl_qmp import sac_qmp
from cleanrl_qmp.networks import PerTaskSAC
from qmp_harness.cli_types import at_least, qmp_env_id
from qmp_harness.config import PRESETS
from qmp_harness.harness import TrainingRun
from qmp_harness.tasks import TaskSpec
from qmp_wrappers import QMPReplayBuffer
from qmp_wrappers.vector import QMPBehaviorWrapper


def build_run(env_id: str, folder: Path) -> tuple[TrainingRun, dict]:
    """A run's checkpoint objects as ``sac_qmp.py`` builds them."""
    args = sac_qmp.Args(env_id=env_id, run_dir=str(folder), progress=False)
    run = TrainingRun(args)
    envs = gym.make_vec(env_id, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, **run.env_kwargs)
    envs = QMPBehaviorWrapper(envs, seed=run.args.seed)
    tasks = TaskSpec.of(envs)
    obs, _ = envs.reset(seed=run.args.seed)
    agent = PerTaskSAC.create(tasks, run.args.hidden, run.args.learning_rate, 1.0, run.device)
    # One update of every network, so the optimisers hold their moment estimates.
    loss = sum(p.sum() for net in (agent.actor, agent.qf) for p in net.parameters())
    (loss + agent.log_alpha.sum()).backward()
    for optimizer in (agent.q_optimizer, agent.actor_optimizer, agent.a_optimizer):
        optimizer.step()
    return run, {**agent.parts(), "rb": run.task_buffer(tasks), "envs": envs, "obs": obs}


def fill(rb, transitions: int) -> None:
    """Store ``transitions`` (over all tasks) of random data in the per-task columns."""
    rows = transitions // rb.n_envs
    rng = np.random.default_rng(0)
    for name in ("observations", "next_observations", "actions", "rewards", "dones"):
        array = getattr(rb, name)
        array[:rows] = rng.standard_normal(array[:rows].shape).astype(array.dtype)
    rb.pos, rb.full = rows, False


def raw_bytes(rb, transitions: int) -> int:
    obs, act = int(np.prod(rb.obs_shape)), int(rb.action_dim)
    return transitions * (2 * obs + act + 3) * 4


def checkpoint_bytes(run: TrainingRun, state: dict, step: int, full_capacity: bool) -> int:
    run.global_step = step
    original = QMPReplayBuffer.__getstate__
    if full_capacity:  # the old format: SB3's buffer pickled with all its arrays
        QMPReplayBuffer.__getstate__ = lambda self: self.__dict__.copy()
    try:
        path = run.save(state)
    finally:
        QMPReplayBuffer.__getstate__ = original
    size = path.stat().st_size
    path.unlink()
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--env-ids", nargs="+", type=qmp_env_id, default=["qmp/MultistageReacher-v0"]
    )
    parser.add_argument("--steps", type=at_least(1), nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| env | env steps | before MB | after MB | after / raw transitions | buffer / raw |")
    print("|---|---|---|---|---|---|")
    projections = []
    for env_id in args.env_ids:
        run, state = build_run(env_id, Path(tempfile.mkdtemp(prefix="ckpt_bench_")))
        rb = state["rb"]
        fixed = None
        for steps in args.steps:
            fill(rb, steps)
            before = checkpoint_bytes(run, state, steps, full_capacity=True)
            after = checkpoint_bytes(run, state, steps, full_capacity=False)
            raw = raw_bytes(rb, steps)
            buffer = len(pickle.dumps(rb, protocol=pickle.HIGHEST_PROTOCOL))
            fixed = after - buffer  # networks, optimisers, pickled envs, RNG states
            print(
                f"| `{env_id}` | {steps} | {before / 1e6:.1f} | {after / 1e6:.1f} "
                f"| {after / raw:.2f} | {buffer / raw:.3f} |",
                flush=True,
            )
        preset = PRESETS[env_id]
        stored = min(preset.total_timesteps, run.args.buffer_size * rb.n_envs)
        per_transition = raw_bytes(rb, 1)
        one = stored * per_transition + fixed
        projections.append((env_id, preset.total_timesteps, stored, fixed, one))
        state["envs"].close()
    print("\nOn disk at the end of a paper-budget run, default retention (2 checkpoints):")
    print("| env | env steps | transitions stored | fixed part MB | one checkpoint GB | kept GB |")
    print("|---|---|---|---|---|---|")
    for env_id, total, stored, fixed, one in projections:
        print(
            f"| `{env_id}` | {total:,} | {stored:,} | {fixed / 1e6:.1f} | {one / 1e9:.2f} "
            f"| {2 * one / 1e9:.2f} |"
        )


if __name__ == "__main__":
    main()
