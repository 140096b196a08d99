"""An unmodified stable-baselines3 SAC trains on every task of a ``qmp/`` id at once, with QMP.

Nothing in SAC is subclassed or edited:
- ``make_qmp_vec_env`` gives SB3 one sub-env per task (``DummyVecEnv`` or ``SubprocVecEnv``)
  under ``QMPVecEnvWrapper``, which makes ONE batched policy call and ONE batched Q call per
  step for all sub-envs;
- the agent's own actor and twin critics are attached to it;
- SB3's ``replay_buffer_class`` is ``QMPReplayBuffer``, so the executed action is stored.
SB3's SAC is one network conditioned on the one-hot task id, so "task j's policy" is that
network asked about task j: the wrapper relabels the one-hot for every proposal.

    python examples/sb3_sac_qmp.py --env-id qmp/MultistageReacher-v0 --total-timesteps 20000
    python examples/sb3_sac_qmp.py --subproc   # sub-envs in their own processes
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

import qmp_envs
from qmp_harness.cli_types import at_least, qmp_env_id
from qmp_wrappers import QMPReplayBuffer
from qmp_wrappers.sb3 import QMPVecEnvWrapper, make_qmp_vec_env


def make_agent(
    env_id: str,
    seed: int = 0,
    learning_starts: int = 1000,
    vec_env_cls: type[VecEnv] = DummyVecEnv,
    **sac_kwargs,
) -> tuple[QMPVecEnvWrapper, SAC]:
    """The vectorised, QMP-wrapped env and an SB3 SAC whose networks drive its Q-switch."""
    venv = make_qmp_vec_env(env_id, vec_env_cls=vec_env_cls, seed=seed)
    model = SAC(
        "MlpPolicy",
        venv,
        seed=seed,
        learning_starts=learning_starts,
        replay_buffer_class=QMPReplayBuffer,
        # SB3 stores actions rescaled to [-1, 1]; the adapter does the same with the executed one.
        replay_buffer_kwargs={"store_scaled_actions": True},
        verbose=0,
        **sac_kwargs,
    )

    def policy(obs: torch.Tensor):
        # (sampled, mean) of SB3's actor; it already squashes into the action space's [-1, 1].
        return model.actor(obs, deterministic=False), model.actor(obs, deterministic=True)

    venv.attach(policy=policy, q_function=model.critic, device=model.device)
    return venv, model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # Checked here, before SB3 builds anything: a bad value is one line naming the flag.
    parser.add_argument("--env-id", type=qmp_env_id, default="qmp/MultistageReacher-v0")
    parser.add_argument("--total-timesteps", type=at_least(1), default=20_000)
    parser.add_argument("--seed", type=at_least(0), default=0)
    parser.add_argument("--subproc", action="store_true", help="use SB3's SubprocVecEnv")
    args = parser.parse_args()
    vec_env_cls = SubprocVecEnv if args.subproc else DummyVecEnv
    venv, model = make_agent(args.env_id, args.seed, vec_env_cls=vec_env_cls)
    model.learn(total_timesteps=args.total_timesteps, progress_bar=False)
    result = qmp_envs.evaluate_policy(
        lambda obs: model.predict(obs, deterministic=True)[0],
        args.env_id,
        episodes_per_task=5,
        seed=args.seed,
    )
    print(
        f"mean success {result.mean_success:.2f}; per task {np.round(result.success, 2).tolist()}"
    )
    print("QMP selection (rows: task collected, columns: policy executed):")
    print(np.round(venv.selection_matrix(), 2))
    venv.close()


if __name__ == "__main__":
    main()
