"""How each task's critic scores its own policy's proposal against the other tasks' proposals.

For a per-task (No-Sharing) run's checkpoint, on states drawn from task i's own replay data:
every task j's policy proposes its deterministic action ``a_j`` on the state (one-hot relabelled
to j), and task i's critics score every proposal, as the Q-switch does. Per task i this prints:

- ``own wins``: the share of states where task i's own proposal has the highest score under the
  paper's rule (first critic on mean actions), and under ``min_twin`` (minimum of the twins);
- ``top other``: the other policy that wins most often, and its share;
- ``margin``: the mean of ``max_j Q_i(s, a_j) - Q_i(s, a_i)``, in units of the spread (std) of
  ``Q_i`` over the sampled states, so it compares across tasks;
- ``vs random``: how much the best proposal outscores a uniformly random action, in the same
  units: near 0 means task i's critic barely depends on the action at all, so the Q-switch picks
  among near-ties;
- ``own abs(a)``: the mean absolute value of task i's own proposals (near 0: an undecided policy);
- ``winner OOD``: how far the winning proposals lie from task i's data: the mean distance of a
  winner to its nearest action in task i's buffer, divided by the same distance for task i's
  own proposals (1: as close to the data as the own policy's; >> 1: outside the data, where the
  critic extrapolates).

    python -m qmp_studies.qswitch_scores results/mt10/no_sharing_qmp/seed_1 [--states 512]

It reads the run's newest checkpoint (a ``sac_qmp.py``, ``uds_qmp.py`` or ``dnc_sac.py`` run) and
writes ``qswitch_scores.md`` and ``qswitch_scores.json`` in the run folder. With
``--every-checkpoint`` it also measures every saved checkpoint (a run with ``--keep-checkpoints 0``
keeps them all) and writes ``qswitch_scores_over_training.md`` / ``.json``: one row per step with
the tasks' median own-win share, how many tasks' own proposals win on fewer than half of their
states, the policy that is the top other winner for most tasks, and the mean margin and OOD ratio.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from cleanrl_qmp.networks import EnsembleActor, TaskFeatures, TwinCritic
from qmp_envs.suites import suite_facts
from qmp_experiments.aggregate import markdown_table
from qmp_harness.checkpoints import (
    CHECKPOINT_LOAD_ERRORS,
    checkpoint_step,
    load_checkpoint,
    load_newest_checkpoint,
    saved_checkpoints,
)
from qmp_harness.cli_types import at_least
from qmp_harness.run_files import atomic_write_text
from qmp_wrappers.qswitch import relabel_one_hot


def nearest_distance(points: np.ndarray, data: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Distance from each point to its nearest row of ``data``."""
    out = []
    for start in range(0, len(points), chunk):
        diff = points[start : start + chunk, None, :] - data[None, :, :]
        out.append(np.sqrt((diff**2).sum(-1)).min(axis=1))
    return np.concatenate(out)


PER_TASK_SCRIPTS = ("sac_qmp.py", "uds_qmp.py", "dnc_sac.py")


def shared_networks_problem(checkpoint: dict) -> str | None:
    """Why the Q-switch scores cannot be computed from ``checkpoint`` (not a per-task-networks
    script's), or None when they can."""
    if checkpoint.get("script") in PER_TASK_SCRIPTS:
        return None
    return (
        f"a checkpoint of {checkpoint.get('script')}; the Q-switch scores need per-task "
        f"networks ({', '.join(PER_TASK_SCRIPTS)})"
    )


def actor_from_checkpoint(checkpoint: dict) -> EnsembleActor:
    """The per-task actor of a checkpoint, rebuilt from its configuration."""
    problem = shared_networks_problem(checkpoint)
    if problem is not None:
        raise ValueError(problem)
    return per_task_actor(checkpoint)


def per_task_actor(checkpoint: dict) -> EnsembleActor:
    """A checkpoint's ensemble actor rebuilt from its configuration (no check of its script)."""
    args = checkpoint["args"]
    facts = suite_facts(args["env_id"])
    features = TaskFeatures(facts.feature_dim, facts.agent_feature_mask)
    actor = EnsembleActor(facts.num_tasks, features, facts.action_dim, args["hidden"])
    actor.load_state_dict(checkpoint["actor"])
    return actor.eval()


