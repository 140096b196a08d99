"""The Kitchen diagnostic: shaping scores from evaluations, buffer successes, policy rollouts."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cleanrl_qmp.networks import EnsembleActor, TaskFeatures
from qmp_envs.kitchen import SUCCESS_REWARD
from qmp_envs.suites import suite_facts
from qmp_studies import kitchen_check

FACTS = suite_facts(kitchen_check.ENV_ID)


def write_metrics(path, returns_first, returns_last, success_last):
    columns = ["global_step", "eval/success_mean"]
    for name in FACTS.task_names:
        columns += [f"eval/success/{name}", f"eval/return/{name}"]
    rows = []
    for step, returns, successes in (
        (25_000, returns_first, [0.0] * 10),
        (150_000, returns_last, success_last),
    ):
        values = [step, np.mean(successes)]
        for ret, success in zip(returns, successes, strict=True):
            values += [success, ret]
        rows.append(",".join(str(v) for v in values))
    # A training row without evaluation columns must be skipped.
    path.write_text(",".join(columns) + "\n" + rows[0] + "\n150," + "," * 20 + "\n" + rows[1])


def test_shaping_score_inverts_the_per_step_reward():
    # 140 steps at -20 (nothing reached) score 0; at -8 per step, 0.6 (hand at the site).
    assert kitchen_check.shaping_score(-20.0 * 140, 140) == 0.0
    assert kitchen_check.shaping_score(-8.0 * 140, 140) == pytest.approx(0.6)


def test_evaluation_rows_report_first_and_last_and_hide_scores_with_success(tmp_path):
    metrics = tmp_path / "metrics.csv"
    success_last = [0.0] * 9 + [0.2]
    write_metrics(metrics, [-2800.0] * 10, [-1120.0] * 10, success_last)
    rows = kitchen_check.evaluation_rows(metrics, FACTS.task_names, 140)
    assert rows[0] == {
        "task": FACTS.task_names[0],
        "success@25k (first)": 0.0,
        "shaping@25k (first)": 0.0,
        "success@150k (last)": 0.0,
        "shaping@150k (last)": 0.6,
    }
    assert rows[-1]["shaping@150k (last)"] == "n/a (success)"


def test_evaluation_rows_reject_a_file_without_evaluations(tmp_path):
    metrics = tmp_path / "metrics.csv"
    metrics.write_text("global_step,eval/success_mean\n100,\n")
    with pytest.raises(ValueError, match="no evaluation rows"):
        kitchen_check.evaluation_rows(metrics, FACTS.task_names, 140)


def test_buffer_rows_count_successes_per_task():
    rewards = np.full((20, 10), -18.0, dtype=np.float32)
    rewards[-2:, 3] = -6.0
    rewards[5, 3] = SUCCESS_REWARD
    rb = SimpleNamespace(rewards=rewards, num_transitions=lambda: 20)
    rows = kitchen_check.buffer_rows({"rb": rb}, FACTS.task_names)
    assert [row["successes"] for row in rows] == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    assert rows[3]["reward/step, last tenth"] == -6.0
    assert rows[3]["best shaped reward"] == -6.0
    assert rows[0]["reward/step, first tenth"] == -18.0


def test_rollouts_of_a_checkpoint_actor_and_wrong_checkpoints_are_named():
    torch.manual_seed(0)
    actor = EnsembleActor(
        FACTS.num_tasks,
        TaskFeatures(FACTS.feature_dim, FACTS.agent_feature_mask),
        FACTS.action_dim,
        (16,),
    )
    checkpoint = {
        "script": "sac_qmp.py",
        "args": {"env_id": kitchen_check.ENV_ID, "hidden": (16,)},
        "actor": actor.state_dict(),
    }
    rebuilt = kitchen_check.actor_from_checkpoint(checkpoint)
    rows = kitchen_check.rollout_rows(rebuilt, FACTS.task_names, episodes=1, seed=0, max_steps=20)
    assert len(rows) == 10
    for row in rows:
        assert 0.0 <= row["steps within 0.08 m"] <= 1.0
        assert row["closest hand-site (m)"] > 0.0
        assert row["success"] in (0.0, 1.0)
    with pytest.raises(ValueError, match="sac_qmp.py checkpoint"):
        kitchen_check.actor_from_checkpoint({**checkpoint, "script": "mtsac_qmp.py"})
    with pytest.raises(ValueError, match="KitchenMTEasy"):
        kitchen_check.actor_from_checkpoint(
            {**checkpoint, "args": {"env_id": "qmp/MazeLarge10-v0", "hidden": (16,)}}
        )
