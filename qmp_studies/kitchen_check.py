"""Why a Kitchen run shows no success: what its evaluations, its data and its policies did.

Kitchen pays ``20 (0.4 in_place + 0.6 reach - 1)`` per step until the task's element is within
its threshold of the goal, then 2800 once (and the episode ends). So, for an episode without
success, ``1 + return / (20 * 140)`` is the episode's mean shaping score ``0.4 in_place +
0.6 reach`` in [0, 1]: about 0.6 means the hand sits at the reach site all episode while the
element has not moved (in_place near 0); near 1 means the element is almost in place.

    python -m qmp_studies.kitchen_check results/kitchen/no_sharing/seed_1
    python -m qmp_studies.kitchen_check RUN --checkpoint RUN/checkpoints/step_150000.pt

From ``metrics.csv`` alone (committed runs) it prints, per task, the first and last
evaluation's success and shaping score. Given a checkpoint of a ``sac_qmp.py`` Kitchen run it also
prints, per task, the training data's successes (transitions paying 2800) and mean step reward
in the first and last tenth of the buffer, and rolls out each task's deterministic policy
(``--episodes`` per task): the closest the hand came to the reach site (success radius 0.08 m),
the share of steps within it, and the closest the element came to its goal, in units of the
task's success threshold (< 1 is success). It writes ``kitchen_check.md`` in the run folder.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from cleanrl_qmp.networks import EnsembleActor, deterministic_policy
from qmp_envs.kitchen import KITCHEN_TASKS, REACH_RADIUS, SUCCESS_REWARD
from qmp_envs.suites import suite_facts
from qmp_experiments.aggregate import markdown_table
from qmp_harness.checkpoints import load_checkpoint
from qmp_harness.run_files import atomic_write_text
from qmp_studies import qswitch_scores


def dict_table(rows: list[dict]) -> str:
    """A markdown table of rows that share their keys (the columns, in the first row's order)."""
    columns = list(rows[0])
    return markdown_table(columns, [[row[c] for c in columns] for row in rows])


ENV_ID = "qmp/KitchenMTEasy-v0"
STEP_REWARD_SCALE = 20.0


def shaping_score(episode_return: float, episode_steps: int) -> float:
    """Mean ``0.4 in_place + 0.6 reach`` per step of an episode that paid no success reward."""
    return 1.0 + episode_return / (STEP_REWARD_SCALE * episode_steps)


def evaluation_rows(metrics_csv: Path, task_names: tuple[str, ...], horizon: int) -> list[dict]:
    """Per task: success and shaping score at the first and the last evaluation."""
    with open(metrics_csv, newline="") as f:
        evals = [row for row in csv.DictReader(f) if row.get("eval/success_mean")]
    if not evals:
        raise ValueError(f"{metrics_csv}: no evaluation rows (column eval/success_mean)")
    first, last = evals[0], evals[-1]
    rows = []
    for name in task_names:
        row: dict[str, object] = {"task": name}
        for label, ev in (("first", first), ("last", last)):
            success = float(ev[f"eval/success/{name}"])
            score = shaping_score(float(ev[f"eval/return/{name}"]), horizon)
            row[f"success@{int(ev['global_step']) // 1000}k ({label})"] = success
            # With a success in the mean, the 2800 bonus makes the score meaningless.
            row[f"shaping@{int(ev['global_step']) // 1000}k ({label})"] = (
                round(score, 3) if success == 0.0 else "n/a (success)"
            )
        rows.append(row)
    return rows


def buffer_rows(checkpoint: dict, task_names: tuple[str, ...]) -> list[dict]:
    """Per task: successes in the training data and mean step reward early and late in it."""
    rb = checkpoint["rb"]
    stored = rb.num_transitions()
    rewards = np.asarray(rb.rewards[:stored], dtype=np.float64).reshape(stored, -1)
    tenth = max(1, stored // 10)
    rows = []
    for k, name in enumerate(task_names):
        column = rewards[:, k]
        shaped = column[column < SUCCESS_REWARD]
        rows.append(
            {
                "task": name,
                "transitions": stored,
                "successes": int((column >= SUCCESS_REWARD).sum()),
                "reward/step, first tenth": round(float(column[:tenth].mean()), 2),
                "reward/step, last tenth": round(float(column[-tenth:].mean()), 2),
                "best shaped reward": round(float(shaped.max()), 2) if shaped.size else "n/a",
            }
        )
    return rows


def actor_from_checkpoint(checkpoint: dict) -> EnsembleActor:
    """The actor of a sac_qmp.py checkpoint of the Kitchen suite (no other is checked here)."""
    if checkpoint.get("script") != "sac_qmp.py":
        raise ValueError(f"expected a sac_qmp.py checkpoint, got one of {checkpoint.get('script')}")
    if checkpoint["args"]["env_id"] != ENV_ID:
        raise ValueError(
            f"expected a {ENV_ID} checkpoint, got one of {checkpoint['args']['env_id']}"
        )
    return qswitch_scores.actor_from_checkpoint(checkpoint)


def rollout_rows(
    actor: EnsembleActor,
    task_names: tuple[str, ...],
    episodes: int,
    seed: int,
    max_steps: int | None = None,
) -> list[dict]:
    """Per task: how close the deterministic policy's hand and element came to their targets
    (over whole episodes, or their first ``max_steps`` steps)."""
    policy = deterministic_policy(actor.deterministic_act, torch.device("cpu"))
    thresholds = np.array([task[4] for task in KITCHEN_TASKS])
    num_tasks = len(task_names)
    min_hand = np.zeros((episodes, num_tasks))
    near_share = np.zeros((episodes, num_tasks))
    min_goal = np.zeros((episodes, num_tasks))
    success = np.zeros((episodes, num_tasks))
    # NEXT_STEP autoreset: the step that ends an episode returns its own info; an env that
    # ended early is reset on its next step, whose info the `live` mask then ignores.
    envs = gym.make_vec(ENV_ID, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    try:
        for episode in range(episodes):
            obs, _ = envs.reset(seed=seed + episode * num_tasks)
            running = np.ones(num_tasks, dtype=bool)
            hand = np.full(num_tasks, np.inf)
            goal = np.full(num_tasks, np.inf)
            near = np.zeros(num_tasks)
            steps = np.zeros(num_tasks)
            while running.any():
                obs, _, terminated, truncated, infos = envs.step(policy(obs))
                live = running.copy()
                hand[live] = np.minimum(hand[live], infos["dist_hand"][live])
                goal[live] = np.minimum(goal[live], infos["dist_goal"][live])
                near[live] += infos["dist_hand"][live] < REACH_RADIUS
                steps[live] += 1
                success[episode, live] = np.maximum(success[episode, live], infos["success"][live])
                running &= ~(terminated | truncated)
                if max_steps is not None and steps.max() >= max_steps:
                    break
            min_hand[episode], min_goal[episode] = hand, goal / thresholds
            near_share[episode] = near / steps
    finally:
        envs.close()
    return [
        {
            "task": name,
            "success": float(success[:, k].mean()),
            "closest hand-site (m)": round(float(min_hand[:, k].mean()), 3),
            "steps within 0.08 m": round(float(near_share[:, k].mean()), 2),
            "closest element-goal / threshold": round(float(min_goal[:, k].mean()), 2),
        }
        for k, name in enumerate(task_names)
    ]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a sac_qmp.py run folder on Kitchen")
    parser.add_argument("--checkpoint", type=Path, help="a checkpoint of that run (optional)")
    parser.add_argument("--episodes", type=int, default=5, help="rollouts per task")
    parser.add_argument("--seed", type=int, default=1000, help="seed of the first rollout")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be at least 1, got {args.episodes}")
    metrics = args.run_dir / "metrics.csv"
    if not metrics.is_file():
        parser.error(f"{metrics} not found: pass a run folder of a Kitchen run")
    facts = suite_facts(ENV_ID)
    horizon = facts.max_episode_steps
    sections = [
        f"# Kitchen check of `{args.run_dir}`",
        "Evaluations (`metrics.csv`); shaping = mean `0.4 in_place + 0.6 reach` per step:",
        dict_table(evaluation_rows(metrics, facts.task_names, horizon)),
    ]
    if args.checkpoint is not None:
        checkpoint = load_checkpoint(args.checkpoint)
        sections += [
            f"Training data in `{args.checkpoint.name}` (success pays {SUCCESS_REWARD:g}):",
            dict_table(buffer_rows(checkpoint, facts.task_names)),
            f"Deterministic policies, {args.episodes} episode(s) per task from seed {args.seed}:",
            dict_table(
                rollout_rows(
                    actor_from_checkpoint(checkpoint), facts.task_names, args.episodes, args.seed
                )
            ),
        ]
    text = "\n\n".join(sections) + "\n"
    atomic_write_text(args.run_dir / "kitchen_check.md", text)
    print(text)
    return text


if __name__ == "__main__":
    main()
