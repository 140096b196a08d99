"""Learned guidance at the environment boundary (CTPG-style), beside the Q-switch.

With ``mixture="guide"`` a QMP wrapper does not score the proposals with the collecting task's
Q: an attached guide (:class:`GuideNetworks`) chooses which candidate policy acts, and the
wrapper executes that choice for ``hold_steps`` (K) steps, as Cross-Task Policy Guidance (He et
al., NeurIPS 2024) does. The wrapper owns the sampling, the two gates, the K-step holds and the
selection statistics; the agent owns and trains the networks. The gates:

- **policy filter**: candidate j is masked for task i where ``Q^g_i(s, j) < V_i(s)`` (the guide
  critic's value of handing control to j is below task i's own value), from ``filter_start``
  environment steps on; the task's own policy is never masked;
- **guide block**: a task whose control temperature ``log alpha_i`` is above the mean over
  tasks (still exploring its own policy) is not guided: its own policy acts.

The functions here are the computation only, free of any env, so tests check them directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np
import torch

GUIDE_METHODS = ("logits", "guide_values", "own_values", "log_temperatures")


@runtime_checkable
class GuideNetworks(Protocol):
    """What a guide attached to a QMP wrapper provides; rows of ``obs`` are ``(B, D)`` and row
    b is answered by the networks of the task in row b (its one-hot)."""

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        """The guide policy's logits over the C candidate policies.

        Args:
            obs: observations ``(B, D)``.

        Returns:
            ``(B, C)`` logits.
        """
        ...

    def guide_values(self, obs: torch.Tensor) -> torch.Tensor:
        """The guide critic ``Q^g_i(s, j)`` of handing control to each candidate.

        Args:
            obs: observations ``(B, D)``.

        Returns:
            ``(B, C)`` values.
        """
        ...

    def own_values(self, obs: torch.Tensor) -> torch.Tensor:
        """The collecting task's own value ``V_i(s)`` (the policy filter's threshold).

        Args:
            obs: observations ``(B, D)``.

        Returns:
            ``(B,)`` values.
        """
        ...

    def log_temperatures(self) -> torch.Tensor:
        """Every task's control-policy temperature ``log alpha`` (read by the guide block).

        Returns:
            ``(N,)`` log temperatures.
        """
        ...


def check_guide(guide: object, probe: torch.Tensor, num_candidates: int, num_tasks: int) -> None:
    """Call each method of ``guide`` once on ``probe`` rows and check what it returns.

    Args:
        guide: the object given as ``attach(..., guide=...)``.
        probe: observation rows to call it on ``(M, D)``.
        num_candidates: C, the candidates the logits and guide values must cover.
        num_tasks: N, the length of ``log_temperatures()``.

    Raises:
        TypeError: ``guide`` lacks one of the :class:`GuideNetworks` methods.
        ValueError: a method returned something other than a tensor of its shape, or NaN or
            inf (the message names the method).
    """
    missing = [m for m in GUIDE_METHODS if not callable(getattr(guide, m, None))]
    if missing:
        raise TypeError(
            f"the guide {type(guide).__name__} lacks {', '.join(missing)}: it must provide "
            f"{', '.join(GUIDE_METHODS)} (see qmp_wrappers.guide.GuideNetworks)"
        )
    rows = len(probe)
    with torch.no_grad():
        expected: dict[str, tuple[Callable[[], torch.Tensor], tuple[int, ...]]] = {
            "logits": (lambda: guide.logits(probe), (rows, num_candidates)),  # type: ignore[attr-defined]
            "guide_values": (lambda: guide.guide_values(probe), (rows, num_candidates)),  # type: ignore[attr-defined]
            "own_values": (lambda: guide.own_values(probe), (rows,)),  # type: ignore[attr-defined]
            "log_temperatures": (lambda: guide.log_temperatures(), (num_tasks,)),  # type: ignore[attr-defined]
        }
        for name, (call, shape) in expected.items():
            out = call()
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != shape:
                found = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(f"guide.{name} returned {found}, expected a tensor of {shape}")
            if not torch.isfinite(out).all():
                raise ValueError(f"guide.{name} returned NaN or inf on the probe batch")


def policy_filter_mask(
    guide_values: torch.Tensor, own_values: torch.Tensor, task_ids: torch.Tensor
) -> torch.Tensor:
    """The policy filter: candidates the guide may choose; j is masked where
    ``Q^g_i(s, j) < V_i(s)``, the task's own policy never.

    Args:
        guide_values: ``Q^g_i(s, j)``, ``(B, C)``.
        own_values: ``V_i(s)``, ``(B,)``.
        task_ids: each row's task ``(B,)``.

    Returns:
        ``(B, C)`` bool, True where the candidate may be chosen.

    Example:

    >>> q = torch.tensor([[1.0, 3.0, 2.0]]); v = torch.tensor([2.5])
    >>> policy_filter_mask(q, v, torch.tensor([0])).tolist()
    [[True, True, False]]
    """
    mask = guide_values >= own_values[:, None]
    mask[torch.arange(len(task_ids), device=mask.device), task_ids] = True
    return mask


def guide_blocked(log_temperatures: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
    """The guide block: rows whose task's ``log alpha`` is above the mean over tasks.

    Args:
        log_temperatures: every task's ``log alpha``, ``(N,)``.
        task_ids: each row's task ``(B,)``.

    Returns:
        ``(B,)`` bool, True where the row's own policy acts instead of the guide's choice.

    Example:

    >>> guide_blocked(torch.tensor([-1.0, 0.0, -2.0]), torch.tensor([0, 1, 2, 1])).tolist()
    [False, True, False, True]
    """
    return log_temperatures[task_ids] > log_temperatures.mean()


def sample_guided(logits: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator) -> np.ndarray:
    """One candidate per row from ``softmax(logits)`` restricted to ``mask``, by inverse-CDF
    sampling with ONE uniform draw per row from ``rng`` (in float64, reproducible).

    Args:
        logits: the guide's logits ``(B, C)``.
        mask: ``(B, C)`` bool, the candidates allowed (at least one per row).
        rng: the random stream of the draws.

    Returns:
        The chosen candidate of every row, ``(B,)`` int64, always an allowed one.

    Example:
        >>> mask = torch.tensor([[False, True, False]])
        >>> sample_guided(torch.zeros(1, 3), mask, np.random.default_rng(0)).tolist()
        [1]
    """
    logits64 = logits.double().cpu().numpy()
    allowed = mask.cpu().numpy()
    logits64 = np.where(allowed, logits64, -np.inf)
    logits64 -= logits64.max(axis=1, keepdims=True)
    probs = np.exp(logits64)
    probs /= probs.sum(axis=1, keepdims=True)
    draws = rng.random(len(probs))[:, None]
    chosen = (probs.cumsum(axis=1) < draws).sum(axis=1)
    # Rounding can leave the last cumulative sum a hair below a draw: take the last allowed.
    last_allowed = allowed.shape[1] - 1 - np.argmax(allowed[:, ::-1], axis=1)
    return np.minimum(chosen, last_allowed).astype(np.int64)


def guided_choice(
    guide: GuideNetworks,
    obs: torch.Tensor,
    task_ids: torch.Tensor,
    rng: np.random.Generator,
    *,
    use_filter: bool,
    use_block: bool,
) -> np.ndarray:
    """The candidate each row's guide picks, after the gates (see the module docstring).

    Args:
        guide: the attached guide networks.
        obs: observations ``(B, D)``, as the agent sees them.
        task_ids: each row's task ``(B,)``.
        rng: the random stream of the draws.
        use_filter: apply the policy filter (:func:`policy_filter_mask`).
        use_block: apply the guide block (:func:`guide_blocked`).

    Returns:
        The chosen candidate of every row, ``(B,)`` int64.
    """
    with torch.no_grad():
        logits = guide.logits(obs)
        mask = torch.ones_like(logits, dtype=torch.bool)
        if use_filter:
            mask = policy_filter_mask(guide.guide_values(obs), guide.own_values(obs), task_ids)
        chosen = sample_guided(logits, mask, rng)
        if use_block:
            blocked = guide_blocked(guide.log_temperatures(), task_ids).cpu().numpy()
            chosen[blocked] = task_ids.cpu().numpy()[blocked]
    return chosen
