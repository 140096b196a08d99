"""Environment speed: env steps/s and the efficiency ratio against raw MuJoCo on the same model.

    ratio = (env steps/s x frame_skip) / (raw mj_step/s on the same model)

"env" is ``gym.make(id, task=0)`` with Gymnasium's default wrappers, stepped with random
actions, resets included in the time. "raw" calls ``mujoco.mj_step(model, data)`` in a Python
loop on the same model, writing a random ``ctrl`` every frame_skip substeps. Gymnasium's own
Reacher-v5 is measured the same way as a calibration row. Vector rows time
``gym.make_vec(id)`` (one sub-env per task) with the sync and the async strategy.

    python benchmarks/env_speed.py [--seconds 2.0] [--ids qmp/MazeLarge10-v0 ...]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import mujoco
import numpy as np

import qmp_envs
from qmp_harness.cli_types import positive_real, qmp_env_id

TARGET_RATIO = 0.5


def env_steps_per_second(env: gym.Env, seconds: float) -> float:
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (4096, *env.action_space.shape)).astype(np.float32)
    env.reset(seed=0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for action in actions[:256]:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        steps += 256
        actions = np.roll(actions, 256, axis=0)
    return steps / (time.perf_counter() - start)


def raw_mj_steps_per_second(model: mujoco.MjModel, frame_skip: int, seconds: float) -> float:
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    ctrl = np.random.default_rng(0).uniform(-1, 1, (4096, model.nu))
    substeps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for k in range(256):
            if k % frame_skip == 0:
                data.ctrl[:] = ctrl[k]
            mujoco.mj_step(model, data)
        substeps += 256
        if not np.isfinite(data.qvel).all() or data.time > 1e4:
            mujoco.mj_resetData(model, data)
    return substeps / (time.perf_counter() - start)


def vector_steps_per_second(env_id: str, strategy: str, seconds: float) -> float:
    envs = gym.make_vec(env_id, vector_strategy=strategy)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (64, *envs.action_space.shape)).astype(np.float32)
    envs.reset(seed=0)
    for a in actions[:4]:  # warm-up (async workers start lazily)
        envs.step(a)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for a in actions:
            envs.step(a)
        steps += len(actions) * envs.num_envs
    rate = steps / (time.perf_counter() - start)
    envs.close()
    return rate


def measure(env_id: str, seconds: float) -> dict:
    kwargs = {"task": 0} if env_id.startswith("qmp/") else {}
    env = gym.make(env_id, **kwargs)
    sps = env_steps_per_second(env, seconds)
    # Meta-World suites hold one Meta-World env per task: time raw MuJoCo on task 0's model.
    unwrapped = env.unwrapped
    sim = unwrapped.task_env(0) if hasattr(unwrapped, "task_env") else unwrapped
    raw = raw_mj_steps_per_second(sim.model, sim.frame_skip, seconds)
    env.close()
    return {
        "sps": sps,
        "raw": raw,
        "frame_skip": sim.frame_skip,
        "ratio": sps * sim.frame_skip / raw,
    }


def metaworld_reference_sps(seconds: float) -> float:
    """Meta-World's own reach-v3 env (goal set, no wrappers): what the qmp suite builds on."""
    import metaworld
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    env = ALL_V3_ENVIRONMENTS["reach-v3"](reward_function_version="v2")
    env.set_task(metaworld.MT1("reach-v3", seed=0).train_tasks[0])
    env.reset()
    actions = np.random.default_rng(0).uniform(-1, 1, (500, 4)).astype(np.float32)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for action in actions:
            env.step(action)
        env.reset()
        steps += len(actions)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=positive_real, default=2.0, help="timing window per measurement"
    )
    # MT50's vector rows build 50 environments twice; add it with --ids when wanted.
    skip = ("qmp/PointReach-v0", "qmp/MetaWorldMT50-v0")
    mujoco_ids = [i for i in qmp_envs.SUITES if i not in skip]
    parser.add_argument("--ids", nargs="+", type=qmp_env_id, default=mujoco_ids)
    args = parser.parse_args()
    print(
        f"mujoco {mujoco.__version__}, gymnasium {gym.__version__}; ratio target >= {TARGET_RATIO}"
    )
    print(f"{'env':<28} {'env steps/s':>12} {'frame_skip':>10} {'raw mj_step/s':>14} {'ratio':>7}")
    for env_id in ["Reacher-v5", *args.ids]:
        r = measure(env_id, args.seconds)
        verdict = (
            "" if env_id == "Reacher-v5" else ("met" if r["ratio"] >= TARGET_RATIO else "MISSED")
        )
        print(
            f"{env_id:<28} {r['sps']:>12.0f} {r['frame_skip']:>10} {r['raw']:>14.0f}"
            f" {r['ratio']:>7.2f} {verdict}"
        )
    if any("MetaWorld" in env_id for env_id in args.ids):
        reference = metaworld_reference_sps(args.seconds)
        print(
            f"{'Meta-World reach-v3 itself':<28} {reference:>12.0f}   (reference for the MT rows)"
        )
    print()
    print(f"{'vector env (one sub-env per task)':<36} {'sync steps/s':>12} {'async steps/s':>14}")
    for env_id in args.ids:
        sync = vector_steps_per_second(env_id, "sync", args.seconds)
        asyn = vector_steps_per_second(env_id, "async", args.seconds)
        print(f"{env_id:<36} {sync:>12.0f} {asyn:>14.0f}")


if __name__ == "__main__":
    main()
