"""Kitchen "MT-Easy": ten single-element Franka kitchen tasks (spec section 9).

The MuJoCo model is the Franka kitchen shipped with the installed ``gymnasium-robotics``
package (loaded from its install folder; nothing is copied). The control law, observation,
reward, success and resets are the original's, written from the spec.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import mujoco
import numpy as np

from qmp_envs.multitask import COMPAT_MODES, MujocoMultiTaskEnv, resolve_flag, validate_choice

# name, element qpos indices, initial value, goal value, success threshold, reach site
KITCHEN_TASKS = [
    ("slide-cabinet-open", [19], [-4.65501e-4], [0.37], 0.1, "slide_site"),
    ("slide-cabinet-close", [19], [0.37], [-4.65501e-4], 0.1, "slide_site"),
    ("hinge-cabinet-open", [20, 21], [-6.44129e-3, -1.77048e-3], [0.0, 1.45], 0.1, "hinge_site2"),
    ("hinge-cabinet-close", [20, 21], [0.0, 1.45], [-6.44129e-3, -1.77048e-3], 0.3, "hinge_site2"),
    ("bottom-burner-on", [11, 12], [3.12877e-5, -4.51200e-5], [-0.88, -0.01], 0.3, "knob2_site"),
    ("bottom-burner-off", [11, 12], [-0.88, -0.01], [3.12877e-5, -4.51200e-5], 0.3, "knob2_site"),
    ("top-burner-on", [15, 16], [6.28065e-5, 4.04985e-5], [-0.92, -0.01], 0.3, "knob4_site"),
    ("top-burner-off", [15, 16], [-0.92, -0.01], [6.28065e-5, 4.04985e-5], 0.3, "knob4_site"),
    ("light-switch-on", [17, 18], [4.62731e-4, -2.26906e-4], [-0.69, -0.05], 0.3, "light_site"),
    ("light-switch-off", [17, 18], [-0.69, -0.05], [4.62731e-4, -2.26906e-4], 0.3, "light_site"),
]
INITIAL_QPOS = np.array(
    [0.148388, -1.768486, 1.843903, -2.476858, 0.260252, 0.712533, 1.595154, 0.047927, 0.037135,
     -2.66280e-4, -5.18043e-5, 3.12877e-5, -4.51200e-5, -3.90842e-6, -4.22630e-5, 6.28065e-5,
     4.04985e-5, 4.62731e-4, -2.26906e-4, -4.65501e-4, -6.44129e-3, -1.77048e-3, 1.08010e-3,
     -0.269397, 0.350383, 1.619447, 1.006188, 4.06395e-3, -6.62096e-3, -2.68279e-4]
)  # fmt: skip
# The "on/open" goals the original wrote into every task's goal vector, after the task's own.
ALWAYS_ON_GOALS = {
    22: -0.75,  # microwave
    23: -0.23, 24: 0.75, 25: 1.62, 26: 0.99, 27: 0.0, 28: 0.0, 29: -0.06,  # kettle
    11: -0.88, 12: -0.01,  # bottom burner
    17: -0.69, 18: -0.05,  # light switch
}  # fmt: skip
NOISE_AMPLITUDE = np.array([0.1] * 9 + [0.005] * 2 + [0.0005] * 6 + [0.005] * 3 + [0.1] * 3
                           + [0.005] * 3 + [0.1] * 3 + [0.005])  # fmt: skip
NOISE_RATIO = 0.1
ROBOT_LOW = np.array([-2.9, -1.8, -2.9, -3.1, -2.9, 0.0, -2.9, 0.0, 0.0])
ROBOT_HIGH = np.array([2.9, 1.8, 2.9, 0.0, 2.9, 3.8, 2.9, 0.04, 0.04])
SUCCESS_REWARD = 20.0 * 140
REACH_RADIUS = 0.08


def kitchen_model_path() -> Path:
    """Where gymnasium-robotics keeps the Franka kitchen model the suite loads.

    Returns:
        The path of ``kitchen_env_model.xml``.

    Raises:
        ImportError: gymnasium-robotics is not installed (the message says how to install it).
    """
    spec = importlib.util.find_spec("gymnasium_robotics")
    if spec is None or spec.origin is None:
        raise ImportError(
            "qmp/KitchenMTEasy-v0 uses the Franka kitchen model of gymnasium-robotics: "
            "pip install 'qmp-toolkit[kitchen]' (or gymnasium-robotics)"
        )
    root = Path(spec.origin).parent
    return root / "envs" / "assets" / "kitchen_franka" / "kitchen_assets" / "kitchen_env_model.xml"


def gaussian_tolerance(
    x: float, upper: float, margin: float, value_at_margin: float = 0.1
) -> float:
    """dm_control's ``tolerance`` with bounds (0, upper) and the Gaussian sigmoid: 1 inside the
    bounds, ``value_at_margin`` at ``margin`` beyond them.

    Args:
        x: the distance.
        upper: the upper bound of the tolerated interval.
        margin: how far beyond ``upper`` the value falls to ``value_at_margin`` (<= 0: 0 there).
        value_at_margin: the value at ``upper + margin``.

    Returns:
        The tolerance, in ``[0, 1]``.

    Example:
    >>> gaussian_tolerance(0.05, 0.08, 0.2), round(gaussian_tolerance(0.28, 0.08, 0.2), 6)
    (1.0, 0.1)
    """
    if x <= upper:
        return 1.0
    if margin <= 0:
        return 0.0
    scale = math.sqrt(-2.0 * math.log(value_at_margin))
    return math.exp(-0.5 * ((x - upper) / margin * scale) ** 2)


class KitchenMTEasyEnv(MujocoMultiTaskEnv, suite="qmp/KitchenMTEasy-v0"):
    """Ten tasks, one kitchen element each, starting opposite to its goal; 140 steps.

    Observation (60 + 10): noisy robot qpos (9), noisy object qpos (21), a 30-dim goal vector.
    Reward ``20 (0.4 in_place + 0.6 reach - 1)`` until success, then 2800 and termination.

    Args:
        compat: ``"fixed"`` (default) or ``"official"``.
        goal_vector: ``"official"`` reproduces the original, which overwrote every task's goal
            vector with the "on/open" goals, so bottom burner-off and light switch-off show their
            "on" goals; ``"correct"`` keeps each task's own goal (default under ``"fixed"``).
        **kwargs: the arguments of :class:`~qmp_envs.multitask.MujocoMultiTaskEnv` (``task``,
            ``task_schedule``, ``render_mode``, ``width``, ``height``, ``camera``).

    Raises:
        ImportError: gymnasium-robotics (the kitchen model) is not installed.
        ValueError: an unknown ``compat`` or quirk flag value; the errors of
            :class:`~qmp_envs.multitask.MultiTaskEnv`.

    >>> import gymnasium as gym, qmp_envs
    >>> env = gym.make("qmp/KitchenMTEasy-v0", task=0)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, round(float(obs[30 + 19]), 2)
    ((70,), 0.37)
    """

    frame_skip = 40

    def __init__(self, compat: str = "fixed", goal_vector: str | None = None, **kwargs):
        self.compat = validate_choice("compat", compat, COMPAT_MODES)
        self.goal_vector_mode = resolve_flag(
            "goal_vector", goal_vector, compat, "official", "correct", ("official", "correct")
        )
        super().__init__(self._build_model(), **kwargs)
        model = self.model
        self._fingers = (model.body("panda0_leftfinger").id, model.body("panda0_rightfinger").id)
        self._end_effector = model.site("end_effector").id
        self._reach_sites = [model.site(task[5]).id for task in KITCHEN_TASKS]
        self._goal_vectors = [self._build_goal_vector(k) for k in range(len(KITCHEN_TASKS))]
        self._noisy_qpos = np.zeros(30)
        self._hand_margin = self._goal_margin = 0.0

    def _build_model(self) -> mujoco.MjModel:
        # The kitchen's meshes make a pickled MjModel ~130 MB: checkpoints rebuild it instead.
        return mujoco.MjModel.from_xml_path(str(kitchen_model_path()))

    def _build_goal_vector(self, task_id: int) -> np.ndarray:
        _, indices, _, goal, _, _ = KITCHEN_TASKS[task_id]
        vector = np.zeros(30)
        vector[indices] = goal
        for index, value in ALWAYS_ON_GOALS.items():
            vector[index] = value
        if self.goal_vector_mode == "correct":
            vector[indices] = goal
        return vector

    def _observe(self) -> np.ndarray:
        noise = NOISE_RATIO * NOISE_AMPLITUDE * self.np_random.uniform(-1.0, 1.0, 30)
        self._noisy_qpos = self.data.qpos[:30] + noise
        return np.concatenate([self._noisy_qpos, self._goal_vectors[self.task_id]])

    def _grip(self) -> np.ndarray:
        left, right = self._fingers
        return 0.5 * (self.data.xpos[left] + self.data.xpos[right])

    def _reset_task(self, task_id: int):
        _, indices, initial, goal, threshold, _ = KITCHEN_TASKS[task_id]
        qpos = INITIAL_QPOS.copy()
        qpos[indices] = initial
        self.set_state(qpos, np.zeros(self.model.nv))
        site = self.data.site_xpos[self._reach_sites[task_id]]
        hand0 = float(np.linalg.norm(site - self.data.site_xpos[self._end_effector]))
        goal0 = float(np.linalg.norm(np.asarray(initial) - goal))
        self._hand_margin = abs(hand0 - REACH_RADIUS)
        self._goal_margin = abs(goal0 - threshold)
        return self._observe(), {}

    def _step_task(self, action: np.ndarray):
        # Velocity command integrated from the LAST NOISY observation, as D4RL's and
        # gymnasium-robotics' Franka controllers do (spec 9.2).
        velocity = np.clip(2.0 * action, -10.0, 10.0)
        target = np.clip(self._noisy_qpos[:9] + velocity * self.dt, ROBOT_LOW, ROBOT_HIGH)
        self.do_simulation(target)
        features = self._observe()

        _, indices, _, goal, threshold, _ = KITCHEN_TASKS[self.task_id]
        element = self._noisy_qpos[indices]
        dist_goal = float(np.linalg.norm(element - goal))
        offset = self.data.site_xpos[self._reach_sites[self.task_id]] - self._grip()
        dist_hand = float(np.linalg.norm(offset))
        success = dist_goal < threshold  # judged on the noisy observation (kept quirk)
        if success:
            reward = SUCCESS_REWARD
        else:
            in_place = gaussian_tolerance(dist_goal, threshold, self._goal_margin)
            reach = gaussian_tolerance(dist_hand, REACH_RADIUS, self._hand_margin)
            reward = 20.0 * (0.4 * in_place + 0.6 * reach - 1.0)
        site_x = self.data.site_xpos[self._reach_sites[self.task_id], 0]
        info = {
            "success": success,
            "dist_goal": dist_goal,
            "dist_hand": dist_hand,
            "dist_hand_yz": float(np.linalg.norm(offset[1:])),
            "dist_left_pad_x": float(abs(site_x - self.data.xpos[self._fingers[0], 0])),
            "dist_right_pad_x": float(abs(site_x - self.data.xpos[self._fingers[1], 0])),
        }
        return features, reward, success, info
