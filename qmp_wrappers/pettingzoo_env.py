"""A PettingZoo ``ParallelEnv`` view of any ``qmp/`` id: one agent per task.

Multi-agent libraries can then train the N task policies as N agents. Agent ``name`` runs its
own env instance pinned to its task; it leaves ``agents`` when its episode ends, and the
parallel episode ends when every task's episode has ended.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from pettingzoo import ParallelEnv

from qmp_envs.suites import suite_facts


class MultiTaskParallelEnv(ParallelEnv):
    """One PettingZoo agent per task of a ``qmp/`` environment.

    Agent k acts in its own env pinned to task k; agents are named after the tasks.

    Args:
        env_id: a ``qmp/`` id.
        **env_kwargs: passed to every agent's ``gym.make`` (not ``task``).

    Raises:
        ValueError: a ``task`` keyword (each agent has its own task).
        KeyError: an unknown ``env_id``.

    >>> import qmp_envs
    >>> env = MultiTaskParallelEnv("qmp/MazeLarge10-v0")
    >>> observations, infos = env.reset(seed=0)
    >>> len(env.agents), env.agents[0]
    (10, 'maze-13-to-58')
    """

    metadata = {"name": "qmp_multitask_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self, env_id: str, **env_kwargs):
        if "task" in env_kwargs:
            raise ValueError("MultiTaskParallelEnv makes one agent per task; do not pass task=")
        names = list(suite_facts(env_id).task_names)
        self.env_id = env_id
        self.possible_agents = names
        self._envs = {name: gym.make(env_id, task=k, **env_kwargs) for k, name in enumerate(names)}
        self.agents: list[str] = []
        self.render_mode = None

    def observation_space(self, agent: str) -> gym.Space:
        """The observation space of one agent.

        Args:
            agent: the agent's name (its task's name).

        Returns:
            Its env's observation space.

        Raises:
            KeyError: an unknown agent.
        """
        return self._env(agent).observation_space

    def action_space(self, agent: str) -> gym.Space:
        """The action space of one agent.

        Args:
            agent: the agent's name (its task's name).

        Returns:
            Its env's action space.

        Raises:
            KeyError: an unknown agent.
        """
        return self._env(agent).action_space

    def _env(self, agent: str) -> gym.Env:
        if agent not in self._envs:
            raise KeyError(f"unknown agent {agent!r}; agents are {self.possible_agents}")
        return self._envs[agent]

    def reset(self, seed: int | None = None, options: dict | None = None):
        """Reset every agent's env; all agents are live again.

        Args:
            seed: agent k's env is seeded with ``seed + k``.
            options: not read (PettingZoo's signature).

        Returns:
            ``(observations, infos)``, dicts by agent.
        """
        self.agents = list(self.possible_agents)
        observations, infos = {}, {}
        for k, agent in enumerate(self.agents):
            agent_seed = None if seed is None else seed + k
            observations[agent], infos[agent] = self._envs[agent].reset(seed=agent_seed)
        return observations, infos

    def step(self, actions: dict[str, np.ndarray]):
        """Step every live agent's env; agents whose episode ends leave ``agents``.

        Args:
            actions: one action per live agent.

        Returns:
            ``(observations, rewards, terminations, truncations, infos)``, dicts by agent.

        Raises:
            KeyError: an action for an agent that is not live, or none for a live one.
        """
        unknown = set(actions) - set(self.agents)
        if unknown:
            raise KeyError(f"actions for agents that are not live: {sorted(unknown)}")
        missing = set(self.agents) - set(actions)
        if missing:
            raise KeyError(f"no action for live agents: {sorted(missing)}")
        observations, rewards, terminations, truncations, infos = {}, {}, {}, {}, {}
        for agent in self.agents:
            obs, reward, terminated, truncated, info = self._envs[agent].step(actions[agent])
            observations[agent], rewards[agent] = obs, reward
            terminations[agent], truncations[agent], infos[agent] = terminated, truncated, info
        self.agents = [a for a in self.agents if not (terminations[a] or truncations[a])]
        return observations, rewards, terminations, truncations, infos

    def render(self):
        """Nothing is rendered (the agents' envs render themselves).

        Returns:
            None.
        """
        return None

    def close(self):
        """Close every agent's env."""
        for env in self._envs.values():
            env.close()
