"""What the training scripts need to know about a multi-task environment."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from qmp_envs.suites import SUITES


@dataclass
class TaskSpec:
    """What the scripts need to know about a multi-task environment."""

    num_tasks: int
    task_names: list[str]
    feature_dim: int
    feature_mask: np.ndarray
    min_reward: float
    observation_space: gym.spaces.Box
    action_space: gym.spaces.Box

    @property
    def action_dim(self) -> int:
        return int(self.action_space.shape[0])

    @classmethod
    def of(cls, envs: gym.vector.VectorEnv) -> TaskSpec:
        """The suite facts of a ``qmp/`` vector env (one sub-env per task), wrapped or not."""
        if envs.spec is None or envs.spec.id not in SUITES:
            raise ValueError(
                f"expected a vector env made by gym.make_vec of a qmp/ id, got spec {envs.spec}"
            )
        facts = SUITES[envs.spec.id]
        spec = cls(
            num_tasks=facts.num_tasks,
            task_names=list(facts.task_names),
            feature_dim=facts.feature_dim,
            feature_mask=facts.agent_feature_mask,
            min_reward=facts.min_reward,
            observation_space=_box(envs.single_observation_space),
            action_space=_box(envs.single_action_space),
        )
        space = spec.action_space
        if not (np.all(space.low == -1) and np.all(space.high == 1)):
            raise ValueError(f"the scripts expect actions in [-1, 1], got {space}")
        return spec


def _box(space: gym.Space) -> gym.spaces.Box:
    if not isinstance(space, gym.spaces.Box):
        raise TypeError(f"the scripts expect Box spaces, got {space}")
    return space
