"""The field's evaluation protocol for any ``qmp/`` id.

Each task is evaluated separately with its own env instance; actions come from a deterministic
policy callable; an episode is a success if ``info["success"]`` was true at ANY step. Results are
per task and averaged over tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np

from qmp_envs import validation
from qmp_envs.suites import suite_facts


@dataclass
class EvalResult:
    """Per-task evaluation results (arrays of length N) and their means over tasks.

    Attributes:
        task_names: the N task names, in one-hot order.
        success: each task's success rate over its episodes.
        episode_return: each task's mean undiscounted return.
        episode_length: each task's mean episode length.
        episodes_per_task: episodes run per task.
        extras: per-task rates of the family's extra boolean info keys (e.g. Reacher's
            ``task_complete``), by key.
    """

    task_names: list[str]
    success: np.ndarray
    episode_return: np.ndarray
    episode_length: np.ndarray
    episodes_per_task: int
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def mean_success(self) -> float:
        return float(np.mean(self.success))

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.episode_return))

    def as_dict(self, prefix: str = "eval/") -> dict[str, float]:
        """Flat metrics for a logger: means over tasks, then each task's value.

        Args:
            prefix: put before every key.

        Returns:
            ``{prefix}success_mean``, ``{prefix}return_mean``, ``{prefix}<extra>_mean`` and per
            task ``{prefix}success/<task>``, ``{prefix}return/<task>``,
            ``{prefix}<extra>/<task>``, as Python floats.

        Example:
            >>> result = EvalResult(["a", "b"], np.array([1.0, 0.0]), np.array([2.0, 4.0]),
            ...                     np.array([5, 5]), episodes_per_task=1)
            >>> result.as_dict()["eval/success_mean"], result.as_dict()["eval/return/b"]
            (0.5, 4.0)
        """
        metrics = {
            f"{prefix}success_mean": self.mean_success,
            f"{prefix}return_mean": self.mean_return,
        }
        for key, values in self.extras.items():
            metrics[f"{prefix}{key}_mean"] = float(np.mean(values))
        for i, name in enumerate(self.task_names):
            metrics[f"{prefix}success/{name}"] = float(self.success[i])
            metrics[f"{prefix}return/{name}"] = float(self.episode_return[i])
            for key, values in self.extras.items():
                metrics[f"{prefix}{key}/{name}"] = float(values[i])
        return metrics


class EvaluationEnvs:
    """One env per evaluated task, built once and reused by every :func:`evaluate_policy` call.

    Building is the expensive part of an evaluation (an MT50 evaluation builds 50 Meta-World
    envs); a training run keeps one ``EvaluationEnvs`` for all its evaluations. Each call
    reseeds every env, so reusing them gives what fresh envs would. Families with separate
    evaluation goals (Meta-World) are built on them (``split="eval"``).

    Args:
        env_id: a ``qmp/`` id.
        tasks: the task indices to evaluate (Python or NumPy integers), each once; None for
            every task.
        env_kwargs: keyword arguments of every env.
        render_mode: ``"rgb_array"`` to record videos.

    Raises:
        ValueError: ``tasks`` is empty, repeats a task or names an unknown one.
        TypeError: a task index is not an integer.

    >>> import numpy as np, qmp_envs
    >>> with EvaluationEnvs("qmp/PointReach-v0") as envs:
    ...     first = evaluate_policy(lambda obs: np.ones((len(obs), 2)), envs, episodes_per_task=2)
    ...     again = evaluate_policy(lambda obs: np.ones((len(obs), 2)), envs, episodes_per_task=2)
    >>> first.success.tolist() == again.success.tolist() == [1.0]
    True
    """

    def __init__(
        self,
        env_id: str,
        *,
        tasks: Sequence[int] | None = None,
        env_kwargs: dict | None = None,
        render_mode: str | None = None,
    ):
        self.env_id = env_id
        self.facts = suite_facts(env_id)
        env_kwargs = dict(env_kwargs or {})
        if self.facts.has_eval_split:
            env_kwargs.setdefault("split", "eval")
        self.tasks = self._checked_tasks(tasks)
        self.render_mode = render_mode
        self.closed = False
        self.envs = [
            gym.make(env_id, task=t, render_mode=render_mode, **env_kwargs) for t in self.tasks
        ]

    def _checked_tasks(self, tasks: Sequence[int] | None) -> list[int]:
        num_tasks = self.facts.num_tasks
        if tasks is None:
            return list(range(num_tasks))
        if isinstance(tasks, str) or not isinstance(tasks, Sequence | np.ndarray):
            raise TypeError(f"tasks must be a sequence of task indices or None, got {tasks!r}")
        checked = [validation.integer(f"tasks[{i}]", t) for i, t in enumerate(tasks)]
        if not checked:
            raise ValueError(
                f"tasks=[] evaluates nothing: pass task indices (0..{num_tasks - 1}) or "
                "tasks=None for all of them"
            )
        bad = [t for t in checked if not 0 <= t < num_tasks]
        if bad:
            raise ValueError(f"unknown tasks {bad}: {self.env_id} has tasks 0..{num_tasks - 1}")
        repeated = sorted({t for t in checked if checked.count(t) > 1})
        if repeated:
            raise ValueError(
                f"tasks {checked} repeat {repeated}: each task is evaluated once per call and "
                "averaged over tasks, so a repeated task would count twice; use "
                "episodes_per_task for more episodes"
            )
        return checked

    @property
    def task_names(self) -> list[str]:
        return [self.facts.task_names[t] for t in self.tasks]

    def close(self) -> None:
        """Close every evaluation env (also done on leaving a ``with`` block)."""
        self.closed = True
        for env in self.envs:
            env.close()

    def __enter__(self) -> EvaluationEnvs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def evaluate_policy(
    policy: Callable[[np.ndarray], np.ndarray],
    envs: str | EvaluationEnvs,
    *,
    episodes_per_task: int | None = None,
    seed: int = 0,
    tasks: Sequence[int] | None = None,
    env_kwargs: dict | None = None,
    video_dir: str | Path | None = None,
    stop_at_success: bool = False,
) -> EvalResult:
    """Evaluate ``policy`` on every task of a ``qmp/`` id by the field's protocol.

    Args:
        policy: maps a batch of observations ``(B, obs_dim)`` (one-hot included) to deterministic
            actions ``(B, action_dim)``. All tasks' envs are stepped together and batched into one
            call; each row is answered by the policy of the task in its one-hot.
        envs: an env id (envs are built for this call and closed) or :class:`EvaluationEnvs`
            built once and reused (then ``tasks`` and ``env_kwargs`` are the ones it was built
            with).
        episodes_per_task: defaults to the suite's ``eval_episodes`` (Meta-World: 50, one per
            goal variation of the evaluation split).
        seed: task k's env is reset with ``seed + k`` once, then runs its episodes in sequence.
        video_dir: if set, the first episode of every task is rendered headless to a GIF there
            (the envs must render: ``EvaluationEnvs(..., render_mode="rgb_array")``).
        stop_at_success: end each episode at its first success. The success rate is the same
            (success at ANY step counts) and evaluation is faster, but returns and lengths are
            of shortened episodes, so they are reported as NaN; leave False for returns.

    Returns:
        Per-task success rates, returns and lengths, and their means over tasks.

    Raises:
        ValueError: ``episodes_per_task`` is not an integer >= 1 (NumPy integers are
            accepted), ``seed`` is not an integer >= 0, ``envs`` were closed, ``tasks`` is
            empty or repeats a task, or the policy's actions do not have the shape
            ``(B, action_dim)`` or contain NaN or inf.

    >>> import numpy as np, qmp_envs
    >>> result = evaluate_policy(lambda obs: np.ones((len(obs), 2)), "qmp/PointReach-v0",
    ...                          episodes_per_task=3)
    >>> result.success.tolist()
    [1.0]
    """
    if isinstance(envs, str):
        render_mode = "rgb_array" if video_dir is not None else None
        with EvaluationEnvs(
            envs, tasks=tasks, env_kwargs=env_kwargs, render_mode=render_mode
        ) as built:
            return evaluate_policy(
                policy,
                built,
                episodes_per_task=episodes_per_task,
                seed=seed,
                video_dir=video_dir,
                stop_at_success=stop_at_success,
            )
    if tasks is not None or env_kwargs is not None:
        raise ValueError("tasks and env_kwargs belong to EvaluationEnvs(...) when envs are reused")
    if video_dir is not None and envs.render_mode != "rgb_array":
        raise ValueError(
            "video_dir needs envs built with EvaluationEnvs(..., render_mode='rgb_array')"
        )
    if envs.closed:
        raise ValueError(
            "these EvaluationEnvs were closed (e.g. by leaving their with block): build new "
            "ones, or evaluate inside the with block"
        )
    facts = envs.facts
    info_keys = facts.eval_info_keys
    if episodes_per_task is None:
        episodes_per_task = facts.eval_episodes
    episodes_per_task = validation.integer("episodes_per_task", episodes_per_task, minimum=1)
    seed = validation.integer("seed", seed, minimum=0)
    tasks, env_list = envs.tasks, envs.envs

    n = len(env_list)
    successes = np.zeros((n, episodes_per_task))
    returns = np.zeros((n, episodes_per_task))
    lengths = np.zeros((n, episodes_per_task))
    extras = {key: np.zeros((n, episodes_per_task)) for key in info_keys}
    episode_index = np.zeros(n, dtype=int)
    frames: list[list[np.ndarray]] = [[] for _ in range(n)]
    obs = [env.reset(seed=seed + task)[0] for env, task in zip(env_list, tasks, strict=True)]
    episode_success = np.zeros(n, dtype=bool)
    episode_flags = {key: np.zeros(n, dtype=bool) for key in info_keys}
    running_return = np.zeros(n)
    running_length = np.zeros(n, dtype=int)
    if video_dir is not None:
        for k, env in enumerate(env_list):
            frames[k].append(np.asarray(env.render()))

    while (active := np.flatnonzero(episode_index < episodes_per_task)).size:
        batch = np.stack([obs[k] for k in active])
        actions = policy_actions(policy, batch, facts.action_dim)
        for row, k in enumerate(active.tolist()):
            obs[k], reward, terminated, truncated, info = env_list[k].step(actions[row])
            running_return[k] += float(reward)
            running_length[k] += 1
            episode_success[k] |= bool(info["success"])
            for key in info_keys:
                episode_flags[key][k] |= bool(info.get(key, False))
            if video_dir is not None and episode_index[k] == 0:
                frames[k].append(np.asarray(env_list[k].render()))
            if terminated or truncated or (stop_at_success and episode_success[k]):
                e = episode_index[k]
                successes[k, e] = episode_success[k]
                returns[k, e] = running_return[k]
                lengths[k, e] = running_length[k]
                for key in info_keys:
                    extras[key][k, e] = episode_flags[key][k]
                    episode_flags[key][k] = False
                episode_index[k] += 1
                episode_success[k], running_return[k], running_length[k] = False, 0.0, 0
                if episode_index[k] < episodes_per_task:
                    obs[k] = env_list[k].reset()[0]
    if video_dir is not None:
        _write_videos(Path(video_dir), envs.task_names, frames)
    if stop_at_success:  # shortened episodes: their returns and lengths would mislead
        returns[:] = lengths[:] = np.nan
    return EvalResult(
        task_names=envs.task_names,
        success=successes.mean(axis=1),
        episode_return=returns.mean(axis=1),
        episode_length=lengths.mean(axis=1),
        episodes_per_task=episodes_per_task,
        extras={key: values.mean(axis=1) for key, values in extras.items()},
    )


def policy_actions(policy: Callable, batch: np.ndarray, action_dim: int) -> np.ndarray:
    """The policy's actions for a batch of observations, checked to be ``(B, action_dim)``
    finite real numbers (a scalar or a flat row is refused, not broadcast).

    Args:
        policy: ``obs (B, obs_dim) -> actions (B, action_dim)``.
        batch: the observations ``(B, obs_dim)``.
        action_dim: the action size.

    Returns:
        The actions as a float64 array ``(B, action_dim)``.

    Raises:
        qmp_envs.validation.InputError: the wrong shape, NaN or inf (the message says what the
            policy must map to what).
        qmp_envs.validation.InputTypeError: actions that are not real numbers.

    Example:
        >>> policy_actions(lambda obs: np.zeros((len(obs), 2)), np.ones((3, 4)), 2).shape
        (3, 2)
    """
    expected = (len(batch), action_dim)
    try:
        return validation.real_array("the policy's action array", policy(batch), shape=expected)
    except validation.InputError as err:
        raise type(err)(
            f"{err}. The policy maps a batch of observations (B, obs_dim) to one action row per "
            f"observation, (B, {action_dim})"
        ) from None


def _write_videos(video_dir: Path, names: list[str], frames: list[list[np.ndarray]]) -> None:
    import imageio.v2 as imageio

    video_dir.mkdir(parents=True, exist_ok=True)
    for name, task_frames in zip(names, frames, strict=True):
        imageio.mimsave(video_dir / f"{name}.gif", list(task_frames), duration=40, loop=0)
