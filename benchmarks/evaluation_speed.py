"""Our ``evaluate_policy`` against Meta-World's own ``metaworld.evaluation.evaluation``.

Both run the same protocol (success at any step, episodes end at the first success) with
Meta-World's scripted experts on ``qmp/MetaWorldMT10-v0``'s evaluation goals, 50 episodes per
task by default, on the same goals: Meta-World's function runs on our MT10 vector env (which
exposes what it needs), whose sub-envs draw their goal order from the generators a seeded reset
would use; ours runs on ``EvaluationEnvs`` reset with the same seeds. Envs are built once for
each; evaluation time and build time are printed separately, then the wall-time ratio (target:
ours <= 1.0x Meta-World's) and both mean success rates (target: equal).

    python benchmarks/evaluation_speed.py [--episodes 50] [--full-episodes]

``--full-episodes`` also times ours without the early stop (what returns need).
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
from gymnasium.utils import seeding
from metaworld.evaluation import evaluation

import qmp_envs
from qmp_envs.metaworld_suites import scripted_policy
from qmp_harness.cli_types import at_least

ENV_ID = "qmp/MetaWorldMT10-v0"


class ScriptedAgent:
    """Meta-World's ``Agent`` protocol around the batched scripted experts."""

    def __init__(self, policy):
        self.policy = policy

    def eval_action(self, observations):
        return self.policy(observations)

    def reset(self, env_mask) -> None:
        pass


def time_metaworld(policy, episodes: int, seed: int) -> tuple[float, float, float]:
    start = time.perf_counter()
    envs = gym.make_vec(
        ENV_ID,
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        record_episode_statistics=True,
        split="eval",
        seed=0,
    )
    built = time.perf_counter()
    envs.set_attr("np_random", [seeding.np_random(seed + k)[0] for k in range(envs.num_envs)])
    mean_success, *_ = evaluation(ScriptedAgent(policy), envs, num_episodes=episodes)
    done = time.perf_counter()
    envs.close()
    return built - start, done - built, float(mean_success)


def time_ours(
    policy, episodes: int, seed: int, stop_at_success: bool
) -> tuple[float, float, float]:
    start = time.perf_counter()
    envs = qmp_envs.EvaluationEnvs(ENV_ID, env_kwargs={"seed": 0})
    built = time.perf_counter()
    result = qmp_envs.evaluate_policy(
        policy, envs, episodes_per_task=episodes, seed=seed, stop_at_success=stop_at_success
    )
    done = time.perf_counter()
    envs.close()
    return built - start, done - built, result.mean_success


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=at_least(1), default=50)
    parser.add_argument("--seed", type=at_least(0), default=7)
    parser.add_argument("--full-episodes", action="store_true")
    args = parser.parse_args()
    policy = scripted_policy(ENV_ID)
    theirs = time_metaworld(policy, args.episodes, args.seed)
    ours = time_ours(policy, args.episodes, args.seed, stop_at_success=True)
    print(f"MT10, {args.episodes} episodes per task, Meta-World's scripted experts")
    print(f"{'':32s} {'build s':>8s} {'evaluate s':>11s} {'mean success':>13s}")
    row = "{:32s} {:8.1f} {:11.1f} {:13.3f}"
    print(row.format("metaworld.evaluation.evaluation", *theirs))
    print(row.format("qmp_envs.evaluate_policy", *ours))
    if args.full_episodes:
        full = time_ours(policy, args.episodes, args.seed, stop_at_success=False)
        print(row.format("  (full episodes, no early stop)", *full))
    print(
        f"evaluation wall-time ratio ours / Meta-World: {ours[1] / theirs[1]:.2f}x (target <= 1.0)"
    )
    print(f"mean success equal: {ours[2] == theirs[2]} ({ours[2]:.3f} vs {theirs[2]:.3f})")


if __name__ == "__main__":
    main()
