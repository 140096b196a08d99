"""SAC with CTPG-style learned guidance (Cross-Task Policy Guidance, He et al., NeurIPS 2024),
No-Sharing base (CleanRL style, one file).

Per task i, a guide policy (a discrete SAC over the N task policies) picks every K steps which
task's control policy acts for task i; that policy's sampled actions are executed and stored
in task i's data, as with QMP. The QMP wrapper executes the guide's choice for K steps and
applies CTPG's two gates (policy filter, guide block: ``qmp_wrappers.guide``); the guide learns
from K-step segments (``cleanrl_qmp.guidance``), relabelled in hindsight with the policy that
now best explains the executed actions. The control policies and critics are trained exactly
as in ``sac_qmp.py``: only the behaviour policy changes. ``--no-qmp`` turns guidance off.

    python cleanrl_qmp/ctpg_sac.py --env-id qmp/MultistageReacher-v0 --seed 1
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from cleanrl_qmp.guidance import GuideAgent, GuideSegments, hindsight_choice
from cleanrl_qmp.networks import PerTaskSAC, deterministic_policy, soft_update
from qmp_harness.config import BaseArgs, check, parse_command_line
from qmp_harness.harness import TrainingRun
from qmp_harness.tasks import TaskSpec
from qmp_wrappers.vector import QMPBehaviorWrapper


@dataclass
class Args(BaseArgs):
    exp_name: str = "ctpg_sac"
    """the name of this experiment (part of the run folder's name)"""
    qmp_hold_steps: int = 10
    """K: a guide's choice acts for this many steps (CTPG's guide step)"""
    guide_filter: bool = True
    """the policy-filter gate: mask candidates whose guide value is below the task's own value"""
    guide_filter_start: int = 10_000
    """environment steps before the policy filter starts (the guide critic's warm-up)"""
    guide_block: bool = True
    """the guide-block gate: tasks whose log alpha is above the mean are not guided"""
    guide_hindsight: bool = True
    """relabel each sampled segment's choice with the policy that best explains its actions"""
    guide_value_samples: int = 5
    """own-policy action samples that estimate V_i(s) for the policy filter"""
    guide_target_entropy: float = 0.5
    """the guide's target entropy, as a fraction of log N (the uniform choice's entropy)"""
    guide_update_every: int | None = None
    """control updates per guide update (default K: each segment is replayed as often as a step)"""

    def problems(self) -> list[str]:
        p = super().problems()
        check(p, self.guide_filter_start >= 0, "guide_filter_start", self.guide_filter_start,
              "must be >= 0")  # fmt: skip
        check(p, self.guide_value_samples >= 1, "guide_value_samples", self.guide_value_samples,
              "must be >= 1")  # fmt: skip
        check(p, 0.0 <= self.guide_target_entropy <= 1.0, "guide_target_entropy",
              self.guide_target_entropy, "must be in [0, 1] (a fraction of log N)")  # fmt: skip
        every = self.guide_update_every
        check(p, every is None or every >= 1, "guide_update_every", every, "must be >= 1")
        # The guide replaces the Q-switch: its options have no meaning here.
        for name, default in (("qmp_mixture", "qswitch"), ("qmp_scoring", "original"),
                              ("qmp_temperature", 1.0), ("qmp_helpers", ())):  # fmt: skip
            check(p, getattr(self, name) == default, name, getattr(self, name),
                  "not used by ctpg_sac.py (the learned guide chooses the policy)")  # fmt: skip
        return p


def main(args: Args) -> Path:
    run = TrainingRun(args)  # flags checked, presets filled, run folder locked, seeded
    args, device = run.args, run.device
    guide_steps = args.qmp_hold_steps
    guide_update_every = args.guide_update_every or guide_steps

    # ENV SETUP: sub-env k runs task k; SAME_STEP autoreset keeps final observations.
    envs = gym.make_vec(
        args.env_id, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, **run.env_kwargs
    )
    # CTPG: the wrapper executes the guide's choice for K steps, with the two gates.
    guide_options = {
        "mixture": "guide",
        "hold_steps": guide_steps,
        "guide_filter": args.guide_filter,
        "guide_block": args.guide_block,
        "guide_filter_start": args.guide_filter_start,
    }
    envs = QMPBehaviorWrapper(envs, **run.qmp_options(**guide_options))
    tasks = TaskSpec.of(envs)
    n = tasks.num_tasks

    agent = PerTaskSAC.create(tasks, args.hidden, args.learning_rate, args.alpha, device, args.init)
    actor, qf, qf_target, log_alpha = agent.actor, agent.qf, agent.qf_target, agent.log_alpha
    q_optimizer, actor_optimizer = agent.q_optimizer, agent.actor_optimizer
    a_optimizer = agent.a_optimizer
    target_entropy = -float(tasks.action_dim)
    guide = GuideAgent.create(tasks, args.hidden, args.learning_rate, args.alpha, agent,
                              args.guide_value_samples, device)  # fmt: skip
    guide_target_entropy = args.guide_target_entropy * math.log(n)
    rb = run.task_buffer(tasks)
    control_updates = torch.zeros((), dtype=torch.int64)  # schedules the guide's updates
    steps_per_task = args.total_timesteps // n + 1
    segments = GuideSegments(
        n, tasks.observation_space.shape[0], tasks.action_dim, guide_steps,
        capacity=max(2, min(args.buffer_size, 2 * (steps_per_task // guide_steps) + 2)),
        gamma=args.gamma, device=device,
    )  # fmt: skip
    if run.resuming:  # the checkpoint's envs continue bit for bit
        envs.close()
        loaded = run.load({**agent.parts(), **guide.parts(), "rb": rb, "segments": segments,
                           "control_updates": control_updates})  # fmt: skip
        envs, obs, rb, segments = loaded["envs"], loaded["obs"], loaded["rb"], loaded["segments"]
    else:
        obs, _ = envs.reset(seed=args.seed)
    envs.enabled = args.qmp
    envs.attach(policy=actor.act, q_function=qf.score, device=device, guide=guide)
    eval_policy = deterministic_policy(actor.deterministic_act, device)

    def checkpoint() -> dict:
        return {**agent.parts(), **guide.parts(), "rb": rb, "segments": segments,
                "control_updates": control_updates, "envs": envs, "obs": obs}  # fmt: skip

    while not run.done:
        # ALGO LOGIC: every task's own policy acts (sub-env k runs task k: rows are task-major).
        with torch.no_grad():
            obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)
            actions, _, _ = actor.get_action(obs_t.unsqueeze(1))
            actions = actions.squeeze(1).cpu().numpy()

        # The wrapper executes the guided policy's action; the buffer stores infos["qmp_action"].
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        real_next_obs = run.record_step(next_obs, rewards, terminations, truncations, infos)
        rb.add(obs, real_next_obs, actions, rewards, terminations, infos)
        if args.qmp:
            segments.add(obs, infos["qmp_action"], rewards, real_next_obs, terminations,
                         truncations, infos["qmp_choice_made"], infos["qmp_policy"])  # fmt: skip
        obs = next_obs

        # ALGO LOGIC: training, all tasks in one batched update (as in sac_qmp.py).
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
            control_updates += 1

            # ALGO LOGIC: the guide's discrete SAC on K-step segments, every few updates.
            guide_due = int(control_updates) % guide_update_every == 0
            if args.qmp and guide_due and segments.can_sample():
                g = segments.sample(args.batch_size)
                if args.guide_hindsight:  # who would act like this now
                    choices = hindsight_choice(actor, g.seq_observations, g.seq_actions,
                                               g.seq_valid)  # fmt: skip
                else:
                    choices = g.choices
                g_alpha = guide.log_alpha.exp().detach()[:, None]
                with torch.no_grad():
                    next_log_p = F.log_softmax(guide.task_logits(g.next_observations), dim=-1)
                    gq1_next, gq2_next = guide.twin_q(g.next_observations, target=True)
                    soft_value = torch.min(gq1_next, gq2_next) - g_alpha[..., None] * next_log_p
                    next_v = (next_log_p.exp() * soft_value).sum(-1)
                    guide_target = g.returns + g.discounts * next_v  # K-step (discounted) target

                gq1, gq2 = guide.twin_q(g.observations)
                gq1_chosen = gq1.gather(-1, choices[..., None]).squeeze(-1)
                gq2_chosen = gq2.gather(-1, choices[..., None]).squeeze(-1)
                guide_q_loss = (F.mse_loss(gq1_chosen, guide_target, reduction="none").mean(1)
                                + F.mse_loss(gq2_chosen, guide_target, reduction="none").mean(1)
                                ).sum()  # fmt: skip
                guide.q_optimizer.zero_grad()
                guide_q_loss.backward()
                guide.q_optimizer.step()

                log_p = F.log_softmax(guide.task_logits(g.observations), dim=-1)
                with torch.no_grad():
                    min_gq = torch.min(gq1, gq2)
                p = log_p.exp()
                guide_actor_loss = (p * (g_alpha[..., None] * log_p - min_gq)).sum(-1).mean(1).sum()
                guide.actor_optimizer.zero_grad()
                guide_actor_loss.backward()
                guide.actor_optimizer.step()

                entropy = -(p.detach() * log_p.detach()).sum(-1)  # (N, B)
                guide_alpha_loss = guide.log_alpha[:, None] * (entropy - guide_target_entropy)
                guide_alpha_loss = guide_alpha_loss.mean(1).sum()
                guide.a_optimizer.zero_grad()
                guide_alpha_loss.backward()
                guide.a_optimizer.step()
                soft_update(guide.qf, guide.qf_target, args.tau)

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
                        "guide/alpha": float(guide.log_alpha.detach().exp().mean()),
                    }
                )

        if run.evaluation_due():
            run.evaluate(eval_policy, envs)
        if run.checkpoint_due():
            run.save(checkpoint())

    return run.finish(eval_policy, envs, checkpoint())


if __name__ == "__main__":
    main(parse_command_line(Args))
