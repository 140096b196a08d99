"""Multistage Reacher: a 6-DoF Jaco-like arm, 5 sequential-reaching tasks (spec section 4).

The arm model below is written from the spec's kinematic and inertial tables. Link shapes are
capsules (the original meshes have an unclear licence); inertias are explicit, so shapes do not
change the dynamics.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

from qmp_envs.multitask import COMPAT_MODES, MujocoMultiTaskEnv, resolve_flag, validate_choice

SUBGOALS = {
    "g0": (0.2, 0.3, 0.5),
    "g1": (0.3, 0.0, 0.3),
    "g2": (0.4, -0.3, 0.4),
    "g3": (0.4, 0.3, 0.2),
}
STAY_GOAL = (0.4049, 0.1172, 0.2210)
TASK_STAGES = [
    ("g0", "g1", "g2"),
    ("g0", "g1", "g3"),
    ("g1", "g3", "g2"),
    ("g1", "g2", "g0"),
    ("stay", "stay", "stay"),
]
SHIFTED_TASK, SPARSE_TASK, STAY_TASK = 1, 3, 4

ACTION_PENALTY = 0.01
VELOCITY_PENALTY = 0.001
ACCELERATION_PENALTY = 1e-5
FAIL_PENALTY = 100.0
SUCCESS_THRESHOLD = 0.05
SHIFT = -2.0
STAY_STEPS_PER_STAGE = 30
JOINT5_REF = -2.8
JOINT5_LOWER = -0.698132

# (name, pos, quat, axis, range, ref, inertial (pos, quat, mass, diaginertia), capsule fromto, r)
_LINK_4_INERTIA = (
    "0.00914824 4.53141e-8 -0.0370941",
    "0.971237 -1.92989e-5 -0.238115 3.23646e-5",
    0.227408,
    "1.76463e-4 1.72250e-4 1.08303e-4",
)
_LINKS = [
    (
        "jaco_link_1",
        "0 0 0.1535",
        "0 0 1 0",
        "0 0 -1",
        "-0.8 0.8",
        0.0,
        (
            "-1.14317e-6 0.0102141 -0.0637045",
            "0.702792 0.0778988 -0.0778994 0.702813",
            0.613151,
            "1.49348e-3 1.44012e-3 4.01632e-4",
        ),
        "0 0 -0.041 0 0 -0.117",
        0.041,
    ),
    (
        "jaco_link_2",
        "0 0 -0.1185",
        "0 0 0.707107 0.707107",
        "0 0 1",
        "-1.5 0.7",
        0.0,
        ("0.206657 -1.55187e-7 -0.030675", "1 0 0 0", 1.85031, "0.0402753 0.0398125 1.21953e-3"),
        "0 0 -0.028 0.410 0 -0.028",
        0.041,
    ),
    (
        "jaco_link_3",
        "0.41 0 0",
        "0 0.707107 0.707107 0",
        "0 0 -1",
        "-0.698132 0.698132",
        0.0,
        (
            "0.0847979 -1.18469e-7 -0.020283",
            "2.33799e-5 0.694869 1.96996e-5 0.719136",
            0.70372,
            "3.86732e-3 3.73181e-3 3.58773e-4",
        ),
        "0 0 -0.013 0.166 0 -0.013",
        0.041,
    ),
    (
        "jaco_link_4",
        "0.207 0 -0.01125",
        "0 0.707107 0 -0.707107",
        "0 0 -1",
        "-0.698132 0.698132",
        0.0,
        _LINK_4_INERTIA,
        "0 0 0 0.0343 0 -0.0659",
        0.0315,
    ),
    (
        "jaco_link_5",
        "0.0343 0 -0.06588",
        "0.887011 0 -0.461749 0",
        "0 0 -1",
        "-0.698132 0.698132",
        JOINT5_REF,
        _LINK_4_INERTIA,
        "0 0 0 0.0343 0 -0.0659",
        0.0315,
    ),
    (
        "jaco_link_hand",
        "0.0343 0 -0.06588",
        "0.627211 -0.326506 -0.326506 0.627211",
        "0 0 -1",
        "-0.698132 0.698132",
        0.0,
        (
            "3.6132e-3 -6.2241e-5 -0.0583749",
            "0.669114 -0.237618 -0.23799 0.66271",
            0.58074,
            "8.17146e-4 6.71192e-4 6.06807e-4",
        ),
        "0 0 -0.030 0 0 -0.065",
        0.047,
    ),
]
_GEARS = [5, 10, 10, 10, 10, 10]


def jaco_reacher_xml() -> str:
    """The MJCF of the reacher scene, generated from the tables above.

    Returns:
        The XML text.
    """
    inner = '          <site name="hand" pos="0 0 0" size="0.01" rgba="0 1 0 1"/>\n'
    for index in reversed(range(len(_LINKS))):
        name, pos, quat, axis, rng, ref, inertial, fromto, radius = _LINKS[index]
        ipos, iquat, mass, diag = inertial
        inner = (
            f'<body name="{name}" pos="{pos}" quat="{quat}">\n'
            f'  <inertial pos="{ipos}" quat="{iquat}" mass="{mass}" diaginertia="{diag}"/>\n'
            f'  <joint name="jaco_joint_{index + 1}" axis="{axis}" range="{rng}" ref="{ref}"/>\n'
            f'  <geom name="{name}_geom" type="capsule" fromto="{fromto}" size="{radius}"/>\n'
            f"{inner}</body>\n"
        )
    motors = "\n".join(
        f'    <motor name="A{i + 1}" joint="jaco_joint_{i + 1}" gear="{gear}"/>'
        for i, gear in enumerate(_GEARS)
    )
    return f"""<mujoco model="qmp_multistage_reacher">
  <compiler angle="radian"/>
  <option timestep="0.01" integrator="Euler" gravity="0 0 -9.8" iterations="10"/>
  <visual><global offwidth="640" offheight="640"/></visual>
  <default>
    <joint type="hinge" pos="0 0 0" limited="true" damping="0.5" armature="0.01"/>
    <geom contype="1" conaffinity="0" margin="0.001" friction="1 0.005 0.0001"
          rgba="0.25 0.25 0.3 1"/>
    <motor ctrllimited="true" ctrlrange="-1 1"/>
  </default>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1=".85 .85 .85" rgb2=".7 .7 .7"
             width="256" height="256"/>
    <material name="grid" texture="grid" texrepeat="8 8"/>
  </asset>
  <worldbody>
    <light directional="true" pos="0 0 3" dir="0 0 -1"/>
    <camera name="front" pos="1.6 0.0 0.8" xyaxes="0 1 0 -0.35 0 0.94"/>
    <geom name="ground" type="plane" size="2 2 0.1" contype="1" conaffinity="1" material="grid"/>
    <body name="target" mocap="true" pos="0 0 0.05">
      <geom name="target" type="sphere" size="0.049" contype="0" conaffinity="0"
            rgba="0.9 0.1 0.1 0.7"/>
    </body>
    <body name="jaco_link_base" pos="0 0 0.25">
      <inertial pos="-3.14012e-8 4.51919e-4 0.0770704" quat="1 -9.20048e-4 6.51183e-6 5.62643e-5"
                mass="0.787504" diaginertia="1.87445e-3 1.86316e-3 6.76952e-4"/>
      <geom name="base_geom" type="capsule" fromto="0 0 0.041 0 0 0.113" size="0.041"/>
      <geom name="pedestal" type="capsule" fromto="0 0 -0.25 0 0 0" size="0.045"/>
{inner}    </body>
  </worldbody>
  <actuator>
{motors}
  </actuator>
