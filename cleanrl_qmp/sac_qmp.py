"""SAC with QMP behaviour sharing, No-Sharing base: per-task actors, twin critics, temperatures
and replay data (CleanRL style, one file).

The N per-task networks are one batched ensemble, so acting and updating all tasks are single
batched calls. Behaviour sharing comes only from ``QMPBehaviorWrapper``; ``--no-qmp`` runs the
same code with the mixture disabled, so "SAC" and "SAC + QMP" share every hyperparameter.
Everything that is not the algorithm (run folder, env + wrapper, evaluation, checkpoints) is
``qmp_harness.harness.TrainingRun``.

    python cleanrl_qmp/sac_qmp.py --env-id qmp/MultistageReacher-v0 --seed 1
    python cleanrl_qmp/sac_qmp.py --env-id qmp/MultistageReacher-v0 --seed 1 --no-qmp
    python cleanrl_qmp/sac_qmp.py --demo        # short run on the embedded default
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from cleanrl_qmp.networks import PerTaskSAC, deterministic_policy, soft_update
from qmp_harness.config import BaseArgs, parse_command_line
from qmp_harness.harness import TrainingRun
from qmp_harness.run_logging import plot_demo
from qmp_harness.tasks import TaskSpec
from qmp_wrappers.vector import QMPBehaviorWrapper


@dataclass
class Args(BaseArgs):
    exp_name: str = "sac_qmp"
    """the name of this experiment (part of the run folder's name)"""


def main(args: Args) -> Path:
    run = TrainingRun(args)  # flags checked, presets filled, run folder locked, seeded
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

    agent = PerTaskSAC.create(tasks, args.hidden, args.learning_rate, args.alpha, device, args.init)
    actor, qf, qf_target, log_alpha = agent.actor, agent.qf, agent.qf_target, agent.log_alpha
    q_optimizer, actor_optimizer = agent.q_optimizer, agent.actor_optimizer
    a_optimizer = agent.a_optimizer
    target_entropy = -float(tasks.action_dim)
    rb = run.task_buffer(tasks)
    if run.resuming:  # the checkpoint's envs continue bit for bit
        envs.close()
        loaded = run.load({**agent.parts(), "rb": rb})
        envs, obs, rb = loaded["envs"], loaded["obs"], loaded["rb"]
    else:
        obs, _ = envs.reset(seed=args.seed)
    envs.enabled = args.qmp
    envs.attach(policy=actor.act, q_function=qf.score, device=device)
    eval_policy = deterministic_policy(actor.deterministic_act, device)

    def checkpoint() -> dict:
        return {**agent.parts(), "rb": rb, "envs": envs, "obs": obs}

    while not run.done:
        # ALGO LOGIC: every task's own policy acts (sub-env k runs task k: rows are task-major).
        with torch.no_grad():
            obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)
            actions, _, _ = actor.get_action(obs_t.unsqueeze(1))
            actions = actions.squeeze(1).cpu().numpy()

        # The wrapper may execute another task's proposal; the buffer stores infos["qmp_action"].
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        real_next_obs = run.record_step(next_obs, rewards, terminations, truncations, infos)
        rb.add(obs, real_next_obs, actions, rewards, terminations, infos)
        obs = next_obs

        # ALGO LOGIC: training, all tasks in one batched update.
        for _ in range(run.updates_due()):
            data = rb.sample_tasks(args.batch_size)
            alpha = log_alpha.exp().detach()[:, None, None]
            with torch.no_grad():
                next_actions, next_log_pi, _ = actor.get_action(data.next_observations)
                qf1_next, qf2_next = qf_target(data.next_observations, next_actions)
                min_qf_next = torch.min(qf1_next, qf2_next) - alpha * next_log_pi
                rewards_t, dones_t = data.rewards.unsqueeze(-1), data.dones.unsqueeze(-1)
                next_q_value = rewards_t + (1 - dones_t) * args.gamma * min_qf_next

            qf1_values, qf2_values = qf(data.observations, data.actions)
            # Sum of per-task mean losses: each task's networks get their own task's gradient.
            qf1_loss = F.mse_loss(qf1_values, next_q_value, reduction="none").mean((1, 2)).sum()
            qf2_loss = F.mse_loss(qf2_values, next_q_value, reduction="none").mean((1, 2)).sum()
            qf_loss = qf1_loss + qf2_loss
            q_optimizer.zero_grad()
            qf_loss.backward()
            q_optimizer.step()

            pi, log_pi, _ = actor.get_action(data.observations)
            qf1_pi, qf2_pi = qf(data.observations, pi)
            actor_loss = (alpha * log_pi - torch.min(qf1_pi, qf2_pi)).mean((1, 2)).sum()
            actor_optimizer.zero_grad()
            actor_loss.backward()
            actor_optimizer.step()

            if args.autotune:
                entropy_gap = log_pi.detach() + target_entropy
                alpha_loss = (-log_alpha.exp()[:, None, None] * entropy_gap).mean((1, 2)).sum()
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
                        "losses/qf1_loss": qf1_loss.item() / n,
                        "losses/qf2_loss": qf2_loss.item() / n,
                        "losses/qf_loss": qf_loss.item() / n / 2.0,
                        "losses/actor_loss": actor_loss.item() / n,
                        "losses/alpha": float(np.mean(alphas)),
                        **({"losses/alpha_loss": alpha_loss.item() / n} if args.autotune else {}),
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
    cli_args = parse_command_line(Args)
    out_dir = main(cli_args)
    if cli_args.demo:
        plot_demo(out_dir)
