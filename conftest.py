"""Headless rendering for every test run, however pytest is invoked (MuJoCo reads MUJOCO_GL
when it first creates a GL context)."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


import pickle  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def assert_pickle_continues_exactly():
    """Step ``env`` with half the actions, pickle it, then check the clone and the original
    produce identical observations and rewards for the rest; returns the pickle's size."""

    def check(env, actions) -> int:
        half = len(actions) // 2
        for action in actions[:half]:
            env.step(action)
        blob = pickle.dumps(env)
        clone = pickle.loads(blob)
        for action in actions[half:]:
            obs, reward, *_ = env.step(action)
            clone_obs, clone_reward, *_ = clone.step(action)
            np.testing.assert_array_equal(obs, clone_obs)
            assert reward == clone_reward
        return len(blob)

    return check
