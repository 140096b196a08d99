"""What the training scripts need to know about a multi-task environment."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np


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
        """Read from a ``qmp/`` vector env (one sub-env per task), wrapped or not."""
        first = envs.get_attr("unwrapped")[0] if hasattr(envs, "get_attr") else envs.unwrapped
        spec = cls(
            num_tasks=int(first.num_tasks),
            task_names=list(first.task_names),
            feature_dim=int(first.feature_dim),
            feature_mask=np.asarray(first.agent_feature_mask),
            min_reward=float(first.min_reward),
            observation_space=envs.single_observation_space,
            action_space=envs.single_action_space,
        )
        space = spec.action_space
        if not (np.all(space.low == -1) and np.all(space.high == 1)):
            raise ValueError(f"the scripts expect actions in [-1, 1], got {space}")
        return spec
