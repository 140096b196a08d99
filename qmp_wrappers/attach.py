"""What ``attach`` accepts, checked once with a probe call so mistakes surface at attach time.

A policy maps a batch of observations to actions, or to ``(sampled, mean)``; a Q-function maps
``(observations, actions)`` to values, or to a tuple of values (twin critics), or is given as a
list of such callables. :func:`bind_networks` resolves where inputs live (torch tensors on a
device for torch modules and for callables given ``device=``, numpy arrays otherwise) and calls
each once on a probe batch built from the observation space (one row per task), so that the
common mistakes are named before the first step instead of failing deep inside torch:
CleanRL's ``get_action`` (3 outputs), a network's raw ``forward`` (unsquashed or ``log_std``
outputs outside the action space), a torch callable given numpy arrays, an unusable device.

The probe leaves the global torch and NumPy random streams as it found them, so attaching does
not change what a seeded run computes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
import torch

from qmp_wrappers.qswitch import CallableAdapter, ContractError

ArrayLike = Any  # a torch.Tensor or a numpy array


@runtime_checkable
class Policy(Protocol):
    """``obs (M, D) -> actions (M, A)`` or ``-> (sampled (M, A), mean (M, A))``.

    Row m is answered by the policy of the task in row m's one-hot (a per-task ensemble or one
    task-conditioned network). Actions must lie in the action space (squashed).
    """

    def __call__(self, obs: ArrayLike, /) -> ArrayLike | tuple[ArrayLike, ArrayLike]: ...


@runtime_checkable
class QFunction(Protocol):
    """``(obs (M, D), actions (M, A)) -> values``: (M,), (M, 1), (M, K) or a K-tuple of those.

    Row m is scored by the Q-function of the task in row m's one-hot.
    """

    def __call__(self, obs: ArrayLike, actions: ArrayLike, /) -> Any: ...


class CriticList:
    """Several Q callables (e.g. ``[qf1, qf2]``) as one that returns their outputs as a tuple.

    Args:
        critics: the Q callables, each ``(obs, actions) -> values``.

    Example:
        >>> both = CriticList([lambda o, a: 1.0, lambda o, a: 2.0])
        >>> both(None, None)
        (1.0, 2.0)
    """

    def __init__(self, critics: Sequence[Callable]):
        self.critics = list(critics)

    def __call__(self, obs: ArrayLike, actions: ArrayLike) -> tuple:
        return tuple(critic(obs, actions) for critic in self.critics)


def _owner_module(fn: Any) -> torch.nn.Module | None:
    """The module behind a callable: the module itself, or the owner of a bound method."""
    if isinstance(fn, torch.nn.Module):
        return fn
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, torch.nn.Module) else None


def _module_devices(fn: Any) -> set[torch.device]:
    module = _owner_module(fn)
    if module is None:
        return set()
    return {t.device for t in [*module.parameters(), *module.buffers()]}


def _usable_device(device: str | torch.device) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a torch device") from err
    if device.type == "meta":
        raise ValueError("device='meta' holds no data: networks must be materialised to attach")
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as err:
        raise ValueError(
            f"device={str(device)!r} is not usable with this torch build "
            f"(torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}): {err}"
        ) from err
    return device


def resolve_device(
    policy: Callable, critics: Sequence[Callable], device: str | torch.device | None
) -> tuple[bool, torch.device]:
    """Where and as what the callables get their inputs.

    Args:
        policy: the task policies.
        critics: the Q callables.
        device: the device ``attach`` was given, or None to infer it from torch modules (and
            bound methods of modules).

    Returns:
        ``(torch_input, device)``: torch tensors on ``device`` for modules and for callables
        given a device, numpy arrays (``torch_input`` False, the CPU) otherwise.

    Raises:
        ValueError: the networks are on different devices, on the meta device, or not on the
            ``device`` given; a ``device`` that is not one or not usable with this torch build.
    """
    found: set[torch.device] = set()
    for fn in [policy, *critics]:
        found |= _module_devices(fn)
    if len(found) > 1:
        raise ValueError(
            f"policy and q_function are on different devices: {sorted(map(str, found))}"
        )
    if device is not None:
        device = _usable_device(device)
        if found and found != {device}:
            raise ValueError(f"device={device} but the networks are on {next(iter(found))}")
    if any(d.type == "meta" for d in found):
        raise ValueError(
            "the networks are on the meta device (parameters without data): load or "
            "materialise them (e.g. module.to_empty(device=...) and load_state_dict) first"
        )
    any_module = any(_owner_module(fn) is not None for fn in [policy, *critics])
    torch_input = device is not None or any_module
    resolved = device if device is not None else (found.pop() if found else torch.device("cpu"))
    return torch_input, resolved


# Feature values of the probe rows (each clipped into the space): 0 alone would let a raw
# forward whose outputs happen to lie in the action bounds there pass the check.
PROBE_VALUES = (0.0, 1.0, -1.0, 10.0, -10.0)


def probe_observations(space: gym.spaces.Box, num_tasks: int, relabel: Callable) -> torch.Tensor:
    """One row per task and probe value: every feature at that value (clipped into the space),
    then the task's id; deterministic, so probing draws no random numbers.

    Args:
        space: the observation space.
        num_tasks: N.
        relabel: ``(obs, task_ids) -> obs`` writing each row's task id.

    Returns:
        ``(len(PROBE_VALUES) * N, D)`` float32 observations.
    """
    low = np.asarray(space.low, dtype=np.float64)
    high = np.asarray(space.high, dtype=np.float64)
    points = np.stack([np.clip(value, low, high) for value in PROBE_VALUES])
    base = torch.as_tensor(points, dtype=torch.float32).repeat_interleave(num_tasks, dim=0)
    tasks = torch.arange(num_tasks).repeat(len(PROBE_VALUES))
    return relabel(base, tasks)


def _call_for_probe(call: Callable, name: str, torch_input: bool, device: torch.device):
    try:
        return call()
    except ContractError:
        raise
    except Exception as err:  # a user's callable may raise anything; name it, keep the cause
        raise TypeError(_input_hint(name, err, torch_input, device)) from err


def _input_hint(name: str, err: BaseException, torch_input: bool, device: torch.device) -> str:
    given = f"torch tensors on {device}" if torch_input else "numpy arrays"
    hint = (
        "if it expects torch tensors, pass device=... to attach"
        if not torch_input
        else "if it expects numpy arrays, wrap it to convert, or check the device"
    )
    return f"{name} failed when called with {given} ({type(err).__name__}: {err}); {hint}"


RAW_FORWARD_HINT = (
    "A network's raw forward often returns unsquashed means or (mean, log_std): pass the "
    "method that returns squashed actions (e.g. CleanRL: actor.get_action(obs)[::2], not actor)"
)


def check_in_action_space(
    values: torch.Tensor, space: gym.spaces.Box, what: str, hint: str = RAW_FORWARD_HINT
) -> None:
    """Check that actions lie inside ``space`` (within 1e-4 of the space's width, for float
    rounding).

    Args:
        values: actions ``(M, A)``.
        space: the action space.
        what: how the message names the actions.
        hint: the fix the message proposes.

    Raises:
        qmp_wrappers.qswitch.ContractError: a value lies outside ``space``.
    """
    low = torch.as_tensor(space.low, dtype=torch.float32, device=values.device)
    high = torch.as_tensor(space.high, dtype=torch.float32, device=values.device)
    tolerance = 1e-4 * torch.clamp(high - low, max=1e6)
    outside = (values < low - tolerance) | (values > high + tolerance)
    if outside.any():
        worst = float(values[outside].abs().max())
        raise ContractError(
            f"{what} lies outside the action space {space} (|value| up to {worst:.3g}). {hint}"
        )


class ExtraPolicyAdapter(CallableAdapter):
    """An extra policy's adapter whose every proposal is checked to lie in the action space.

    Task policies are probed once at attach; an extra policy (scripted, pretrained, possibly
    stochastic with its own random stream) is not called at attach, so that attaching does not
    advance its stream. Its proposals are checked when it makes them instead: an action outside
    the space would otherwise be clipped silently into a different action than it proposed.

    Args:
        fn: the extra policy.
        name: how messages name it.
        torch_input: pass torch tensors (True) or numpy arrays (False).
        device: where tensors live.
        action_space: the space every proposal must lie in.
    """

    def __init__(
        self,
        fn: Callable,
        name: str,
        torch_input: bool,
        device: torch.device,
        action_space: gym.spaces.Box,
    ):
        super().__init__(fn, name, torch_input, device)
        self.action_space = action_space

    def policy(self, obs: torch.Tensor, action_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The extra policy's proposals on ``obs``, checked to lie in the action space.

        Args:
            obs: observations ``(M, D)``.
            action_dim: A.

        Returns:
            ``(sampled, mean)``, each ``(M, A)``.

        Raises:
            qmp_wrappers.qswitch.ContractError: a proposal outside the action space, or an
                output that breaks the contract of
                :meth:`qmp_wrappers.qswitch.CallableAdapter.policy`.
        """
        sampled, mean = super().policy(obs, action_dim)
        hint = "Extra policies must propose actions inside the action space (squash or clip them)"
        check_in_action_space(sampled, self.action_space, f"{self.name}'s sampled action", hint)
        check_in_action_space(mean, self.action_space, f"{self.name}'s mean action", hint)
        return sampled, mean


