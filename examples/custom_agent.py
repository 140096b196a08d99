"""Bring your own agent: QMP with any policy and Q callables, in a plain Gymnasium loop.

The "agent" here is a set of per-task linear policies and quadratic Q-functions in numpy; swap
in your own networks (torch modules get tensors on their device). The loop stores what the
wrapper EXECUTED, which is all QMP asks of an off-policy learner.

    python examples/custom_agent.py
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import qmp_envs  # noqa: F401  (registers the qmp/ ids)
from qmp_wrappers.vector import QMPBehaviorWrapper


class LinearTaskAgent:
    """One linear policy and one quadratic Q per task, chosen by the observation's one-hot."""

    def __init__(self, obs_dim: int, action_dim: int, num_tasks: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.num_tasks = num_tasks
        self.weights = rng.normal(0, 0.3, (num_tasks, obs_dim, action_dim))
        self.preferred = rng.uniform(-1, 1, (num_tasks, action_dim))  # each task's best action

    def tasks(self, obs: np.ndarray) -> np.ndarray:
        return obs[:, -self.num_tasks :].argmax(axis=1)

    def policy(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = np.tanh(np.einsum("bd,bda->ba", obs, self.weights[self.tasks(obs)]))
        sampled = np.clip(mean + 0.1 * np.random.standard_normal(mean.shape), -1, 1)
        return sampled, mean

    def q_function(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        return -np.square(actions - self.preferred[self.tasks(obs)]).sum(axis=1)


def run(env_id: str = "qmp/MazeLarge10-v0", steps: int = 200, seed: int = 0):
    envs = QMPBehaviorWrapper(gym.make_vec(env_id), seed=seed)
    obs, _ = envs.reset(seed=seed)
    agent = LinearTaskAgent(obs.shape[1], envs.single_action_space.shape[0], envs.num_tasks, seed)
    envs.attach(policy=agent.policy, q_function=agent.q_function)
    stored = []  # your replay buffer
    for _ in range(steps):
        actions, _ = agent.policy(obs)
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        stored.append((obs, infos["qmp_action"], rewards, next_obs, terminations))
        obs = next_obs
    envs.close()
    return envs, stored


if __name__ == "__main__":
    envs, stored = run()
    print(f"stored {len(stored)} vector steps; selection matrix:")
    print(np.round(envs.selection_matrix(), 2))
