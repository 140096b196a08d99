"""PointReach: the QMP paper's 2D illustrative example (spec section 3).

A point starts in the bottom-left cell of a 10 x 10 arena and must reach a goal disc in the
top-right corner within 50 steps. Undirected exploration almost never finds the goal; fixed
helper policies (``up``, ``right``, ``up-right``, ...) can, which is what QMP exploits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qmp_envs.multitask import MultiTaskEnv

ARENA_SIZE = 10.0
STEP_SIZE = 0.5
GOAL = np.array([9.5, 9.5])
GOAL_RADIUS = 1.0

#: Mean actions of the fixed auxiliary policies of the paper's figure.
HELPER_DIRECTIONS: dict[str, tuple[float, float]] = {
    "up": (0.0, 1.0),
    "right": (1.0, 0.0),
    "down-left": (-1.0, -1.0),
    "up-right": (1.0, 1.0),
}


class PointReachEnv(MultiTaskEnv, suite="qmp/PointReach-v0"):
    """Kinematic point mass: ``p <- clip(p + 0.5 * a, 0, 10)``; reward 1 on entering the goal.

    Args:
        ctrl_cost: weight of the ``-ctrl_cost * |a|^2`` step penalty (0.01 makes plain SAC settle
            on standing still, the paper's suboptimal fixed point).
        render_mode: ``None`` or ``"rgb_array"``.
        **kwargs: the arguments of :class:`~qmp_envs.multitask.MultiTaskEnv` (``task``,
            ``task_schedule``).

    Raises:
        ValueError: ``ctrl_cost`` negative, NaN or inf; the errors of
            :class:`~qmp_envs.multitask.MultiTaskEnv`.

    >>> import gymnasium as gym, qmp_envs
    >>> env = gym.make("qmp/PointReach-v0")
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, info["task_id"]
    ((3,), 0)
    """

    feature_bounds = (0.0, 1.0)
    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 10}
    #: Each episode starts uniformly in ``[low, high]^2`` (v0: the bottom-left cell).
    start_range: tuple[float, float] = (0.0, 1.0)

    def __init__(self, ctrl_cost: float = 0.0, render_mode: str | None = None, **kwargs):
        if not np.isfinite(ctrl_cost) or ctrl_cost < 0:
            raise ValueError(f"ctrl_cost must be a finite number >= 0, got {ctrl_cost!r}")
        super().__init__(render_mode=render_mode, **kwargs)
        self.ctrl_cost = float(ctrl_cost)
        self.position = np.zeros(2)
        self.goal = GOAL

    def _features(self) -> np.ndarray:
        return self.position / ARENA_SIZE

    def _reset_task(self, task_id: int):
        self.position = self.np_random.uniform(*self.start_range, size=2)
        return self._features(), {"dist_to_goal": float(np.linalg.norm(self.position - self.goal))}

    def _step_task(self, action: np.ndarray):
        self.position = np.clip(self.position + STEP_SIZE * action, 0.0, ARENA_SIZE)
        dist = float(np.linalg.norm(self.position - self.goal))
        success = dist <= GOAL_RADIUS
        reward = self._reward(action, dist, success)
        return self._features(), reward, success, {"success": success, "dist_to_goal": dist}

    def _reward(self, action: np.ndarray, dist: float, success: bool) -> float:
        """The step's reward, once the point has moved; the variants differ only here."""
        return 1.0 if success else -self.ctrl_cost * float(np.dot(action, action))

    def render(self):
        """The arena from above: the goal disc in green, the point in blue.

        Returns:
            A ``(200, 200, 3)`` uint8 image under ``render_mode="rgb_array"``, else None.
        """
        if self.render_mode != "rgb_array":
            return None
        size = 200
        scale = size / ARENA_SIZE
        frame = np.full((size, size, 3), 255, dtype=np.uint8)
        yy, xx = np.mgrid[0:size, 0:size]
        # Image rows grow downwards; world y grows upwards.
        world_x, world_y = (xx + 0.5) / scale, (size - yy - 0.5) / scale
        goal_mask = (world_x - self.goal[0]) ** 2 + (world_y - self.goal[1]) ** 2 <= GOAL_RADIUS**2
        frame[goal_mask] = (120, 200, 120)
        agent_mask = (world_x - self.position[0]) ** 2 + (world_y - self.position[1]) ** 2 <= 0.04
        frame[agent_mask] = (30, 60, 200)
        return frame


START_CENTRE = np.array([0.5, 0.5])


class PointReachTrapEnv(PointReachEnv, suite="qmp/PointReach-v1"):
    """PointReach with a local optimum at the start: the paper's example, made testable.

    Same arena, dynamics, start, goal and helpers as ``qmp/PointReach-v0``; the reward differs:

    - ``+goal_reward`` (10) on entering the goal, which ends the episode;
    - ``+start_bonus`` (0.05) on every step the point spends within ``start_radius`` (1.5) of
      the start cell's centre (0.5, 0.5): a small dense bonus near the start;
    - the horizon is 100 steps (v0: 50), so a mixture that drifts up-right has time to arrive.

    Why: in v0 the reward is sparse, so before the first success every candidate's Q is driven
    by SAC's entropy term alone and nothing can favour any behaviour. Here the start bonus is a
    local optimum that plain SAC finds at once and converges to (camping earns at most
    0.05 x 100 = 5, about 3.2 discounted at 0.99), while the goal is the global optimum (10,
    about 8.4 discounted after the 17 steps of the shortest path). SAC's entropy-driven
    exploration around the camp almost never covers the 8+ units to the goal, whereas QMP's
    Q-switch executes the helpers' directed actions whenever the task's Q rates them at least as
    high as the policy's own, so its collected trajectories can reach the goal, and once a goal
    reward is in the data the Q of moving up-right exceeds every other candidate's.

    Args:
        start_bonus: the reward of each step near the start.
        start_radius: how near the start cell's centre counts as near.
        goal_reward: the reward of entering the goal.
        **kwargs: the arguments of :class:`PointReachEnv` (``ctrl_cost``, ``render_mode``,
            ``task``, ...).

    Raises:
        ValueError: a reward or radius negative, NaN or inf; the errors of
            :class:`PointReachEnv`.

    >>> import gymnasium as gym, qmp_envs
    >>> env = gym.make("qmp/PointReach-v1")
    >>> obs, info = env.reset(seed=0)
    >>> _, reward, *_ = env.step([0.0, 0.0])   # staying at the start earns the bonus
    >>> reward, env.spec.max_episode_steps
    (0.05, 100)
    """

    def __init__(
        self,
        start_bonus: float = 0.05,
        start_radius: float = 1.5,
        goal_reward: float = 10.0,
        **kwargs: Any,
    ):
        for name, value in (
            ("start_bonus", start_bonus),
            ("start_radius", start_radius),
            ("goal_reward", goal_reward),
        ):
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        super().__init__(**kwargs)
        self.start_bonus = float(start_bonus)
        self.start_radius = float(start_radius)
        self.goal_reward = float(goal_reward)

    def _reward(self, action: np.ndarray, dist: float, success: bool) -> float:
        if success:
            return self.goal_reward
        near_start = np.linalg.norm(self.position - START_CENTRE) <= self.start_radius
        return (self.start_bonus if near_start else 0.0) - self.ctrl_cost * float(
            np.dot(action, action)
        )


class FixedDirectionPolicy:
    """A fixed helper policy: mean ``mu``, sample ``clip(mu + noise_std * eps, -1, 1)``.

    Called on a batch of observations ``(B, obs_dim)`` it returns ``(sampled, mean)``, both
    ``(B, 2)`` float32, which is the signature ``QMPBehaviorWrapper(extra_policies=...)`` takes.

    Args:
        name: the direction, a key of ``HELPER_DIRECTIONS`` (``"up"``, ``"up-right"``, ...).
        noise_std: the standard deviation of the sampling noise, >= 0.
        seed: seed of the policy's own random stream.

    Raises:
        ValueError: an unknown ``name``, or ``noise_std`` negative or NaN.

    >>> policy = FixedDirectionPolicy("up-right", seed=0)
    >>> sampled, mean = policy(np.zeros((4, 3), dtype=np.float32))
    >>> mean[0].tolist(), sampled.shape
    ([1.0, 1.0], (4, 2))
    """

    def __init__(self, name: str, noise_std: float = 0.1, seed: int | None = None):
        if name not in HELPER_DIRECTIONS:
            raise ValueError(f"unknown helper {name!r}; expected one of {list(HELPER_DIRECTIONS)}")
        if not noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
        self.name = name
        self.mean_action = np.asarray(HELPER_DIRECTIONS[name], dtype=np.float32)
        self.noise_std = float(noise_std)
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = np.asarray(obs).shape[0]
        mean = np.broadcast_to(self.mean_action, (batch, 2)).copy()
        noise = self.rng.standard_normal((batch, 2)).astype(np.float32)
        sampled = np.clip(mean + self.noise_std * noise, -1.0, 1.0)
        return sampled, mean

    def __repr__(self) -> str:
        return f"FixedDirectionPolicy({self.name!r}, noise_std={self.noise_std})"


def helper_policies(names: list[str], seed: int | None = None) -> list[FixedDirectionPolicy]:
    """The named helper policies of PointReach, each with its own seeded random stream.

    Args:
        names: directions, keys of ``HELPER_DIRECTIONS``.
        seed: helper i is seeded with ``seed + i``; None seeds each from the OS.

    Returns:
        One :class:`FixedDirectionPolicy` per name (noise 0.1), in order.

    Raises:
        ValueError: an unknown name.

    Example:
        >>> [policy.name for policy in helper_policies(["up", "right"], seed=0)]
        ['up', 'right']
    """
    return [
        FixedDirectionPolicy(name, seed=None if seed is None else seed + i)
        for i, name in enumerate(names)
    ]


#: Goals of ``qmp/PointReachMT4-v0``, one per task, in one-hot order.
MT4_GOALS: dict[str, tuple[float, float]] = {
    "reach-top": (5.0, 9.5),
    "reach-top-right": (9.5, 9.5),
    "reach-right": (9.5, 5.0),
    "reach-bottom-left": (0.5, 0.5),
}


class PointReachMT4Env(PointReachEnv, suite="qmp/PointReachMT4-v0"):
    """Four point-reaching tasks with dense rewards: the one-minute demo suite (not a paper suite).

    Same arena and dynamics as ``qmp/PointReach-v0``, but the point starts near the centre
    (uniform in ``[4.5, 5.5]^2``) and task k must reach goal k of :data:`MT4_GOALS` (top,
    top-right, right, bottom-left). The reward is ``-distance`` per step and reaching the
    goal disc (radius 1) is a success that ends the episode, so each task is learnable by SAC in
    a few thousand steps. Three tasks share directions (top-right is halfway between top and
    right) and one does not, which makes the Q-switch's choices easy to read in the demo's
    selection heatmap: the top and right tasks execute the top-right policy's proposals on a
    share of their steps, and no task executes bottom-left's.

    It exists so ``make demo`` can show success rising within a minute on 2 CPU cores; the
    paper's suites need hundreds of thousands of steps before anything moves.

    Args:
        **kwargs: the arguments of :class:`PointReachEnv` (``ctrl_cost``, ``render_mode``,
            ``task``, ``task_schedule``).

    Raises:
        As :class:`PointReachEnv`.

    >>> import gymnasium as gym, qmp_envs
    >>> env = gym.make("qmp/PointReachMT4-v0")
    >>> obs, info = env.reset(seed=0, options={"task": 1})
    >>> obs.shape, env.unwrapped.task_name
    ((6,), 'reach-top-right')
    """

    start_range = (4.5, 5.5)

    def _reset_task(self, task_id: int):
        self.goal = np.asarray(MT4_GOALS[self.task_names[task_id]])
        return super()._reset_task(task_id)

    def _reward(self, action: np.ndarray, dist: float, success: bool) -> float:
        return -dist - self.ctrl_cost * float(np.dot(action, action))
