"""Walker2d, 4 tasks: forward, backward, balance and crawl under a ceiling (spec section 6).

Built with ``mujoco.MjSpec`` from Gymnasium's installed ``walker2d_v5.xml`` plus the spec's
changes: the right foot's friction back to 0.9 (the original's asymmetric feet), cosmetic target
boxes, and, for crawl, a low ceiling and the obstacles the original left behind the start.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium.envs.mujoco
import mujoco
import numpy as np

from qmp_envs.multitask import COMPAT_MODES, MujocoMultiTaskEnv, resolve_flag, validate_choice

WALKER_V5_XML = Path(gymnasium.envs.mujoco.__file__).parent / "assets" / "walker2d_v5.xml"
FORWARD, BACKWARD, BALANCE, CRAWL = range(4)
TARGET_SPEED = 3.0
CEILING_POS = (8.0, 0.0, 1.0)
# (name, half-size, centre): the crawl obstacles of spec section 6.2.
CRAWL_OBSTACLES = [
    ("ceiling_long", (6.0, 2.0, 0.1), CEILING_POS),
    ("ceiling1", (1.5, 2.0, 0.1), (-10.0, 0.0, 1.0)),
    ("ceiling2", (1.5, 2.0, 0.1), (-10.0, 0.0, 1.0)),
] + [(f"curb{i}", (0.1, 2.0, 0.2), (-5.0, 0.0, 0.2)) for i in range(1, 6)]


def build_walker_model(crawl: bool) -> mujoco.MjModel:
    """Gymnasium's Walker2d v5 model with the suite's floor, target markers and obstacles.

    Args:
        crawl: add the crawl task's obstacles (and a longer floor).

    Returns:
        The compiled model.
    """
    spec = mujoco.MjSpec.from_file(str(WALKER_V5_XML))
    spec.geom("foot_geom").friction[0] = 0.9
    spec.geom("floor").size[:2] = (80.0, 2.0) if crawl else (40.0, 2.0)
    for name in ("target_forward", "target_backward"):
        spec.worldbody.add_geom(
            name=name,
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=(0.1, 0.25, 0.01),
            contype=0,
            conaffinity=0,
            rgba=(0.8, 0.8, 0.8, 1.0),
        )
    if crawl:
        for name, half_size, centre in CRAWL_OBSTACLES:
            spec.worldbody.add_geom(
                name=name,
                type=mujoco.mjtGeom.mjGEOM_BOX,
                size=half_size,
                pos=centre,
                contype=1,
                conaffinity=1,
                condim=3,
                friction=(0.7, 0.1, 0.1),
                rgba=(0.5, 0.5, 0.6, 1.0),
            )
    return spec.compile()


class Walker2dMTEnv(MujocoMultiTaskEnv, suite="qmp/Walker2dMT4-v0"):
    """Walker2d with four tasks; the paper reports average return, not success.

    Args:
        compat: ``"fixed"`` (default) or ``"official"``.
        timeout_as_terminal: ``True`` reproduces the original, whose env returned ``done`` at
            t = 1000 so the last transition was stored as terminal (default under
            ``compat="official"``); ``False`` ends it as a truncation (``"fixed"``).
        horizon: episode length, 1000 by default (the suite's ``max_episode_steps``).
        **kwargs: the arguments of :class:`~qmp_envs.multitask.MujocoMultiTaskEnv` (``task``,
            ``task_schedule``, ``render_mode``, ``width``, ``height``, ``camera``).

    Raises:
        ValueError: an unknown ``compat``, a ``horizon`` that is not a positive int, a
            ``timeout_as_terminal`` that is not a bool; the errors of
            :class:`~qmp_envs.multitask.MultiTaskEnv`.

    The env ends its episodes itself (its registration adds no ``TimeLimit``), so step
    ``horizon`` is ``terminated=True, truncated=False`` under ``timeout_as_terminal`` and
    ``terminated=False, truncated=True`` otherwise (spec 6.8). ``success`` is True only on the
    step that reaches ``horizon`` without having terminated. Change the episode length with
    ``horizon=``, not ``max_episode_steps=`` (a ``TimeLimit`` would end episodes before success
    could be reached).

    >>> import gymnasium as gym, qmp_envs
    >>> env = gym.make("qmp/Walker2dMT4-v0", task=3)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, env.unwrapped.task_names[info["task_id"]]
    ((21,), 'crawl')
    """

    frame_skip = 4

    def __init__(
        self,
        compat: str = "fixed",
        timeout_as_terminal: bool | None = None,
        horizon: int | None = None,
        **kwargs,
    ):
        self.compat = validate_choice("compat", compat, COMPAT_MODES)
        horizon = self.facts.max_episode_steps if horizon is None else horizon
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon must be a positive int (steps per episode), got {horizon!r}")
        self.horizon = horizon
        self.timeout_as_terminal = resolve_flag(
            "timeout_as_terminal", timeout_as_terminal, compat, True, False, (True, False)
        )
        kwargs.setdefault("camera", "track")  # Gymnasium's v5 walker camera follows the torso
        super().__init__(build_walker_model(crawl=False), **kwargs)
        self._scenes: dict[bool, tuple[mujoco.MjModel, mujoco.MjData] | None] = {
            False: (self.model, self.data),
            True: None,
        }
        self.elapsed_steps = 0
        self._timed_out = False
        self._bind_model()

    def _bind_model(self) -> None:
        model = self.model
        self._torso = model.body("torso").id
        self._feet = (model.body("foot").id, model.body("foot_left").id)
        self._targets = (model.geom("target_forward").id, model.geom("target_backward").id)
        self._ceilings = np.array(
            [g for g in range(model.ngeom) if "ceiling" in (model.geom(g).name or "")], dtype=int
        )

    def _use_scene(self, crawl: bool) -> None:
        if self._scenes[crawl] is None:
            model = build_walker_model(crawl=True)
            self._scenes[crawl] = (model, mujoco.MjData(model))
        scene = self._scenes[crawl]
        assert scene is not None
        model, data = scene
        mujoco.mj_resetData(model, data)
        if model is not self.model:
            self._close_renderer()  # the renderer is bound to the previous model
            self.model = model
            self.bind_data(data)
            self._bind_model()

    def _time_limit_reached(self, terminated: bool) -> bool:
        return self._timed_out

    def _features(self) -> np.ndarray:
        return np.concatenate([self.data.qpos[1:9], np.clip(self.data.qvel[0:9], -10.0, 10.0)])

    def _ceiling_contact(self) -> bool:
        if self._ceilings.size == 0 or self.data.ncon == 0:
            return False
        contact = self.data.contact
        return bool(
            np.isin(contact.geom1, self._ceilings).any()
            or np.isin(contact.geom2, self._ceilings).any()
        )

    def _reset_task(self, task_id: int):
        self._use_scene(task_id == CRAWL)
        targets_x = (0.0, 0.0) if task_id == BALANCE else (10.0, -10.0)
        for geom, x in zip(self._targets, targets_x, strict=True):
            self.model.geom_pos[geom] = (x, 0.0, 0.0)
        qpos = self.model.qpos0 + self.np_random.uniform(-0.01, 0.01, self.model.nq)
        qvel = self.np_random.uniform(-0.01, 0.01, self.model.nv)
        self.set_state(qpos, qvel)
        # Random-action warm-up steps that are not part of the episode (spec 6.7).
        for _ in range(10 if task_id == BALANCE else 5):
            self.do_simulation(self.np_random.uniform(-1.0, 1.0, self.action_dim))
        if task_id == CRAWL:
            self.model.geom_pos[self.model.geom("ceiling_long").id] = CEILING_POS
        self.elapsed_steps = 0
        return self._features(), {}

    def _step_task(self, action: np.ndarray):
        qpos = self.data.qpos
        x_before, feet_before = qpos[0], (qpos[5], qpos[8])
        self.do_simulation(action)
        task = self.task_id
        dt = self.dt
        velocity = (qpos[0] - x_before) / dt
        angle, height = qpos[2], qpos[1]
        xpos = self.data.xpos
        delta_h = xpos[self._torso, 2] - max(xpos[self._feet[0], 2], xpos[self._feet[1], 2])
        feet_rate = (abs(qpos[5] - feet_before[0]) + abs(qpos[8] - feet_before[1])) / dt

        ctrl_reward = -0.001 * float(np.sum(action**2))
        angle_reward = 0.1 * float(np.cos(angle))
        alive_reward = 1.0
        foot_reward = -0.01 * feet_rate
        collision = False
        if task == BALANCE:
            x_vel_reward = -abs(velocity)
            height_reward = -0.5 * abs(1.1 - delta_h)
            foot_reward = 0.0
        else:
            signed = -velocity if task == BACKWARD else velocity
            x_vel_reward = TARGET_SPEED - abs(signed - TARGET_SPEED)
            height_reward = -1.0 * abs(1.1 - delta_h)
            if task == CRAWL:
                x_vel_reward *= 2.0
                height_reward = 0.0
                collision = self._ceiling_contact()
        collision_penalty = -10.0 if collision else 0.0
        reward = (
            x_vel_reward
            + angle_reward
            + height_reward
            + ctrl_reward
            + alive_reward
            + foot_reward
            + collision_penalty
        )
        fallen = height < (0.3 if task == CRAWL else 0.8)
        terminated = bool(fallen or collision)
        self.elapsed_steps += 1
        success = (not terminated) and self.elapsed_steps >= self.horizon
        if success and self.timeout_as_terminal:
            terminated = True
        self._timed_out = success and not self.timeout_as_terminal
        info = {
            "success": success,
            "x_velocity": float(velocity),
            "x_vel_reward": float(x_vel_reward),
            "angle_reward": angle_reward,
            "height_reward": float(height_reward),
            "alive_reward": alive_reward,
            "foot_reward": float(foot_reward),
            "ctrl_reward": ctrl_reward,
            "collision_penalty": collision_penalty,
            "delta_h": float(delta_h),
            "height": float(height),
        }
        return self._features(), float(reward), terminated, info
