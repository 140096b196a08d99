"""The static facts of every ``qmp/`` suite, in one frozen description per id.

Everything here is readable without building an environment (and without importing MuJoCo or
Meta-World): the envs take their task names, feature layout and protocol constants from these
descriptions, and the registration, the training scripts, the evaluation helper and the
PettingZoo view read them instead of building a throwaway env.

>>> from qmp_envs.suites import SUITES
>>> facts = SUITES["qmp/MultistageReacher-v0"]
>>> facts.num_tasks, facts.max_episode_steps, int(facts.agent_feature_mask.sum())
(5, 200, 15)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SuiteFacts:
    """What is fixed about one ``qmp/`` id, before any env exists.

    Attributes:
        env_id: the registered id.
        entry_point: ``"module:Class"`` of the single env.
        task_names: one name per task, in one-hot order.
        max_episode_steps: the horizon of every episode.
        feature_dim: features before the one-hot task id (observation size is
            ``feature_dim + num_tasks``).
        action_dim: every action space is ``Box(-1, 1, (action_dim,))``.
        hidden_features: feature indices the paper's agents did not see (see
            :attr:`agent_feature_mask`).
        min_reward: the reward UDS assigns to transitions shared from other tasks (spec 2.9).
        eval_episodes: evaluation episodes per task in the paper's protocol.
        eval_info_keys: boolean ``info`` keys evaluation aggregates besides ``success``.
        has_eval_split: whether ``split="eval"`` selects separate evaluation goals.
        has_compat: whether the env takes ``compat="official" | "fixed"``.
        env_owns_time_limit: the env itself ends an episode at ``max_episode_steps`` (Walker:
            its official time-out is terminal, which a ``TimeLimit`` wrapper cannot express), so
            the registration adds no ``TimeLimit``.
        kwargs: constructor keyword arguments fixed by the registration.
    """

    env_id: str
    entry_point: str
    task_names: tuple[str, ...]
    max_episode_steps: int
    feature_dim: int
    action_dim: int
    min_reward: float
    hidden_features: tuple[int, ...] = ()
    eval_episodes: int = 10
    eval_info_keys: tuple[str, ...] = ()
    has_eval_split: bool = False
    has_compat: bool = False
    env_owns_time_limit: bool = False
    kwargs: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    @property
    def observation_dim(self) -> int:
        return self.feature_dim + self.num_tasks

    @property
    def agent_feature_mask(self) -> np.ndarray:
        """Boolean mask over the features: True where the paper's agents observed it."""
        mask = np.ones(self.feature_dim, dtype=bool)
        mask[list(self.hidden_features)] = False
        return mask

    def __reduce__(self) -> tuple:
        # Pickled as a reference to the registered description (envs are pickled whole for
        # async vector envs and exact Meta-World state), or field by field if not registered.
        if SUITES.get(self.env_id) is self:
            return suite_facts, (self.env_id,)
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["kwargs"] = dict(self.kwargs)
        return _rebuild_facts, (values,)

    def env_kwargs(self, compat: str) -> dict[str, Any]:
        """The ``compat`` keyword for envs that take it, nothing for the others.

        Args:
            compat: the compatibility mode to pass on.

        Returns:
            ``{"compat": compat}`` if this suite's env takes it, else ``{}``.
        """
        return {"compat": compat} if self.has_compat else {}


_MT10 = (
    "reach push pick-place door-open drawer-open drawer-close button-press-topdown "
    "peg-insert-side window-open window-close"
).split()
# The original's one-hot order (the benchmark dictionary at Meta-World commit 04be337).
_MT50 = (
    "assembly basketball bin-picking box-close button-press-topdown button-press-topdown-wall "
    "button-press button-press-wall coffee-button coffee-pull coffee-push dial-turn disassemble "
    "door-close door-lock door-open door-unlock hand-insert drawer-close drawer-open faucet-open "
    "faucet-close hammer handle-press-side handle-press handle-pull-side handle-pull lever-pull "
    "peg-insert-side pick-place-wall pick-out-of-hole reach push-back push pick-place plate-slide "
    "plate-slide-side plate-slide-back plate-slide-back-side peg-unplug-side soccer stick-push "
    "stick-pull push-wall reach-wall shelf-place sweep-into sweep window-open window-close"
).split()
_METAWORLD = {"action_dim": 4, "min_reward": 0.0, "eval_episodes": 50, "has_eval_split": True}

