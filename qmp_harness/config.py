"""A run's configuration: the paper's presets per environment, the flags every script shares,
and their validation (every flag checked at start-up, with a message naming the flag, the value
and what is allowed).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from qmp_harness.run_files import RunFolderLock


@dataclass(frozen=True)
class Preset:
    """Per-environment defaults from the paper's hyperparameter table (spec section 10.2).

    ``updates_per_step`` is gradient steps per task per env step of that task (the paper's
    gradient-step budget per iteration divided by its env steps per iteration).
    ``batch_size`` is the table's minibatch, applied per task (the table does not say whether
    its minibatch was per task or over all tasks).
    """

    total_timesteps: int
    batch_size: int
    learning_starts: int
    learning_rate: float
    hidden: tuple[int, ...]
    updates_per_step: float
    eval_episodes: int
    eval_every: int


PRESETS: dict[str, Preset] = {
    "qmp/PointReach-v0": Preset(50_000, 256, 1_000, 3e-4, (256, 256), 1.0, 10, 5_000),
    "qmp/PointReach-v1": Preset(50_000, 256, 1_000, 3e-4, (256, 256), 1.0, 10, 5_000),
    # Not a paper suite (the demo's): SAC's usual values.
    "qmp/PointReachMT4-v0": Preset(50_000, 256, 1_000, 3e-4, (256, 256), 1.0, 10, 5_000),
    "qmp/MultistageReacher-v0": Preset(2_000_000, 32, 10_000, 3e-4, (256, 256), 1.0, 10, 20_000),
    "qmp/MazeLarge10-v0": Preset(
        12_000_000, 256, 3_000, 3e-4, (256, 256), 1000 / 6000, 10, 120_000
    ),
    "qmp/Walker2dMT4-v0": Preset(8_000_000, 32, 10_000, 3e-4, (256, 256), 1.5, 10, 80_000),
    # Kitchen: the paper plots 5M steps (its code ran 10M by a misnamed argument, spec 9.7).
    "qmp/KitchenMTEasy-v0": Preset(5_000_000, 1280, 2_000, 3e-4, (256, 256), 0.25, 5, 100_000),
    "qmp/MetaWorldCDS-v0": Preset(10_000_000, 256, 5_000, 1.5e-3, (256, 256), 0.1, 10, 100_000),
    # Meta-World: 50 evaluation episodes per task (one per goal variation), the v3 protocol.
    "qmp/MetaWorldMT10-v0": Preset(50_000_000, 2560, 5_000, 1.5e-3, (256, 256), 0.1, 50, 500_000),
    "qmp/MetaWorldMT50-v0": Preset(200_000_000, 1280, 1_500, 3e-4, (400, 400), 0.1, 50, 2_000_000),
}


def resolve_preset(args: Any, overrides: dict[str, dict] | None = None) -> Any:
    """Fill every ``None`` field of ``args`` that a preset knows from ``PRESETS[args.env_id]``.

    ``overrides`` maps env ids to a script's own tuned values (taken before the preset's).
    """
    for key, value in (overrides or {}).get(args.env_id, {}).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    preset = PRESETS.get(args.env_id)
    for field in fields(Preset):
        if getattr(args, field.name, 0) is None:
            if preset is None:
                raise ValueError(
                    f"no preset for {args.env_id!r}: pass --{field.name.replace('_', '-')} "
                    f"(presets exist for {sorted(PRESETS)})"
                )
            setattr(args, field.name, getattr(preset, field.name))
    return args


@dataclass
class BaseArgs:
    """Arguments every script shares; each script's ``Args`` adds its own."""

    exp_name: str = "run"
    """the name of this experiment (part of the run folder's name)"""
    env_id: str = "qmp/MultistageReacher-v0"
    """a qmp/ environment id; its preset fills every hyperparameter left unset"""
    seed: int = 1
    """seed of the experiment"""
    qmp: bool = True
    """toggle QMP behaviour sharing (--no-qmp runs the base method alone)"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = False
    """if toggled, use CUDA when available"""
    env_compat: Literal["official", "fixed"] = "official"
    """environment fidelity switch: "official" reproduces the paper's environments"""
    env_options: tuple[str, ...] = ()
    """keyword arguments of the env as KEY=VALUE (e.g. start_bonus=0.01 on qmp/PointReach-v1),
    given to the training and the evaluation envs; numbers are parsed as numbers"""
    run_dir: str | None = None
    """output folder (default: runs/{env}__{exp_name}__{qmp|noqmp}__{seed}__{time}); one that
    holds a run is refused (see --resume, --overwrite)"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases"""
    wandb_project_name: str = "qmp"
    """the wandb's project name"""
    wandb_entity: str | None = None
    """the entity (team) of wandb's project"""

    # Algorithm; None takes the environment's preset (qmp_harness.config.PRESETS).
    total_timesteps: int | None = None
    """total environment steps over all tasks"""
    batch_size: int | None = None
    """minibatch size per task"""
    learning_starts: int | None = None
    """total environment steps before gradient updates start"""
    learning_rate: float | None = None
    """one Adam learning rate for actors, critics and temperatures"""
    hidden: tuple[int, ...] | None = None
    """hidden layer sizes of every actor and critic"""
    updates_per_step: float | None = None
    """gradient steps per environment step: of each task's networks per step of that task
    (per-task scripts), of the one shared network per env step (mtsac_qmp.py)"""
    learning_starts_per_task: bool = False
    """count --learning-starts per task (N times it in total), as the original's separate-network
    runs did; off by default: the committed results were made with the total"""
    init: Literal["torch", "xavier"] = "torch"
    """weight initialisation: "torch" (nn.Linear's default) or "xavier" (the original's garage
    defaults: Xavier-uniform actors, Xavier-normal critics, zero biases)"""
    buffer_size: int = 1_000_000
    """replay capacity per task"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 0.005
    """target smoothing coefficient"""
    alpha: float = 1.0
    """initial entropy temperature"""
    autotune: bool = True
    """automatic entropy tuning with target -|A| per task"""

    # QMP behaviour sharing.
    qmp_scoring: Literal["original", "min_twin"] = "original"
    """"original" (first critic on mean actions) or "min_twin" (min of twin critics on samples)"""
    qmp_mixture: Literal["qswitch", "uniform", "softmax"] = "qswitch"
    """"qswitch", "uniform" (ablation) or "softmax\""""
    qmp_temperature: float = 1.0
    """softmax temperature when --qmp-mixture softmax"""
    qmp_hold_steps: int = 1
    """keep the selected policy this many steps (1: switch every step, the paper's H = 1)"""
    qmp_after_learning_starts: bool = False
    """keep QMP off until --learning-starts steps (off by default: the committed results and
    golden runs were made with QMP from the first step)"""
    qmp_helpers: tuple[str, ...] = ()
    """fixed helper policies added to every task's candidates (PointReach: up, right, ...)"""

    # Evaluation, logging, checkpoints.
    eval_every: int | None = None
    """evaluate every this many environment steps"""
    eval_episodes: int | None = None
    """evaluation episodes per task"""
    eval_stop_at_success: bool = False
    """end each evaluation episode at its first success: the same success rate, faster, but the
    return columns are then NaN (off by default: the committed results report returns)"""
    eval_mixture: bool = True
    """QMP runs also evaluate the deterministic Q-switch mixture (columns eval_mixture/...), as
    the original logged both; the headline stays each task's own policy (eval/...)"""
    capture_video: bool = False
    """render one evaluation episode per task to GIFs under the run folder"""
    log_every: int = 1000
    """write training losses every this many environment steps"""
    checkpoint_every: int = 0
    """save a checkpoint every this many environment steps (0: only at the end)"""
    keep_checkpoints: int = 2
    """keep only this many newest checkpoints of the run (the newest and a fallback should the
    newest be damaged), deleting older ones (0: keep all)"""
    resume: str | None = None
    """a checkpoint, or a run folder (its newest loadable checkpoint), to resume from; the run
    continues in the checkpoint's run folder, falling back to older checkpoints if it is damaged"""
    overwrite: bool = False
    """start over in a --run-dir that holds a run: the old run moves aside to
    <run-dir>.replaced-<time> (nothing is deleted); without it such a folder is refused"""
    progress: bool = True
    """show a progress bar"""
    demo: bool = False
    """the README's demo: a one-minute QMP run on qmp/PointReachMT4-v0, then plots (flags you
    give override the demo's values)"""

    def problems(self) -> list[str]:
        """Every flag out of range, as ``--flag value: what is allowed`` (empty: all valid).
        Call it after presets are filled in; scripts extend it for their own flags."""
        return base_problems(self)


