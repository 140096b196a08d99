"""UDS-SAC with QMP behaviour sharing, Data-Sharing base (CleanRL style, one file).

Per-task SAC as in ``sac_qmp.py``, but each task's minibatch is topped up with transitions from
the OTHER tasks, relabelled as task i's data with the environment's minimum reward (unlabeled
data sharing, UDS). ``--share-q-quantile q`` keeps only shared transitions whose value under
task i's critic is at least the q-quantile of task i's own batch (a conservative filter).

    python cleanrl_qmp/uds_qmp.py --env-id qmp/MultistageReacher-v0 --seed 1
    python cleanrl_qmp/uds_qmp.py --env-id qmp/MultistageReacher-v0 --no-qmp
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import torch

from cleanrl_qmp.networks import PerTaskSAC, deterministic_policy, soft_update
from qmp_envs.suites import suite_facts
from qmp_harness.config import BaseArgs, check, parse_command_line, registered_qmp_ids
from qmp_harness.harness import TrainingRun
from qmp_harness.tasks import TaskSpec
from qmp_wrappers.vector import QMPBehaviorWrapper


@dataclass
class Args(BaseArgs):
    exp_name: str = "uds_qmp"
    """the name of this experiment (part of the run folder's name)"""
    shared_batch_size: int | None = None
    """shared transitions added to each task's minibatch (default: the batch size)"""
    share_q_quantile: float | None = None
    """keep a shared transition only if task i's Q of it >= this quantile of its own batch"""

    def problems(self) -> list[str]:
        p = super().problems()
        q, shared = self.share_q_quantile, self.shared_batch_size
        check(p, q is None or 0.0 <= q <= 1.0, "share_q_quantile", q, "must be in [0, 1]")
        check(p, shared is None or shared >= 1, "shared_batch_size", shared, "must be >= 1")
        if self.env_id in registered_qmp_ids():
            tasks = suite_facts(self.env_id).num_tasks
            check(p, tasks >= 2, "env_id", self.env_id,
                  f"has {tasks} task; data sharing needs at least two")  # fmt: skip
        return p


def relabel_as_own_task(obs: torch.Tensor, num_tasks: int) -> torch.Tensor:
    """Task-major ``(N, B, D)``: give every row of block i the one-hot of task i."""
    out = obs.clone()
    out[..., -num_tasks:] = torch.eye(num_tasks, device=obs.device)[:, None, :]
    return out


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-task weighted mean over the batch: ``(N, B, 1) -> (N,)``."""
    return (values * weights).sum((1, 2)) / weights.sum((1, 2)).clamp_min(1.0)


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
    if n < 2:
        raise ValueError(f"data sharing needs at least two tasks; {args.env_id} has {n}")
    shared_batch = args.shared_batch_size or args.batch_size

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
        with torch.no_grad():
            obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)
            actions = actor.get_action(obs_t.unsqueeze(1))[0].squeeze(1).cpu().numpy()

        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        real_next_obs = run.record_step(next_obs, rewards, terminations, truncations, infos)
        rb.add(obs, real_next_obs, actions, rewards, terminations, infos)
        obs = next_obs

        for _ in range(run.updates_due()):
            # ALGO LOGIC: own batch + other tasks' transitions relabelled as task i's data.
            own = rb.sample_tasks(args.batch_size)
            shared, _ = rb.sample_other_tasks(shared_batch)
            observations = torch.cat(
                [own.observations, relabel_as_own_task(shared.observations, n)], 1
            )
            next_observations = torch.cat(
                [own.next_observations, relabel_as_own_task(shared.next_observations, n)], 1
            )
            batch_actions = torch.cat([own.actions, shared.actions], 1)
            batch_rewards = torch.cat(
                [own.rewards, torch.full_like(shared.rewards, tasks.min_reward)], 1
            ).unsqueeze(-1)
            batch_dones = torch.cat([own.dones, shared.dones], 1).unsqueeze(-1)
            weights = torch.ones_like(batch_rewards)
            if args.share_q_quantile is not None:
                with torch.no_grad():
                    q_all = torch.min(*qf(observations, batch_actions))
                    own_q = q_all[:, : args.batch_size, 0]
                    threshold = torch.quantile(own_q, args.share_q_quantile, dim=1)
                    weights[:, args.batch_size :, 0] = (
                        q_all[:, args.batch_size :, 0] >= threshold[:, None]
                    ).float()

            alpha = log_alpha.exp().detach()[:, None, None]
            with torch.no_grad():
                next_actions, next_log_pi, _ = actor.get_action(next_observations)
                qf1_next, qf2_next = qf_target(next_observations, next_actions)
                min_qf_next = torch.min(qf1_next, qf2_next) - alpha * next_log_pi
                next_q_value = batch_rewards + (1 - batch_dones) * args.gamma * min_qf_next

            qf1_values, qf2_values = qf(observations, batch_actions)
            qf1_loss = weighted_mean((qf1_values - next_q_value).pow(2), weights).sum()
            qf2_loss = weighted_mean((qf2_values - next_q_value).pow(2), weights).sum()
            qf_loss = qf1_loss + qf2_loss
            q_optimizer.zero_grad()
            qf_loss.backward()
            q_optimizer.step()

            pi, log_pi, _ = actor.get_action(observations)
            qf1_pi, qf2_pi = qf(observations, pi)
            actor_loss = weighted_mean(alpha * log_pi - torch.min(qf1_pi, qf2_pi), weights).sum()
            actor_optimizer.zero_grad()
            actor_loss.backward()
            actor_optimizer.step()

            if args.autotune:
                entropy_gap = log_pi.detach() + target_entropy
                alpha_loss = weighted_mean(
                    -log_alpha.exp()[:, None, None] * entropy_gap, weights
                ).sum()
                a_optimizer.zero_grad()
                alpha_loss.backward()
                a_optimizer.step()

            soft_update(qf, qf_target, args.tau)

            if run.should_log():
                run.log_losses(
                    {
                        "losses/qf1_values": qf1_values.mean().item(),
                        "losses/qf_loss": qf_loss.item() / n / 2.0,
                        "losses/actor_loss": actor_loss.item() / n,
                        "losses/alpha": log_alpha.exp().mean().item(),
                        "uds/shared_kept_fraction": weights[:, args.batch_size :].mean().item(),
                    }
                )

        if run.evaluation_due():
            run.evaluate(eval_policy, envs)
        if run.checkpoint_due():
            run.save(checkpoint())

    return run.finish(eval_policy, envs, checkpoint())


if __name__ == "__main__":
    main(parse_command_line(Args))