</mujoco>
"""


class MultistageReacherEnv(MujocoMultiTaskEnv, suite="qmp/MultistageReacher-v0"):
    """Five reaching tasks for one arm: four three-subgoal sequences and a "stay" task.

    Observation (18 features + 5 one-hot): joint qpos (6), qvel (6), stage one-hot (3), hand
    position (3). ``agent_feature_mask`` hides the hand position, as the paper's agents did.

    Args:
        compat: ``"fixed"`` (default) or ``"official"``; sets the quirk flags below.
        joint5_initial: ``"ref"`` starts joint 5 at -2.8 rad, 2.1 rad outside its limit, as the
            original did (its default under ``compat="official"``); ``"clamped"`` starts it at its
            lower limit (default under ``compat="fixed"``).
        stay_goal: ``"constant"`` (default in both modes) or ``"sampled"``, the original's
            goal of one random-action step from qpos0, drawn once per instance at first reset.
        **kwargs: the arguments of :class:`~qmp_envs.multitask.MujocoMultiTaskEnv` (``task``,
            ``task_schedule``, ``render_mode``, ``width``, ``height``, ``camera``).

    Raises:
        ValueError: an unknown ``compat`` or quirk flag value; the errors of
            :class:`~qmp_envs.multitask.MultiTaskEnv`.

    >>> import gymnasium as gym, qmp_envs
    >>> env = gym.make("qmp/MultistageReacher-v0", task=3)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, int(obs[-5:].argmax()), info["stage"]
    ((23,), 3, 0)
    """

    frame_skip = 4

    def __init__(
        self,
        compat: str = "fixed",
        joint5_initial: str | None = None,
        stay_goal: str | None = None,
        **kwargs,
    ):
        self.compat = validate_choice("compat", compat, COMPAT_MODES)
        self.joint5_initial = resolve_flag(
            "joint5_initial", joint5_initial, compat, "ref", "clamped", ("ref", "clamped")
        )
        self.stay_goal_mode = resolve_flag(
            "stay_goal", stay_goal, compat, "constant", "constant", ("constant", "sampled")
        )
        super().__init__(mujoco.MjModel.from_xml_string(jaco_reacher_xml()), **kwargs)
        self._hand_site = self.model.site("hand").id
        self._target_mocap = self.model.body("target").mocapid[0]
        self._stay_goal = np.array(STAY_GOAL) if self.stay_goal_mode == "constant" else None
        self.stage = 0
        self._stay_successes = 0
        self._stage_goals: list[np.ndarray] = []
        self._last_features = np.zeros(self.feature_dim)

    # -- helpers ---------------------------------------------------------------------------
    @property
    def hand_position(self) -> np.ndarray:
        return self.data.site_xpos[self._hand_site].copy()

    def goal_position(self, name: str) -> np.ndarray:
        """Where a subgoal is.

        Args:
            name: a key of ``SUBGOALS``, or ``"stay"`` (the goal drawn at reset).

        Returns:
            A copy of its position.
        """
        if name == "stay":
            assert self._stay_goal is not None, "the stay goal is drawn at the first reset"
            return self._stay_goal.copy()
        return np.array(SUBGOALS[name])

    def _sample_stay_goal(self) -> np.ndarray:
        """The original's stay goal: hand after one random-action control step from qpos0."""
        self.set_state(self.model.qpos0, np.zeros(self.model.nv))
        self.do_simulation(self.np_random.uniform(-1.0, 1.0, self.action_dim))
        return self.hand_position

    def _features(self, stage: int) -> np.ndarray:
        features = np.zeros(self.feature_dim)
        features[0:6] = self.data.qpos
        features[6:12] = self.data.qvel
        features[12 + min(stage, 2)] = 1.0
        features[15:18] = self.data.site_xpos[self._hand_site]
        return features

    # -- MultiTaskEnv hooks ----------------------------------------------------------------
    def _reset_task(self, task_id: int):
        if self._stay_goal is None:
            self._stay_goal = self._sample_stay_goal()
        self._stage_goals = [self.goal_position(name) for name in TASK_STAGES[task_id]]
        self.stage = 0
        self._stay_successes = 0
        self.data.mocap_pos[self._target_mocap] = self._stage_goals[0]
        qpos0 = self.model.qpos0.copy()
        if self.joint5_initial == "clamped":
            qpos0[4] = JOINT5_LOWER
        qpos = qpos0 + self.np_random.uniform(-0.01, 0.01, self.model.nq)
        qvel = self.np_random.uniform(-0.001, 0.001, self.model.nv)
        self.set_state(qpos, qvel)
        self._last_features = self._features(self.stage)
        return self._last_features, {"stage": 0, "task_complete": False}

    def _step_task(self, action: np.ndarray):
        unstable = self.do_simulation(action)
        task = self.task_id
        # The observation is built before the stage advances (kept quirk, spec 4.5).
        features = self._features(self.stage)
        offset = features[15:18] - self._stage_goals[min(self.stage, 2)]
        dist = math.sqrt(offset.dot(offset))
        success = bool(dist < SUCCESS_THRESHOLD)  # False for a non-finite distance

        if success:
            if task == STAY_TASK:
                self._stay_successes += 1
                self.stage = self._stay_successes // STAY_STEPS_PER_STAGE
            else:
                self.stage += 1
                if self.stage < 3:
                    self.data.mocap_pos[self._target_mocap] = self._stage_goals[self.stage]
        stage = self.stage
        terminated = stage >= 3

        dist_reward = 0.0 if task == SPARSE_TASK else -dist
        # ndarray methods rather than np.mean/np.sum wrappers: this runs at every env step.
        ctrl_reward = (
            -ACTION_PENALTY * float(action.dot(action))
            - VELOCITY_PENALTY * float(np.abs(self.data.qvel).sum()) / self.model.nv
            - ACCELERATION_PENALTY * float(np.abs(self.data.qacc).sum()) / self.model.nv
        )
        if task == SHIFTED_TASK:
            stage_reward = 200.0 * float(success)
        elif task == STAY_TASK:
            stage_reward = 0.0
        else:
            stage_reward = -0.4 * max(3 - stage, 0)
        shift = SHIFT if task == SHIFTED_TASK else 0.0

        if unstable:
            # A diverged simulation may leave non-finite velocities; the penalty must stay finite.
            if not math.isfinite(ctrl_reward):
                ctrl_reward = -ACTION_PENALTY * float(action.dot(action))
            if not math.isfinite(dist_reward):
                dist_reward = 0.0
            ctrl_reward -= FAIL_PENALTY
            features = self._last_features
            terminated = True
        self._last_features = features
        reward = dist_reward + stage_reward + ctrl_reward + shift
        info = {
            "success": success,
            "stage": stage,
            "stages_completed": stage,
            "task_complete": stage >= 3,
            "dist": dist,
            "dist_reward": dist_reward,
            "stage_reward": stage_reward,
            "ctrl_reward": ctrl_reward,
            "unstable": unstable,
        }
        return features, reward, terminated, info
