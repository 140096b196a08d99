"""One frozen description of static facts per qmp/ id, and no env built just to read one."""

from __future__ import annotations

import dataclasses
import runpy
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import qmp_envs
from qmp_envs.kitchen import KITCHEN_TASKS
from qmp_envs.maze import MAZE_TASKS
from qmp_envs.multitask import MultiTaskEnv
from qmp_wrappers.pettingzoo_env import MultiTaskParallelEnv

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("env_id", sorted(qmp_envs.SUITES))
def test_envs_match_their_facts(env_id):
    facts = qmp_envs.SUITES[env_id]
    env = gym.make(env_id)  # Meta-World builds task envs lazily: cheap even for MT50
    unwrapped = env.unwrapped
    assert unwrapped.facts is facts
    assert list(unwrapped.task_names) == list(facts.task_names)
    assert unwrapped.num_tasks == facts.num_tasks
    assert env.observation_space.shape == (facts.observation_dim,)
    assert env.action_space.shape == (facts.action_dim,)
    np.testing.assert_array_equal(unwrapped.agent_feature_mask, facts.agent_feature_mask)
    assert unwrapped.min_reward == facts.min_reward
    assert hasattr(unwrapped, "compat") == facts.has_compat
    env.close()


def test_facts_agree_with_the_task_tables():
    names = [f"maze-{s[0]}{s[1]}-to-{g[0]}{g[1]}" for s, g in MAZE_TASKS]
    assert names == list(qmp_envs.SUITES["qmp/MazeLarge10-v0"].task_names)
    assert [t[0] for t in KITCHEN_TASKS] == list(qmp_envs.SUITES["qmp/KitchenMTEasy-v0"].task_names)


def test_facts_are_frozen_and_unknown_ids_are_named():
    facts = qmp_envs.SUITES["qmp/PointReach-v0"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        facts.feature_dim = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        qmp_envs.SUITES["qmp/New-v0"] = facts  # type: ignore[index]
    with pytest.raises(KeyError, match="unknown qmp environment id 'qmp/Nope-v0'.*PointReach"):
        qmp_envs.suite_facts("qmp/Nope-v0")


@pytest.fixture
def constructions(monkeypatch):
    """Counts MultiTaskEnv constructions, per env id."""
    counts: dict[str, int] = {}
    original = MultiTaskEnv.__init__

    def counting_init(self, *args, **kwargs):
        counts[self.facts.env_id] = counts.get(self.facts.env_id, 0) + 1
        original(self, *args, **kwargs)

    monkeypatch.setattr(MultiTaskEnv, "__init__", counting_init)
    return counts


def test_reading_facts_builds_no_env(constructions):
    from qmp_harness.config import registered_qmp_ids
    from qmp_harness.tasks import TaskSpec

    assert "qmp/KitchenMTEasy-v0" in registered_qmp_ids()
    envs = gym.make_vec("qmp/MazeLarge10-v0")
    assert constructions == {"qmp/MazeLarge10-v0": 10}  # the sub-envs themselves, nothing else
    tasks = TaskSpec.of(gym.wrappers.vector.RecordEpisodeStatistics(envs))
    assert tasks.num_tasks == 10 and tasks.min_reward == -1.0
    MultiTaskParallelEnv("qmp/KitchenMTEasy-v0")
    qmp_envs.evaluate_policy(
        lambda obs: np.zeros((len(obs), 2)), "qmp/PointReach-v0", episodes_per_task=1
    )
    assert constructions == {
        "qmp/MazeLarge10-v0": 10,
        "qmp/KitchenMTEasy-v0": 10,  # one agent per task
        "qmp/PointReach-v0": 1,  # one evaluation env per task
    }


def test_a_training_run_builds_only_its_envs(constructions, tmp_path, monkeypatch):
    """sac_qmp builds its N training sub-envs and N evaluation envs, and no probe."""
    argv = [
        "sac_qmp.py", "--env-id", "qmp/MultistageReacher-v0", "--total-timesteps", "50",
        "--learning-starts", "20", "--batch-size", "8", "--hidden", "8", "8",
        "--eval-episodes", "1", "--no-progress", "--run-dir", str(tmp_path / "run"),
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(ROOT / "cleanrl_qmp" / "sac_qmp.py"), run_name="__main__")
    assert (tmp_path / "run" / "timing.json").exists()
    assert constructions == {"qmp/MultistageReacher-v0": 5 + 5}


def test_facts_pickle_by_reference_and_by_value():
    import pickle

    registered = qmp_envs.SUITES["qmp/MetaWorldMT10-v0"]
    assert pickle.loads(pickle.dumps(registered)) is registered
    custom = dataclasses.replace(registered, env_id="my/Custom-v0")
    assert pickle.loads(pickle.dumps(custom)) == custom


def test_every_suite_has_a_training_preset():
    """Presets (training hyperparameters) live with the scripts, keyed by the same ids."""
    from qmp_harness.config import PRESETS

    assert set(PRESETS) == set(qmp_envs.SUITES)