# The README's demo: a task suite that learns within a minute on 2 cores (success 0 -> 1 and
# the return from about -250 to -30 by 10k steps), with two pairs of related tasks so the
# selection heatmap shows sharing between them and none with the unrelated one.
DEMO = {
    "env_id": "qmp/PointReachMT4-v0",
    "total_timesteps": 10_000,
    "learning_starts": 1_000,
    "batch_size": 64,
    "eval_every": 1_000,
    "eval_episodes": 2,
    "checkpoint_every": 0,
    "run_dir": "runs/demo",
}


# Flags a resume may change: the budget, and how the rest of the run is shown and kept.
RESUMABLE_FLAGS = frozenset(
    {
        "total_timesteps",
        "progress",
        "resume",
        "keep_checkpoints",
        "log_every",
        "track",
        "wandb_project_name",
        "wandb_entity",
    }
)


def flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def check(problems: list[str], ok: bool, name: str, value: Any, allowed: str) -> None:
    """Record ``--name value: allowed`` in ``problems`` unless ``ok``."""
    if not ok:
        problems.append(f"{flag(name)} {value!r}: {allowed}")


def registered_qmp_ids() -> list[str]:
    from qmp_envs.suites import SUITES  # no env is built (nor MuJoCo imported) to check an id

    return sorted(SUITES)


