"""Multi-head MT-SAC with QMP behaviour sharing, Parameter-Sharing base (CleanRL style).

The paper's Parameter-Sharing: ONE actor and twin critics, each a shared trunk on the
task-agnostic features (the one-hot removed) with one output head per task that the row's
one-hot selects; a temperature per task; ONE replay buffer shared by all tasks. One gradient
step samples ONE minibatch of ``--batch-size`` rows mixed across tasks and updates the critics,
the actor, the temperatures and the target critics; ``--updates-per-step`` of them are made per
env step (the original's gradient steps per iteration over its env steps per iteration: spec
section 10.1; ``learning/algorithms/sac.py:302`` and ``:329-334`` in clvrai/qmp). Xavier
initialisation by default, as the original's garage networks (``--init torch`` for nn.Linear's).

``--fully-shared`` is the Fully-Shared-Behavior baseline: a single policy (one head) for every
task, which never sees the task id (critics stay per task). ``--no-qmp`` disables the mixture;
everything else is identical.

    python cleanrl_qmp/mtsac_qmp.py --env-id qmp/MultistageReacher-v0 --seed 1
    python cleanrl_qmp/mtsac_qmp.py --env-id qmp/MultistageReacher-v0 --no-qmp --fully-shared
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from cleanrl_qmp.networks import (
    MultiHeadActor,
    MultiHeadTwinCritic,
    TaskFeatures,
    deterministic_policy,
    soft_update,
    task_ids_of,
)
from qmp_harness.config import BaseArgs, parse_command_line
from qmp_harness.harness import TrainingRun
from qmp_harness.tasks import TaskSpec
from qmp_wrappers import QMPReplayBuffer
from qmp_wrappers.vector import QMPBehaviorWrapper

# The paper re-tuned its parameter-sharing runs; only Reacher's values are known (spec 10.2).
MTSAC_PRESETS = {"qmp/MultistageReacher-v0": {"learning_rate": 1e-3, "hidden": (512, 512)}}


@dataclass
class Args(BaseArgs):
    exp_name: str = "mtsac_qmp"
    """the name of this experiment (part of the run folder's name)"""
    buffer_size: int = 1_000_000
    """capacity of the ONE replay buffer shared by all tasks"""
    fully_shared: bool = False
    """Fully-Shared-Behavior baseline: one policy for all tasks, task id hidden from it"""
    batch_size: int | None = None
    """minibatch size of one gradient step, in total, mixed across tasks (the preset's value)"""
    init: Literal["torch", "xavier"] = "xavier"
    """weight initialisation: "xavier" (the original's garage defaults) or torch's default"""


def main(args: Args) -> Path:
    run = TrainingRun(args, preset_overrides=MTSAC_PRESETS)  # checked, locked, seeded
    args, device = run.args, run.device

    # ENV SETUP: sub-env k runs task k; SAME_STEP autoreset keeps each truncated episode's
    # final observation in infos["final_obs"], for bootstrapping.
    envs = gym.make_vec(
        args.env_id, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, **run.env_kwargs
    )
    # QMP: the wrapper executes the Q-switch's choice among all task policies' proposals.
    envs = QMPBehaviorWrapper(envs, **run.qmp_options())
    tasks = TaskSpec.of(envs)
    n = tasks.num_tasks
    # The ONE network makes --updates-per-step updates per env step; a vector step is N of them.
    run.update_scale = n

    features = TaskFeatures(tasks.feature_dim, tasks.feature_mask)
    actor = MultiHeadActor(
        features, n, tasks.action_dim, args.hidden, args.fully_shared, args.init
    ).to(device)
    qf = MultiHeadTwinCritic(features, n, tasks.action_dim, args.hidden, args.init).to(device)
    qf_target = copy.deepcopy(qf)
    q_optimizer = torch.optim.Adam(qf.parameters(), lr=args.learning_rate, foreach=True)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.learning_rate, foreach=True)
    target_entropy = -float(tasks.action_dim)
    log_alpha = torch.full((n,), float(np.log(args.alpha)), device=device, requires_grad=True)
    a_optimizer = torch.optim.Adam([log_alpha], lr=args.learning_rate, foreach=True)
    rb = QMPReplayBuffer(
        min(args.buffer_size, args.total_timesteps + n),
        tasks.observation_space,
        tasks.action_space,
        device=device,
        n_envs=n,
        handle_timeout_termination=False,
    )
    parts = {
        "actor": actor,
        "qf": qf,
        "qf_target": qf_target,
        "q_optimizer": q_optimizer,
        "actor_optimizer": actor_optimizer,
        "a_optimizer": a_optimizer,
        "log_alpha": log_alpha,
    }
    if run.resuming:  # the checkpoint's envs continue bit for bit
        envs.close()
        loaded = run.load({**parts, "rb": rb})
        envs, obs, rb = loaded["envs"], loaded["obs"], loaded["rb"]
    else:
        obs, _ = envs.reset(seed=args.seed)
    envs.enabled = args.qmp
    envs.attach(policy=actor.act, q_function=qf.score, device=device)
    eval_policy = deterministic_policy(actor.deterministic_act, device)

    def checkpoint() -> dict:
        return {**parts, "rb": rb, "envs": envs, "obs": obs}

    while not run.done:
        # ALGO LOGIC: the multi-head actor picks each row's head from its one-hot.
        with torch.no_grad():
            actions, _, _ = actor.get_action(
                torch.as_tensor(obs, dtype=torch.float32, device=device)
            )
            actions = actions.cpu().numpy()

        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        real_next_obs = run.record_step(next_obs, rewards, terminations, truncations, infos)
        rb.add(obs, real_next_obs, actions, rewards, terminations, infos)
        obs = next_obs

        # ALGO LOGIC: each gradient step, ONE minibatch mixing all tasks from the shared buffer.
        for _ in range(run.updates_due()):
            data = rb.sample(args.batch_size)
            task_ids = task_ids_of(data.observations, n)
            alpha = log_alpha.exp().detach()[task_ids].unsqueeze(1)
            with torch.no_grad():
                next_actions, next_log_pi, _ = actor.get_action(data.next_observations)
                qf1_next, qf2_next = qf_target(data.next_observations, next_actions)
                min_qf_next = torch.min(qf1_next, qf2_next) - alpha * next_log_pi
                next_q_value = data.rewards + (1 - data.dones) * args.gamma * min_qf_next

            qf1_values, qf2_values = qf(data.observations, data.actions)
            qf1_loss = F.mse_loss(qf1_values, next_q_value)
            qf2_loss = F.mse_loss(qf2_values, next_q_value)
            qf_loss = qf1_loss + qf2_loss
            q_optimizer.zero_grad()
            qf_loss.backward()
            q_optimizer.step()

            pi, log_pi, _ = actor.get_action(data.observations)
            qf1_pi, qf2_pi = qf(data.observations, pi)
            actor_loss = (alpha * log_pi - torch.min(qf1_pi, qf2_pi)).mean()
            actor_optimizer.zero_grad()
            actor_loss.backward()
            actor_optimizer.step()

            if args.autotune:
                entropy_gap = (log_pi.detach() + target_entropy).squeeze(1)
                alpha_loss = (-log_alpha.exp()[task_ids] * entropy_gap).mean()
                a_optimizer.zero_grad()
                alpha_loss.backward()
                a_optimizer.step()

            soft_update(qf, qf_target, args.tau)

            if run.should_log():
                alphas = log_alpha.exp().tolist()
                run.log_losses(
                    {
                        "losses/qf1_values": qf1_values.mean().item(),
                        "losses/qf2_values": qf2_values.mean().item(),
                        "losses/qf1_loss": qf1_loss.item(),
                        "losses/qf2_loss": qf2_loss.item(),
                        "losses/qf_loss": qf_loss.item() / 2.0,
                        "losses/actor_loss": actor_loss.item(),
                        "losses/alpha": float(np.mean(alphas)),
                        **({"losses/alpha_loss": alpha_loss.item()} if args.autotune else {}),
                        **{
                            f"losses/alpha/{t}": a
                            for t, a in zip(tasks.task_names, alphas, strict=True)
                        },
                    }
                )

        if run.evaluation_due():
            run.evaluate(eval_policy, envs)
        if run.checkpoint_due():
            run.save(checkpoint())

    return run.finish(eval_policy, envs, checkpoint())


if __name__ == "__main__":
    main(parse_command_line(Args))