def networks_from_checkpoint(checkpoint: dict) -> tuple[EnsembleActor, TwinCritic]:
    """The per-task actor and critics of a checkpoint, rebuilt from its configuration."""
    actor = actor_from_checkpoint(checkpoint)
    args = checkpoint["args"]
    facts = suite_facts(args["env_id"])
    features = TaskFeatures(facts.feature_dim, facts.agent_feature_mask)
    qf = TwinCritic(facts.num_tasks, features, facts.action_dim, args["hidden"])
    qf.load_state_dict(checkpoint["qf"])
    return actor, qf.eval()


@torch.no_grad()
def score_tasks(checkpoint: dict, states: int = 512, seed: int = 0) -> list[dict]:
    """Per task, the statistics described in the module docstring."""
    actor, qf = networks_from_checkpoint(checkpoint)
    rb = checkpoint["rb"]
    names = list(checkpoint["envs"].candidate_names)[: rb.num_tasks]
    n = rb.num_tasks
    stored = rb.num_transitions()
    if stored == 0:
        raise ValueError("the checkpoint's replay buffer is empty")
    rng = np.random.default_rng(seed)
    # A separate stream, so the states drawn for each task do not depend on this comparison.
    random_action_rng = np.random.default_rng([seed, 1])
    device = next(qf.parameters()).device
    rows = []
    for i in range(n):
        picks = rng.integers(0, stored, size=states)
        obs = torch.as_tensor(rb.observations[picks, i], dtype=torch.float32, device=device)
        task_ids = torch.full((states,), i, dtype=torch.long, device=device)
        proposals = torch.stack(
            [
                actor.deterministic_act(relabel_one_hot(obs, torch.full_like(task_ids, j), n))
                for j in range(n)
            ]
        )  # (N, S, A)
        q1, q2 = zip(*(qf.score(obs, proposals[j]) for j in range(n)), strict=True)
        first = torch.cat(q1, dim=1).cpu().numpy()  # (S, N): task i's first critic
        twin_min = torch.minimum(torch.cat(q1, dim=1), torch.cat(q2, dim=1)).cpu().numpy()
        winners = first.argmax(axis=1)
        random_actions = torch.as_tensor(
            random_action_rng.uniform(-1.0, 1.0, size=tuple(proposals.shape[1:])),
            dtype=torch.float32,
            device=device,
        )
        random_score = qf.score(obs, random_actions)[0][:, 0].cpu().numpy()
        spread = float(first[:, i].std()) or 1.0
        others = np.bincount(winners[winners != i], minlength=n)
        top_other = int(others.argmax())
        data_actions = rb.actions[:stored, i]
        sample = data_actions[rng.integers(0, stored, size=min(stored, 4096))]
        chosen = proposals[winners, np.arange(states)].cpu().numpy()
        own = proposals[i].cpu().numpy()
        own_distance = nearest_distance(own, sample).mean()
        rows.append(
            {
                "task": names[i] if i < len(names) else f"task_{i}",
                "own_wins": float(np.mean(winners == i)),
                "own_wins_min_twin": float(np.mean(twin_min.argmax(axis=1) == i)),
                "top_other": names[top_other] if top_other < len(names) else str(top_other),
                "top_other_share": float(others[top_other] / states),
                "margin_in_std": float((first.max(axis=1) - first[:, i]).mean() / spread),
                "gap_to_random_in_std": float((first.max(axis=1) - random_score).mean() / spread),
                "own_action_abs": float(proposals[i].abs().mean()),
                "winner_ood_ratio": float(
                    nearest_distance(chosen, sample).mean() / max(own_distance, 1e-9)
                ),
            }
        )
    return rows


