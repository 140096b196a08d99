"""A campaign is data: a grid of environments x methods x seeds (x flag overrides) in a TOML file.

Both backends of :mod:`qmp_experiments.sweep` (the local process pool and Ray) read the same
definition. The bundled campaigns are ``qmp_experiments/campaigns/<name>.toml``; a user passes
the path of their own file. A minimal file::

    env_ids = ["qmp/MultistageReacher-v0"]
    total_timesteps = 300000
    seeds = [1, 2, 3]
    checkpoint_every = 20000
    flags = ["--eval-every", "20000"]        # given to every run (optional)

    [[methods]]
    name = "no_sharing_qmp"
    script = "sac_qmp.py"                     # a script of cleanrl_qmp, or a path to your own
    flags = ["--qmp"]

    [overrides]                               # optional: every method runs once per value
    "--batch-size" = ["32", "64"]

A top-level ``pin_float_profile = true`` (optional, default false) runs every training process
with :data:`qmp_harness.float_profile.PINNED_ENVIRONMENT`, so an AVX-512 processor computes the
floats an AVX2 one does: a campaign continued on another x86 machine stays bit-comparable.

Run folders are ``<root>/<campaign>/<method>/seed_<k>`` (with an ``<env>/`` level when the
campaign has several environments, and ``<method>__<flag>=<value>`` names for overrides).

Everything that would make every run fail later is refused when the file loads, naming the key:
a name that becomes part of a path (the file's name, method names, override flags and values)
outside ``A-Z a-z 0-9 _ . = + -``, unknown env ids, flags the script does not have (read from
its ``Args`` class, without importing it), flags that the campaign's keys set (``--seed``,
``--env-id``, ...), seeds that are not distinct integers >= 0, an empty grid.
"""

from __future__ import annotations

import ast
import itertools
import os
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

import tomllib

import cleanrl_qmp
from qmp_harness.config import BaseArgs, registered_qmp_ids

SCRIPTS_DIR = Path(cleanrl_qmp.__file__).resolve().parent
BUNDLED_DIR = Path(__file__).resolve().parent / "campaigns"


@dataclass(frozen=True)
class Method:
    """One curve of a campaign: a training script and its flags."""

    name: str
    script: str
    flags: tuple[str, ...] = ()
    override_flags: tuple[str, ...] = ()  # from the campaign's [overrides] grid; given last

    def script_path(self, base: Path = SCRIPTS_DIR) -> Path:
        path = Path(self.script)
        return path if path.is_absolute() else base / path


@dataclass(frozen=True)
class Run:
    """One training run of a campaign: where it lives and the flags that define it."""

    env_id: str
    method: Method
    seed: int
    folder: str  # relative to the results root: "<campaign>/[<env>/]<method>/seed_<k>"
    script: Path

    def local_script(self) -> Path:
        """The script on the machine running the command: a node of a cluster may hold this
        package at another path than the driver's machine."""
        if self.script.is_file():
            return self.script
        return SCRIPTS_DIR / self.script.name


@dataclass(frozen=True)
class Campaign:
    name: str
    env_ids: tuple[str, ...]
    total_timesteps: int
    seeds: tuple[int, ...]
    methods: tuple[Method, ...]
    checkpoint_every: int
    keep_checkpoints: int = 2
    flags: tuple[str, ...] = ()
    overrides: tuple[tuple[str, tuple[str, ...]], ...] = ()
    pin_float_profile: bool = False
    source: Path | None = field(default=None, compare=False)

    def expanded_methods(self) -> list[Method]:
        """Every method once per combination of override values (the flag grid)."""
        if not self.overrides:
            return list(self.methods)
        flags = [flag for flag, _ in self.overrides]
        expanded = []
        for method in self.methods:
            for values in itertools.product(*(values for _, values in self.overrides)):
                suffix = "__".join(
                    f"{f.lstrip('-')}={v}" for f, v in zip(flags, values, strict=True)
                )
                extra = tuple(x for pair in zip(flags, values, strict=True) for x in pair)
                expanded.append(
                    Method(f"{method.name}__{suffix}", method.script, method.flags, extra)
                )
        return expanded

    def runs(self, seeds: list[int] | None = None, methods: list[str] | None = None) -> list[Run]:
        """The campaign's runs, seed by seed (every method's first seeds come first), so an
        interrupted campaign still holds complete method comparisons for its first seeds."""
        all_methods = self.expanded_methods()
        check_subset(self.name, "seeds", seeds, list(self.seeds))
        check_subset(self.name, "methods", methods, [m.name for m in all_methods])
        base = self.source.parent if self.source is not None else SCRIPTS_DIR
        out = []
        for seed in self.seeds:
            if seeds is not None and seed not in seeds:
                continue
            for env_id in self.env_ids:
                env_level = f"{env_id.split('/')[-1]}/" if len(self.env_ids) > 1 else ""
                for method in all_methods:
                    if methods is not None and method.name not in methods:
                        continue
                    script = method.script_path(base)
                    if not script.is_file() and not Path(method.script).is_absolute():
                        script = method.script_path(SCRIPTS_DIR)
                    folder = f"{self.name}/{env_level}{method.name}/seed_{seed}"
                    out.append(Run(env_id, method, seed, folder, script))
        return out

    def fresh_command(self, run: Run, run_dir: Path) -> list[str]:
        return [
            sys.executable, str(run.local_script()),
            "--env-id", run.env_id,
            "--seed", str(run.seed),
            "--total-timesteps", str(self.total_timesteps),
            "--checkpoint-every", str(self.checkpoint_every),
            "--keep-checkpoints", str(self.keep_checkpoints),
            "--run-dir", str(run_dir),
            "--no-progress",
            *run.method.flags,
            *self.flags,
            *run.method.override_flags,
        ]  # fmt: skip

    def resume_command(self, run: Run, checkpoint: Path, run_dir: Path) -> list[str]:
        """The run's whole command again, with ``--resume``: the script then refuses a
        checkpoint that is not this run's (another script, env, seed or method) and flags the
        campaign changed since the run started, naming each. The budget and what is kept are
        resumable, so raising total_timesteps extends finished runs from their checkpoint."""
        return [*self.fresh_command(run, run_dir), "--resume", str(checkpoint)]


