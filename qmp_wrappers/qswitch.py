"""The batched Q-switch: propose with every task policy, score with the collecting task's Q.

This module is the computation only, free of any environment, so the wrapper, the benchmarks
and the tests share one implementation. Everything is batched: one policy call for all
``N x B`` proposals and one Q call for all ``(N + E) x B`` candidates, never a loop over tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

SCORING_RULES = ("original", "min_twin")
MIXTURES = ("qswitch", "uniform", "softmax", "guide")  # guide: qmp_wrappers.guide


def read_one_hot_task(obs: np.ndarray, num_tasks: int) -> np.ndarray:
    """Task ids from the last ``num_tasks`` entries of each observation row.

    Args:
        obs: observations ``(B, D)``, each ending with a one-hot task id.
        num_tasks: N, the length of the one-hot.

    Returns:
        The task index of every row, ``(B,)``.

    Raises:
        ValueError: a row's tail is not an exact one-hot vector (the message names the row and
            says to pass ``task_id_fn`` and ``relabel_fn`` for other layouts).

    Example:

    >>> read_one_hot_task(np.array([[0.5, 0.0, 1.0], [0.2, 1.0, 0.0]]), 2).tolist()
    [1, 0]
    """
    tail = obs[:, -num_tasks:]
    is_one_hot = np.all((tail == 0) | (tail == 1), axis=1) & (tail.sum(axis=1) == 1)
    if not np.all(is_one_hot):
        bad = int(np.flatnonzero(~is_one_hot)[0])
        raise ValueError(
            f"observation row {bad} has no recognisable task id: its last {num_tasks} entries "
            f"{tail[bad].tolist()} are not a one-hot vector. Pass task_id_fn= and relabel_fn= "
            "for environments with another layout."
        )
    return tail.argmax(axis=1)


def relabel_one_hot(obs: torch.Tensor, task_ids: torch.Tensor, num_tasks: int) -> torch.Tensor:
    """A copy of ``obs`` whose last ``num_tasks`` entries are ``one_hot(task_ids)``.

    Args:
        obs: observations ``(M, D)`` ending with a one-hot task id.
        task_ids: the task each row should show, ``(M,)``, on ``obs``'s device.
        num_tasks: N, the length of the one-hot.

    Returns:
        The relabelled copy ``(M, D)``; ``obs`` is left as it is.

    Example:
        >>> relabel_one_hot(torch.tensor([[0.5, 1.0, 0.0]]), torch.tensor([1]), 2).tolist()
        [[0.5, 0.0, 1.0]]
    """
    out = obs.clone()
    out[:, -num_tasks:] = 0.0
    out[torch.arange(len(out), device=out.device), obs.shape[1] - num_tasks + task_ids] = 1.0
    return out


class ContractError(ValueError):
    """A policy or Q callable returned something that breaks ``attach``'s contract."""


class ContractTypeError(ContractError, TypeError):
    """A policy or Q callable returned something that is not a tensor or array."""