def training_row(step: int, rows: list[dict]) -> dict:
    """One step's per-task rows summarised across tasks."""
    tops = [r["top_other"] for r in rows]
    most_common = max(tops, key=tops.count)  # ties: the first task's top other
    return {
        "step": step,
        "median_own_wins": float(np.median([r["own_wins"] for r in rows])),
        "median_own_wins_min_twin": float(np.median([r["own_wins_min_twin"] for r in rows])),
        "tasks_own_below_half": sum(r["own_wins"] < 0.5 for r in rows),
        "tasks": len(rows),
        "common_top_other": most_common,
        "common_top_other_tasks": tops.count(most_common),
        "mean_margin_in_std": float(np.mean([r["margin_in_std"] for r in rows])),
        "mean_gap_to_random_in_std": float(np.mean([r["gap_to_random_in_std"] for r in rows])),
        "mean_own_action_abs": float(np.mean([r["own_action_abs"] for r in rows])),
        "mean_winner_ood_ratio": float(np.mean([r["winner_ood_ratio"] for r in rows])),
    }


def score_over_training(run_dir: Path, states: int, seed: int) -> list[dict]:
    """:func:`training_row` for every saved checkpoint of ``run_dir``, oldest first."""
    checkpoints = saved_checkpoints(run_dir / "checkpoints", print)
    if not checkpoints:
        raise FileNotFoundError(f"no checkpoints in {run_dir / 'checkpoints'}")
    return [
        training_row(checkpoint_step(path) or 0, score_tasks(load_checkpoint(path), states, seed))
        for path in checkpoints
    ]


def write_over_training(run_dir: Path, rows: list[dict], states: int) -> str:
    table = markdown_table(
        ["step", "own wins (median)", "own wins, min_twin (median)", "tasks own < 0.5",
         "top other for most tasks", "margin (std, mean)", "vs random (std, mean)",
         "own abs(a) (mean)", "winner OOD (mean)"],
        [
            [f"{r['step']:,}", f"{r['median_own_wins']:.2f}",
             f"{r['median_own_wins_min_twin']:.2f}",
             f"{r['tasks_own_below_half']}/{r['tasks']}",
             f"{r['common_top_other']} ({r['common_top_other_tasks']})",
             f"{r['mean_margin_in_std']:.3f}", f"{r['mean_gap_to_random_in_std']:.3f}",
             f"{r['mean_own_action_abs']:.3f}", f"{r['mean_winner_ood_ratio']:.2f}"]
            for r in rows
        ],
    )  # fmt: skip
    text = f"Q-switch scores over training ({states} states per task per checkpoint)\n\n" + table
    atomic_write_text(run_dir / "qswitch_scores_over_training.md", text)
    atomic_write_text(
        run_dir / "qswitch_scores_over_training.json", json.dumps(rows, indent=2) + "\n"
    )
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--states", type=at_least(1), default=512, help="states per task")
    parser.add_argument("--seed", type=at_least(0), default=0)
    parser.add_argument(
        "--every-checkpoint",
        action="store_true",
        help="also summarise every saved checkpoint (qswitch_scores_over_training.md)",
    )
    args = parser.parse_args(argv)
    try:
        path, checkpoint = load_newest_checkpoint(args.run_dir)
    except CHECKPOINT_LOAD_ERRORS as error:  # a missing, damaged or foreign checkpoint
        parser.error(str(error))
    problem = shared_networks_problem(checkpoint)
    if problem is not None:  # before anything is written
        parser.error(f"{path}: {problem}")
    rows = score_tasks(checkpoint, args.states, args.seed)
    table = markdown_table(
        ["task", "own wins", "own wins (min_twin)", "top other", "its share", "margin (std)",
         "vs random (std)", "own abs(a)", "winner OOD"],
        [
            [r["task"], f"{r['own_wins']:.2f}", f"{r['own_wins_min_twin']:.2f}", r["top_other"],
             f"{r['top_other_share']:.2f}", f"{r['margin_in_std']:.3f}",
             f"{r['gap_to_random_in_std']:.3f}", f"{r['own_action_abs']:.3f}",
             f"{r['winner_ood_ratio']:.2f}"]
            for r in rows
        ],
    )  # fmt: skip
    header = f"Q-switch scores at {path.name} ({args.states} states per task)\n\n"
    atomic_write_text(args.run_dir / "qswitch_scores.md", header + table)
    atomic_write_text(args.run_dir / "qswitch_scores.json", json.dumps(rows, indent=2) + "\n")
    print(header + table)
    if args.every_checkpoint:
        over = score_over_training(args.run_dir, args.states, args.seed)
        print("\n" + write_over_training(args.run_dir, over, args.states))


if __name__ == "__main__":
    main()