def check_subset(campaign: str, kind: str, chosen: list | None, available: list) -> None:
    unknown = sorted(set(chosen or ()) - set(available))
    if unknown:
        raise ValueError(f"{campaign} has {kind} {available}, not {unknown}")


def bundled_campaigns() -> list[str]:
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.toml"))


REQUIRED = {"env_ids", "total_timesteps", "seeds", "methods", "checkpoint_every"}
OPTIONAL = {"keep_checkpoints", "flags", "overrides", "description", "pin_float_profile"}


def _strings(value, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
        raise ValueError(f"{where} must be a list of strings, got {value!r}")
    return tuple(str(v) for v in value)


def _positive_int(value, where: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where} must be an integer >= {minimum}, got {value!r}")
    return value


# A name that becomes part of a run folder's path: no separators, no "..", no leading dot.
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=+-]{0,199}")
SAFE_VALUE = re.compile(r"[A-Za-z0-9_.=+-]{1,100}")
# Flags the driver gives every run from the campaign's keys: a campaign's flags must not.
DRIVER_FLAGS = {
    "env_id": "env_ids", "seed": "seeds", "total_timesteps": "total_timesteps",
    "checkpoint_every": "checkpoint_every", "run_dir": "the results root",
    "resume": "the driver", "overwrite": "the driver",
}  # fmt: skip


def safe_name(value: str, where: str, pattern: re.Pattern = SAFE_NAME) -> str:
    """``value`` if it is safe as part of a path, else a ValueError naming ``where``."""
    if not pattern.fullmatch(value) or ".." in value:
        raise ValueError(
            f"{where} = {value!r}: it becomes part of run folders' paths, so it may hold only "
            "letters, digits and _ . = + - (no '/', no '..', not starting with '.' or '-')"
        )
    return value


def script_flags(script: Path) -> frozenset[str] | None:
    """The fields of ``script``'s ``Args(BaseArgs)`` dataclass, read from its source without
    importing it; None when the script defines no such class (its flags are not checked)."""
    try:
        tree = ast.parse(script.read_text())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or node.name != "Args":
            continue
        bases = [getattr(base, "id", getattr(base, "attr", None)) for base in node.bases]
        if "BaseArgs" in bases:
            own = {
                item.target.id
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            }
            return frozenset(own | {f.name for f in fields(BaseArgs)})
    return None


def flag_problems(tokens: tuple[str, ...], known: frozenset[str] | None, where: str) -> list[str]:
    """Flags in ``tokens`` that the script lacks or that the campaign's keys set."""
    problems = []
    for token in tokens:
        if not token.startswith("--") or token == "--":
            continue
        name = token[2:].split("=", 1)[0].replace("-", "_")
        base = name[3:] if name.startswith("no_") and name not in (known or ()) else name
        if base in DRIVER_FLAGS:
            problems.append(f"{where}: {token} is set by {DRIVER_FLAGS[base]}, not by flags")
        elif known is not None and base not in known:
            problems.append(f"{where}: {token} is not a flag of the script")
    return problems


def _seeds(value, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where} must be a non-empty list of integers, got {value!r}")
    for k, seed in enumerate(value):
        _positive_int(seed, f"{where}[{k}]", minimum=0)
        if seed >= 2**32:  # numpy's legacy seeding takes 32 bits
            raise ValueError(f"{where}[{k}] must be below 2**32, got {seed}")
    duplicates = sorted({s for s in value if value.count(s) > 1})
    if duplicates:
        raise ValueError(f"{where} repeats {duplicates}: each seed is one run")
    return tuple(value)