def bind_networks(
    policy: Callable,
    q_function: Callable | Sequence[Callable],
    device: str | torch.device | None,
    observation_space: gym.spaces.Box,
    action_space: gym.spaces.Box,
    num_tasks: int,
    relabel: Callable,
    view: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[CallableAdapter, CallableAdapter, torch.device]:
    """Validate ``attach``'s arguments with one probe call each (leaving the global torch and
    NumPy random streams as they were).

    Args:
        policy: the task policies.
        q_function: a critic or a list of critics.
        device: the device given to ``attach``, or None.
        observation_space: the observation space of one env.
        action_space: the action space of one env.
        num_tasks: N.
        relabel: ``(obs, task_ids) -> obs`` writing each row's task id.
        view: the agent's view of observations, applied before each call.

    Returns:
        The policy's and the critics' adapters, and the device inputs live on.

    Raises:
        TypeError: a callable that is not one, or that fails on the probe batch (the message
            names it and what it was given).
        ValueError: an empty critic list; a device problem (:func:`resolve_device`); a probe
            output of the wrong shape or range, or with NaN or inf
            (:class:`~qmp_wrappers.qswitch.ContractError`).
    """
    if not callable(policy):
        raise TypeError(f"policy must be callable (a Policy), got {type(policy).__name__}")
    critics: list[Callable] = (
        list(q_function) if isinstance(q_function, list | tuple) else [q_function]  # type: ignore[list-item]
    )
    if not critics:
        raise ValueError("q_function is an empty list; give one critic or a list of critics")
    for k, critic in enumerate(critics):
        if not callable(critic):
            label = "q_function" if len(critics) == 1 else f"q_function[{k}]"
            raise TypeError(f"{label} must be callable (a QFunction), got {type(critic).__name__}")
    torch_input, device = resolve_device(policy, critics, device)
    combined: Callable = critics[0] if len(critics) == 1 else CriticList(critics)
    policy_adapter = CallableAdapter(policy, "policy", torch_input, device, view)
    q_adapter = CallableAdapter(combined, "q_function", torch_input, device, view)

    action_dim = int(action_space.shape[0])
    obs = probe_observations(observation_space, num_tasks, relabel).to(device)
    # The probe must not shift any random stream a seeded run depends on.
    numpy_state = np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        sampled, mean = _call_for_probe(
            lambda: policy_adapter.policy(obs, action_dim), "policy", torch_input, device
        )
        check_in_action_space(sampled, action_space, "the policy's sampled action")
        check_in_action_space(mean, action_space, "the policy's mean action")
        _call_for_probe(lambda: q_adapter.q_values(obs, mean), "q_function", torch_input, device)
    np.random.set_state(numpy_state)
    return policy_adapter, q_adapter, device
