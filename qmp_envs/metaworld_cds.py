# mypy: disable-error-code="attr-defined,misc,name-defined"
# (mixins over Meta-World classes defined at runtime: their attributes are invisible to mypy)
"""Meta-World CDS: door and drawer, open and close, in ONE scene (spec section 7).

The scene is composed with ``mujoco.MjSpec`` from Meta-World 3.1.1's installed assets: the
drawer scene (arm, table, drawer), plus the door of the door scene attached to it. Each task
subclasses Meta-World's own v3 class, so rewards and success are Meta-World's v2 functions,
computed on a 21-feature observation that holds both objects.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import mujoco
import numpy as np
from gymnasium.envs.mujoco import MujocoEnv
from gymnasium.spaces import Box
from scipy.spatial.transform import Rotation

from qmp_envs.metaworld_suites import NUM_VARIATIONS, MetaWorldSuiteEnv

DRAWER_POS = (0.4, 0.9, 0.0)
DOOR_POS = (-0.1, 0.9, 0.15)
DOOR_RANGE = ((-0.1, 0.85, 0.15), (0.0, 0.95, 0.15))
DRAWER_RANGE = ((0.3, 0.9, 0.0), (0.4, 0.9, 0.0))
PREFIX = "cdsdoor_"


def build_cds_model() -> mujoco.MjModel:
    """The drawer scene with the door attached: drawer slide is qpos 9, door hinge qpos 10.

    Returns:
        The compiled model (Meta-World's own assets, so Meta-World must be installed).
    """
    from metaworld.asset_path_utils import full_V3_path_for

    base = mujoco.MjSpec.from_file(full_V3_path_for("sawyer_xyz/sawyer_drawer.xml"))
    base.body("drawer").pos = DRAWER_POS
    door = mujoco.MjSpec.from_file(full_V3_path_for("sawyer_xyz/sawyer_door_pull.xml"))
    # A prefix avoids clashes on shared assets (arm meshes); element names are then restored,
    # since Meta-World looks up door, door_link, doorjoint and handle by name.
    attached = base.worldbody.add_frame().attach_body(door.body("door"), PREFIX, "")
    attached.pos = DOOR_POS
    for kind in ("bodies", "joints", "geoms", "sites"):
        for element in getattr(base, kind):
            if element.name.startswith(PREFIX):
                element.name = element.name[len(PREFIX) :]
    base.site("goal").pos = (2.0, 0.74, 0.05)
    return base.compile()


class CDSTaskMixin:
    """Overrides shared by the four CDS task classes (put first in the bases)."""

    hand_start: tuple[float, float, float] = (0.0, 0.6, 0.2)
    object_range: tuple = DOOR_RANGE

    def _initialize_simulation(self):
        model = build_cds_model()
        model.vis.global_.offwidth, model.vis.global_.offheight = self.width, self.height
        return model, mujoco.MjData(model)

    @cached_property
    def sawyer_observation_space(self) -> Box:
        # Unbounded, so Meta-World's clipping never alters it (the original did not clip).
        return Box(-np.inf, np.inf, shape=(21,), dtype=np.float64)

    def _get_obs(self) -> np.ndarray:
        right = self._get_site_pos("rightEndEffector")
        left = self._get_site_pos("leftEndEffector")
        gripper = np.clip(np.linalg.norm(right - left) / 0.1, 0.0, 1.0)
        drawer_handle = self.data.body("drawer_link").xpos + np.array([0.0, -0.16, 0.0])
        door_handle = self.data.geom("handle").xpos
        door_quat = Rotation.from_matrix(self.data.geom("handle").xmat.reshape(3, 3)).as_quat()
        goal = self._target_pos if self._target_pos is not None else np.zeros(3)
        return np.hstack(
            [
                self.data.body("hand").xpos,
                gripper,
                drawer_handle,
                self.data.body("drawer_link").xquat,  # MuJoCo order (w, x, y, z)
                door_handle,
                door_quat,  # SciPy order (x, y, z, w): the original's mix, kept
                goal,
            ]
        )

    def reset(self, seed=None, options=None):
        """Meta-World's reset without its 39-feature frame stacking (as the original did).

        Args:
            seed: passed to ``MujocoEnv.reset``.
            options: passed to ``MujocoEnv.reset``.

        Returns:
            ``MujocoEnv.reset``'s ``(observation, info)``.
        """
        # Meta-World's reset assumes 39 features (frame stacking): do the original's instead.
        self.curr_path_length = 0
        self.reset_model()
        return MujocoEnv.reset(self, seed=seed, options=options)

    def reset_model(self) -> np.ndarray:
        """Meta-World's reset, with the hand starting at ``hand_start``.

        Returns:
            The first observation (Meta-World's 39 features).
        """
        self.hand_init_pos = np.array(self.hand_start)
        return super().reset_model()


class DoorObservationMixin:
    """Meta-World's door rewards read the object at indices 4-10: give them the door's."""

    def evaluate_state(self, obs, action):
        """Meta-World's reward and info, computed on the door's features.

        Args:
            obs: Meta-World's 39 features, the door's at indices 11-17.
            action: the executed action.

        Returns:
            Meta-World's ``(reward, info)`` of the task.
        """
        obs_door = obs.copy()
        obs_door[4:11] = obs[11:18]
        return super().evaluate_state(obs_door, action)


def _cds_classes() -> list[type]:
    from metaworld.envs.sawyer_door_close_v3 import SawyerDoorCloseEnvV3
    from metaworld.envs.sawyer_door_v3 import SawyerDoorEnvV3
    from metaworld.envs.sawyer_drawer_close_v3 import SawyerDrawerCloseEnvV3
    from metaworld.envs.sawyer_drawer_open_v3 import SawyerDrawerOpenEnvV3

    global CDSDoorOpen, CDSDoorClose, CDSDrawerOpen, CDSDrawerClose

    class CDSDoorOpen(CDSTaskMixin, DoorObservationMixin, SawyerDoorEnvV3):
        object_range = DOOR_RANGE

    class CDSDoorClose(CDSTaskMixin, DoorObservationMixin, SawyerDoorCloseEnvV3):
        hand_start = (-0.6, 0.6, 0.2)  # outside the mocap bounds: the first action pulls it in
        object_range = DOOR_RANGE

    class CDSDrawerOpen(CDSTaskMixin, SawyerDrawerOpenEnvV3):
        object_range = DRAWER_RANGE

    class CDSDrawerClose(CDSTaskMixin, SawyerDrawerCloseEnvV3):
        object_range = DRAWER_RANGE

    for cls in (CDSDoorOpen, CDSDoorClose, CDSDrawerOpen, CDSDrawerClose):
        cls.__module__ = __name__  # picklable by reference
        cls.__qualname__ = cls.__name__
    return [CDSDoorOpen, CDSDoorClose, CDSDrawerOpen, CDSDrawerClose]


CDS_CLASS_NAMES = ("CDSDoorOpen", "CDSDoorClose", "CDSDrawerOpen", "CDSDrawerClose")
_CLASSES: list[type] = []


def cds_task_classes() -> list[type]:
    """The four task classes, built once (they subclass Meta-World's, imported only here).

    Returns:
        The classes of door-open, door-close, drawer-open and drawer-close, in task order.
    """
    if not _CLASSES:
        _CLASSES.extend(_cds_classes())
    return _CLASSES


def __getattr__(name: str) -> type:
    # A checkpoint names the task classes by reference; a process that has built no CDS env
    # yet (one resuming from a checkpoint) must still find them when unpickling.
    if name in CDS_CLASS_NAMES:
        return cds_task_classes()[CDS_CLASS_NAMES.index(name)]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def cds_variations(task_id: int, seed: int, low, high) -> np.ndarray:
    """50 object positions drawn uniformly from the task's reset range.

    Args:
        task_id: the task's index (its own random stream).
        seed: the env's goal seed.
        low: the lower corner of the reset range.
        high: the upper corner of the reset range.

    Returns:
        ``(50, 3)`` positions, the same for the same task and seed.

    Example:
        >>> cds_variations(0, 0, [0, 0, 0], [1, 1, 1]).shape
        (50, 3)
    """
    rng = np.random.default_rng([seed, task_id])
    return rng.uniform(low, high, size=(NUM_VARIATIONS, 3))


class MetaWorldCDSEnv(MetaWorldSuiteEnv, suite="qmp/MetaWorldCDS-v0"):
    """Door-open, door-close, drawer-open and drawer-close in one scene with both objects.

    Observation (21 + 4): hand (3), gripper opening (1), drawer handle (3), drawer quaternion
    (4, w-first), door handle (3), door quaternion (4, x-first), goal (3).

    Args:
        **kwargs: the arguments of :class:`~qmp_envs.metaworld_suites.MetaWorldSuiteEnv`
            (``seed``, ``split``, ``tasks``, ``task``, ``render_mode``, ...).

    Raises:
        As :class:`~qmp_envs.metaworld_suites.MetaWorldSuiteEnv`.

    >>> import gymnasium as gym, qmp_envs
    >>> env = gym.make("qmp/MetaWorldCDS-v0", task=2, seed=0)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, env.unwrapped.task_names[info["task_id"]]
    ((25,), 'drawer-open')
    """

    def _make_task_env(self, task_id: int, **kwargs: Any):
        return cds_task_classes()[task_id](**kwargs)

    def _set_variation(self, env, task_id: int, variation: int) -> None:
        low, high = env.object_range
        env._last_rand_vec = cds_variations(task_id, self.goal_seed, low, high)[variation]
        env._freeze_rand_vec = True
        env._set_task_called = True
        env._partially_observable = False
