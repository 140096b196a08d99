"""Install-level promises: every package and module imports; importing qmp_envs registers ids."""

import importlib
import pkgutil

import gymnasium as gym
import pytest

PACKAGES = ["qmp_envs", "qmp_wrappers", "cleanrl_qmp"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_imports(package):
    root = importlib.import_module(package)
    for module in pkgutil.iter_modules(root.__path__):
        importlib.import_module(f"{package}.{module.name}")


def test_import_qmp_envs_registers_the_namespace():
    import qmp_envs

    ids = {env_id for env_id in gym.registry if env_id.startswith("qmp/")}
    assert ids == set(qmp_envs.SUITES) and len(ids) >= 4


def test_the_test_environment_has_the_pinned_versions():
    """`make test` installs requirements.lock; the key pins must be what is imported."""
    from importlib.metadata import version
    from pathlib import Path

    lock = Path(__file__).resolve().parents[2] / "requirements.lock"
    pins = dict(
        line.strip().lower().split("==") for line in lock.read_text().splitlines() if "==" in line
    )
    for name in ["torch", "gymnasium", "mujoco", "numpy", "stable_baselines3", "pettingzoo"]:
        assert version(name).split("+")[0] == pins[name], name
