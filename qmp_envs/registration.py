"""Registration of the ``qmp/`` ids for ``gym.make`` and ``gym.make_vec``.

``gym.make(id, task=None | k, task_schedule="cycle" | "random", **kwargs)`` gives one env.
``gym.make_vec(id, num_envs=..., vector_strategy="sync" | "async", **kwargs)`` gives a vector
env whose sub-env k is pinned to task ``k mod N`` (one sub-env per task by default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import gymnasium as gym
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv


@dataclass(frozen=True)
class SuiteInfo:
    env_id: str
    entry_point: str
    num_tasks: int
    max_episode_steps: int
    kwargs: dict = field(default_factory=dict)


SUITES: dict[str, SuiteInfo] = {
    info.env_id: info
    for info in [
        SuiteInfo("qmp/PointReach-v0", "qmp_envs.point_reach:PointReachEnv", 1, 50),
        SuiteInfo("qmp/MultistageReacher-v0", "qmp_envs.reacher:MultistageReacherEnv", 5, 200),
        SuiteInfo("qmp/MazeLarge10-v0", "qmp_envs.maze:MazeLargeEnv", 10, 600),
        SuiteInfo("qmp/Walker2dMT4-v0", "qmp_envs.walker:Walker2dMTEnv", 4, 1000),
        SuiteInfo("qmp/KitchenMTEasy-v0", "qmp_envs.kitchen:KitchenMTEasyEnv", 10, 140),
        SuiteInfo("qmp/MetaWorldCDS-v0", "qmp_envs.metaworld_cds:MetaWorldCDSEnv", 4, 500),
        SuiteInfo(
            "qmp/MetaWorldMT10-v0",
            "qmp_envs.metaworld_suites:MetaWorldMTEnv",
            10,
            500,
            {"benchmark": "MT10"},
        ),
        SuiteInfo(
            "qmp/MetaWorldMT50-v0",
            "qmp_envs.metaworld_suites:MetaWorldMTEnv",
            50,
            500,
            {"benchmark": "MT50"},
        ),
    ]
}


def make_task_vector_env(
    env_id: str,
    num_envs: int = 1,
    *,
    vector_strategy: str = "sync",
    autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
    **env_kwargs,
) -> gym.vector.VectorEnv:
    """One sub-env per task: sub-env k is ``gym.make(env_id, task=k % N, **env_kwargs)``.

    ``num_envs`` must be a multiple of the task count N; Gymnasium's default of 1 means N (one
    sub-env per task). For off-policy training prefer ``autoreset_mode=AutoresetMode.SAME_STEP``
    so the final observation of a truncated episode is available for bootstrapping.
    """
    num_tasks = SUITES[env_id].num_tasks
    if num_envs == 1:
        num_envs = num_tasks
    if not isinstance(num_envs, int) or num_envs < 1 or num_envs % num_tasks:
        raise ValueError(
            f"num_envs must be a positive multiple of the task count {num_tasks} of {env_id} "
            f"(sub-env k runs task k mod {num_tasks}), got {num_envs!r}"
        )
    if "task" in env_kwargs:
        raise ValueError(
            "make_vec pins sub-env k to task k mod N; pass task=... to gym.make instead"
        )
    vector_classes = {"sync": SyncVectorEnv, "async": AsyncVectorEnv}
    if vector_strategy not in vector_classes:
        raise ValueError(f"vector_strategy must be 'sync' or 'async', got {vector_strategy!r}")
    env_fns = [partial(gym.make, env_id, task=k % num_tasks, **env_kwargs) for k in range(num_envs)]
    return vector_classes[vector_strategy](env_fns, autoreset_mode=AutoresetMode(autoreset_mode))


def register_suites() -> None:
    for info in SUITES.values():
        if info.env_id in gym.registry:
            continue
        gym.register(
            id=info.env_id,
            entry_point=info.entry_point,
            vector_entry_point=partial(make_task_vector_env, info.env_id),
            max_episode_steps=info.max_episode_steps,
            kwargs=dict(info.kwargs),
        )