def _to_tensor(value, what: str, device: torch.device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.device != device:
            raise ContractError(f"{what} is on device {value.device}, expected {device}")
        return value.detach().to(torch.float32)
    try:
        return torch.as_tensor(np.asarray(value, dtype=np.float32), device=device)
    except (TypeError, ValueError) as err:
        raise ContractTypeError(
            f"{what} must be a tensor or array, got {type(value).__name__}"
        ) from err


def _check_finite(value: torch.Tensor, what: str) -> None:
    if not torch.isfinite(value).all():
        raise ContractError(f"{what} contains NaN or inf")


@dataclass
class CallableAdapter:
    """Calls a user's policy or Q callable with the input type it expects.

    ``torch_input=True`` passes torch tensors on ``device`` (networks); otherwise numpy arrays
    (plain numpy callables, scripted policies). Outputs are converted back to torch on ``device``.
    ``view`` maps the observations (the first input) to what the agent sees, e.g. an outer
    normaliser's output (:mod:`qmp_wrappers.normalize`), before the callable gets them.

    Args:
        fn: the user's callable.
        name: how error messages name it (``"policy"``, ``"extra policy 'up'"``, ...).
        torch_input: pass torch tensors (True) or numpy arrays (False).
        device: where input tensors live and outputs are put.
        view: applied to the observations before ``fn`` sees them, if given.
    """

    fn: Callable
    name: str
    torch_input: bool
    device: torch.device
    view: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __call__(self, *inputs: torch.Tensor):
        if self.view is not None:
            inputs = (self.view(inputs[0]), *inputs[1:])
        args = inputs if self.torch_input else tuple(x.cpu().numpy() for x in inputs)
        with torch.no_grad():
            return self.fn(*args)

    def policy(self, obs: torch.Tensor, action_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The callable's actions on ``obs``, checked: ``(sampled, mean)``.

        Args:
            obs: observations ``(M, D)``.
            action_dim: A.

        Returns:
            ``(sampled, mean)``, each ``(M, A)`` float32 on ``device``; a single output counts
            as both.

        Raises:
            ContractError: not one or two outputs (CleanRL's three-output ``get_action``
                included: the message says how to adapt it), the wrong shape, NaN or inf, or a
                tensor on another device.
            ContractTypeError: an output that is not a tensor or array.
        """
        out = self(obs)
        if isinstance(out, tuple | list) and len(out) not in (1, 2):
            raise ContractError(
                f"{self.name} returned {len(out)} outputs; expected actions or (sampled, mean). "
                "CleanRL's Actor.get_action returns (action, log_prob, mean): pass "
                "policy=lambda obs: actor.get_action(obs)[::2]"
            )
        if isinstance(out, tuple | list):
            sampled, mean = out if len(out) == 2 else (out[0], out[0])
        else:
            sampled, mean = out, out
        results = []
        for value, what in ((sampled, "sampled action"), (mean, "mean action")):
            value = _to_tensor(value, f"{self.name} {what}", self.device)
            if value.shape != (len(obs), action_dim):
                raise ContractError(
                    f"{self.name} returned {what}s of shape {tuple(value.shape)}, expected "
                    f"({len(obs)}, {action_dim}) for {len(obs)} observations"
                )
            _check_finite(value, f"{self.name} {what}")
            results.append(value)
        return results[0], results[1]

    def q_values(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The callable's Q-values of ``(obs, actions)`` pairs, checked.

        Args:
            obs: observations ``(M, D)``.
            actions: actions ``(M, A)``.

        Returns:
            ``(M, K)`` float32 for K critics; outputs of shape (M,), (M, 1), (M, K) or a tuple
            of K such tensors are accepted.

        Raises:
            ContractError: an output of another shape, NaN or inf, or a tensor on another
                device.
            ContractTypeError: an output that is not a tensor or array.
        """
        out = self(obs, actions)
        parts = out if isinstance(out, tuple | list) else (out,)
        columns = []
        for part in parts:
            part = _to_tensor(part, f"{self.name} output", self.device)
            if part.ndim == 1:
                part = part[:, None]
            if part.ndim != 2 or part.shape[0] != len(obs):
                raise ContractError(
                    f"{self.name} returned shape {tuple(part.shape)}, expected ({len(obs)},), "
                    f"({len(obs)}, 1) or ({len(obs)}, K) for {len(obs)} (obs, action) pairs"
                )
            columns.append(part)
        values = torch.cat(columns, dim=1)
        _check_finite(values, f"{self.name} output")
        return values


@dataclass
class Candidates:
    """All proposals for a batch of B envs: ``(B, C, A)`` with C = N task policies + E extras.

    Attributes:
        sampled: the sampled actions, the collecting task's slot holding the agent's action.
        mean: the mean actions.
    """

    sampled: torch.Tensor
    mean: torch.Tensor


def propose(
    obs: torch.Tensor,
    task_ids: torch.Tensor,
    agent_actions: torch.Tensor,
    policy: CallableAdapter,
    num_tasks: int,
    relabel: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    extra_policies: Sequence[CallableAdapter] = (),
) -> Candidates:
    """Every task policy's proposal on every env's state, in ONE batched policy call.

    Rows of the policy batch are task-major (row ``j * B + b`` is policy j on env b), so a
    per-task ensemble can evaluate them as N contiguous blocks. The agent's own action replaces
    the sample of the collecting task's policy: the agent's proposal is one of the candidates.

    Args:
        obs: the envs' observations ``(B, D)``.
        task_ids: each env's task ``(B,)``.
        agent_actions: the agent's actions ``(B, A)``.
        policy: the task policies (one call answers row m with row m's task's policy).
        num_tasks: N.
        relabel: ``(obs, task_ids) -> obs`` showing each row as another task.
        extra_policies: the E extra policies, called on ``obs`` unrelabelled.

    Returns:
        The ``N + E`` candidates of every env.

    Raises:
        ContractError: a policy output that breaks ``attach``'s contract
            (:meth:`CallableAdapter.policy`).
    """
    batch, action_dim = agent_actions.shape
    policy_ids = torch.arange(num_tasks, device=obs.device).repeat_interleave(batch)
    relabelled = relabel(obs.repeat(num_tasks, 1), policy_ids)
    sampled, mean = policy.policy(relabelled, action_dim)
    sampled = sampled.view(num_tasks, batch, action_dim).transpose(0, 1).clone()
    mean = mean.view(num_tasks, batch, action_dim).transpose(0, 1)
    sampled[torch.arange(batch, device=obs.device), task_ids] = agent_actions
    if extra_policies:
        extras = [extra.policy(obs, action_dim) for extra in extra_policies]
        sampled = torch.cat([sampled, torch.stack([s for s, _ in extras], dim=1)], dim=1)
        mean = torch.cat([mean, torch.stack([m for _, m in extras], dim=1)], dim=1)
    return Candidates(sampled=sampled, mean=mean)


def score(
    obs: torch.Tensor,
    candidates: Candidates,
    q_function: CallableAdapter,
    scoring: str = "original",
) -> torch.Tensor:
    """Scores ``(B, C)`` of every candidate under the collecting task's Q, in ONE batched call.

    ``"original"``: the first critic on each candidate's mean action (the paper's code);
    ``"min_twin"``: the minimum over critics on each candidate's sampled action.

    Args:
        obs: the envs' observations ``(B, D)`` (the collecting task's view).
        candidates: the proposals, ``(B, C, A)``.
        q_function: the critics (row m scored by row m's task's Q).
        scoring: ``"original"`` or ``"min_twin"``.

    Returns:
        The scores ``(B, C)``.

    Raises:
        ContractError: a Q output that breaks ``attach``'s contract
            (:meth:`CallableAdapter.q_values`).
    """
    batch, num_candidates, action_dim = candidates.sampled.shape
    actions = candidates.mean if scoring == "original" else candidates.sampled
    q_obs = obs.repeat_interleave(num_candidates, dim=0)
    values = q_function.q_values(q_obs, actions.reshape(batch * num_candidates, action_dim))
    values = values[:, 0] if scoring == "original" else values.min(dim=1).values
    return values.view(batch, num_candidates)


def choose(
    scores: torch.Tensor | None,
    num_candidates: int,
    batch: int,
    mixture: str,
    temperature: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Index of the executed candidate per env: argmax, uniform, or softmax sampling.

    Args:
        scores: the candidates' scores ``(B, C)``; not read (may be None) for ``"uniform"``.
        num_candidates: C.
        batch: B.
        mixture: ``"qswitch"`` (argmax), ``"uniform"`` or ``"softmax"``.
        temperature: the softmax temperature.
        rng: the random stream of the uniform and softmax draws.

    Returns:
        The chosen candidate of every env, ``(B,)`` int64.

    Example:
        >>> scores = torch.tensor([[0.0, 2.0, 1.0]])
        >>> choose(scores, 3, 1, "qswitch", 1.0, np.random.default_rng(0)).tolist()
        [1]
    """
    if mixture == "uniform":
        return rng.integers(num_candidates, size=batch)
    assert scores is not None
    if mixture == "qswitch":
        return scores.argmax(dim=1).cpu().numpy()
    # In float64: scores / temperature overflows float32 at tiny temperatures (inf - inf = NaN).
    logits = scores.double().cpu().numpy() / temperature
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    # Inverse-CDF sampling: one uniform draw per env keeps the RNG stream simple to reproduce.
    draws = rng.random(batch)[:, None]
    return np.minimum((probs.cumsum(axis=1) < draws).sum(axis=1), num_candidates - 1)


def deterministic_mixture(
    obs: torch.Tensor,
    task_ids: torch.Tensor,
    policy: CallableAdapter,
    q_function: CallableAdapter,
    num_tasks: int,
    relabel: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    action_dim: int,
    extra_policies: Sequence[CallableAdapter] = (),
    scoring: str = "original",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Q-switch as a deterministic policy, for evaluation: ``(actions (B, A), chosen (B,))``.

    Every candidate's MEAN action is scored by the collecting task's Q (``scoring``'s critic
    rule) and the best candidate's mean is executed: the original code's evaluation of a QMP
    run (``qswitch_mixture_policies_wrapper.py`` mode ``"mop"`` scores the means, and its
    deterministic rollouts execute the chosen policy's mean).

    Args:
        obs: observations ``(B, D)``.
        task_ids: each row's task ``(B,)``.
        policy: the task policies.
        q_function: the critics.
        num_tasks: N.
        relabel: ``(obs, task_ids) -> obs`` showing each row as another task.
        action_dim: A.
        extra_policies: the extra policies (called on ``obs`` unrelabelled).
        scoring: the critic rule of :func:`score`.

    Returns:
        The executed mean actions ``(B, A)`` and the chosen candidates ``(B,)``.

    Raises:
        ContractError: a policy or Q output that breaks ``attach``'s contract.
    """
    # propose() puts the agent's sample in the collecting task's slot; only means are used here.
    placeholder = torch.zeros(len(obs), action_dim, device=obs.device)
    candidates = propose(obs, task_ids, placeholder, policy, num_tasks, relabel, extra_policies)
    means = Candidates(sampled=candidates.mean, mean=candidates.mean)
    chosen = score(obs, means, q_function, scoring).argmax(dim=1)
    return candidates.mean[torch.arange(len(obs), device=obs.device), chosen], chosen
