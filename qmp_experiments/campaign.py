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
with :data:`cleanrl_qmp.float_profile.PINNED_ENVIRONMENT`, so an AVX-512 processor computes the
floats an AVX2 one does: a campaign continued on another x86 machine stays bit-comparable.

Run folders are ``<root>/<campaign>/<method>/seed_<k>`` (with an ``<env>/`` level when the
campaign has several environments, and ``<method>__<flag>=<value>`` names for overrides).
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

import cleanrl_qmp

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

    def resume_command(self, run: Run, checkpoint: Path) -> list[str]:
        # The campaign's budget is passed again, so raising total_timesteps in the campaign file
        # extends its finished runs from their last checkpoint (the budget is resumable).
        script = str(run.local_script())
        budget = ["--total-timesteps", str(self.total_timesteps)]
        return [sys.executable, script, "--resume", str(checkpoint), *budget, "--no-progress"]


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


def _positive_int(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{where} must be a positive integer, got {value!r}")
    return value


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
    methods = []
    for k, entry in enumerate(data["methods"]):
        where = f"{path}: methods[{k}]"
        if not isinstance(entry, dict) or not {"name", "script"} <= set(entry):
            raise ValueError(f"{where} needs a name and a script")
        if set(entry) - {"name", "script", "flags"}:
            raise ValueError(
                f"{where} has unknown keys {sorted(set(entry) - {'name', 'script', 'flags'})}"
            )
        methods.append(
            Method(
                str(entry["name"]), str(entry["script"]), _strings(entry.get("flags", []), where)
            )
        )
    names = [m.name for m in methods]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"{path}: method names must be unique and non-empty, got {names}")
    seeds = data["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ValueError(f"{path}: seeds must be a non-empty list of integers, got {seeds!r}")
    overrides = data.get("overrides", {})
    if not isinstance(overrides, dict):
        raise ValueError(f"{path}: overrides must be a table of flag = [values]")
    pin_float_profile = data.get("pin_float_profile", False)
    if not isinstance(pin_float_profile, bool):
        raise ValueError(
            f"{path}: pin_float_profile must be true or false, got {pin_float_profile!r}"
        )
    campaign = Campaign(
        name=path.stem,
        env_ids=_strings(data["env_ids"], f"{path}: env_ids"),
        total_timesteps=_positive_int(data["total_timesteps"], f"{path}: total_timesteps"),
        seeds=tuple(seeds),
        methods=tuple(methods),
        checkpoint_every=_positive_int(data["checkpoint_every"], f"{path}: checkpoint_every"),
        keep_checkpoints=int(data.get("keep_checkpoints", 2)),
        flags=_strings(data.get("flags", []), f"{path}: flags"),
        overrides=tuple(
            (flag, _strings(values, f"{path}: overrides.{flag}"))
            for flag, values in overrides.items()
        ),
        pin_float_profile=pin_float_profile,
        source=path.resolve(),
    )
    for run in campaign.runs():
        if not run.script.is_file():
            raise ValueError(f"{path}: method {run.method.name}'s script {run.script} not found")
    return campaign
