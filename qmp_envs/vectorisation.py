"""Refuse the vectorisation idioms that would silently lose the one-sub-env-per-task layout.

``gym.make_vec("qmp/...")`` gives one sub-env per task (our ``vector_entry_point``). Two common
idioms instead build N copies of ``gym.make(id)``, which all start on task 0 and then cycle in
lock step: Gymnasium's ``gym.make_vec(id, vectorization_mode="sync" | "async")`` and torchrl's
``GymEnv(id, num_envs=N)``. Neither tells the env it is being copied, so the env looks at who
builds it (one walk up the call stack, at construction only) and refuses with what to use.
Copies of ONE pinned task (``task=k`` given) are what such a call means and stay allowed.
"""

from __future__ import annotations

import os
import sys

import gymnasium as gym

_MAKE_VEC_FILE = os.path.join("gymnasium", "envs", "registration.py")
_TORCHRL_GYM_FILE = os.path.join("torchrl", "envs", "libs", "gym.py")


def copied_vectorisation() -> str | None:
    """The idiom building this env as one of several identical copies, read from the call
    stack.

    Returns:
        The idiom, as the message shows it, or None if the env is not built by one.
    """
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "create_single_env" and code.co_filename.endswith(_MAKE_VEC_FILE):
            return 'gym.make_vec(..., vectorization_mode="sync" | "async")'
        if code.co_name == "_build_env" and code.co_filename.endswith(_TORCHRL_GYM_FILE):
            num_envs = frame.f_locals.get("num_envs", 0)
            if isinstance(num_envs, int) and num_envs > 0:
                return f"torchrl's GymEnv(..., num_envs={num_envs})"
        frame = frame.f_back  # type: ignore[assignment]
    return None


def refuse_copied_vectorisation(env_id: str | None) -> None:
    """Refuse to build a multi-task env without a pinned task as one of identical copies.

    Args:
        env_id: the env's ``qmp/`` id, for the message (None: ``"qmp/..."``).

    Raises:
        gymnasium.error.Error: the env is being built by one of the copying idioms; the
            message says what to use instead.
    """
    idiom = copied_vectorisation()
    if idiom is None:
        return
    env_id = env_id or "qmp/..."
    raise gym.error.Error(
        f"{idiom} builds identical copies of {env_id}, which would all run task 0 (then cycle "
        f"in lock step) instead of one sub-env per task. Use gym.make_vec({env_id!r}) (sub-env "
        f"k runs task k; vector_strategy='async' for subprocesses, num_envs a multiple of the "
        "task count); with torchrl, wrap that vector env: GymWrapper(gym.make_vec(...)). Pass "
        "task=k if you really want copies of one task."
    )
