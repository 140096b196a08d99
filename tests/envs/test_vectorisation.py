"""Vectorisation idioms that would lose the one-sub-env-per-task layout are refused with what
to use instead (issue 25, item 3); torchrl's wrappers work on the supported path (item 4)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import qmp_envs  # noqa: F401
from qmp_wrappers import QMPBehaviorWrapper

ENV_ID = "qmp/MultistageReacher-v0"


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("num_envs", [1, 5])
def test_gymnasium_copy_vectorisation_is_refused(mode: str, num_envs: int) -> None:
    with pytest.raises(gym.error.Error, match=r"gym.make_vec\('qmp/MultistageReacher-v0'\)"):
        gym.make_vec(ENV_ID, num_envs=num_envs, vectorization_mode=mode)


def test_copies_of_one_pinned_task_and_the_supported_layouts_are_built() -> None:
    copies = gym.make_vec(ENV_ID, num_envs=3, vectorization_mode="sync", task=2)
    assert copies.get_attr("task_id") == (2, 2, 2)
    assert gym.make_vec(ENV_ID).get_attr("task_id") == (0, 1, 2, 3, 4)
    envs = gym.make_vec(ENV_ID, num_envs=10, vector_strategy="async")
    try:
        assert envs.get_attr("task_id") == (0, 1, 2, 3, 4) * 2
    finally:
        envs.close()
    gym.make(ENV_ID)  # a single env (cycling tasks) is still what gym.make gives


def test_torchrl_gymenv_copies_are_refused_and_the_wrapper_path_works() -> None:
    from torchrl.envs import GymEnv, GymWrapper, check_env_specs
    from torchrl.envs.libs.gym import default_info_dict_reader

    with pytest.raises(gym.error.Error, match="torchrl's GymEnv"):
        GymEnv(ENV_ID, num_envs=5)
    check_env_specs(GymEnv(ENV_ID))  # one env, cycling through the tasks
    # A single QMP-wrapped env: its info values are NumPy scalars torchrl's reader takes.
    env = QMPBehaviorWrapper(gym.make(ENV_ID, task=1))
    env.attach(lambda obs: np.tanh(obs[:, :6]), lambda obs, act: -np.abs(act - 0.3).sum(1))
    reader = default_info_dict_reader(["qmp_action", "qmp_policy"])
    rollout = GymWrapper(env).set_info_dict_reader(reader).rollout(3)
    assert rollout["next", "qmp_policy"].shape == (3,)
    np.testing.assert_array_equal(
        rollout["next", "qmp_action"].numpy(),
        np.clip(rollout["next", "qmp_action"].numpy(), -1, 1),
    )