SUITES: Mapping[str, SuiteFacts] = MappingProxyType(
    {
        facts.env_id: facts
        for facts in [
            SuiteFacts(
                "qmp/PointReach-v0", "qmp_envs.point_reach:PointReachEnv", ("reach-top-right",),
                max_episode_steps=50, feature_dim=2, action_dim=2, min_reward=0.0,
            ),
            SuiteFacts(
                "qmp/PointReach-v1", "qmp_envs.point_reach:PointReachTrapEnv",
                ("reach-top-right",),
                max_episode_steps=100, feature_dim=2, action_dim=2, min_reward=0.0,
            ),
            SuiteFacts(
                "qmp/PointReachMT4-v0", "qmp_envs.point_reach:PointReachMT4Env",
                ("reach-top", "reach-top-right", "reach-right", "reach-bottom-left"),
                max_episode_steps=50, feature_dim=2, action_dim=2, min_reward=-14.0,
            ),
            SuiteFacts(
                "qmp/MultistageReacher-v0", "qmp_envs.reacher:MultistageReacherEnv",
                ("reach-g0-g1-g2", "reach-g0-g1-g3-shifted", "reach-g1-g3-g2",
                 "reach-g1-g2-g0-sparse", "stay"),
                max_episode_steps=200, feature_dim=18, action_dim=6, min_reward=-5.0,
                hidden_features=(15, 16, 17),  # the hand position (spec 4.3)
                eval_info_keys=("task_complete",), has_compat=True,
            ),
            SuiteFacts(
                "qmp/MazeLarge10-v0", "qmp_envs.maze:MazeLargeEnv",
                ("maze-13-to-58", "maze-110-to-24", "maze-41-to-17", "maze-74-to-410",
                 "maze-13-to-74", "maze-17-to-710", "maze-54-to-79", "maze-71-to-26",
                 "maze-12-to-310", "maze-72-to-68"),
                max_episode_steps=600, feature_dim=4, action_dim=2, min_reward=-1.0,
            ),
            SuiteFacts(
                "qmp/Walker2dMT4-v0", "qmp_envs.walker:Walker2dMTEnv",
                ("forward", "backward", "balance", "crawl"),
                max_episode_steps=1000, feature_dim=17, action_dim=6, min_reward=0.0,
                has_compat=True, env_owns_time_limit=True,
            ),
            SuiteFacts(
                "qmp/KitchenMTEasy-v0", "qmp_envs.kitchen:KitchenMTEasyEnv",
                ("slide-cabinet-open", "slide-cabinet-close", "hinge-cabinet-open",
                 "hinge-cabinet-close", "bottom-burner-on", "bottom-burner-off", "top-burner-on",
                 "top-burner-off", "light-switch-on", "light-switch-off"),
                max_episode_steps=140, feature_dim=60, action_dim=9, min_reward=-20.0,
                eval_episodes=5, has_compat=True,
            ),
            SuiteFacts(
                "qmp/MetaWorldCDS-v0", "qmp_envs.metaworld_cds:MetaWorldCDSEnv",
                ("door-open", "door-close", "drawer-open", "drawer-close"),
                max_episode_steps=500, feature_dim=21, **_METAWORLD,  # type: ignore[arg-type]
            ),
            SuiteFacts(
                "qmp/MetaWorldMT10-v0", "qmp_envs.metaworld_suites:MetaWorldMTEnv", tuple(_MT10),
                max_episode_steps=500, feature_dim=39, **_METAWORLD,  # type: ignore[arg-type]
                kwargs=MappingProxyType({"benchmark": "MT10"}),
            ),
            SuiteFacts(
                "qmp/MetaWorldMT50-v0", "qmp_envs.metaworld_suites:MetaWorldMTEnv", tuple(_MT50),
                max_episode_steps=500, feature_dim=39, **_METAWORLD,  # type: ignore[arg-type]
                kwargs=MappingProxyType({"benchmark": "MT50"}),
            ),
        ]
    }
)  # fmt: skip


def suite_facts(env_id: str) -> SuiteFacts:
    """The facts of a registered ``qmp/`` id.

    Args:
        env_id: a ``qmp/`` id, e.g. ``"qmp/MultistageReacher-v0"``.

    Returns:
        Its :class:`SuiteFacts`.

    Raises:
        KeyError: an unknown id (the message lists the registered ones).

    Example:
        >>> suite_facts("qmp/PointReachMT4-v0").num_tasks
        4
    """
    try:
        return SUITES[env_id]
    except KeyError:
        raise KeyError(
            f"unknown qmp environment id {env_id!r}; registered ids are {', '.join(SUITES)}"
        ) from None


def _rebuild_facts(values: dict) -> SuiteFacts:
    return SuiteFacts(**{**values, "kwargs": MappingProxyType(values["kwargs"])})
