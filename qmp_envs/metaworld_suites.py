"""Meta-World MT10 and MT50 behind the qmp/ multi-task API (spec section 8).

Each task is Meta-World 3.1.1's own ``*-v3`` environment (reward version v2 by default) with its
50 goal variations. Unlike Meta-World's vector-only MT10/MT50 ids, these work with ``gym.make``
(one env over the tasks) and ``gym.make_vec`` (one sub-env per task), and take the goal seed at
construction (``seed=S``; the evaluation split uses S + 100).

Construction is lazy: an env builds a task's Meta-World env and draws its goals only when that
task is first used, and goal sets are cached per process, so a pinned MT50 sub-env never builds
the other 49 tasks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import mujoco
import numpy as np

from qmp_envs.multitask import MultiTaskEnv, validate_choice
from qmp_envs.suites import SUITES

BENCHMARKS = {"MT10": "qmp/MetaWorldMT10-v0", "MT50": "qmp/MetaWorldMT50-v0"}
MT10_TASKS = list(SUITES[BENCHMARKS["MT10"]].task_names)
MT50_TASKS = list(SUITES[BENCHMARKS["MT50"]].task_names)
EVAL_SEED_OFFSET = 100
NUM_VARIATIONS = 50
SPLITS = ("train", "eval")


@functools.cache
def goal_variations(task_name: str, seed: int) -> tuple:
    """The 50 goal variations of one task, drawn by Meta-World's own sampler with ``seed``.

    Drawn per task (Meta-World's ``MT1(name, seed)``) rather than for the whole benchmark at
    once, so one task's goals never require building the other tasks' environments.
    """
    import metaworld

    return tuple(metaworld.MT1(f"{task_name}-v3", seed=seed).train_tasks)


class MetaWorldSuiteEnv(MultiTaskEnv):
    """Shared machinery of the Meta-World suites: one Meta-World env per task, built lazily,
    a cycled goal variation per reset, and exact pickling. Subclasses say how to build a
    task's env (:meth:`_make_task_env`) and how to apply a variation (:meth:`_set_variation`).

    Args:
        seed: seed of the goal variations (the evaluation split uses ``seed + 100``).
        split: ``"train"`` or ``"eval"``: which goal set the env cycles through.
        reward_function_version: Meta-World's ``"v2"`` (default, the paper's) or ``"v1"``.
        tasks: optional subset of task indices this env may use (others raise an error), so a
            few tasks can be run without building the rest.
        render_mode: ``None`` or ``"rgb_array"``.
        width: width of rendered frames, in pixels.
        height: height of rendered frames, in pixels.
        camera_name: the Meta-World camera rendered frames are seen from.
        **kwargs: the arguments of :class:`~qmp_envs.multitask.MultiTaskEnv` (``task``,
            ``task_schedule``).

    Raises:
        TypeError: ``seed`` is not an int (a bool neither); a task index that is not an int.
        ValueError: an unknown ``split`` or ``reward_function_version``; ``tasks=[]``, a task
            index out of range, or a pinned ``task`` not among ``tasks``; the errors of
            :class:`~qmp_envs.multitask.MultiTaskEnv`.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(
        self,
        seed: int = 0,
        split: str = "train",
        reward_function_version: str = "v2",
        tasks: list[int] | None = None,
        render_mode: str | None = None,
        width: int = 480,
        height: int = 480,
        camera_name: str = "corner",
        **kwargs: Any,
    ):
        self.split = validate_choice("split", split, SPLITS)
        self.reward_function_version = validate_choice(
            "reward_function_version", reward_function_version, ("v1", "v2")
        )
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self.goal_seed = int(seed) + (EVAL_SEED_OFFSET if split == "eval" else 0)
        super().__init__(render_mode=render_mode, **kwargs)
        if tasks is not None:
            tasks = [self._check_task(t, f"tasks[{i}]") for i, t in enumerate(tasks)]
            if not tasks:
                raise ValueError(
                    f"tasks=[] names no task: pass task indices (0..{self.num_tasks - 1}), or "
                    "omit tasks (None) for all of them"
                )
        elif self.pinned_task is not None:
            tasks = [self.pinned_task]
        self.allowed_tasks = None if tasks is None else sorted(set(tasks))
        if self.pinned_task is not None and self.pinned_task not in (self.allowed_tasks or []):
            raise ValueError(f"task {self.pinned_task} is not among tasks={tasks}")
        self._render_kwargs = {"width": width, "height": height, "camera_name": camera_name}
        self._envs: dict[int, Any] = {}
        self._orders: dict[int, list[int]] = {}
        self._env: Any = None  # the current task's Meta-World env
        self._env_task: int | None = None

    # -- lazy construction -----------------------------------------------------------------
    def task_env(self, task_id: int):
        """The Meta-World env of one task, built on first use.

        Args:
            task_id: the task's index.

        Returns:
            Its Meta-World env (kept for later calls).

        Raises:
            ValueError: the task is not among this env's ``tasks``.
        """
        if self.allowed_tasks is not None and task_id not in self.allowed_tasks:
            raise ValueError(
                f"task {task_id} ({self.task_names[task_id]}) is not among this env's tasks "
                f"{self.allowed_tasks}"
            )
        if task_id not in self._envs:
            self._envs[task_id] = self._make_task_env(task_id, **self._task_env_kwargs())
        return self._envs[task_id]

    def _make_task_env(self, task_id: int, **kwargs: Any):
        raise NotImplementedError

    def _set_variation(self, env, task_id: int, variation: int) -> None:
        raise NotImplementedError

    def _task_env_kwargs(self) -> dict:
        return {
            "reward_function_version": self.reward_function_version,
            "render_mode": self.render_mode,
            **self._render_kwargs,
        }

    def _next_task(self, options: dict | None) -> int:
        overridden = options is not None and options.get("task") is not None
        if overridden or self.allowed_tasks is None or self.pinned_task is not None:
            return super()._next_task(options)
        # The schedule runs over the allowed subset only.
        if self.task_schedule == "random":
            return int(self.np_random.choice(self.allowed_tasks))
        task = self.allowed_tasks[self._cycle_position % len(self.allowed_tasks)]
        self._cycle_position += 1
        return task

    @property
    def task_name(self) -> str:
        """Meta-World's class name of the current task (e.g. ``SawyerReachEnvV3``), which is
        what ``metaworld.evaluation.evaluation`` maps back to a task; ``task_names`` holds ours."""
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        return ALL_V3_ENVIRONMENTS[f"{self.task_names[self.task_id]}-v3"].__name__

    def _next_variation(self, task_id: int) -> int:
        order = self._orders.get(task_id)
        if not order:
            order = self._orders[task_id] = list(self.np_random.permutation(NUM_VARIATIONS))
        return int(order.pop(0))

    # -- MultiTaskEnv hooks ----------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """:meth:`MultiTaskEnv.reset <qmp_envs.multitask.MultiTaskEnv.reset>`, with the next
        goal variation of the task; a seed also restarts the variation orders.

        Args:
            seed: as :meth:`~qmp_envs.multitask.MultiTaskEnv.reset`.
            options: as :meth:`~qmp_envs.multitask.MultiTaskEnv.reset`.

        Returns:
            ``(observation, info)``.

        Raises:
            As :meth:`~qmp_envs.multitask.MultiTaskEnv.reset`; ``ValueError`` for a task not
            among ``tasks``.
        """
        if seed is not None:
            self._orders.clear()  # a seeded reset replays the same variation order
        return super().reset(seed=seed, options=options)

    def _reset_task(self, task_id: int):
        env = self.task_env(task_id)
        variation = self._next_variation(task_id)
        self._set_variation(env, task_id, variation)
        obs, _ = env.reset()
        self._env, self._env_task = env, task_id
        return obs, {"variation": variation}

    def _step_task(self, action: np.ndarray):
        obs, reward, _, _, info = self._env.step(action.astype(np.float32))
        info = dict(info)
        info["success"] = bool(info["success"])
        # Meta-World episodes never terminate; TimeLimit truncates at 500 steps.
        return obs, float(reward), False, info

    def render(self):
        """The current task's Meta-World frame, seen from ``camera_name``.

        Returns:
            An RGB image under ``render_mode="rgb_array"`` once a task's env exists, else None.
        """
        if self.render_mode != "rgb_array" or self._env is None:
            return None
        return self._env.render()

    def close(self):
        """Close every task's Meta-World env; ``step`` and ``reset`` are refused afterwards."""
        super().close()
        for env in self._envs.values():
            env.close()
        self._envs.clear()
        self._env = None

    # -- pickling (checkpoints) ------------------------------------------------------------
    # Meta-World envs pickle through EzPickle, which rebuilds them from constructor arguments
    # and loses the simulation state; pickling MjModel and MjData whole costs ~40 MB a task.
    # A checkpoint keeps what a rebuilt env lacks: its Python attributes, the model arrays
    # Meta-World edits at reset, and MuJoCo's full integration state.
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_envs"] = {
            task: _export_env(env, self._task_env_kwargs()) for task, env in self._envs.items()
        }
        state["_env"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._envs = {task: _import_env(exported) for task, exported in state["_envs"].items()}
        self._env = None if self._env_task is None else self._envs[self._env_task]


class MetaWorldMTEnv(MetaWorldSuiteEnv):
    """Meta-World MT10 or MT50 as one multi-task env.

    Args:
        benchmark: ``"MT10"`` or ``"MT50"``.
        seed: seed of the goal variations (the evaluation split uses ``seed + 100``).
        split: ``"train"`` or ``"eval"``: which goal set the env cycles through.
        reward_function_version: Meta-World's ``"v2"`` (default, the paper's) or ``"v1"``.
        tasks: optional subset of task indices this env may use (others raise an error), so a
            few MT50 tasks can be run without building the rest.
        **kwargs: the other arguments of :class:`MetaWorldSuiteEnv` (``render_mode``, ``task``,
            ...).

    Raises:
        ValueError: an unknown ``benchmark``; the errors of :class:`MetaWorldSuiteEnv`.

    Each reset takes the next goal variation of the task from a shuffled order, reshuffled
    after every full pass (drawn from ``np_random``), so 50 episodes visit each variation once.

    >>> import gymnasium as gym, qmp_envs
    >>> env = gym.make("qmp/MetaWorldMT10-v0", task=0, seed=0)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, env.unwrapped.task_names[info["task_id"]]
    ((49,), 'reach')
    """

    def __init__(self, benchmark: str = "MT10", **kwargs: Any):
        validate_choice("benchmark", benchmark, tuple(BENCHMARKS))
        self._use_facts(SUITES[BENCHMARKS[benchmark]])
        self.benchmark = benchmark
        super().__init__(**kwargs)

    def _make_task_env(self, task_id: int, **kwargs: Any):
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        return ALL_V3_ENVIRONMENTS[f"{self.task_names[task_id]}-v3"](**kwargs)

    def _set_variation(self, env, task_id: int, variation: int) -> None:
        env.set_task(goal_variations(self.task_names[task_id], self.goal_seed)[variation])


# Model fields Meta-World's resets write (object and goal placements).
_MUTABLE_MODEL_FIELDS = ("body_pos", "body_quat", "site_pos", "site_quat", "geom_pos", "geom_quat")
_FULL_STATE = mujoco.mjtState.mjSTATE_INTEGRATION


def _mujoco_buffers(env) -> dict[tuple[str, str], np.ndarray]:
    buffers = {}
    for owner in ("model", "data"):
        obj = getattr(env, owner)
        for name in dir(obj):
            if not name.startswith("_"):
                value = getattr(obj, name, None)
                if isinstance(value, np.ndarray) and value.size:
                    buffers[(owner, name)] = value
    return buffers


def _find_view(array: np.ndarray, buffers: dict) -> tuple | None:
    """``(owner, field, start, shape)`` if ``array`` is a contiguous view into a MuJoCo buffer."""
    if array.base is None or not array.flags.c_contiguous:
        return None
    for key, buffer in buffers.items():
        if np.shares_memory(array, buffer):
            offset = array.__array_interface__["data"][0] - buffer.__array_interface__["data"][0]
            return (*key, offset // buffer.itemsize, array.shape)
    return None


def _export_env(env, constructor_kwargs: dict) -> tuple:
    # Some attributes are live views into MjData (e.g. get_body_com results kept as "initial"
    # positions): record where they point so the rebuilt env's attributes keep tracking its data.
    buffers = _mujoco_buffers(env)
    attributes, views = {}, {}
    for key, value in env.__dict__.items():
        if key in ("model", "data", "mujoco_renderer"):
            continue
        view = _find_view(value, buffers) if isinstance(value, np.ndarray) else None
        if view is not None:
            views[key] = view
        else:
            attributes[key] = value
    attributes["_qmp_views"] = views
    model_fields = {name: getattr(env.model, name).copy() for name in _MUTABLE_MODEL_FIELDS}
    sim_state = np.empty(mujoco.mj_stateSize(env.model, _FULL_STATE))
    mujoco.mj_getState(env.model, env.data, sim_state, _FULL_STATE)
    return type(env), constructor_kwargs, attributes, model_fields, sim_state


def _import_env(exported: tuple):
    cls, constructor_kwargs, attributes, model_fields, sim_state = exported
    env = cls(**constructor_kwargs)
    attributes = dict(attributes)
    for key, (owner, field, start, shape) in attributes.pop("_qmp_views").items():
        flat = getattr(getattr(env, owner), field).reshape(-1)
        attributes[key] = flat[start : start + int(np.prod(shape))].reshape(shape)
    env.__dict__.update(attributes)
    for name, values in model_fields.items():
        getattr(env.model, name)[:] = values
    mujoco.mj_setState(env.model, env.data, sim_state, _FULL_STATE)
    mujoco.mj_forward(env.model, env.data)  # derived quantities (positions, contacts)
    mujoco.mj_setState(env.model, env.data, sim_state, _FULL_STATE)  # keep the warm start
    return env


def scripted_policy(env_id: str) -> Callable[[np.ndarray], np.ndarray]:
    """Meta-World's own scripted expert of each task, batched over our observation layout.

    Row m is answered by the expert of the task in its one-hot (the last N entries); the expert
    sees Meta-World's 39 features. Useful as a known-good agent for evaluation checks.

    Args:
        env_id: a Meta-World ``qmp/`` id (``qmp/MetaWorldMT10-v0``, ``qmp/MetaWorldMT50-v0``).

    Returns:
        ``obs (B, D) -> actions (B, 4)`` float32.

    Raises:
        KeyError: an unknown id, or one whose tasks have no Meta-World expert.
    """
    from metaworld.policies import ENV_POLICY_MAP

    facts = SUITES[env_id]
    experts = [ENV_POLICY_MAP[f"{name}-v3"]() for name in facts.task_names]  # type: ignore[abstract]

    def policy(obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        tasks = obs[:, facts.feature_dim :].argmax(axis=1)
        features = obs[:, : facts.feature_dim]
        return np.stack(
            [experts[t].get_action(row) for t, row in zip(tasks, features, strict=True)]
        ).astype(np.float32)

    return policy
