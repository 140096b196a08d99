"""Maze navigation: a point mass in the D4RL large maze, 10 start/goal tasks (spec section 5).

Coordinates follow D4RL exactly: wall cell (r, c) is a box centred at world (r + 1, c + 1), the
agent body sits at world (1.2, 1.2) with two slide joints, so observation = qpos = world - 1.2.
Task starts and goals are grid indices used directly as qpos values.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

from qmp_envs.multitask import MujocoMultiTaskEnv

LARGE_MAZE = [
    "############",
    "#....#.....#",
    "#.##.#.#.#.#",
    "#......#...#",
    "#.####.###.#",
    "#..#.#.....#",
    "##.#.#.#.###",
    "#..#...#...#",
    "############",
]
# (start (r, c), goal (r, c)) per task.
MAZE_TASKS = [
    ((1, 3), (5, 8)),
    ((1, 10), (2, 4)),
    ((4, 1), (1, 7)),
    ((7, 4), (4, 10)),
    ((1, 3), (7, 4)),
    ((1, 7), (7, 10)),
    ((5, 4), (7, 9)),
    ((7, 1), (2, 6)),
    ((1, 2), (3, 10)),
    ((7, 2), (6, 8)),
]
AGENT_OFFSET = 1.2
SUCCESS_RADIUS = 0.5
MAX_SPEED = 5.0
HORIZON = 600


def wall_cells(layout: list[str] = LARGE_MAZE) -> list[tuple[int, int]]:
    """The wall cells of a maze layout.

    Args:
        layout: rows of the maze, ``"#"`` a wall.

    Returns:
        ``(row, column)`` of every wall cell, row by row.

    Example:
        >>> wall_cells(["##", "#."])
        [(0, 0), (0, 1), (1, 0)]
    """
    return [(r, c) for r, row in enumerate(layout) for c, cell in enumerate(row) if cell == "#"]


def maze_xml(layout: list[str] = LARGE_MAZE) -> str:
    """The MuJoCo model of a maze: a point mass, one box per wall cell, a goal marker.

    Args:
        layout: rows of the maze, ``"#"`` a wall.

    Returns:
        The MJCF XML text.
    """
    walls = "\n".join(
        f'    <geom name="wall_{r}_{c}" type="box" pos="{r + 1} {c + 1} 0" size="0.5 0.5 0.2"'
        ' material="wall"/>'
        for r, c in wall_cells(layout)
    )
    rows, cols = len(layout), len(layout[0])
    return f"""<mujoco model="qmp_maze_large">
  <compiler angle="radian"/>
  <option timestep="0.01" gravity="0 0 0" integrator="Euler" iterations="20"/>
  <visual><global offwidth="640" offheight="640"/></visual>
  <default>
    <joint damping="1" limited="false"/>
    <geom friction="0.5 0.1 0.1" density="1000" margin="0.002" condim="1" contype="2"
          conaffinity="1"/>
    <motor ctrllimited="true" ctrlrange="-1 1"/>
  </default>
  <asset>
    <material name="wall" rgba="0.7 0.5 0.3 1"/>
    <material name="floor" rgba="0.9 0.9 0.9 1"/>
  </asset>
  <worldbody>
    <light directional="true" pos="{rows / 2} {cols / 2} 10" dir="0 0 -1"/>
    <camera name="top" pos="{rows / 2 + 0.5} {cols / 2 + 0.5} 16" xyaxes="0 1 0 -1 0 0"/>
    <geom name="ground" type="plane" pos="{rows / 2} {cols / 2} -0.1" size="{rows} {cols} 0.1"
          contype="1" conaffinity="0" material="floor"/>
{walls}
    <body name="goal_marker" mocap="true" pos="0 0 0">
      <geom type="sphere" size="0.12" contype="0" conaffinity="0" rgba="0.1 0.8 0.1 0.8"/>
    </body>
    <body name="particle" pos="{AGENT_OFFSET} {AGENT_OFFSET} 0">
      <geom name="particle_geom" type="sphere" size="0.1" contype="1" rgba="0.1 0.2 0.9 1"/>
      <joint name="ball_x" type="slide" axis="1 0 0" pos="0 0 0"/>
      <joint name="ball_y" type="slide" axis="0 1 0" pos="0 0 0"/>
    </body>
  </worldbody>
  <actuator>
    <motor joint="ball_x" gear="100"/>
    <motor joint="ball_y" gear="100"/>
  </actuator>
</mujoco>
"""


class MazeLargeEnv(MujocoMultiTaskEnv, suite="qmp/MazeLarge10-v0"):
    """Point mass in the large maze; reward ``exp(-d) - 1``; success and termination at d <= 0.5.

    Features are ``[x, y, vx, vy]`` after the step; the goal is not observed, only the one-hot.

    Args:
        **kwargs: the arguments of :class:`~qmp_envs.multitask.MujocoMultiTaskEnv` (``task``,
            ``task_schedule``, ``render_mode``, ``width``, ``height``).

    >>> import gymnasium as gym, qmp_envs
    >>> env = gym.make("qmp/MazeLarge10-v0", task=0)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, bool(abs(obs[0] - 1) < 0.11 and abs(obs[1] - 3) < 0.11)
    ((14,), True)
    """

    frame_skip = 1

    def __init__(self, **kwargs):
        super().__init__(mujoco.MjModel.from_xml_string(maze_xml()), camera="top", **kwargs)
        self._goal_mocap = self.model.body("goal_marker").mocapid[0]
        self.goal = np.zeros(2)
        self.elapsed_steps = 0

    def _features(self) -> np.ndarray:
        return np.concatenate([self.data.qpos, self.data.qvel])

    def _reset_task(self, task_id: int):
        start, goal = MAZE_TASKS[task_id]
        self.goal = np.asarray(goal, dtype=np.float64)
        # The marker is drawn at the true goal (D4RL drew it 0.2 off: a visual-only bug).
        self.data.mocap_pos[self._goal_mocap] = (*(self.goal + AGENT_OFFSET), 0.0)
        qpos = np.asarray(start, dtype=np.float64) + self.np_random.uniform(-0.1, 0.1, 2)
        qvel = self.np_random.normal(0.0, 0.1, 2)
        self.set_state(qpos, qvel)
        self.elapsed_steps = 0
        return self._features(), {"dist": float(np.linalg.norm(qpos - self.goal))}

    def _step_task(self, action: np.ndarray):
        # The velocity is clipped before the step, as in the original (kept quirk, spec 5.6).
        qvel = self.data.qvel
        np.maximum(qvel, -MAX_SPEED, out=qvel)
        np.minimum(qvel, MAX_SPEED, out=qvel)
        self.do_simulation(action)
        features = self._features()
        offset = features[:2] - self.goal
        dist = math.sqrt(offset.dot(offset))
        success = dist <= SUCCESS_RADIUS
        reward = math.exp(-dist) - 1.0
        self.elapsed_steps += 1
        timeout = self.elapsed_steps >= HORIZON
        return features, reward, success, {"success": success, "dist": dist, "timeout": timeout}