def parse_env_options(env_id: str, options: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as env keyword arguments, each KEY checked against the env class's
    ``__init__`` (values that read as Python literals, such as numbers, become them).

    >>> parse_env_options("qmp/PointReach-v1", ["start_bonus=0.01"])
    {'start_bonus': 0.01}
    """
    import ast
    import inspect

    from qmp_envs.suites import suite_facts

    entry_point = suite_facts(env_id).entry_point
    module_name, class_name = entry_point.split(":")
    env_class = getattr(importlib.import_module(module_name), class_name)
    # An __init__ that passes **kwargs on accepts its base class's keywords too.
    accepted: list[str] = []
    for cls in env_class.__mro__:
        if "__init__" not in vars(cls):
            continue
        parameters = inspect.signature(vars(cls)["__init__"]).parameters.values()
        accepted += [
            p.name
            for p in parameters
            if p.name != "self"
            and p.name not in accepted
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    # Set by the scripts themselves (compat by --env-compat), so not an option.
    options_of_env = [k for k in accepted if k not in ("compat", "render_mode", "task")]
    parsed: dict[str, Any] = {}
    for option in options:
        key, sep, text = option.partition("=")
        if not sep or not key:
            raise ValueError(f"{option!r} is not KEY=VALUE")
        if key not in options_of_env:
            raise ValueError(
                f"{key!r} is not an option of {env_id}; its options are {', '.join(options_of_env)}"
            )
        if key in parsed:
            raise ValueError(f"{key!r} is given twice")
        try:
            parsed[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parsed[key] = text
    return parsed


#: The seeds NumPy's global generator takes (``np.random.seed``: 0 to 2**32 - 1).
SEED_MAX = 2**32 - 1


def base_problems(args: BaseArgs) -> list[str]:
    """What is wrong with the flags every script shares (after presets are filled in),
    including a run too large for the machine's memory (:mod:`qmp_harness.run_memory`)."""
    import math

    from qmp_envs import helper_policies
    from qmp_envs.suites import suite_facts
    from qmp_harness.run_memory import memory_problems

    p: list[str] = []
    check(p, args.env_id in registered_qmp_ids(), "env_id", args.env_id,
          f"unknown environment; registered: {', '.join(registered_qmp_ids())}")  # fmt: skip
    check(p, 0 <= args.seed <= SEED_MAX, "seed", args.seed,
          f"must be in [0, {SEED_MAX}] (2**32 - 1, the range NumPy's seeding takes)")  # fmt: skip
    check(p, args.total_timesteps > 0, "total_timesteps", args.total_timesteps, "must be > 0")
    check(p, args.batch_size >= 1, "batch_size", args.batch_size, "must be >= 1")
    check(p, args.learning_starts >= 0, "learning_starts", args.learning_starts, "must be >= 0")
    check(p, math.isfinite(args.learning_rate) and args.learning_rate > 0, "learning_rate",
          args.learning_rate, "must be a finite number > 0")  # fmt: skip
    check(p, len(args.hidden) >= 1 and all(h >= 1 for h in args.hidden), "hidden", args.hidden,
          "needs at least one layer, every size >= 1")  # fmt: skip
    check(p, math.isfinite(args.updates_per_step) and args.updates_per_step > 0,
          "updates_per_step", args.updates_per_step, "must be a finite number > 0")  # fmt: skip
    check(p, args.buffer_size >= 1, "buffer_size", args.buffer_size, "must be >= 1")
    check(p, 0 <= args.gamma <= 1, "gamma", args.gamma, "must be in [0, 1]")
    check(p, 0 < args.tau <= 1, "tau", args.tau, "must be in (0, 1]")
    check(p, math.isfinite(args.alpha) and args.alpha > 0, "alpha", args.alpha, "must be > 0")
    check(p, math.isfinite(args.qmp_temperature) and args.qmp_temperature > 0, "qmp_temperature",
          args.qmp_temperature, "must be a finite number > 0")  # fmt: skip
    check(p, args.qmp_hold_steps >= 1, "qmp_hold_steps", args.qmp_hold_steps, "must be >= 1")
    try:
        helper_policies(list(args.qmp_helpers))
    except (KeyError, ValueError) as error:
        p.append(f"--qmp-helpers {list(args.qmp_helpers)}: {error}")
    if args.qmp_helpers and args.env_id in registered_qmp_ids():
        # The helpers are PointReach's fixed 2-D directions.
        action_dim = suite_facts(args.env_id).action_dim
        check(p, action_dim == 2, "qmp_helpers", list(args.qmp_helpers),
              f"propose 2-D actions (PointReach's helpers); {args.env_id} has {action_dim}-D "
              "actions: drop --qmp-helpers or use a qmp/PointReach id")  # fmt: skip
    try:
        parse_env_options(args.env_id, args.env_options)
    except ValueError as error:
        p.append(f"--env-options {list(args.env_options)}: {error}")
    check(p, args.eval_every >= 1, "eval_every", args.eval_every, "must be >= 1")
    check(p, args.eval_episodes >= 1, "eval_episodes", args.eval_episodes, "must be >= 1")
    check(p, args.log_every >= 1, "log_every", args.log_every, "must be >= 1")
    check(p, args.checkpoint_every >= 0, "checkpoint_every", args.checkpoint_every,
          "must be >= 0 (0: only at the end)")  # fmt: skip
    check(p, args.keep_checkpoints >= 0, "keep_checkpoints", args.keep_checkpoints,
          "must be >= 0 (0: keep all)")  # fmt: skip
    if not p:  # the estimate needs sizes in range; run last, once the rest is valid
        p += memory_problems(args)
    return p


GIVEN_FLAGS_ATTRIBUTE = "_given_flags"
ArgsT = TypeVar("ArgsT")


def flags_in(argv: list[str], args_type: type) -> frozenset[str]:
    """The fields of ``args_type`` that ``argv`` names (``--batch-size 64``, ``--seed=3``,
    ``--qmp`` / ``--no-qmp``), whatever their values.

    >>> sorted(flags_in(["--no-qmp", "--seed=3", "--hidden", "32", "32"], BaseArgs))
    ['hidden', 'qmp', 'seed']
    """
    names = {f.name for f in fields(args_type)}
    given = set()
    for token in argv:
        if not token.startswith("--") or token == "--":
            continue
        name = token[2:].split("=", 1)[0].replace("-", "_")
        if name in names:
            given.add(name)
        elif name.startswith("no_") and name[3:] in names:
            given.add(name[3:])
    return frozenset(given)


def parse_command_line(args_type: type[ArgsT], argv: list[str] | None = None) -> ArgsT:
    """``tyro.cli(args_type)``, remembering which flags the command line gave, so a resume
    compares every one of them with the checkpoint, also those equal to their defaults."""
    import tyro

    argv = sys.argv[1:] if argv is None else list(argv)
    args = tyro.cli(args_type, args=argv)
    setattr(args, GIVEN_FLAGS_ATTRIBUTE, flags_in(argv, args_type))
    return args


def given_or_changed(args: Any) -> set[str]:
    """The flags of ``args`` to honour on resume: those its command line gave (when it came
    from :func:`parse_command_line`) and those that differ from their defaults."""
    defaults = type(args)()
    changed = {f.name for f in fields(args) if getattr(args, f.name) != getattr(defaults, f.name)}
    return changed | set(getattr(args, GIVEN_FLAGS_ATTRIBUTE, ()))


def resume_conflicts(given: BaseArgs, saved: BaseArgs) -> list[str]:
    """Flags given with ``--resume`` (on the command line, or differing from their defaults)
    that contradict the checkpoint's configuration; :data:`RESUMABLE_FLAGS` may change."""
    honoured = given_or_changed(given)
    conflicts = []
    for f in fields(given):
        if f.name in RESUMABLE_FLAGS or f.name == "run_dir":
            continue
        value, theirs = getattr(given, f.name), getattr(saved, f.name)
        if f.name in honoured and value != theirs:
            if isinstance(value, bool):  # tyro's --flag / --no-flag
                given_text = flag(f.name if value else f"no_{f.name}")
                theirs_text = flag(f.name if theirs else f"no_{f.name}")
                conflicts.append(f"{given_text}: the checkpoint's run has {theirs_text}")
            else:
                conflicts.append(f"{flag(f.name)} {value!r}: the checkpoint's run has {theirs!r}")
    return conflicts


def refuse(what: str, problems: list[str], lock: RunFolderLock | None = None) -> None:
    """Stop before the run touches anything: print each problem and exit with status 2."""
    if lock is not None:
        lock.release()
    lines = "\n".join(f"  {p}" for p in problems)
    print(f"error: {what}:\n{lines}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def script_name(args: BaseArgs) -> str:
    """The file name of the script whose ``Args`` these are (``sac_qmp.py``)."""
    return Path(sys.modules[type(args).__module__].__file__).name


def resumed_configuration(args: Any, checkpoint: dict, run_dir: Path, lock: Any) -> Any:
    """The checkpoint's configuration, with the :data:`RESUMABLE_FLAGS` given now; refuses
    (exit 2, naming every conflict) another script's checkpoint or contradicting flags."""
    saved, script = checkpoint["args"], checkpoint.get("script")
    if script is not None and script != script_name(args):
        refuse(
            "wrong script",
            [f"{args.resume} was written by {script}, not {script_name(args)}: "
             f"resume it with cleanrl_qmp/{script}"],
            lock,
        )  # fmt: skip
    if not isinstance(saved, dict):  # checkpoints before args were stored as a dict
        saved = asdict(saved)
    known = {f.name for f in fields(type(args))}
    saved = type(args)(**{k: v for k, v in saved.items() if k in known})
    conflicts = resume_conflicts(args, saved)
    if conflicts:
        refuse(f"these flags contradict {args.resume}", conflicts, lock)
    honoured = given_or_changed(args)
    for name in RESUMABLE_FLAGS - {"resume"}:
        if name in honoured:
            setattr(saved, name, getattr(args, name))
    saved.resume = args.resume
    # A run continues in the folder that holds the checkpoint (runs can be moved).
    saved.run_dir = str(run_dir.resolve())
    return saved
