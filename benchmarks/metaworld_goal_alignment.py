"""Does Meta-World's ``evaluation()`` see the goals ours does? Counts the tasks whose first
evaluation observation (goal included) differs between ``qmp_envs.EvaluationEnvs`` reset with
``seed + k`` and a ``gym.make_vec(..., split="eval")`` vector env reset the way
``metaworld.evaluation.evaluation`` resets it (no seed), with and without giving its sub-envs
the generators our seeded resets create (the README's alignment line).

    python benchmarks/metaworld_goal_alignment.py [--env-id qmp/MetaWorldMT50-v0] [--seed 7]
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding

import qmp_envs
from qmp_envs.suites import SUITES
from qmp_harness.cli_types import at_least


def metaworld_first_observations(env_id: str, seed: int, align: bool) -> np.ndarray:
    envs = gym.make_vec(
        env_id,
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        record_episode_statistics=True,
        split="eval",
        seed=0,
    )
    if align:  # the README's line: the generators a reset with seed + k would create
        envs.set_attr("np_random", [seeding.np_random(seed + k)[0] for k in range(envs.num_envs)])
    obs, _ = envs.reset()  # as metaworld.evaluation.evaluation resets: no seed
    envs.close()
    return obs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--env-id", default="qmp/MetaWorldMT50-v0", choices=[i for i in SUITES if "MetaWorld" in i]
    )
    parser.add_argument("--seed", type=at_least(0), default=7)
    args = parser.parse_args()
    with qmp_envs.EvaluationEnvs(args.env_id, env_kwargs={"seed": 0}) as ours:
        first = np.stack([env.reset(seed=args.seed + k)[0] for k, env in enumerate(ours.envs)])
    for align in (False, True):
        theirs = metaworld_first_observations(args.env_id, args.seed, align)
        differing = int((~np.isclose(theirs, first).all(axis=1)).sum())
        label = "with the alignment line" if align else "without it"
        total = len(first)
        print(f"{args.env_id}: first observations differ in {differing} of {total} tasks", label)


if __name__ == "__main__":
    main()
