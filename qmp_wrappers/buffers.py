"""Replay buffers that store the action QMP executed, built on stable-baselines3's ``ReplayBuffer``.

Under QMP the executed action may come from another task's policy. Off-policy learning must
store what was executed, not what the agent proposed: these buffers take it from the
``qmp_action`` key that :class:`~qmp_wrappers.QMPBehaviorWrapper` puts in every ``info``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer

from qmp_envs import validation


def executed_actions(infos: Any, n_envs: int, action_dim: int | None = None) -> np.ndarray:
    """The executed actions ``(n_envs, A)`` from SB3's list of dicts or Gymnasium's dict of arrays.

    Args:
        infos: a step's infos: SB3's list of one dict per env, each ``qmp_action`` of shape
            ``(A,)``, or a Gymnasium vector env's dict whose ``qmp_action`` is ``(n_envs, A)``.
        n_envs: the number of envs stepped.
        action_dim: A, if known; otherwise read from the rows.

    Returns:
        The executed actions, ``(n_envs, A)``.

    Raises:
        KeyError: the infos lack ``qmp_action`` (the env is not wrapped by QMP).
        TypeError: ``infos`` is neither a list of dicts nor a dict.
        ValueError: the actions are not ``(n_envs, A)`` rows (flat or wrongly shaped rows are
            refused, never reshaped), or contain NaN or inf.

    >>> executed_actions([{"qmp_action": np.array([0.5, -0.5])}], n_envs=1).tolist()
    [[0.5, -0.5]]
    >>> executed_actions({"qmp_action": np.zeros((2, 3))}, n_envs=2).shape
    (2, 3)
    """
    missing = (
        "infos lack 'qmp_action': wrap the environment with QMPBehaviorWrapper so the executed "
        "action can be stored"
    )
    if isinstance(infos, dict):
        if "qmp_action" not in infos:
            raise KeyError(missing)
        rows = infos["qmp_action"]
        expected = None if action_dim is None else (n_envs, action_dim)
        actions = validation.real_array(
            "infos['qmp_action']", rows, dtype=None, shape=expected, context=" (one row per env)"
        )
        if expected is None and (actions.ndim != 2 or len(actions) != n_envs):
            raise validation.InputError(
                f"infos['qmp_action'] has shape {actions.shape}, expected (n_envs, A) = "
                f"({n_envs}, A): a vector env's info holds one row per env"
            )
        return actions
    if not isinstance(infos, list | tuple):
        raise TypeError(
            "infos must be the step's infos: a list of one dict per env (SB3) or a vector "
            f"env's dict of arrays (Gymnasium), got {type(infos).__name__}"
        )
    if len(infos) != n_envs:
        raise ValueError(f"got {len(infos)} infos for {n_envs} environments")
    if not all(isinstance(info, dict) and "qmp_action" in info for info in infos):
        raise KeyError(missing)
    expected_row = None if action_dim is None else (action_dim,)
    rows = [
        validation.real_array(
            f"infos[{i}]['qmp_action']", info["qmp_action"], dtype=None, shape=expected_row
        )
        for i, info in enumerate(infos)
    ]
    if any(row.ndim != 1 or row.shape != rows[0].shape for row in rows):
        shapes = [row.shape for row in rows]
        raise validation.InputError(
            f"infos' qmp_action rows have shapes {shapes}: each must be one action (A,)"
        )
    return np.stack(rows)


class QMPReplayBuffer(ReplayBuffer):
    """stable-baselines3 ``ReplayBuffer`` whose ``add`` stores ``info["qmp_action"]``.

    A drop-in ``replay_buffer_class`` for SB3 off-policy agents and a buffer for CleanRL-style
    loops. Infos may be SB3's list of dicts or Gymnasium's vector dict of arrays (then pass
    ``terminations`` as ``done`` and keep ``handle_timeout_termination=False``, as CleanRL does).

    Args:
        *args: SB3 ``ReplayBuffer``'s arguments (``buffer_size``, ``observation_space``,
            ``action_space``, ``device``).
        store_scaled_actions: SB3's algorithms store actions rescaled to [-1, 1]; set True for
            them when the action space is not already [-1, 1]. CleanRL loops store raw actions.
        **kwargs: SB3 ``ReplayBuffer``'s keyword arguments (``n_envs``,
            ``handle_timeout_termination``, ...).

    Raises:
        qmp_envs.validation.InputError: ``buffer_size`` (SB3's first argument) is not an
            integer >= ``n_envs`` (SB3 would silently keep one row per env), or ``n_envs``
            < 1 (``InputTypeError`` where either is not an integer).
        TypeError: ``store_scaled_actions`` with an action space that is not a ``Box``.

    Example:
        >>> import gymnasium as gym
        >>> box = gym.spaces.Box(-1, 1, (2,))
        >>> buffer = QMPReplayBuffer(10, box, box, n_envs=2, handle_timeout_termination=False)
        >>> zeros = np.zeros((2, 2), dtype=np.float32)
        >>> infos = {"qmp_action": np.array([[0.5, 0.5], [0.0, 1.0]])}
        >>> buffer.add(zeros, zeros, zeros, np.zeros(2), np.zeros(2), infos)
        >>> buffer.actions[0].tolist()
        [[0.5, 0.5], [0.0, 1.0]]
    """

    def __init__(self, *args, store_scaled_actions: bool = False, **kwargs):
        buffer_size = args[0] if args else kwargs.get("buffer_size")
        n_envs = validation.integer("n_envs", kwargs.get("n_envs", 1), minimum=1)
        buffer_size = validation.integer("buffer_size", buffer_size, minimum=n_envs)
        args = (buffer_size, *args[1:]) if args else args
        if "buffer_size" in kwargs:
            kwargs["buffer_size"] = buffer_size
        super().__init__(*args, **kwargs)
        if store_scaled_actions and not isinstance(self.action_space, spaces.Box):
            raise TypeError("store_scaled_actions needs a Box action space")
        # A space already [-1, 1] needs no rescaling, and skipping it keeps actions bit-exact.
        space = self.action_space
        self.store_scaled_actions = (
            store_scaled_actions
            and isinstance(space, spaces.Box)
            and not (np.all(space.low == -1) and np.all(space.high == 1))
        )

    # Pickling (checkpoints) keeps only the filled rows, so a checkpoint grows with the data
    # collected, not with the capacity; loading allocates the capacity again, zero-filled as
    # SB3 allocates it, so a restored buffer equals the saved one bit for bit.
    _STORAGE = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if not self.full:
            shapes = {}
            for name in self._STORAGE:
                array = state.get(name)
                if isinstance(array, np.ndarray):
                    shapes[name] = (array.shape, array.dtype)
                    state[name] = array[: self.pos].copy()
            state["_compact_shapes"] = shapes
        return state

    def __setstate__(self, state: dict) -> None:
        shapes = state.pop("_compact_shapes", {})
        for name, (shape, dtype) in shapes.items():
            full = np.zeros(shape, dtype=dtype)
            full[: len(state[name])] = state[name]
            state[name] = full
        self.__dict__.update(state)

    @property
    def capacity(self) -> int:
        """Transitions stored per env (per task) before the oldest are overwritten."""
        return self.buffer_size

    def grow(self, capacity: int) -> None:
        """Raise the capacity to ``capacity`` (never lower it), keeping every stored row where
        it is, so a run resumed with a larger budget stores (and samples) what an uninterrupted
        run would.

        Args:
            capacity: transitions per env to hold; at most the current capacity does nothing.

        Raises:
            ValueError: the buffer is full and has overwritten its oldest rows, so growing it
                cannot give what an uninterrupted run would hold.
        """
        if capacity <= self.buffer_size:  # a larger buffer than needed samples the same
            return
        if self.full:
            raise ValueError(
                f"the replay buffer is full ({self.buffer_size} per env) and has overwritten its "
                f"oldest data, so it cannot grow to {capacity} as if it never had"
            )
        for name in self._STORAGE:
            array = getattr(self, name, None)
            if isinstance(array, np.ndarray):
                grown = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
                grown[: self.pos] = array[: self.pos]
                setattr(self, name, grown)
        self.buffer_size = capacity

    def add(self, obs, next_obs, action, reward, done, infos) -> None:
        """Store one step of every env, with ``infos``' executed actions (``qmp_action``) in
        place of ``action`` (the agent's proposal, ignored).

        Args:
            obs: observations ``(n_envs, D)`` before the step.
            next_obs: observations ``(n_envs, D)`` after it.
            action: the agent's proposed actions (ignored: the executed ones are stored).
            reward: rewards ``(n_envs,)``.
            done: episode ends ``(n_envs,)`` (CleanRL passes the terminations).
            infos: SB3's list of info dicts or Gymnasium's vector info dict, holding
                ``qmp_action``.

        Raises:
            KeyError: ``infos`` lacks ``qmp_action`` (the env is not wrapped by QMP).
            TypeError: ``infos`` is neither a list of dicts nor a dict.
            ValueError: the executed actions are not one finite row of the action space's
                size per env (see :func:`executed_actions`).
        """
        action = executed_actions(infos, self.n_envs, self.action_dim).astype(self.actions.dtype)
        if self.store_scaled_actions:
            assert isinstance(self.action_space, spaces.Box)
            low, high = self.action_space.low, self.action_space.high
            action = (2.0 * (action - low) / (high - low) - 1.0).astype(self.actions.dtype)
        if isinstance(infos, dict):
            if self.handle_timeout_termination:
                truncated = np.asarray(infos.get("TimeLimit.truncated", np.zeros(self.n_envs)))
                infos = [{"TimeLimit.truncated": bool(t)} for t in truncated.reshape(-1)]
            else:
                infos = [{} for _ in range(self.n_envs)]
        super().add(obs, next_obs, action, reward, done, infos)


class TaskBatch(NamedTuple):
    """Per-task minibatches stacked on a leading task axis: ``(N, B, ...)``.

    Attributes:
        observations: ``(N, B, D)``.
        actions: the executed actions ``(N, B, A)``.
        next_observations: ``(N, B, D)``.
        dones: ``(N, B)``, 0 where an episode was cut by a time limit.
        rewards: ``(N, B)``.
    """

    observations: torch.Tensor
    actions: torch.Tensor
    next_observations: torch.Tensor
    dones: torch.Tensor
    rewards: torch.Tensor


class MultiTaskReplayBuffer(QMPReplayBuffer):
    """One replay buffer per task in one SB3 ``ReplayBuffer``: column k holds task k's data.

    Use with a vector env whose sub-env k runs task k (``gym.make_vec("qmp/...")``).
    ``buffer_size`` is the capacity per task. :meth:`sample_tasks` draws an equal minibatch from
    every task at once, ready for a per-task network ensemble.

    Args:
        buffer_size: transitions held per task.
        observation_space: the observation space of one env.
        action_space: the action space of one env.
        num_tasks: N, the number of sub-envs (one per task).
        **kwargs: the keyword arguments of :class:`QMPReplayBuffer` (``device``,
            ``store_scaled_actions``, ...); ``handle_timeout_termination`` defaults to False.

    Raises:
        ValueError: ``optimize_memory_usage`` is asked for.
        qmp_envs.validation.InputError: ``buffer_size`` or ``num_tasks`` < 1
            (``InputTypeError`` where one is not an integer).

    Example:
        >>> import gymnasium as gym
        >>> box = gym.spaces.Box(-1, 1, (3,))
        >>> buffer = MultiTaskReplayBuffer(100, box, box, num_tasks=2)
        >>> rows = np.zeros((2, 3), dtype=np.float32)
        >>> infos = {"qmp_action": rows}
        >>> for _ in range(5):
        ...     buffer.add(rows, rows, rows, np.ones(2), np.zeros(2), infos)
        >>> buffer.num_transitions(), buffer.sample_tasks(8).rewards.shape
        (5, torch.Size([2, 8]))
    """

    def __init__(self, buffer_size: int, observation_space, action_space, num_tasks: int, **kwargs):
        if kwargs.get("optimize_memory_usage"):
            raise ValueError("MultiTaskReplayBuffer does not support optimize_memory_usage")
        buffer_size = validation.integer("buffer_size (per task)", buffer_size, minimum=1)
        num_tasks = validation.integer("num_tasks", num_tasks, minimum=1)
        kwargs.setdefault("handle_timeout_termination", False)
        super().__init__(
            buffer_size * num_tasks, observation_space, action_space, n_envs=num_tasks, **kwargs
        )
        self.num_tasks = num_tasks

    def num_transitions(self) -> int:
        """How much data each task has.

        Returns:
            Transitions stored per task (the capacity once full).
        """
        return self.buffer_size if self.full else self.pos

    def sample_tasks(self, batch_size: int, rng: np.random.Generator | None = None) -> TaskBatch:
        """``batch_size`` transitions of each task, sampled uniformly with replacement.

        Args:
            batch_size: transitions per task, >= 1.
            rng: the random stream to draw from; NumPy's global one when None.

        Returns:
            The minibatches, each field ``(N, batch_size, ...)``; ``dones`` are 0 where an
            episode was cut by a time limit.

        Raises:
            qmp_envs.validation.InputError: ``batch_size`` < 1 (``InputTypeError`` if it is
                not an integer).
            ValueError: the buffer is empty.
        """
        batch_size = validation.integer("batch_size", batch_size, minimum=1)
        cols = np.broadcast_to(np.arange(self.num_tasks)[:, None], (self.num_tasks, batch_size))
        return self._gather(cols, rng)

    def sample_other_tasks(
        self, batch_size: int, rng: np.random.Generator | None = None
    ) -> tuple[TaskBatch, np.ndarray]:
        """For each task i, ``batch_size`` transitions drawn uniformly from the OTHER tasks' data
        (data sharing).

        Args:
            batch_size: transitions per task, >= 1.
            rng: the random stream to draw from; NumPy's global one when None.

        Returns:
            The batch as stored (not relabelled), each field ``(N, batch_size, ...)``, and the
            source task of every row, ``(N, batch_size)`` (never the row's own task).

        Raises:
            ValueError: fewer than two tasks, or the buffer is empty.
            qmp_envs.validation.InputError: ``batch_size`` < 1 (``InputTypeError`` if it is
                not an integer).
        """
        if self.num_tasks < 2:
            raise ValueError("sharing data needs at least two tasks")
        batch_size = validation.integer("batch_size", batch_size, minimum=1)
        draw = np.random.randint if rng is None else rng.integers
        shift = draw(1, self.num_tasks, size=(self.num_tasks, batch_size))
        cols = (np.arange(self.num_tasks)[:, None] + shift) % self.num_tasks
        return self._gather(cols, rng), cols

    def _gather(self, cols: np.ndarray, rng: np.random.Generator | None) -> TaskBatch:
        stored = self.num_transitions()
        if stored == 0:
            raise ValueError("cannot sample from an empty buffer")
        draw = np.random.randint if rng is None else rng.integers
        rows = draw(0, stored, size=cols.shape)
        dones = self.dones[rows, cols] * (1.0 - self.timeouts[rows, cols])
        return TaskBatch(
            observations=self.to_torch(self.observations[rows, cols]),
            actions=self.to_torch(self.actions[rows, cols]),
            next_observations=self.to_torch(self.next_observations[rows, cols]),
            dones=self.to_torch(dones),
            rewards=self.to_torch(self.rewards[rows, cols]),
        )
