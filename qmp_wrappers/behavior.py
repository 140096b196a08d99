"""``QMPBehaviorWrapper``: QMP behaviour sharing at the environment boundary.

While data is collected for task i, every task's policy proposes an action, task i's Q-function
scores the proposals and the best one is executed. The agent keeps its own networks, losses and
loop; it only has to store ``info["qmp_action"]`` (the executed action) instead of its proposal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv

from qmp_wrappers.qswitch import (
    MIXTURES,
    SCORING_RULES,
    CallableAdapter,
    choose,
    propose,
    read_one_hot_task,
    relabel_one_hot,
    score,
)


def _module_device(fn: Any) -> torch.device | None:
    """The device of a torch module's parameters, or None for any other callable."""
    if isinstance(fn, torch.nn.Module):
        for tensor in list(fn.parameters()) + list(fn.buffers()):
            return tensor.device
    return None


def _infer_num_tasks(env: gym.Env | VectorEnv) -> int | None:
    try:
        if isinstance(env, VectorEnv):
            return int(env.get_attr("num_tasks")[0])
        return int(env.get_wrapper_attr("num_tasks"))
    except (AttributeError, TypeError, IndexError):
        return None


class QMPBehaviorWrapper:
    """Executes the Q-switch mixture of all task policies instead of the agent's action.

    Works on a Gymnasium ``Env`` or ``VectorEnv`` (the constructor returns the matching
    subclass). Until :meth:`attach` is called, or while ``enabled`` is False, actions pass
    through unchanged.

    Args:
        env: the multi-task environment; its observations end with a one-hot task id.
        num_tasks: N; inferred from ``env.unwrapped.num_tasks`` when omitted.
        scoring: ``"original"`` (task i's first critic on each candidate's mean action, execute
            the chosen policy's sample; the paper's code) or ``"min_twin"`` (the minimum over
            critics on sampled actions).
        mixture: ``"qswitch"`` (argmax, the paper), ``"uniform"`` (a uniformly random
            candidate; the ablation) or ``"softmax"`` (sample from softmax(Q / temperature)).
        temperature: softmax temperature, > 0.
        hold_steps: keep the chosen candidate for this many steps (H = 1: switch every step).
        extra_policies: fixed callables ``obs -> actions | (sampled, mean)`` on numpy arrays
            (scripted or pretrained behaviours) added to every task's candidates.
        extra_policy_names: names for the extra policies in the selection matrix.
        task_id_fn: ``obs (B, D) ndarray -> task ids (B,)`` for envs with another layout;
            requires ``relabel_fn``.
        relabel_fn: ``(obs (M, D) ndarray, task_ids (M,) ndarray) -> obs`` giving each row the
            identity of another task, so that policy j can propose on task i's state.
        seed: seed of the wrapper's own RNG (uniform and softmax mixtures); ``reset(seed=s)``
            reseeds it.

    Example: each task policy proposes ``task / 10``; every task's Q prefers actions near 0.3,
    so every task executes policy 3's proposal.

    >>> import gymnasium as gym, numpy as np, qmp_envs
    >>> env = QMPBehaviorWrapper(gym.make_vec("qmp/MultistageReacher-v0"))
    >>> policy = lambda obs: np.repeat(obs[:, -5:].argmax(1, keepdims=True) / 10, 6, axis=1)
    >>> env.attach(policy=policy, q_function=lambda obs, act: -np.abs(act - 0.3).sum(1))
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(policy(obs))
    >>> info["qmp_policy"].tolist(), info["qmp_action"][0, 0].item()
    ([3, 3, 3, 3, 3], 0.30000001192092896)
    >>> env.selection_matrix()[:, 3].tolist()
    [1.0, 1.0, 1.0, 1.0, 1.0]
    """

    def __new__(cls, env=None, *args, **kwargs):
        if cls is QMPBehaviorWrapper:
            cls = QMPVectorBehaviorWrapper if isinstance(env, VectorEnv) else QMPEnvBehaviorWrapper
        return super().__new__(cls)

    # -- construction ----------------------------------------------------------------------
    def _setup(
        self,
        num_tasks: int | None,
        *,
        scoring: str = "original",
        mixture: str = "qswitch",
        temperature: float = 1.0,
        hold_steps: int = 1,
        extra_policies: Sequence[Callable] = (),
        extra_policy_names: Sequence[str] | None = None,
        task_id_fn: Callable | None = None,
        relabel_fn: Callable | None = None,
        seed: int | None = None,
    ) -> None:
        """Validate and store the options documented on :class:`QMPBehaviorWrapper`."""
        if scoring not in SCORING_RULES:
            raise ValueError(f"scoring must be one of {SCORING_RULES}, got {scoring!r}")
        if mixture not in MIXTURES:
            raise ValueError(f"mixture must be one of {MIXTURES}, got {mixture!r}")
        if not (isinstance(temperature, int | float) and temperature > 0):
            raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
        if isinstance(hold_steps, bool) or not isinstance(hold_steps, int) or hold_steps < 1:
            raise ValueError(f"hold_steps must be an int >= 1, got {hold_steps!r}")
        if (task_id_fn is None) != (relabel_fn is None):
            raise ValueError("task_id_fn and relabel_fn must be given together")
        extra_policies = list(extra_policies)
        for i, fn in enumerate(extra_policies):
            if not callable(fn):
                raise TypeError(f"extra_policies[{i}] is not callable: {fn!r}")
        if extra_policy_names is None:
            extra_policy_names = [
                getattr(fn, "name", f"extra_{i}") for i, fn in enumerate(extra_policies)
            ]
        if len(extra_policy_names) != len(extra_policies):
            raise ValueError(
                f"got {len(extra_policy_names)} extra_policy_names for "
                f"{len(extra_policies)} extra_policies"
            )
        if num_tasks is None:
            num_tasks = _infer_num_tasks(self.env)
        elif isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"num_tasks must be an int >= 1, got {num_tasks!r}")
        space = self.single_observation_space
        if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
            raise TypeError(f"QMPBehaviorWrapper needs a flat Box observation space, got {space}")
        action_space = self.single_action_space
        if not (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1):
            raise TypeError(f"QMPBehaviorWrapper needs a flat Box action space, got {action_space}")
        if num_tasks is not None and task_id_fn is None and num_tasks > space.shape[0]:
            raise ValueError(f"num_tasks={num_tasks} exceeds the observation size {space.shape[0]}")

        self.num_tasks = num_tasks
        self.scoring = scoring
        self.mixture = mixture
        self.temperature = float(temperature)
        self.hold_steps = hold_steps
        self.extra_policies = extra_policies
        self.extra_policy_names = list(extra_policy_names)
        self.task_id_fn = task_id_fn
        self.relabel_fn = relabel_fn
        self.action_dim = int(action_space.shape[0])
        self.enabled = True
        self.rng = np.random.default_rng(seed)
        self._policy: CallableAdapter | None = None
        self._q_function: CallableAdapter | None = None
        self._extras: list[CallableAdapter] = []
        self.device = torch.device("cpu")
        self._last_obs: np.ndarray | None = None
        self._held = np.zeros(self.num_envs, dtype=np.int64)
        self._hold_left = np.zeros(self.num_envs, dtype=np.int64)
        self._resetting = np.zeros(self.num_envs, dtype=bool)
        self._counts = (
            None
            if num_tasks is None
            else np.zeros((num_tasks, num_tasks + len(extra_policies)), dtype=np.int64)
        )

    def attach(
        self,
        policy: Callable,
        q_function: Callable,
        device: str | torch.device | None = None,
    ) -> None:
        """Give the wrapper the agent's task policies and Q-functions; may be called any time.

        Args:
            policy: ``obs (M, D) -> actions`` or ``-> (sampled, mean)``, each ``(M, A)``. Row m is
                answered by the policy of the task in row m's one-hot.
            q_function: ``(obs (M, D), actions (M, A)) -> values`` of shape (M,), (M, 1), (M, K)
                or a tuple of K such tensors (twin critics). Row m is scored by the Q of the task
                in row m's one-hot.
            device: where to place input tensors. Inferred from torch modules; with neither a
                device nor a module, the callables receive numpy arrays.
        """
        if self.num_tasks is None:
            raise ValueError(
                "cannot attach: the environment's task count is unknown (no num_tasks on "
                "env.unwrapped); pass QMPBehaviorWrapper(env, num_tasks=N)"
            )
        for fn, name in ((policy, "policy"), (q_function, "q_function")):
            if not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
        devices = {d for d in (_module_device(policy), _module_device(q_function)) if d is not None}
        if len(devices) > 1:
            raise ValueError(
                f"policy and q_function are on different devices: {sorted(map(str, devices))}"
            )
        if device is not None:
            device = torch.device(device)
            if devices and devices != {device}:
                raise ValueError(f"device={device} but the networks are on {devices.pop()}")
        torch_input = device is not None or bool(devices)
        self.device = (
            device if device is not None else (devices.pop() if devices else torch.device("cpu"))
        )
        self._policy = CallableAdapter(policy, "policy", torch_input, self.device)
        self._q_function = CallableAdapter(q_function, "q_function", torch_input, self.device)
        self._extras = [
            CallableAdapter(fn, f"extra policy {name!r}", False, self.device)
            for fn, name in zip(self.extra_policies, self.extra_policy_names, strict=True)
        ]

    def detach(self) -> None:
        """Forget the attached callables; actions pass through again."""
        self._policy = self._q_function = None
        self._extras = []

    @property
    def attached(self) -> bool:
        return self._policy is not None

    # -- diagnostics -----------------------------------------------------------------------
    @property
    def candidate_names(self) -> list[str]:
        names = None
        try:
            names = (
                list(self.env.get_attr("task_names")[0])
                if isinstance(self.env, VectorEnv)
                else list(self.env.get_wrapper_attr("task_names"))
            )
        except AttributeError:
            pass
        if names is None or len(names) != self.num_tasks:
            names = [f"task_{j}" for j in range(self.num_tasks or 0)]
        return names + self.extra_policy_names

    @property
    def selection_counts(self) -> np.ndarray:
        """Counts: row = task being collected, column = candidate executed."""
        if self._counts is None:
            raise ValueError("no selection statistics: the task count is unknown")
        return self._counts.copy()

    def selection_matrix(self, normalize: bool = True) -> np.ndarray:
        """The selection matrix; rows normalised to frequencies (rows never visited stay 0)."""
        counts = self.selection_counts.astype(np.float64)
        if not normalize:
            return counts
        totals = counts.sum(axis=1, keepdims=True)
        return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)

    def reset_selection_stats(self) -> None:
        if self._counts is not None:
            self._counts[:] = 0

    # -- the Q-switch ----------------------------------------------------------------------
    def _task_ids(self, obs: np.ndarray) -> np.ndarray:
        if self.task_id_fn is not None:
            task_ids = np.asarray(self.task_id_fn(obs), dtype=np.int64).reshape(-1)
            if task_ids.shape != (len(obs),) or np.any(
                (task_ids < 0) | (task_ids >= self.num_tasks)
            ):
                raise ValueError(
                    f"task_id_fn returned {task_ids.tolist()} for {len(obs)} observations"
                )
            return task_ids
        return read_one_hot_task(obs, self.num_tasks)

    def _relabel(self, obs: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        if self.relabel_fn is None:
            return relabel_one_hot(obs, task_ids, self.num_tasks)
        out = self.relabel_fn(obs.cpu().numpy(), task_ids.cpu().numpy())
        return torch.as_tensor(np.asarray(out, dtype=np.float32), device=obs.device)

    def _validate_actions(self, actions) -> np.ndarray:
        expected = (self.num_envs, self.action_dim)
        try:
            array = np.asarray(actions, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise TypeError(f"actions must be numeric, got {type(actions).__name__}") from err
        if array.shape != expected[self._batch_slice]:
            raise ValueError(
                f"actions have shape {array.shape}, expected {expected[self._batch_slice]}"
            )
        array = array.reshape(expected)
        if not np.isfinite(array).all():
            raise ValueError("the agent's actions contain NaN or inf")
        return array

    def _select(self, agent_actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Executed actions ``(B, A)`` and executed candidate indices ``(B,)``."""
        if self._last_obs is None:
            raise RuntimeError("call reset() before step()")
        sharing = self.enabled and self.attached
        if not sharing or self.num_tasks is None:
            own = self._task_ids(self._last_obs) if self.num_tasks is not None else None
            chosen = own if own is not None else np.full(self.num_envs, -1, dtype=np.int64)
            return agent_actions, chosen
        task_ids = self._task_ids(self._last_obs)
        num_candidates = self.num_tasks + len(self._extras)
        if num_candidates == 1:  # nothing to mix: the agent's action, bit for bit
            self._count(task_ids, task_ids)
            return agent_actions, task_ids

        device = self.device
        obs = torch.as_tensor(self._last_obs, dtype=torch.float32, device=device)
        task_tensor = torch.as_tensor(task_ids, device=device)
        candidates = propose(
            obs,
            task_tensor,
            torch.as_tensor(agent_actions, device=device),
            self._policy,
            self.num_tasks,
            self._relabel,
            self._extras,
        )
        needs_choice = self._hold_left <= 0
        chosen = self._held.copy()
        if needs_choice.any():
            scores = None
            if self.mixture != "uniform":
                scores = score(obs, candidates, self._q_function, self.scoring)
            fresh = choose(
                scores, num_candidates, self.num_envs, self.mixture, self.temperature, self.rng
            )
            chosen[needs_choice] = fresh[needs_choice]
            self._held[needs_choice] = fresh[needs_choice]
            self._hold_left[needs_choice] = self.hold_steps
        self._hold_left -= 1

        batch_index = torch.arange(self.num_envs, device=device)
        executed = candidates.sampled[batch_index, torch.as_tensor(chosen, device=device)]
        executed = executed.cpu().numpy().astype(np.float32)
        # The agent's own choice is copied bit for bit (no device round trip for it).
        own = chosen == task_ids
        executed[own] = agent_actions[own]
        self._count(task_ids, chosen)
        return executed, chosen

    def _count(self, task_ids: np.ndarray, chosen: np.ndarray) -> None:
        counted = ~self._resetting
        np.add.at(self._counts, (task_ids[counted], chosen[counted]), 1)

    def _after_step(self, obs, terminated, truncated) -> None:
        self._last_obs = np.asarray(obs, dtype=np.float32).reshape(self.num_envs, -1)
        done = np.asarray(terminated, dtype=bool).reshape(-1) | np.asarray(
            truncated, dtype=bool
        ).reshape(-1)
        # A new episode makes a fresh choice.
        self._hold_left[done] = 0
        # Under next-step autoreset the step after an episode end only resets that sub-env and
        # ignores its action: it is not a selection and is not counted.
        self._resetting = done & self._next_step_autoreset

    def _after_reset(self, obs, seed) -> None:
        if seed is not None:
            base_seed = seed if isinstance(seed, int) else int(np.asarray(seed).reshape(-1)[0])
            self.rng = np.random.default_rng(base_seed)
        self._last_obs = np.asarray(obs, dtype=np.float32).reshape(self.num_envs, -1)
        self._hold_left[:] = 0
        self._resetting[:] = False

    def __getstate__(self):
        # Attached networks are checkpointed by their owner; re-attach after unpickling.
        state = self.__dict__.copy()
        state["_policy"] = state["_q_function"] = None
        state["_extras"] = []
        return state


class QMPEnvBehaviorWrapper(QMPBehaviorWrapper, gym.Wrapper):
    """:class:`QMPBehaviorWrapper` for a single ``gymnasium.Env``."""

    _batch_slice = slice(1, 2)
    _next_step_autoreset = False

    def __init__(self, env: gym.Env, num_tasks: int | None = None, **options):
        if not isinstance(env, gym.Env):
            raise TypeError(f"expected a gymnasium Env or VectorEnv, got {type(env).__name__}")
        gym.Wrapper.__init__(self, env)
        self.num_envs = 1
        self.single_observation_space = env.observation_space
        self.single_action_space = env.action_space
        self._setup(num_tasks, **options)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._after_reset(obs, seed)
        return obs, info

    def step(self, action):
        agent_actions = self._validate_actions(action)
        executed, chosen = self._select(agent_actions)
        obs, reward, terminated, truncated, info = self.env.step(executed[0])
        self._after_step(obs, terminated, truncated)
        info = dict(info)
        info["qmp_action"] = executed[0]
        info["qmp_policy"] = int(chosen[0])
        return obs, reward, terminated, truncated, info


class QMPVectorBehaviorWrapper(QMPBehaviorWrapper, gym.vector.VectorWrapper):
    """:class:`QMPBehaviorWrapper` for a ``gymnasium.vector.VectorEnv``."""

    _batch_slice = slice(0, 2)

    def __init__(self, env: VectorEnv, num_tasks: int | None = None, **options):
        gym.vector.VectorWrapper.__init__(self, env)
        autoreset = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        self._next_step_autoreset = autoreset == AutoresetMode.NEXT_STEP
        self._setup(num_tasks, **options)

    def reset(self, *, seed=None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._after_reset(obs, seed)
        return obs, info

    def get_attr(self, name: str) -> tuple:
        """The sub-environments' attribute ``name`` (forwarded to the vector env)."""
        return self.env.get_attr(name)

    def call(self, name: str, *args, **kwargs) -> tuple:
        """Call method ``name`` of every sub-environment (forwarded to the vector env)."""
        return self.env.call(name, *args, **kwargs)

    def step(self, actions):
        agent_actions = self._validate_actions(actions)
        executed, chosen = self._select(agent_actions)
        obs, reward, terminated, truncated, info = self.env.step(executed)
        self._after_step(obs, terminated, truncated)
        info = dict(info)
        mask = np.ones(self.num_envs, dtype=bool)
        info["qmp_action"], info["_qmp_action"] = executed, mask
        info["qmp_policy"], info["_qmp_policy"] = chosen, mask.copy()
        return obs, reward, terminated, truncated, info
