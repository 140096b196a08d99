"""An unmodified stable-baselines3 SAC gains QMP behaviour sharing through the wrapper.

Nothing in SAC is subclassed or edited: the environment is wrapped with
``QMPBehaviorWrapper``, the agent's own actor and twin critics are attached to it, and SB3's
``replay_buffer_class`` is ``QMPReplayBuffer`` so the executed action is what gets stored.
SB3's SAC is one network conditioned on the one-hot task id, so "task j's policy" is that
network asked about task j: the wrapper relabels the one-hot for every proposal.

    python examples/sb3_sac_qmp.py --env-id qmp/MultistageReacher-v0 --total-timesteps 20000
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import SAC

import qmp_envs
from qmp_wrappers import QMPBehaviorWrapper, QMPReplayBuffer


def make_agent(env_id: str, seed: int = 0, learning_starts: int = 1000, **sac_kwargs):
    """The wrapped env and an SB3 SAC whose networks drive the wrapper's Q-switch."""
    env = QMPBehaviorWrapper(gym.make(env_id), seed=seed)  # the env cycles through the tasks
    model = SAC(
        "MlpPolicy",
        env,
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

    env.attach(policy=policy, q_function=model.critic, device=model.device)
    return env, model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env-id", default="qmp/MultistageReacher-v0")
    parser.add_argument("--total-timesteps", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    env, model = make_agent(args.env_id, args.seed)
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
    print(np.round(env.selection_matrix(), 2))


if __name__ == "__main__":
    main()
