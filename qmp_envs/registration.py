"""Registration of the ``qmp/`` ids for ``gym.make`` and ``gym.make_vec``.

``gym.make(id, task=None | k, task_schedule="cycle" | "random", **kwargs)`` gives one env.
``gym.make_vec(id, num_envs=..., vector_strategy="sync" | "async", **kwargs)`` gives a vector
env whose sub-env k is pinned to task ``k mod N`` (one sub-env per task by default).
"""

from __future__ import annotations

from functools import partial

import gymnasium as gym
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

from qmp_envs import validation
from qmp_envs.suites import SUITES, suite_facts


def make_task_vector_env(
    env_id: str,
    num_envs: int = 1,
    *,
    vector_strategy: str = "sync",
    autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
    record_episode_statistics: bool = False,
    **env_kwargs,
) -> gym.vector.VectorEnv:
    """One sub-env per task: sub-env k is ``gym.make(env_id, task=k % N, **env_kwargs)``.

    ``num_envs`` must be a multiple of the task count N; Gymnasium's default of 1 means N (one
    sub-env per task). For off-policy training prefer ``autoreset_mode=AutoresetMode.SAME_STEP``
    so the final observation of a truncated episode is available for bootstrapping.
    ``record_episode_statistics=True`` wraps each sub-env in ``RecordEpisodeStatistics``, so
    ``final_info["episode"]`` exists (what ``metaworld.evaluation.evaluation`` reads, with
    ``autoreset_mode=SAME_STEP``).

    Args:
        env_id: a ``qmp/`` id.
        num_envs: a multiple of the task count N; 1 means N.
        vector_strategy: ``"sync"`` (``SyncVectorEnv``) or ``"async"`` (``AsyncVectorEnv``).
        autoreset_mode: Gymnasium's autoreset mode of the vector env.
        record_episode_statistics: wrap each sub-env in ``RecordEpisodeStatistics``.
        **env_kwargs: passed to every sub-env's ``gym.make`` (not ``task``).

    Returns:
        The vector env; sub-env k runs task ``k mod N``.

    Raises:
        KeyError: an unknown ``env_id``.
        qmp_envs.validation.InputError: ``num_envs`` < 1 (``InputTypeError`` if it is not an
            integer).
        ValueError: ``num_envs`` not a multiple of N, a ``task`` keyword, or an unknown
            ``vector_strategy`` or ``autoreset_mode``.

    Example:
        >>> envs = make_task_vector_env("qmp/PointReachMT4-v0", 8)
        >>> envs.get_attr("pinned_task")
        (0, 1, 2, 3, 0, 1, 2, 3)
    """
    num_tasks = suite_facts(env_id).num_tasks
    num_envs = validation.integer("num_envs", num_envs, minimum=1)  # True is not a count
    if num_envs == 1:
        num_envs = num_tasks
    if num_envs % num_tasks:
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
    env_fns = [
        partial(_make_sub_env, env_id, k % num_tasks, record_episode_statistics, env_kwargs)
        for k in range(num_envs)
    ]
    return vector_classes[vector_strategy](env_fns, autoreset_mode=AutoresetMode(autoreset_mode))


def _make_sub_env(env_id: str, task: int, record_stats: bool, env_kwargs: dict) -> gym.Env:
    env = gym.make(env_id, task=task, **env_kwargs)
    return gym.wrappers.RecordEpisodeStatistics(env) if record_stats else env


def vector_entry_point_name(env_id: str) -> str:
    """The module attribute that builds ``env_id``'s vector env, e.g. ``make_vec_PointReach_v0``.

    Registered as a string (``"qmp_envs.registration:make_vec_PointReach_v0"``) rather than a
    ``partial``, so ``gym.spec(env_id).to_json()`` works.

    Args:
        env_id: a ``qmp/`` id.

    Returns:
        The attribute's name.

    Example:
        >>> vector_entry_point_name("qmp/PointReach-v0")
        'make_vec_PointReach_v0'
    """
    return "make_vec_" + env_id.split("/", 1)[1].replace("-", "_")


for _env_id in SUITES:
    globals()[vector_entry_point_name(_env_id)] = partial(make_task_vector_env, _env_id)


def register_suites() -> None:
    """Register every ``qmp/`` id of ``qmp_envs.SUITES`` for ``gym.make`` and
    ``gym.make_vec``; ids already registered are left as they are (``import qmp_envs`` calls
    it, so calling it again does nothing)."""
    for facts in SUITES.values():
        if facts.env_id in gym.registry:
            continue
        gym.register(
            id=facts.env_id,
            entry_point=facts.entry_point,
            vector_entry_point=f"{__name__}:{vector_entry_point_name(facts.env_id)}",
            max_episode_steps=None if facts.env_owns_time_limit else facts.max_episode_steps,
            kwargs=dict(facts.kwargs),
        )
