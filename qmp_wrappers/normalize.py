"""Observation normalisers and the Q-switch: let it score what the agent's networks see.

The one-hot task id must stay readable where the QMP wrapper sits, so a normaliser goes OUTSIDE
it (``NormalizeObservation(QMPBehaviorWrapper(env))``, SB3's ``VecNormalize(QMPVecEnvWrapper
(...))``). The agent's networks are then trained on normalised observations while the wrapper
holds raw ones: ``attach(..., agent_view=outer)`` makes every policy, critic and guide call go
through the normalisers between ``outer`` and the wrapper, with their current statistics and
without updating them, so the Q-switch scores exactly the inputs the agent sees. Each task
policy proposes on the raw state relabelled with its own one-hot, normalised afterwards, as the
agent would see that task's observation.

A normaliser INSIDE the wrapper hides the one-hot; the wrappers refuse that stack at
construction with a message that says what to do instead.

>>> import gymnasium as gym, numpy as np, qmp_envs
>>> from qmp_wrappers import QMPBehaviorWrapper, find_qmp_wrapper
>>> env = gym.wrappers.NormalizeObservation(
...     QMPBehaviorWrapper(gym.make("qmp/MultistageReacher-v0", task=2)))
>>> view = agent_view_fn(env, find_qmp_wrapper(env))
>>> obs, _ = env.reset(seed=0)
>>> raw = find_qmp_wrapper(env).qmp.last_obs
>>> bool(np.allclose(view(torch.as_tensor(raw)).numpy(), obs, atol=1e-5))
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.wrappers import NormalizeObservation
from gymnasium.wrappers.vector import NormalizeObservation as VectorNormalizeObservation

View = Callable[[torch.Tensor], torch.Tensor]


def _sb3_vec_normalize() -> Any:
    try:
        from stable_baselines3.common.vec_env import VecNormalize
    except ImportError:  # SB3 is optional for the Gymnasium wrappers
        return None
    return VecNormalize


def is_normalizer(layer: Any) -> bool:
    """Whether ``layer`` is an observation normaliser this module can see through.

    Args:
        layer: one layer of a wrapper stack.

    Returns:
        True for Gymnasium's ``NormalizeObservation`` (single or vector) and SB3's
        ``VecNormalize`` with ``norm_obs``.
    """
    vec_normalize = _sb3_vec_normalize()
    if isinstance(layer, NormalizeObservation | VectorNormalizeObservation):
        return True
    return vec_normalize is not None and isinstance(layer, vec_normalize) and layer.norm_obs


def _inner(layer: Any) -> Any:
    """The next layer down a Gymnasium (``env``) or SB3 (``venv``) wrapper stack."""
    for name in ("env", "venv"):
        inner = layer.__dict__.get(name) if hasattr(layer, "__dict__") else None
        if inner is not None:
            return inner
    return None


def inner_normalizer(env: Any) -> Any | None:
    """The first observation normaliser inside ``env``'s stack (``env`` included), if any.

    Args:
        env: a Gymnasium env, vector env or SB3 ``VecEnv``, wrapped or not.

    Returns:
        The outermost normalising layer, or None.
    """
    layer = env
    while layer is not None:
        if is_normalizer(layer):
            return layer
        layer = _inner(layer)
    return None


def _normalizer_view(layer: Any) -> View:
    """The normalisation ``layer`` applies, as a function of a tensor, with its statistics at
    call time (not a copy) and without updating them; in float64 as the normalisers compute."""
    vec_normalize = _sb3_vec_normalize()
    clip = None
    if vec_normalize is not None and isinstance(layer, vec_normalize):
        clip = float(layer.clip_obs)

    def view(obs: torch.Tensor) -> torch.Tensor:
        rms = layer.obs_rms
        array = obs.detach().cpu().numpy().astype(np.float64)
        out = (array - rms.mean) / np.sqrt(rms.var + layer.epsilon)
        if clip is not None:
            out = np.clip(out, -clip, clip)
        return torch.as_tensor(out.astype(np.float32), device=obs.device)

    return view


def agent_view_fn(outer: Any, qmp_layer: Any) -> View:
    """Compose the normalisers between ``outer`` (the env or vector env the agent steps) and
    ``qmp_layer`` (the QMP wrapper inside it), innermost first.

    Args:
        outer: the env or vector env the agent steps.
        qmp_layer: the QMP wrapper inside it.

    Returns:
        ``raw observation tensor -> what the agent sees``, with the normalisers' statistics at
        call time, never updating them.

    Raises:
        ValueError: ``qmp_layer`` is not inside ``outer``, or an observation wrapper between
            them changes observations in a way this module cannot reproduce (pass a callable
            ``agent_view`` for those).
    """
    layers: list[Any] = []
    layer = outer
    while layer is not None and layer is not qmp_layer:
        layers.append(layer)
        layer = _inner(layer)
    if layer is None:
        raise ValueError(
            f"agent_view={type(outer).__name__} does not contain this QMP wrapper: pass the "
            "env or vector env the agent steps (the QMP wrapper must be inside it)"
        )
    views: list[View] = []
    for layer in reversed(layers):
        if is_normalizer(layer):
            views.append(_normalizer_view(layer))
        elif isinstance(layer, gym.ObservationWrapper | gym.vector.VectorObservationWrapper):
            raise ValueError(
                f"{type(layer).__name__} between the agent and the QMP wrapper changes "
                "observations in a way the Q-switch cannot reproduce: pass agent_view= a "
                "callable (tensor of raw observations -> what the agent sees)"
            )

    def view(obs: torch.Tensor) -> torch.Tensor:
        for step in views:
            obs = step(obs)
        return obs

    return view


def resolve_agent_view(agent_view: Any, qmp_layer: Any) -> View | None:
    """``attach``'s ``agent_view`` as a function of observation tensors.

    Args:
        agent_view: None, a callable on tensors, or the env stack the agent steps.
        qmp_layer: the QMP wrapper that is attached to.

    Returns:
        None (the agent sees the raw observations), the callable itself, or the composed
        normalisers of :func:`agent_view_fn`.

    Raises:
        TypeError: ``agent_view`` is neither an env nor a callable.
        ValueError: see :func:`agent_view_fn`.
    """
    if agent_view is None:
        return None
    if isinstance(agent_view, gym.Env | gym.vector.VectorEnv) or _inner(agent_view) is not None:
        return agent_view_fn(agent_view, qmp_layer)
    if callable(agent_view):
        return agent_view
    raise TypeError(
        "agent_view must be the env the agent steps (with normalisers outside the QMP "
        f"wrapper) or a callable on observation tensors, got {type(agent_view).__name__}"
    )


def refuse_inner_normalizer(env: Any, has_task_id_fn: bool) -> None:
    """Refuse a normaliser inside the QMP wrapper: it would hide the one-hot task id.

    Args:
        env: what the QMP wrapper wraps.
        has_task_id_fn: a ``task_id_fn`` reads task ids in the user's own layout (then
            nothing is refused).

    Raises:
        ValueError: a normaliser is inside; the message says to put it outside and pass
            ``attach(..., agent_view=...)``.
    """
    if has_task_id_fn:
        return  # the user reads task ids and relabels in their own layout
    found = inner_normalizer(env)
    if found is not None:
        raise ValueError(
            f"{type(found).__name__} inside the QMP wrapper normalises the one-hot task id, "
            "which the Q-switch reads and relabels: put the normaliser OUTSIDE the QMP wrapper "
            "and attach(..., agent_view=<the env the agent steps>) so the switch scores the "
            "normalised observations the agent sees (qmp_wrappers.normalize)"
        )
