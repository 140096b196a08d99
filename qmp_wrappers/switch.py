"""The Q-switch state both QMP wrappers share: options, attached networks, holds and statistics.

:class:`qmp_wrappers.QMPBehaviorWrapper` (one env) and
:class:`qmp_wrappers.vector.QMPBehaviorWrapper` (a vector env) each own one
:class:`QSwitchState` and forward their public API to it; the batched computation itself is
:mod:`qmp_wrappers.qswitch`. A single env is a batch of one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from qmp_envs import validation
from qmp_envs.suites import SUITES
from qmp_wrappers.attach import ExtraPolicyAdapter, bind_networks
from qmp_wrappers.guide import GuideNetworks, check_guide, guided_choice
from qmp_wrappers.normalize import refuse_inner_normalizer, resolve_agent_view
from qmp_wrappers.qswitch import (
    MIXTURES,
    SCORING_RULES,
    CallableAdapter,
    choose,
    deterministic_mixture,
    propose,
    read_one_hot_task,
    relabel_one_hot,
    score,
)


def find_tasks(env: Any) -> tuple[int, list[str]] | None:
    """The tasks of a multi-task env under any stack of Gymnasium wrappers.

    A ``qmp/`` id is read from its suite facts (via ``env.spec``); any other env from the
    ``num_tasks`` / ``task_names`` attributes of the innermost env (a vector env's first
    sub-env).

    Args:
        env: an env or vector env, wrapped or not.

    Returns:
        ``(num_tasks, task_names)`` (names ``task_{j}`` where the env has none), or None if
        neither says.

    Example:
        >>> import gymnasium as gym, qmp_envs
        >>> find_tasks(gym.make("qmp/PointReachMT4-v0"))[0]
        4
    """
    spec = getattr(env, "spec", None)
    if spec is not None and spec.id in SUITES:
        facts = SUITES[spec.id]
        return facts.num_tasks, list(facts.task_names)
    inner = getattr(env, "unwrapped", env)
    try:
        if isinstance(inner, gym.vector.VectorEnv):
            inner = inner.get_attr("unwrapped")[0]  # type: ignore[attr-defined]
        num_tasks = int(inner.num_tasks)
    except (AttributeError, TypeError, IndexError):
        return None
    names = list(getattr(inner, "task_names", [f"task_{j}" for j in range(num_tasks)]))
    return num_tasks, names


def innermost_action_bounds(
    env: Any, action_space: gym.spaces.Box
) -> tuple[np.ndarray, np.ndarray]:
    """``action_space``'s bounds narrowed to those of the innermost env (a vector env's base
    and its first sub-env's), where that env has a Box of the same shape.

    Args:
        env: the wrapped env or vector env.
        action_space: the (single) action space the QMP wrapper sees.

    Returns:
        ``(low, high)``, float64 arrays of the action's shape.
    """
    low = np.asarray(action_space.low, dtype=np.float64)
    high = np.asarray(action_space.high, dtype=np.float64)
    inner = getattr(env, "unwrapped", env)
    spaces = [getattr(inner, "single_action_space", None), getattr(inner, "action_space", None)]
    sub_envs = getattr(inner, "envs", None)  # SyncVectorEnv: its sub-envs' own stacks
    if sub_envs:
        spaces.append(getattr(getattr(sub_envs[0], "unwrapped", None), "action_space", None))
    for space in spaces:
        if isinstance(space, gym.spaces.Box) and space.shape == action_space.shape:
            low = np.maximum(low, space.low)
            high = np.minimum(high, space.high)
    return low, high


@dataclass(frozen=True)
class SwitchOptions:
    """The options every QMP wrapper takes, as keywords of its constructor; checked here once.

    :class:`qmp_wrappers.QMPBehaviorWrapper`, :class:`qmp_wrappers.vector.QMPBehaviorWrapper`
    and :class:`qmp_wrappers.sb3.QMPVecEnvWrapper` accept exactly these fields as keyword
    arguments, with these defaults, and build a ``SwitchOptions`` from them. The checked
    values are normalised: NumPy numbers become Python ones, step counts given as integral
    floats (``5e3``, as CleanRL's scripts give them) become ints, ``extra_policies`` and
    ``extra_policy_names`` become tuples (names default to each policy's ``name`` attribute,
    else ``extra_{i}``).

    Raises:
        TypeError: an unknown keyword (as for any constructor), or an extra policy that is not
            callable.
        qmp_envs.validation.InputTypeError: a count or the temperature of the wrong kind (a
            bool, a string, a fractional step count).
        qmp_envs.validation.InputError: a count or the temperature out of range (``hold_steps
            < 1``, a negative ``start_step``, ``temperature <= 0`` or NaN).
        ValueError: an unknown ``scoring`` or ``mixture``; ``task_id_fn`` without
            ``relabel_fn`` or the reverse; as many ``extra_policy_names`` as extra policies not
            given.

    Example:
        >>> SwitchOptions(hold_steps=5e3, mixture="softmax").hold_steps
        5000
        >>> SwitchOptions(extra_policies=[abs]).extra_policy_names
        ('extra_0',)
        >>> SwitchOptions(mixture="best")
        Traceback (most recent call last):
        ...
        ValueError: mixture must be one of ('qswitch', 'uniform', 'softmax', 'guide'), got 'best'
    """

    scoring: str = "original"
    """How candidates are scored: ``"original"`` (the collecting task's first critic on each
    candidate's mean action, and the chosen policy's sample is executed; the paper's code) or
    ``"min_twin"`` (the minimum over critics on sampled actions)."""
    mixture: str = "qswitch"
    """How a candidate is chosen: ``"qswitch"`` (argmax, the paper), ``"uniform"`` (a uniformly
    random candidate; the ablation), ``"softmax"`` (sampled from softmax(Q / temperature),
    computed in float64) or ``"guide"`` (an attached guide picks the candidate every
    ``hold_steps`` steps, CTPG-style: :mod:`qmp_wrappers.guide`)."""
    temperature: float = 1.0
    """The softmax temperature, > 0 (``mixture="softmax"``)."""
    hold_steps: int = 1
    """Keep the chosen candidate for this many steps, >= 1 (1: switch every step)."""
    start_step: int = 0
    """QMP acts only once this many env steps have passed (e.g. SAC's ``learning_starts``, so
    the random warm-up is not mixed); 0 acts from the start."""
    extra_policies: Sequence[Callable] = ()
    """Fixed callables ``obs -> actions | (sampled, mean)`` on numpy arrays (scripted or
    pretrained behaviours) added to every task's candidates."""
    extra_policy_names: Sequence[str] | None = None
    """Names of the extra policies in the selection matrix (one per extra policy)."""
    task_id_fn: Callable | None = None
    """``obs (B, D) ndarray -> task ids (B,)`` for envs whose observations do not end with a
    one-hot task id; requires ``relabel_fn``."""
    relabel_fn: Callable | None = None
    """``(obs (M, D) ndarray, task_ids (M,) ndarray) -> obs`` giving each row the identity of
    another task, so that policy j can propose on task i's state; requires ``task_id_fn``."""
    seed: int | None = None
    """Seed of the wrapper's own random stream (uniform, softmax and guide mixtures);
    ``reset(seed=s)`` reseeds it."""
    guide_filter: bool = True
    """The guide mixture's policy-filter gate."""
    guide_block: bool = True
    """The guide mixture's guide-block gate."""
    guide_filter_start: int = 0
    """The policy filter masks candidates only after this many env steps (the guide critic's
    warm-up)."""

    def __post_init__(self) -> None:
        checked = _checked_options(self)
        for name, value in checked.items():
            object.__setattr__(self, name, value)  # frozen: the checked values replace the given


def _checked_options(options: SwitchOptions) -> dict[str, Any]:
    """The options' checked and normalised values, or the first error, in the order the
    fields are listed."""
    _check_choice("scoring", options.scoring, SCORING_RULES)
    _check_choice("mixture", options.mixture, MIXTURES)
    checked: dict[str, Any] = {
        "temperature": validation.real("temperature", options.temperature, above=0)
    }
    for name, least in (("hold_steps", 1), ("start_step", 0), ("guide_filter_start", 0)):
        # CleanRL's scripts give step counts as floats (learning_starts: float = 5e3).
        value = getattr(options, name)
        checked[name] = validation.integer(name, value, minimum=least, integral_floats=True)
    if (options.task_id_fn is None) != (options.relabel_fn is None):
        raise ValueError("task_id_fn and relabel_fn must be given together")
    checked["extra_policies"] = _checked_extra_policies(options.extra_policies)
    checked["extra_policy_names"] = _extra_policy_names(
        checked["extra_policies"], options.extra_policy_names
    )
    checked["guide_filter"] = bool(options.guide_filter)
    checked["guide_block"] = bool(options.guide_block)
    return checked


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def _checked_extra_policies(extra_policies: Sequence[Callable]) -> tuple[Callable, ...]:
    policies = tuple(extra_policies)
    for i, fn in enumerate(policies):
        if not callable(fn):
            raise TypeError(f"extra_policies[{i}] is not callable: {fn!r}")
    return policies


def _extra_policy_names(
    extra_policies: tuple[Callable, ...], names: Sequence[str] | None
) -> tuple[str, ...]:
    if names is None:
        return tuple(getattr(fn, "name", f"extra_{i}") for i, fn in enumerate(extra_policies))
    if len(names) != len(extra_policies):
        raise ValueError(
            f"got {len(names)} extra_policy_names for {len(extra_policies)} extra_policies"
        )
    return tuple(names)


def _flat_box(what: str, space: gym.Space) -> gym.spaces.Box:
    if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
        raise TypeError(f"QMP needs a flat Box {what} space, got {space}")
    return space


def _task_count_and_names(env: Any, num_tasks: int | None) -> tuple[int | None, list[str] | None]:
    """The task count (given, else found on ``env``, else None) and the env's task names (None
    where they are unknown or not as many as the tasks)."""
    found = find_tasks(env)
    if num_tasks is None:
        num_tasks = found[0] if found is not None else None
    else:
        num_tasks = validation.integer("num_tasks", num_tasks, minimum=1)
    names = found[1] if found is not None and len(found[1]) == num_tasks else None
    return num_tasks, names


def _check_one_hot_fits(
    num_tasks: int | None, options: SwitchOptions, observation_space: gym.spaces.Box
) -> None:
    """Without ``task_id_fn`` the observation ends with a one-hot of ``num_tasks`` entries."""
    obs_size = observation_space.shape[0]
    if num_tasks is not None and options.task_id_fn is None and num_tasks > obs_size:
        raise ValueError(f"num_tasks={num_tasks} exceeds the observation size {obs_size}")


class QSwitchState:
    """Options, attached networks and selection statistics of one QMP wrapper.

    Each wrapper owns one and forwards its public API (:class:`QSwitchControls`) to it; a
    single env is a batch of ``num_envs=1``.

    Args:
        env: the wrapped env (or vector env, or an object answering ``find_tasks``); read for
            its task count and names, the action bounds of its innermost env, and refused if a
            normaliser inside it would hide the one-hot task id.
        observation_space: the observation space of one env; must be a flat ``Box``.
        action_space: the action space of one env; must be a flat ``Box``.
        num_envs: the batch size B of every step.
        num_tasks: the task count N; found on ``env`` when None (see :func:`find_tasks`).
        options: the checked wrapper options.
        next_step_autoreset: the env resets a finished sub-env on the step after its end
            (Gymnasium's ``NEXT_STEP`` autoreset): that step is not a selection.

    Raises:
        ValueError: a normaliser inside ``env`` normalises the one-hot task id (without
            ``task_id_fn``), or ``num_tasks`` exceeds the observation size.
        TypeError: the observation or action space is not a flat ``Box``.
        qmp_envs.validation.InputError: ``num_tasks`` < 1 (``InputTypeError`` if not an
            integer).
    """

    def __init__(
        self,
        env: Any,
        observation_space: gym.Space,
        action_space: gym.Space,
        num_envs: int,
        num_tasks: int | None = None,
        options: SwitchOptions | None = None,
        *,
        next_step_autoreset: bool = False,
    ):
        options = options if options is not None else SwitchOptions()
        refuse_inner_normalizer(env, options.task_id_fn is not None)
        self.num_tasks, self.task_names = _task_count_and_names(env, num_tasks)
        observation_box = _flat_box("observation", observation_space)
        action_box = _flat_box("action", action_space)
        _check_one_hot_fits(self.num_tasks, options, observation_box)
        self.observation_space, self.action_space = observation_box, action_box
        self.num_envs, self.next_step_autoreset = num_envs, next_step_autoreset
        self.action_dim = int(action_box.shape[0])
        self._take_options(options)
        self._start_fresh()
        # Clip to the bounds the innermost env enforces: a ClipAction inside the wrapper widens
        # the space it shows to +-inf, yet the env still executes clipped actions.
        low, high = innermost_action_bounds(env, action_box)
        self._low, self._high = low.astype(np.float32), high.astype(np.float32)

    def _take_options(self, options: SwitchOptions) -> None:
        """The options as attributes of their own (tests and scripts change some mid-run)."""
        self.scoring, self.mixture, self.temperature = (
            options.scoring,
            options.mixture,
            options.temperature,
        )
        self.hold_steps, self.start_step = options.hold_steps, options.start_step
        self.extra_policies = list(options.extra_policies)
        self.extra_policy_names = list(options.extra_policy_names or ())
        self.task_id_fn, self.relabel_fn = options.task_id_fn, options.relabel_fn
        self.guide_filter, self.guide_block = options.guide_filter, options.guide_block
        self.guide_filter_start = options.guide_filter_start
        self.rng = np.random.default_rng(options.seed)

    def _start_fresh(self) -> None:
        """Nothing attached, no step taken, no selection counted."""
        self.guide: GuideNetworks | None = None
        self.view: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.policy: CallableAdapter | None = None
        self.q_function: CallableAdapter | None = None
        self.extras: list[CallableAdapter] = []
        self.device = torch.device("cpu")
        self.enabled = True
        self.steps_taken = 0
        self.last_obs: np.ndarray | None = None
        # Rows that made a fresh choice at the last step (the start of a guided K-step segment).
        self.choice_made = np.zeros(self.num_envs, dtype=bool)
        self.held = np.zeros(self.num_envs, dtype=np.int64)
        self.hold_left = np.zeros(self.num_envs, dtype=np.int64)
        self.resetting = np.zeros(self.num_envs, dtype=bool)
        self.counts = (
            None
            if self.num_tasks is None
            else np.zeros(
                (self.num_tasks, self.num_tasks + len(self.extra_policies)), dtype=np.int64
            )
        )

    # -- attaching -------------------------------------------------------------------------
    def attach(
        self,
        policy: Callable,
        q_function: Callable | Sequence[Callable],
        device: str | torch.device | None = None,
        guide: GuideNetworks | None = None,
        view: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        """Bind the agent's networks (and the extra policies) after checking them on a probe
        batch; :meth:`QSwitchControls.attach` documents the arguments and errors.

        Args:
            policy: the agent's task policies.
            q_function: the agent's critic, or a list of critics.
            device: where input tensors live (inferred from torch modules when None).
            guide: the guide networks, with ``mixture="guide"`` only.
            view: the agent's view of observations (its normalisers), if not the identity.

        Raises:
            ValueError: see :meth:`QSwitchControls.attach`.
            TypeError: see :meth:`QSwitchControls.attach`.
        """
        if self.mixture == "guide" and guide is None:
            raise ValueError('mixture="guide" needs attach(..., guide=...): see qmp_wrappers.guide')
        if self.mixture != "guide" and guide is not None:
            raise ValueError(f'a guide is used only with mixture="guide", not {self.mixture!r}')
        if self.num_tasks is None:
            raise ValueError(
                "cannot attach: the environment's task count is unknown (not a qmp/ id and no "
                "num_tasks on the innermost env); pass QMPBehaviorWrapper(env, num_tasks=N)"
            )
        self.policy, self.q_function, self.device = bind_networks(
            policy,
            q_function,
            device,
            self.observation_space,
            self.action_space,
            self.num_tasks,
            self.relabel,
            view,
        )
        self.view = view
        self.extras = [
            ExtraPolicyAdapter(fn, f"extra policy {name!r}", False, self.device, self.action_space)
            for fn, name in zip(self.extra_policies, self.extra_policy_names, strict=True)
        ]
        if guide is not None:
            n = self.num_tasks
            zeros = torch.zeros(n, self.observation_space.shape[0], device=self.device)
            probe = self.relabel(zeros, torch.arange(n, device=self.device))
            probe = view(probe) if view is not None else probe
            with torch.random.fork_rng(devices=[]):  # the probe draws no global random numbers
                check_guide(guide, probe, n + len(self.extras), n)
        self.guide = guide

    def detach(self) -> None:
        """Forget the attached callables; actions pass through again."""
        self.policy = self.q_function = self.guide = self.view = None
        self.extras = []

    @property
    def attached(self) -> bool:
        return self.policy is not None

    @property
    def active(self) -> bool:
        """Whether the next step shares behaviour (enabled, attached, past ``start_step``)."""
        return self.enabled and self.attached and self.steps_taken + self.num_envs > self.start_step

    def mixture_policy(self) -> Callable[[np.ndarray], np.ndarray]:
        """The deterministic Q-switch over the attached networks, as an evaluation policy.

        The returned ``obs (B, D) -> actions (B, A)`` numpy callable scores every candidate's
        mean action with the collecting task's Q and executes the best mean
        (:func:`qmp_wrappers.qswitch.deterministic_mixture`). It leaves the training run
        untouched: no selection statistics, no hold state, the global torch and NumPy random
        streams restored after each call, and extra policies called on copies (their own
        random streams stay where training left them).

        Returns:
            The evaluation policy.

        Raises:
            RuntimeError: nothing is attached (or the task count is unknown).
            ValueError: ``mixture="guide"`` (the guide, not a Q-switch, picks the candidate).
        """
        if self.policy is None or self.q_function is None or self.num_tasks is None:
            raise RuntimeError("mixture_policy() needs attach(policy, q_function) first")
        if self.mixture == "guide":
            raise ValueError(
                'mixture="guide" has no Q-switch to evaluate: the guide picks the candidate'
            )
        policy, q_function, num_tasks = self.policy, self.q_function, self.num_tasks
        extras = [self._copy_of(extra) for extra in self.extras]
        devices = [self.device] if self.device.type == "cuda" else []

        def act(obs: np.ndarray) -> np.ndarray:
            rows = np.asarray(obs, dtype=np.float32).reshape(len(obs), -1)
            task_ids = torch.as_tensor(self.task_ids(rows), device=self.device)
            numpy_state = np.random.get_state()
            with torch.random.fork_rng(devices=devices):
                actions, _ = deterministic_mixture(
                    torch.as_tensor(rows, device=self.device),
                    task_ids,
                    policy,
                    q_function,
                    num_tasks,
                    self.relabel,
                    self.action_dim,
                    extras,
                    self.scoring,
                )
            np.random.set_state(numpy_state)
            return np.clip(actions.cpu().numpy().astype(np.float32), self._low, self._high)

        return act

    @staticmethod
    def _copy_of(adapter: CallableAdapter) -> CallableAdapter:
        """The adapter around a deep copy of its callable, whose random stream then moves
        without moving the original's."""
        clone = copy.copy(adapter)
        clone.fn = copy.deepcopy(adapter.fn)
        return clone

    # -- statistics ------------------------------------------------------------------------
    @property
    def candidate_names(self) -> list[str]:
        names = self.task_names or [f"task_{j}" for j in range(self.num_tasks or 0)]
        return list(names) + self.extra_policy_names

    def selection_counts(self) -> np.ndarray:
        """The selection statistics as counts.

        Returns:
            A copy of the ``(N, N + E)`` int64 counts (row: task collected, column: candidate
            executed).

        Raises:
            ValueError: the task count is unknown.
        """
        if self.counts is None:
            raise ValueError("no selection statistics: the task count is unknown")
        return self.counts.copy()

    def selection_matrix(self, normalize: bool = True) -> np.ndarray:
        """The selection statistics; :meth:`QSwitchControls.selection_matrix` documents them.

        Args:
            normalize: rows as frequencies; False gives counts (as float64).

        Returns:
            The ``(N, N + E)`` float64 matrix.

        Raises:
            ValueError: the task count is unknown.
        """
        counts = self.selection_counts().astype(np.float64)
        if not normalize:
            return counts
        totals = counts.sum(axis=1, keepdims=True)
        return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)

    def reset_selection_stats(self) -> None:
        """Zero the selection counts."""
        if self.counts is not None:
            self.counts[:] = 0

    # -- the Q-switch ----------------------------------------------------------------------
    def task_ids(self, obs: np.ndarray) -> np.ndarray:
        """The task of every observation row: ``task_id_fn``'s answer, or the one-hot's index.

        Args:
            obs: observations ``(B, D)``.

        Returns:
            Task indices ``(B,)``, int64, each in ``[0, N)``.

        Raises:
            ValueError: ``task_id_fn`` returned the wrong number of ids or one out of range, or
                an observation's one-hot is not one
                (:func:`~qmp_wrappers.qswitch.read_one_hot_task`).
        """
        assert self.num_tasks is not None
        if self.task_id_fn is not None:
            task_ids = np.asarray(self.task_id_fn(obs), dtype=np.int64).reshape(-1)
            if task_ids.shape != (len(obs),) or np.any(
                (task_ids < 0) | (task_ids >= self.num_tasks)
            ):
                raise ValueError(
                    f"task_id_fn returned {task_ids.tolist()} for {len(obs)} observations"
                )
            return task_ids
        return read_one_hot_task(obs, self.num_tasks)

    def relabel(self, obs: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """Each observation row as seen by another task (``relabel_fn``, or the one-hot
        rewritten).

        Args:
            obs: observations ``(M, D)``.
            task_ids: the task each row should show, ``(M,)``.

        Returns:
            The relabelled observations ``(M, D)``, float32, on ``obs``'s device.
        """
        assert self.num_tasks is not None
        if self.relabel_fn is None:
            return relabel_one_hot(obs, task_ids.to(obs.device), self.num_tasks)
        out = self.relabel_fn(obs.cpu().numpy(), task_ids.cpu().numpy())
        return torch.as_tensor(np.asarray(out, dtype=np.float32), device=obs.device)

    def validate_actions(self, actions: Any, expected_shape: tuple[int, ...]) -> np.ndarray:
        """The agent's actions as a float32 ``(B, A)`` array (tensors with grad are accepted).

        Args:
            actions: the actions the agent gave ``step``.
            expected_shape: the shape ``step`` takes (``(A,)`` for one env, ``(B, A)``).

        Returns:
            The actions, float32, ``(B, A)``.

        Raises:
            qmp_envs.validation.InputTypeError: boolean, complex or non-numeric actions.
            qmp_envs.validation.InputError: the wrong shape, or NaN or inf.
        """
        array = validation.real_array(
            "the agent's action array", actions, dtype=np.float32, shape=expected_shape
        )
        return array.reshape(self.num_envs, self.action_dim)

    def select(self, agent_actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Choose what every env executes this step, and count the choice.

        Args:
            agent_actions: the agent's checked actions ``(B, A)``.

        Returns:
            The executed actions ``(B, A)`` (inside the action space) and the executed
            candidates' indices ``(B,)`` (-1 where the task count is unknown).

        Raises:
            RuntimeError: ``reset()`` was not called first.
            ValueError: an observation with NaN or inf that the Q-switch would score; errors of
                :meth:`task_ids`.
        """
        if self.last_obs is None:
            raise RuntimeError("call reset() before step()")
        self.steps_taken += self.num_envs
        self.choice_made = np.zeros(self.num_envs, dtype=bool)
        if self.num_tasks is None:
            return agent_actions, np.full(self.num_envs, -1, dtype=np.int64)
        task_ids = self.task_ids(self.last_obs)
        num_candidates = self.num_tasks + len(self.extras)
        if not (self.enabled and self.attached) or self.steps_taken <= self.start_step:
            return agent_actions, task_ids
        if num_candidates == 1:  # nothing to mix: the agent's action, bit for bit
            self._count(task_ids, task_ids)
            return agent_actions, task_ids
        assert self.policy is not None and self.q_function is not None
        self._refuse_non_finite_observations(task_ids)

        device = self.device
        obs = torch.as_tensor(self.last_obs, dtype=torch.float32, device=device)
        task_tensor = torch.as_tensor(task_ids, device=device)
        candidates = propose(
            obs,
            task_tensor,
            torch.as_tensor(agent_actions, device=device),
            self.policy,
            self.num_tasks,
            self.relabel,
            self.extras,
        )
        needs_choice = self.hold_left <= 0
        chosen = self.held.copy()
        if needs_choice.any():
            if self.mixture == "guide":
                assert self.guide is not None
                fresh = guided_choice(
                    self.guide,
                    self.view(obs) if self.view is not None else obs,
                    task_tensor,
                    self.rng,
                    use_filter=self.guide_filter and self.steps_taken > self.guide_filter_start,
                    use_block=self.guide_block,
                )
            else:
                scores = None
                if self.mixture != "uniform":
                    scores = score(obs, candidates, self.q_function, self.scoring)
                fresh = choose(
                    scores, num_candidates, self.num_envs, self.mixture, self.temperature, self.rng
                )
            chosen[needs_choice] = fresh[needs_choice]
            self.held[needs_choice] = fresh[needs_choice]
            self.hold_left[needs_choice] = self.hold_steps
        self.choice_made = needs_choice & ~self.resetting
        self.hold_left -= 1

        batch_index = torch.arange(self.num_envs, device=device)
        picked = candidates.sampled[batch_index, torch.as_tensor(chosen, device=device)]
        executed = picked.cpu().numpy().astype(np.float32)
        # The agent's own choice is copied bit for bit (no device round trip for it).
        own = chosen == task_ids
        executed[own] = agent_actions[own]
        # What the env executes (it clips too), so that the stored action is the executed one.
        np.clip(executed, self._low, self._high, out=executed)
        self._count(task_ids, chosen)
        return executed, chosen

    def _refuse_non_finite_observations(self, task_ids: np.ndarray) -> None:
        """The Q-switch scores candidates on the observation: a NaN or inf feature would make
        every score NaN or inf and the choice arbitrary, so it is refused, not scored."""
        assert self.last_obs is not None
        if np.isfinite(self.last_obs).all():
            return
        row = int(np.flatnonzero(~np.isfinite(self.last_obs).all(axis=1))[0])
        raise ValueError(
            f"the observation of env {row} (task {int(task_ids[row])}) contains NaN or inf "
            f"({validation.non_finite_text(self.last_obs[row])}): the Q-switch cannot score "
            "candidates on it. The environment produced it: fix the environment, or clip the "
            "observation in a wrapper inside the QMP wrapper"
        )

    def _count(self, task_ids: np.ndarray, chosen: np.ndarray) -> None:
        assert self.counts is not None
        counted = ~self.resetting
        np.add.at(self.counts, (task_ids[counted], chosen[counted]), 1)

    def after_step(self, obs: Any, terminated: Any, truncated: Any) -> None:
        """Record the step's outcome: the next observations, and fresh choices where an
        episode ended.

        Args:
            obs: the observations the env returned, ``(B, D)`` or ``(D,)``.
            terminated: the env's terminations, one per env.
            truncated: the env's truncations, one per env.
        """
        self.last_obs = np.asarray(obs, dtype=np.float32).reshape(self.num_envs, -1)
        done = np.asarray(terminated, dtype=bool).reshape(-1) | np.asarray(
            truncated, dtype=bool
        ).reshape(-1)
        # A new episode makes a fresh choice.
        self.hold_left[done] = 0
        # Under next-step autoreset the step after an episode end only resets that sub-env and
        # ignores its action: it is not a selection and is not counted.
        self.resetting = done & self.next_step_autoreset

    def after_reset(self, obs: Any, seed: Any) -> None:
        """Start over after a reset: fresh choices, and the wrapper's random stream reseeded
        when a seed was given.

        Args:
            obs: the reset observations.
            seed: the reset's seed (an int, a list whose first entry seeds, or None).
        """
        if seed is not None:
            base_seed = seed if isinstance(seed, int) else int(np.asarray(seed).reshape(-1)[0])
            self.rng = np.random.default_rng(base_seed)
        self.last_obs = np.asarray(obs, dtype=np.float32).reshape(self.num_envs, -1)
        self.hold_left[:] = 0
        self.resetting[:] = False

    def __getstate__(self) -> dict:
        # Attached networks are checkpointed by their owner; re-attach after unpickling.
        state = self.__dict__.copy()
        state["policy"] = state["q_function"] = state["guide"] = state["view"] = None
        state["extras"] = []
        return state


class QSwitchControls:
    """The public API both wrappers share, forwarded to their :class:`QSwitchState` ``qmp``."""

    qmp: QSwitchState

    def attach(
        self,
        policy: Callable,
        q_function: Callable | Sequence[Callable],
        device: str | torch.device | None = None,
        guide: GuideNetworks | None = None,
        agent_view: Any = None,
    ) -> None:
        """Give the wrapper the agent's task policies and Q-functions; may be called any time.

        Args:
            policy: a :class:`~qmp_wrappers.attach.Policy`: ``obs (M, D) -> actions`` or
                ``-> (sampled, mean)``, each ``(M, A)`` inside the action space. Row m is
                answered by the policy of the task in row m's one-hot.
            q_function: a :class:`~qmp_wrappers.attach.QFunction` ``(obs (M, D), actions (M, A))
                -> values`` of shape (M,), (M, 1), (M, K) or a tuple of K such tensors, or a
                list of critics (``[qf1, qf2]``). Row m is scored by the Q of row m's task.
            device: where input tensors live. Inferred from torch modules (and bound methods of
                modules); with neither a device nor a module, the callables get numpy arrays.

            guide: with ``mixture="guide"`` only, a :class:`~qmp_wrappers.guide.GuideNetworks`
                that picks the candidate every ``hold_steps`` steps (CTPG-style guidance).
            agent_view: where the agent's networks see other observations than this wrapper
                holds: the env (or vector env, or SB3 ``VecNormalize``) the agent steps, whose
                observation normalisers outside this wrapper are then applied (current
                statistics, never updated) before every network call; or a callable on
                observation tensors. Extra policies keep the raw observations.
                :mod:`qmp_wrappers.normalize`.

        Each callable is called once on a probe batch (one row per task) to check its outputs;
        the probe leaves the global torch and NumPy random streams unchanged.

        Raises:
            ValueError: the task count is unknown (pass ``num_tasks`` to the wrapper); a
                ``guide`` missing with ``mixture="guide"`` or given with another mixture; an
                empty critic list; a ``device`` that is not one, or that the networks are not
                on; a probe output of the wrong shape or range, or with NaN or inf
                (:class:`~qmp_wrappers.qswitch.ContractError`); a guide whose outputs do not
                fit (:func:`~qmp_wrappers.guide.check_guide`); an ``agent_view`` that cannot be
                applied.
            TypeError: ``policy``, a critic or ``agent_view`` is not callable (or not an env);
                a callable that fails on the probe batch (the message names it and the input
                it got); a probe output of the wrong dtype
                (:class:`~qmp_wrappers.qswitch.ContractTypeError`).
        """
        self.qmp.attach(policy, q_function, device, guide, resolve_agent_view(agent_view, self))

    def detach(self) -> None:
        """Forget the attached callables; actions pass through again."""
        self.qmp.detach()

    @property
    def attached(self) -> bool:
        return self.qmp.attached

    @property
    def enabled(self) -> bool:
        """False makes actions pass through (selection statistics still count nothing)."""
        return self.qmp.enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self.qmp.enabled = bool(value)

    @contextmanager
    def sharing_off(self) -> Iterator[None]:
        """Execute the agent's own actions inside the block, then restore ``enabled``: e.g.
        ``with venv.sharing_off(): evaluate_policy(model, venv)`` scores the agent's own
        policy, where on the wrapped env SB3's ``evaluate_policy`` would score the mixture.

        Yields:
            None, once; ``enabled`` is False inside the block, and as it was after it (also
            after an error).
        """
        previous = self.qmp.enabled
        self.qmp.enabled = False
        try:
            yield
        finally:
            self.qmp.enabled = previous

    def mixture_policy(self) -> Callable[[np.ndarray], np.ndarray]:
        """The deterministic Q-switch mixture as a numpy evaluation policy (needs ``attach``).

        Each row's task Q scores every candidate's mean action and the best mean is executed,
        as the original code evaluated QMP runs; see :meth:`QSwitchState.mixture_policy`.

        Returns:
            ``obs (B, D) -> actions (B, A)``, for :func:`qmp_envs.evaluate_policy`.

        Raises:
            RuntimeError: nothing is attached.
            ValueError: ``mixture="guide"`` (the guide, not a Q-switch, picks the candidate).
        """
        return self.qmp.mixture_policy()

    @property
    def num_tasks(self) -> int | None:
        return self.qmp.num_tasks

    @property
    def candidate_names(self) -> list[str]:
        """Task names, then the extra policies' names: the columns of the selection matrix."""
        return self.qmp.candidate_names

    @property
    def selection_counts(self) -> np.ndarray:
        """Counts: row = task being collected, column = candidate executed."""
        return self.qmp.selection_counts()

    def selection_matrix(self, normalize: bool = True) -> np.ndarray:
        """How often each task executed each candidate since the last reset of the statistics.

        Args:
            normalize: rows as frequencies (rows never visited stay 0); False gives counts.

        Returns:
            ``(N, N + E)`` float64: row = task being collected, column = candidate executed
            (:attr:`candidate_names`).

        Raises:
            ValueError: the task count is unknown (no statistics are kept).
        """
        return self.qmp.selection_matrix(normalize)

    def reset_selection_stats(self) -> None:
        """Zero the selection statistics (e.g. at the start of each logging period)."""
        self.qmp.reset_selection_stats()