def _unique(values: tuple[str, ...], where: str) -> tuple[str, ...]:
    if not values:
        raise ValueError(f"{where} is empty: the grid would hold no runs")
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise ValueError(f"{where} repeats {duplicates}")
    return values


def load_campaign(name_or_path: str | Path) -> Campaign:
    """A bundled campaign by name (``reacher``), or a campaign file by path; errors name the
    file and the key at fault."""
    path = Path(name_or_path)
    if not path.suffix == ".toml":
        bundled = BUNDLED_DIR / f"{name_or_path}.toml"
        if not bundled.is_file():
            raise ValueError(
                f"unknown campaign {str(name_or_path)!r}: bundled ones are "
                f"{bundled_campaigns()}, or pass the path of a .toml file"
            )
        path = bundled
    if not path.is_file():
        raise ValueError(f"campaign file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML ({error})") from None
    missing, unknown = REQUIRED - set(data), set(data) - REQUIRED - OPTIONAL
    if missing or unknown:
        raise ValueError(f"{path}: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")
    if not isinstance(data["methods"], list) or not data["methods"]:
        raise ValueError(f"{path}: methods must be a non-empty list of [[methods]] tables")
    methods = []
    for k, entry in enumerate(data["methods"]):
        where = f"{path}: methods[{k}]"
        if not isinstance(entry, dict) or not {"name", "script"} <= set(entry):
            raise ValueError(f"{where} needs a name and a script")
        if set(entry) - {"name", "script", "flags"}:
            raise ValueError(
                f"{where} has unknown keys {sorted(set(entry) - {'name', 'script', 'flags'})}"
            )
        name = safe_name(str(entry["name"]), f"{where}.name")
        methods.append(Method(name, str(entry["script"]), _strings(entry.get("flags", []), where)))
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: method names must be unique, got {names}")
    overrides = data.get("overrides", {})
    if not isinstance(overrides, dict):
        raise ValueError(f"{path}: overrides must be a table of flag = [values]")
    override_grid = []
    for flag, values in overrides.items():
        where = f"{path}: overrides.{flag!r}"
        if not re.fullmatch(r"--[a-z][a-z0-9-]*", flag):
            raise ValueError(f'{where}: the key must be a flag like "--batch-size"')
        values = _unique(_strings(values, where), where)
        for k, value in enumerate(values):
            safe_name(value, f"{where}[{k}]", SAFE_VALUE)
        override_grid.append((flag, values))
    pin_float_profile = data.get("pin_float_profile", False)
    if not isinstance(pin_float_profile, bool):
        raise ValueError(
            f"{path}: pin_float_profile must be true or false, got {pin_float_profile!r}"
        )
    env_ids = _unique(_strings(data["env_ids"], f"{path}: env_ids"), f"{path}: env_ids")
    for k, env_id in enumerate(env_ids):
        if env_id not in registered_qmp_ids():
            raise ValueError(
                f"{path}: env_ids[{k}] = {env_id!r} is not a registered environment; "
                f"registered: {', '.join(registered_qmp_ids())}"
            )
    campaign = Campaign(
        name=safe_name(path.stem, f"{path}: the campaign's name (the file name)"),
        env_ids=env_ids,
        total_timesteps=_positive_int(data["total_timesteps"], f"{path}: total_timesteps"),
        seeds=_seeds(data["seeds"], f"{path}: seeds"),
        methods=tuple(methods),
        checkpoint_every=_positive_int(data["checkpoint_every"], f"{path}: checkpoint_every"),
        keep_checkpoints=_positive_int(
            data.get("keep_checkpoints", 2), f"{path}: keep_checkpoints", minimum=0
        ),
        flags=_strings(data.get("flags", []), f"{path}: flags"),
        overrides=tuple(override_grid),
        pin_float_profile=pin_float_profile,
        source=path.resolve(),
    )
    check_runs(campaign, path)
    return campaign


def check_runs(campaign: Campaign, path: Path) -> None:
    """Every run's script exists and has every flag given to it; every run folder stays
    inside the results root (names were checked as they were read)."""
    problems: list[str] = []
    checked: set[str] = set()
    for run in campaign.runs():
        method = run.method
        if not run.script.is_file():
            raise ValueError(f"{path}: method {method.name}'s script {run.script} not found")
        folder = os.path.normpath(run.folder)
        if os.path.isabs(folder) or folder.split(os.sep)[0] != campaign.name:
            raise ValueError(f"{path}: run folder {run.folder!r} leaves the results root")
        base_name = method.name.split("__", 1)[0]
        if base_name in checked:
            continue
        checked.add(base_name)
        known = script_flags(run.script)
        k = [m.name for m in campaign.methods].index(base_name)
        problems += flag_problems(method.flags, known, f"methods[{k}].flags")
        problems += flag_problems(campaign.flags, known, "flags")
        problems += flag_problems(tuple(flag for flag, _ in campaign.overrides), known, "overrides")
    if problems:
        unique = list(dict.fromkeys(problems))
        raise ValueError(f"{path}: " + "; ".join(unique))
