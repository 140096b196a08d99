"""DnC-SAC (Divide-and-Conquer, Ghosh et al. 2018) baseline (CleanRL style, one file).

Per-task SAC as in ``sac_qmp.py`` plus a KL regulariser that pulls every task's policy towards
the others on that task's states: ``actor_loss_i += kl_coef * mean_j!=i KL(pi_i || pi_j)``
(closed form between the pre-tanh Gaussians). By default it is the regularisation-only variant;
``--distill-every K`` adds DnC's periodic distillation: a central policy is fitted to all task
policies on their own states, then copied into every task's policy.
The paper's DnC coefficients were not recovered; the defaults here are ours. ``--qmp`` enables
QMP behaviour sharing on top (off by default: DnC is the paper's baseline).

    python cleanrl_qmp/dnc_sac.py --env-id qmp/MultistageReacher-v0 --seed 1
    python cleanrl_qmp/dnc_sac.py --env-id qmp/MultistageReacher-v0 --distill-every 100000
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import torch

from cleanrl_qmp.networks import EnsembleActor, PerTaskSAC, deterministic_policy, soft_update
from qmp_harness.config import BaseArgs, check, parse_command_line
from qmp_harness.harness import TrainingRun
from qmp_harness.tasks import TaskSpec
from qmp_wrappers.vector import QMPBehaviorWrapper


@dataclass
class Args(BaseArgs):
    exp_name: str = "dnc_sac"
    """the name of this experiment (part of the run folder's name)"""
    qmp: bool = False
    """toggle QMP behaviour sharing (off: plain DnC, the paper's baseline)"""
    kl_coef: float = 0.01
    """weight of the mean pairwise KL between task policies in each actor loss"""
    distill_every: int = 0
    """distil into a central policy every this many env steps (0: regularisation only)"""
    distill_steps: int = 200
    """gradient steps of each distillation"""

    def problems(self) -> list[str]:
        p = super().problems()
        check(p, self.kl_coef >= 0, "kl_coef", self.kl_coef, "must be >= 0")
        check(p, self.distill_every >= 0, "distill_every", self.distill_every,
              "must be >= 0 (0: regularisation only)")  # fmt: skip
        check(p, self.distill_steps >= 1, "distill_steps", self.distill_steps, "must be >= 1")
        return p


def gaussian_kl(mean_p, log_std_p, mean_q, log_std_q) -> torch.Tensor:
    """KL(N(mean_p, std_p) || N(mean_q, std_q)) for diagonal Gaussians, summed over actions."""
    var_p, var_q = (2 * log_std_p).exp(), (2 * log_std_q).exp()
    kl = log_std_q - log_std_p + (var_p + (mean_p - mean_q).pow(2)) / (2 * var_q) - 0.5
    return kl.sum(-1)


def pairwise_policy_kl(actor: EnsembleActor, observations: torch.Tensor) -> torch.Tensor:
    """``(N,)``: for each task i, the mean over j != i of KL(pi_i || pi_j) on task i's states."""
    n, batch, obs_dim = observations.shape
    # Every policy on every task's states: [j, i * B + b] -> [i, j, b].
    mean, log_std = actor(observations.reshape(1, n * batch, obs_dim).expand(n, -1, -1))
    mean = mean.view(n, n, batch, -1).transpose(0, 1)
    log_std = log_std.view(n, n, batch, -1).transpose(0, 1)
    own = torch.arange(n, device=observations.device)
    kl = gaussian_kl(mean[own, own][:, None], log_std[own, own][:, None], mean, log_std)
    off_diagonal = 1.0 - torch.eye(n, device=observations.device)
    return (kl.mean(-1) * off_diagonal).sum(1) / max(n - 1, 1)


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
    central = EnsembleActor(1, actor.features, tasks.action_dim, args.hidden, args.init).to(device)
    central_optimizer = torch.optim.Adam(central.parameters(), lr=args.learning_rate)
    rb = run.task_buffer(tasks)
    # The distillation schedule is part of the checkpoint, so a resumed run keeps it.
    next_distill = args.distill_every or None
    if run.resuming:  # the checkpoint's envs continue bit for bit
        envs.close()
        loaded = run.load(
            {**agent.parts(), "central": central, "central_optimizer": central_optimizer,
             "rb": rb, "next_distill": next_distill}
        )  # fmt: skip
        envs, obs, rb, next_distill = (loaded[k] for k in ("envs", "obs", "rb", "next_distill"))
    else:
        obs, _ = envs.reset(seed=args.seed)
    envs.enabled = args.qmp
    envs.attach(policy=actor.act, q_function=qf.score, device=device)
    eval_policy = deterministic_policy(actor.deterministic_act, device)

    def checkpoint() -> dict:
        return {**agent.parts(), "central": central, "central_optimizer": central_optimizer,
                "rb": rb, "next_distill": next_distill, "envs": envs, "obs": obs}  # fmt: skip

    while not run.done:
        with torch.no_grad():
            obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)
            actions = actor.get_action(obs_t.unsqueeze(1))[0].squeeze(1).cpu().numpy()

        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        real_next_obs = run.record_step(next_obs, rewards, terminations, truncations, infos)
        rb.add(obs, real_next_obs, actions, rewards, terminations, infos)
        obs = next_obs

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
            qf_loss = (
                ((qf1_values - next_q_value).pow(2) + (qf2_values - next_q_value).pow(2))
                .mean((1, 2))
                .sum()
            )
            q_optimizer.zero_grad()
            qf_loss.backward()
            q_optimizer.step()

            # ALGO LOGIC: the SAC actor loss plus DnC's pairwise KL between task policies.
            pi, log_pi, _ = actor.get_action(data.observations)
            qf1_pi, qf2_pi = qf(data.observations, pi)
            sac_loss = (alpha * log_pi - torch.min(qf1_pi, qf2_pi)).mean((1, 2))
            kl = pairwise_policy_kl(actor, data.observations)
            actor_loss = (sac_loss + args.kl_coef * kl).sum()
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
                run.log_losses(
                    {
                        "losses/qf_loss": qf_loss.item() / n / 2.0,
                        "losses/actor_loss": actor_loss.item() / n,
                        "losses/alpha": log_alpha.exp().mean().item(),
                        "dnc/policy_kl": kl.mean().item(),
                    }
                )

        # ALGO LOGIC: periodic distillation into a central policy, copied back to every task.
        if next_distill is not None and run.global_step >= next_distill:
            next_distill += args.distill_every
            for _ in range(args.distill_steps):
                data = rb.sample_tasks(args.batch_size)
                with torch.no_grad():
                    target_mean, target_log_std = actor(data.observations)
                flat = data.observations.reshape(1, -1, data.observations.shape[-1])
                mean, log_std = central(flat)
                distill_loss = gaussian_kl(
                    target_mean.reshape(1, -1, tasks.action_dim),
                    target_log_std.reshape(1, -1, tasks.action_dim),
                    mean,
                    log_std,
                ).mean()
                central_optimizer.zero_grad()
                distill_loss.backward()
                central_optimizer.step()
            with torch.no_grad():
                for local, shared in zip(actor.parameters(), central.parameters(), strict=True):
                    local.copy_(shared.expand_as(local))
            actor_optimizer.state.clear()
            run.logger.scalars({"dnc/distill_loss": distill_loss.item()}, run.global_step)

        if run.evaluation_due():
            run.evaluate(eval_policy, envs)
        if run.checkpoint_due():
            run.save(checkpoint())

    return run.finish(eval_policy, envs, checkpoint())


if __name__ == "__main__":
    main(parse_command_line(Args))
