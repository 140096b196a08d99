"""The multi-task environment API shared by every ``qmp/`` id.

Every observation is ``concat(features, one_hot(task_id, N))``: the last N entries are the task
id. A subclass only describes one task's dynamics (``_reset_task`` / ``_step_task``); this base
class owns task selection, the one-hot, input validation and the ``info`` keys that every family
must report (``task_id``, ``success``, ``episode_success``).
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from qmp_envs import validation
from qmp_envs.suites import SUITES, SuiteFacts
from qmp_envs.vectorisation import refuse_copied_vectorisation

TASK_SCHEDULES = ("cycle", "random")
#: Bound for features that are unbounded in principle: finite, so Gymnasium's checker accepts the
#: space, and never reached by a float32 observation that is itself finite.
FLOAT32_MAX = float(np.finfo(np.float32).max)
COMPAT_MODES = ("official", "fixed")
_BADQACC, _BADQVEL, _BADQPOS = (
    int(mujoco.mjtWarning.mjWARN_BADQACC),
    int(mujoco.mjtWarning.mjWARN_BADQVEL),
    int(mujoco.mjtWarning.mjWARN_BADQPOS),
)


def validate_choice(name: str, value: Any, choices: tuple) -> Any:
    """``value``, checked to be one of ``choices``.

    Args:
        name: how the message names the value.
        value: the value to check.
        choices: the allowed values.

    Returns:
        ``value`` itself.

    Raises:
        ValueError: ``value`` is not one of ``choices`` (the message names both).

    Example:
        >>> validate_choice("task_schedule", "cycle", ("cycle", "random"))
        'cycle'
    """
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def resolve_flag(name: str, value: Any, compat: str, official: Any, fixed: Any, choices: tuple):
    """A quirk flag's value: the given one, else the default of the ``compat`` mode.

    Args:
        name: the flag's name, for the message.
        value: the value given, or None for the mode's default.
        compat: ``"official"`` (the original code's behaviour) or another mode (the fix).
        official: the default under ``compat="official"``.
        fixed: the default otherwise.
        choices: the allowed values.

    Returns:
        The flag's value.

    Raises:
        ValueError: the value is not one of ``choices``.

    Example:
        >>> resolve_flag("sparse", None, "official", True, False, (True, False))
        True
    """
    if value is None:
        value = official if compat == "official" else fixed
    return validate_choice(name, value, choices)


def _attributes_from(facts: SuiteFacts) -> dict[str, Any]:
    return {
        "facts": facts,
        "task_names": list(facts.task_names),
        "feature_dim": facts.feature_dim,
        "action_dim": facts.action_dim,
        "agent_feature_mask": facts.agent_feature_mask,
        "min_reward": facts.min_reward,
        "eval_info_keys": facts.eval_info_keys,
        "default_eval_episodes": facts.eval_episodes,
        "has_eval_split": facts.has_eval_split,
    }


class RenderingUnavailableError(RuntimeError):
    """MuJoCo cannot render here: no OpenGL context (e.g. a machine without a display)."""


def make_renderer(model: mujoco.MjModel, height: int, width: int) -> mujoco.Renderer:
    """A MuJoCo renderer, or an error that says how to get one.

    MuJoCo's default backend (GLFW) needs a display; without one it fails deep inside
    ``mujoco.Renderer`` with a FatalError (and a second traceback from its ``__del__``). On a
    Linux machine with no display and no ``MUJOCO_GL`` the renderer is therefore not even tried.

    Args:
        model: the model to render.
        height: image height in pixels.
        width: image width in pixels.

    Returns:
        The renderer.

    Raises:
        RenderingUnavailableError: no OpenGL context can be made; the message names the fix.
    """
    backend = os.environ.get("MUJOCO_GL", "")
    fix = (
        "on a machine without a display set MUJOCO_GL=egl (or osmesa) before Python starts, "
        "e.g. `MUJOCO_GL=egl python ...`"
    )
    headless = not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if sys.platform.startswith("linux") and headless and backend in ("", "glfw"):
        raise RenderingUnavailableError(
            f"MuJoCo cannot render: no display and MUJOCO_GL={backend or 'unset'} (GLFW); {fix}"
        )
    try:
        return mujoco.Renderer(model, height=height, width=width)
    except mujoco.FatalError as error:
        raise RenderingUnavailableError(
            f"MuJoCo cannot render with MUJOCO_GL={backend or 'unset'}: {error}; {fix}"
        ) from None


class MultiTaskEnv(gym.Env):
    """Base class: N tasks behind one Gymnasium interface.

    A subclass names its suite (``class MyEnv(MultiTaskEnv, suite="qmp/My-v0")``), whose frozen
    description in :mod:`qmp_envs.suites` supplies ``task_names``, ``feature_dim``,
    ``action_dim``, ``agent_feature_mask``, ``min_reward`` and the evaluation constants, and
    implements ``_reset_task`` and ``_step_task``.

    Args:
        task: ``None`` to change task at every reset (see ``task_schedule``), or an int to pin
            the env to one task.
        task_schedule: ``"cycle"`` (round robin 0, 1, ..., N-1, 0, ...) or ``"random"`` (a
            uniform draw from ``np_random``) when ``task`` is ``None``.
        render_mode: ``None`` or ``"rgb_array"``.

    Raises:
        TypeError: ``task`` is not an int (a bool neither).
        ValueError: ``task`` out of range, an unknown ``task_schedule`` or ``render_mode``.
        gymnasium.error.Error: an unpinned env built as one of N identical copies
            (``gym.make_vec(id, vectorization_mode=...)``, torchrl's ``GymEnv(id,
            num_envs=N)``), which would all run task 0: use ``gym.make_vec(id)``
            (:mod:`qmp_envs.vectorisation`).

    ``reset(options={"task": k})`` overrides the schedule for one episode. ``reset(seed=s)``
    reseeds and restarts the cycle at task 0, so a seeded reset reproduces a rollout exactly.

    Refused with a clear error: reset options other than ``task`` (a typo such as ``"tsak"``, a
    seed given as an option rather than ``reset(seed=...)``), options that are not a dict, a
    negative or non-integer seed; actions of the wrong shape, with NaN or inf, or of a boolean
    or complex dtype; ``step`` or ``reset`` after ``close``. NumPy integer seeds and task
    indices and torch action tensors (also those with ``requires_grad``) are accepted.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 25}

    task_names: list[str]
    feature_dim: int
    action_dim: int
    agent_feature_mask: np.ndarray
    min_reward: float
    #: Lower and upper bound of every feature (scalars or arrays of length ``feature_dim``).
    feature_bounds: tuple = (-FLOAT32_MAX, FLOAT32_MAX)
    #: Boolean ``info`` keys that the evaluation helper aggregates besides ``success``.
    eval_info_keys: tuple[str, ...] = ()
    #: Evaluation episodes per task in the paper's protocol for this family.
    default_eval_episodes: int = 10
    #: True where the family has separate train and eval instances (``split="eval"``).
    has_eval_split: bool = False
    #: The keys ``reset(options=...)`` reads; any other key is refused (a typo is not ignored).
    reset_options: tuple[str, ...] = ("task",)
    #: Set by :meth:`close`; a closed env refuses ``step`` and ``reset`` (a class attribute, so
    #: envs pickled before it existed unpickle open).
    _closed: bool = False

    #: The suite's frozen description (set by ``suite=`` or :meth:`_use_facts`).
    facts: SuiteFacts

    def __init_subclass__(cls, suite: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if suite is not None:
            for name, value in _attributes_from(SUITES[suite]).items():
                setattr(cls, name, value)

    def _use_facts(self, facts: SuiteFacts) -> None:
        """For a class that serves several ids (Meta-World MT10/MT50): this instance's facts."""
        for name, value in _attributes_from(facts).items():
            setattr(self, name, value)

    def __init__(
        self,
        task: int | None = None,
        task_schedule: str = "cycle",
        render_mode: str | None = None,
    ):
        self.num_tasks = len(self.task_names)
        if task is None:
            # N copies of an unpinned env would all run task 0: refuse make_vec(sync/async).
            refuse_copied_vectorisation(getattr(self, "facts", None) and self.facts.env_id)
        self.task_schedule = validate_choice("task_schedule", task_schedule, TASK_SCHEDULES)
        self.pinned_task = None if task is None else self._check_task(task, "task")
        self.render_mode = validate_choice(
            "render_mode", render_mode, (None, *self.metadata["render_modes"])
        )
        low, high = (
            np.broadcast_to(np.asarray(bound, dtype=np.float32), (self.feature_dim,))
            for bound in self.feature_bounds
        )
        # The last N entries are the one-hot task id, always in [0, 1].
        self.observation_space = spaces.Box(
            np.concatenate([low, np.zeros(self.num_tasks, np.float32)]),
            np.concatenate([high, np.ones(self.num_tasks, np.float32)]),
            dtype=np.float32,
        )
        self.action_space = spaces.Box(-1.0, 1.0, shape=(self.action_dim,), dtype=np.float32)
        self.task_id = self.pinned_task if self.pinned_task is not None else 0
        self._cycle_position = 0
        self._episode_success = False
        self._obs = np.zeros(self.observation_space.shape, dtype=np.float32)
        #: End episodes at their first success (Meta-World's evaluation protocol toggles it).
        self.terminate_on_success = False

    # -- task selection --------------------------------------------------------------------
    def _check_task(self, task: Any, name: str) -> int:
        if isinstance(task, bool) or not isinstance(task, int | np.integer):
            raise TypeError(f"{name} must be an int task index, got {type(task).__name__}")
        if not 0 <= int(task) < self.num_tasks:
            raise ValueError(
                f"unknown task {int(task)}: {type(self).__name__} has {self.num_tasks} tasks "
                f"(valid indices 0..{self.num_tasks - 1}: {self.task_names})"
            )
        return int(task)

    def _check_reset_options(self, options: Any) -> None:
        if options is None:
            return
        if not isinstance(options, dict):
            raise validation.InputTypeError(
                f"reset options must be a dict such as {{'task': index}} or None, got {options!r}"
            )
        if "seed" in options:
            raise ValueError(
                "reset option 'seed' is not read: pass the seed as reset(seed=...), not in options"
            )
        for near_miss in ("task_id", "task_index", "task_name"):
            if options and near_miss in options:
                raise ValueError(
                    f"reset option {near_miss!r} is not read; choose the task with "
                    f"options={{'task': index}} (0..{self.num_tasks - 1}: {self.task_names})"
                )
        unknown = sorted(str(key) for key in options if key not in self.reset_options)
        if unknown:
            raise ValueError(
                f"unknown reset options {unknown}: {type(self).__name__} reads only "
                f"{list(self.reset_options)} (e.g. options={{'task': index}}, index "
                f"0..{self.num_tasks - 1})"
            )

    def _next_task(self, options: dict | None) -> int:
        if options and options.get("task") is not None:
            return self._check_task(options["task"], "options['task']")
        if self.pinned_task is not None:
            return self.pinned_task
        if self.task_schedule == "random":
            return int(self.np_random.integers(self.num_tasks))
        task = self._cycle_position % self.num_tasks
        self._cycle_position += 1
        return task

    # -- observation -----------------------------------------------------------------------
    def _observation(self, features: np.ndarray) -> np.ndarray:
        obs = self._obs
        obs[: self.feature_dim] = features
        obs[self.feature_dim :] = 0.0
        obs[self.feature_dim + self.task_id] = 1.0
        return obs.copy()

    # -- Gymnasium API ---------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode of the next task (or of ``options["task"]``).

        Args:
            seed: reseeds ``np_random`` and restarts the task cycle at task 0.
            options: ``{"task": k}`` runs task k this episode; nothing else is read.

        Returns:
            ``(observation, info)``; ``info`` holds ``task_id``, ``success`` and
            ``episode_success`` (both False) and the family's own keys.

        Raises:
            gymnasium.error.ClosedEnvironmentError: the env was closed.
            qmp_envs.validation.InputTypeError: a seed that is not an integer, or options that
                are not a dict.
            qmp_envs.validation.InputError: a negative seed.
            ValueError: an option other than ``task`` (the message names the likely intent),
                or a task out of range (``TypeError`` if it is not an int).
        """
        self._refuse_if_closed("reset")
        seed = validation.seed("seed", seed)  # Gymnasium refuses NumPy integers
        self._check_reset_options(options)
        super().reset(seed=seed)
        if seed is not None:
            self._cycle_position = 0
        self.task_id = self._next_task(options)
        self._episode_success = False
        features, info = self._reset_task(self.task_id)
        info = {"task_id": self.task_id, "success": False, "episode_success": False, **info}
        return self._observation(features), info

    def step(self, action):
        """Execute ``action`` (clipped to [-1, 1]) in the current task.

        Args:
            action: ``(action_dim,)`` real numbers (NumPy arrays, lists or torch tensors).

        Returns:
            ``(observation, reward, terminated, truncated, info)``; ``info`` holds
            ``task_id``, ``success`` (this step) and ``episode_success`` (any step so far).

        Raises:
            gymnasium.error.ClosedEnvironmentError: the env was closed.
            qmp_envs.validation.InputTypeError: a boolean, complex or non-numeric action.
            qmp_envs.validation.InputError: the wrong shape, or NaN or inf.
        """
        self._refuse_if_closed("step")
        action = self._validate_action(action)
        features, reward, terminated, info = self._step_task(action)
        success = bool(info["success"])
        self._episode_success = self._episode_success or success
        info["task_id"] = self.task_id
        info["success"] = success
        info["episode_success"] = self._episode_success
        terminated = bool(terminated) or (self.terminate_on_success and success)
        truncated = self._time_limit_reached(terminated)
        return self._observation(features), float(reward), terminated, truncated, info

    def close(self) -> None:
        """Release the env's resources; ``step`` and ``reset`` are refused afterwards."""
        self._closed = True

    def _refuse_if_closed(self, call: str) -> None:
        if self._closed:
            raise gym.error.ClosedEnvironmentError(
                f"{call}() on a closed {type(self).__name__}: build a new env (gym.make) "
                "instead of reusing a closed one"
            )

    def toggle_terminate_on_success(self, on: bool) -> None:
        """Whether episodes end at their first success (the name Meta-World's tools call).

        Args:
            on: True ends an episode at its first success.
        """
        self.terminate_on_success = bool(on)

    @property
    def task_name(self) -> str:
        """The name of the current task."""
        return self.task_names[self.task_id]

    def _validate_action(self, action) -> np.ndarray:
        action = validation.real_array(
            "action", action, shape=self.action_space.shape, context=f" for {type(self).__name__}"
        )
        # The original pipeline clipped every family's actions to [-1, 1] in a wrapper.
        # (Two ufuncs instead of np.clip: this is the hot path of every env step.)
        return np.minimum(np.maximum(action, -1.0), 1.0)

    def _time_limit_reached(self, terminated: bool) -> bool:
        """Truncation the env signals itself; the registration's ``TimeLimit`` does it for every
        family except those whose facts say ``env_owns_time_limit`` (Walker)."""
        return False

    # -- to implement ----------------------------------------------------------------------
    def _reset_task(self, task_id: int) -> tuple[np.ndarray, dict]:
        raise NotImplementedError

    def _step_task(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, dict]:
        """Return ``(features, reward, terminated, info)``; ``info`` must hold ``success``."""
        raise NotImplementedError


class MujocoMultiTaskEnv(MultiTaskEnv):
    """A multi-task env driven by the official ``mujoco`` bindings.

    Physics stepping follows Gymnasium's ``MujocoEnv.do_simulation``: write ``ctrl``, take
    ``frame_skip`` ``mj_step``s and do not call ``mj_forward`` afterwards, so body positions read
    after a step lag one substep, exactly as in mujoco-py 2.1 (spec section 2.7).

    Args:
        model: the compiled MuJoCo model (the subclass sets ``frame_skip``).
        task: as :class:`MultiTaskEnv`.
        task_schedule: as :class:`MultiTaskEnv`.
        render_mode: as :class:`MultiTaskEnv`.
        width: width of rendered frames, in pixels.
        height: height of rendered frames, in pixels.
        camera: the camera rendered frames are seen from (index or name; -1: the free camera).

    Raises:
        As :class:`MultiTaskEnv`.
    """

    frame_skip: int

    def __init__(
        self,
        model: mujoco.MjModel,
        *,
        task: int | None = None,
        task_schedule: str = "cycle",
        render_mode: str | None = None,
        width: int = 480,
        height: int = 480,
        camera: int | str = -1,
    ):
        super().__init__(task=task, task_schedule=task_schedule, render_mode=render_mode)
        self.model = model
        self.bind_data(mujoco.MjData(model))
        self.init_qpos = self.data.qpos.copy()
        self.init_qvel = self.data.qvel.copy()
        self.width, self.height, self.camera = int(width), int(height), camera
        self._renderer: mujoco.Renderer | None = None
        self.metadata = {**self.metadata, "render_fps": int(round(1.0 / self.dt))}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """:meth:`MultiTaskEnv.reset`, after clearing MuJoCo's data (solver warm start too).

        Args:
            seed: as :meth:`MultiTaskEnv.reset`.
            options: as :meth:`MultiTaskEnv.reset`.

        Returns:
            ``(observation, info)``.

        Raises:
            As :meth:`MultiTaskEnv.reset`.
        """
        # Clear everything, solver warm-start included, so a seeded reset replays exactly.
        mujoco.mj_resetData(self.model, self.data)
        return super().reset(seed=seed, options=options)

    @property
    def dt(self) -> float:
        return float(self.model.opt.timestep) * self.frame_skip

    def set_state(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Set joint positions and velocities (and zero actuator states), then ``mj_forward``.

        Args:
            qpos: joint positions, shape ``(model.nq,)``.
            qvel: joint velocities, shape ``(model.nv,)``.
        """
        self.data.qpos[:] = qpos
        self.data.qvel[:] = qvel
        if self.model.na:
            self.data.act[:] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def do_simulation(self, ctrl: np.ndarray, n_frames: int | None = None) -> bool:
        """Step the physics with control ``ctrl``.

        Args:
            ctrl: the actuator controls, shape ``(model.nu,)``.
            n_frames: substeps to take; ``frame_skip`` when None.

        Returns:
            True if the simulation became unstable during these substeps (MuJoCo warned of a
            bad acceleration, velocity or position, or a state is NaN or inf).
        """
        self.data.ctrl[:] = ctrl
        warnings_before = self._instability_warnings()
        mujoco.mj_step(
            self.model, self.data, nstep=self.frame_skip if n_frames is None else n_frames
        )
        # MuJoCo 3 does not raise: it counts a warning and may reset MjData (spec 2.7).
        if self._instability_warnings() > warnings_before:
            return True
        # A non-finite value produced in the last substep is only flagged by MuJoCo at the next
        # step; one dot product catches NaN or inf in either vector now (and stays cheap).
        qpos, qvel = self.data.qpos, self.data.qvel
        return not math.isfinite(qpos.dot(qpos) + qvel.dot(qvel))

    def bind_data(self, data: mujoco.MjData) -> None:
        """Use ``data`` as this env's MjData (a plain attribute: it is read on every step).

        Args:
            data: the MjData of this env's model.
        """
        self.data = data
        # A live view of MjData's warning counters, read twice per step (hot path).
        self._warning_counts = data.warning.number

    def _instability_warnings(self) -> int:
        counts = self._warning_counts
        return int(counts[_BADQACC] + counts[_BADQVEL] + counts[_BADQPOS])

    def render(self):
        """The current frame, seen from ``camera``.

        Returns:
            A ``(height, width, 3)`` uint8 image under ``render_mode="rgb_array"``, else None.

        Raises:
            RenderingUnavailableError: MuJoCo cannot get an OpenGL context on this machine.
        """
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            self._renderer = make_renderer(self.model, self.height, self.width)
        self._renderer.update_scene(self.data, camera=self.camera)
        return self._renderer.render()

    def close(self):
        """Release the renderer; ``step`` and ``reset`` are refused afterwards."""
        super().close()
        self._close_renderer()

    def _close_renderer(self) -> None:
        """Drop the renderer (rebuilt lazily); the env stays usable."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    #: Model fields an env may edit at run time (kept by state-only pickling).
    _MUTABLE_MODEL_FIELDS = (
        "body_pos",
        "body_quat",
        "site_pos",
        "site_quat",
        "geom_pos",
        "geom_quat",
    )

    def _build_model(self) -> mujoco.MjModel | None:
        """Rebuild this env's model from its source, or None to pickle MjModel and MjData whole.

        Envs with large models (meshes) return it, so checkpoints keep only MuJoCo's integration
        state and the editable model fields instead of the whole model and data.
        """
        return None

    def __getstate__(self):
        # OpenGL contexts cannot be pickled; a renderer is rebuilt lazily after unpickling.
        state = self.__dict__.copy()
        state["_renderer"] = None
        del state["_warning_counts"]  # a view into MjData: rebuilt from it after unpickling
        if self._build_model() is not None:
            model, data = state.pop("model"), state.pop("data")
            sim_state = np.empty(mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_INTEGRATION))
            mujoco.mj_getState(model, data, sim_state, mujoco.mjtState.mjSTATE_INTEGRATION)
            state["_sim_state"] = sim_state
            state["_model_fields"] = {
                f: getattr(model, f).copy() for f in self._MUTABLE_MODEL_FIELDS
            }
        return state

    def __setstate__(self, state):
        sim_state = state.pop("_sim_state", None)
        model_fields = state.pop("_model_fields", None)
        self.__dict__.update(state)
        if sim_state is not None:
            self.model = self._build_model()
            for name, values in model_fields.items():
                getattr(self.model, name)[:] = values
            data = mujoco.MjData(self.model)
            kind = mujoco.mjtState.mjSTATE_INTEGRATION
            mujoco.mj_setState(self.model, data, sim_state, kind)
            mujoco.mj_forward(self.model, data)  # derived quantities
            mujoco.mj_setState(self.model, data, sim_state, kind)  # keep the warm start
            state["data"] = data
        self.bind_data(state["data"])
