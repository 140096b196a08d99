"""SAC with QMP behaviour sharing, No-Sharing base: per-task actors, twin critics, temperatures
and replay data (CleanRL style, one file).

The N per-task networks are one batched ensemble, so acting and updating all tasks are single
batched calls. Behaviour sharing comes only from ``QMPBehaviorWrapper``; ``--no-qmp`` runs the
same code with the mixture disabled, so "SAC" and "SAC + QMP" share every hyperparameter.

    python cleanrl_qmp/sac_qmp.py --env-id qmp/MultistageReacher-v0 --seed 1
    python cleanrl_qmp/sac_qmp.py --env-id qmp/MultistageReacher-v0 --seed 1 --no-qmp
    python cleanrl_qmp/sac_qmp.py --demo        # short run on the embedded default
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
import tyro
from tqdm import tqdm

import qmp_envs
from cleanrl_qmp.common import (
    RunLogger,
    load_checkpoint,
    resolve_preset,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from cleanrl_qmp.networks import EnsembleActor, TaskFeatures, TwinCritic
from qmp_wrappers import MultiTaskReplayBuffer, QMPBehaviorWrapper


@dataclass
class Args:
    exp_name: str = "sac_qmp"
    """the name of this experiment (part of the run folder's name)"""
    env_id: str = "qmp/MultistageReacher-v0"
    """a qmp/ environment id; its preset fills every hyperparameter left unset"""
    seed: int = 1
    """seed of the experiment"""
    qmp: bool = True
    """toggle QMP behaviour sharing (--no-qmp: the No-Sharing baseline)"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = False
    """if toggled, use CUDA when available"""
    env_compat: str = "official"
    """environment fidelity switch: "official" reproduces the paper's environments"""
    run_dir: str | None = None
    """output folder (default: runs/{env}__{exp_name}__{qmp|noqmp}__{seed}__{time})"""

    # Algorithm; None takes the environment's preset (cleanrl_qmp.common.PRESETS).
    total_timesteps: int | None = None
    """total environment steps over all tasks"""
    batch_size: int | None = None
    """minibatch size per task"""
    learning_starts: int | None = None
    """total environment steps before gradient updates start"""
    learning_rate: float | None = None
    """one Adam learning rate for actors, critics and temperatures"""
    hidden: tuple[int, ...] | None = None
    """hidden layer sizes of every actor and critic"""
    updates_per_step: float | None = None
    """gradient steps per task per environment step of that task"""
    buffer_size: int = 1_000_000
    """replay capacity per task"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 0.005
    """target smoothing coefficient"""
    alpha: float = 1.0
    """initial entropy temperature"""
    autotune: bool = True
    """automatic entropy tuning with target -|A| per task"""

    # QMP behaviour sharing.
    qmp_scoring: str = "original"
    """"original" (first critic on mean actions) or "min_twin" (min of twin critics on samples)"""
    qmp_mixture: str = "qswitch"
    """"qswitch", "uniform" (ablation) or "softmax\""""
    qmp_temperature: float = 1.0
    """softmax temperature when --qmp-mixture softmax"""
    qmp_hold_steps: int = 1
    """keep the selected policy this many steps (1: switch every step, the paper's H = 1)"""

    # Evaluation, logging, checkpoints.
    eval_every: int | None = None
    """evaluate every this many environment steps"""
    eval_episodes: int | None = None
    """evaluation episodes per task"""
    capture_video: bool = False
    """render one evaluation episode per task to GIFs under the run folder"""
    log_every: int = 1000
    """write training losses every this many environment steps"""
    checkpoint_every: int = 0
    """save a checkpoint every this many environment steps (0: only at the end)"""
    resume: str | None = None
    """a checkpoint to resume from; the run continues in the checkpoint's run folder"""
    progress: bool = True
    """show a progress bar"""
    demo: bool = False
    """the README's demo: a short QMP run on Multistage Reacher, then plots"""


DEMO = {
    "env_id": "qmp/MultistageReacher-v0",
    "total_timesteps": 15_000,
    "learning_starts": 2_000,
    "batch_size": 64,
    "eval_every": 5_000,
    "eval_episodes": 2,
    "checkpoint_every": 0,
    "run_dir": "runs/demo",
}


def make_env_kwargs(args: Args) -> dict:
    env = gym.make(args.env_id)
    takes_compat = hasattr(env.unwrapped, "compat")
    env.close()
    return {"compat": args.env_compat} if takes_compat else {}


def main(args: Args) -> Path:
    checkpoint = load_checkpoint(args.resume) if args.resume else None
    if checkpoint is not None:
        saved: Args = checkpoint["args"]
        if args.total_timesteps is not None:
            saved.total_timesteps = args.total_timesteps
        saved.resume, saved.progress = args.resume, args.progress
        # A run continues in the folder that holds the checkpoint (runs can be moved or copied).
        saved.run_dir = str(Path(args.resume).resolve().parent.parent)
        args = saved
    if args.demo:
        for key, value in DEMO.items():
            setattr(args, key, value)
    args = resolve_preset(args)
    run_dir = Path(
        args.run_dir
        or f"runs/{args.env_id.replace('/', '_')}__{args.exp_name}__"
        f"{'qmp' if args.qmp else 'noqmp'}__{args.seed}__{int(time.time())}"
    )
    args.run_dir = str(run_dir)
    seed_everything(args.seed, args.torch_deterministic)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    env_kwargs = make_env_kwargs(args)

    # Environment: one sub-env per task; SAME_STEP autoreset keeps final observations for
    # bootstrapping truncated episodes. The wrapper owns the mixture; --no-qmp disables it.
    envs = gym.make_vec(
        args.env_id, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, **env_kwargs
    )
    envs = QMPBehaviorWrapper(
        envs,
        scoring=args.qmp_scoring,
        mixture=args.qmp_mixture,
        temperature=args.qmp_temperature,
        hold_steps=args.qmp_hold_steps,
        seed=args.seed,
    )
    num_tasks = envs.num_tasks
    task_names = list(envs.get_attr("task_names")[0])
    feature_dim = envs.get_attr("feature_dim")[0]
    feature_mask = envs.get_attr("agent_feature_mask")[0]
    obs_space, act_space = envs.single_observation_space, envs.single_action_space
    action_dim = act_space.shape[0]
    assert np.all(act_space.low == -1) and np.all(act_space.high == 1), "actions must be in [-1, 1]"

    features = TaskFeatures(feature_dim, feature_mask)
    actor = EnsembleActor(num_tasks, features, action_dim, args.hidden).to(device)
    qf = TwinCritic(num_tasks, features, action_dim, args.hidden).to(device)
    qf_target = copy.deepcopy(qf)
    q_optimizer = torch.optim.Adam(qf.parameters(), lr=args.learning_rate)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.learning_rate)
    target_entropy = -float(action_dim)
    log_alpha = torch.full(
        (num_tasks,), float(np.log(args.alpha)), device=device, requires_grad=True
    )
    a_optimizer = torch.optim.Adam([log_alpha], lr=args.learning_rate)
    rb = MultiTaskReplayBuffer(
        min(args.buffer_size, args.total_timesteps // num_tasks + 1),
        obs_space,
        act_space,
        num_tasks=num_tasks,
        device=device,
    )
    global_step, update_credit = 0, 0.0
    episode_return, episode_length = np.zeros(num_tasks), np.zeros(num_tasks, dtype=int)
    next_eval, last_eval_step = args.eval_every, -1
    next_checkpoint = args.checkpoint_every or None

    if checkpoint is not None:
        actor.load_state_dict(checkpoint["actor"])
        qf.load_state_dict(checkpoint["qf"])
        qf_target.load_state_dict(checkpoint["qf_target"])
        q_optimizer.load_state_dict(checkpoint["q_optimizer"])
        actor_optimizer.load_state_dict(checkpoint["actor_optimizer"])
        a_optimizer.load_state_dict(checkpoint["a_optimizer"])
        with torch.no_grad():
            log_alpha.copy_(checkpoint["log_alpha"])
        envs.close()
        envs, rb, obs = checkpoint["envs"], checkpoint["rb"], checkpoint["obs"]
        global_step, update_credit = checkpoint["global_step"], checkpoint["update_credit"]
        episode_return, episode_length = checkpoint["episode_return"], checkpoint["episode_length"]
        next_eval, next_checkpoint = checkpoint["next_eval"], checkpoint["next_checkpoint"]
        last_eval_step = checkpoint["last_eval_step"]
        set_rng_state(checkpoint["rng"])
    else:
        obs, _ = envs.reset(seed=args.seed)
    envs.enabled = args.qmp
    envs.attach(policy=actor.act, q_function=qf.score, device=device)
    logger = RunLogger(run_dir, args, resume_step=global_step if checkpoint else None)
    if checkpoint is not None:
        logger.truncate_selection(global_step)
    print(f"run folder: {run_dir}  ({num_tasks} tasks, QMP {'on' if args.qmp else 'off'})")

    def evaluate(step: int) -> float:
        def policy(obs_batch: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                rows = torch.as_tensor(obs_batch, dtype=torch.float32, device=device)
                return actor.deterministic_act(rows).cpu().numpy()

        video_dir = run_dir / "videos" / f"step_{step}" if args.capture_video else None
        result = qmp_envs.evaluate_policy(
            policy,
            args.env_id,
            episodes_per_task=args.eval_episodes,
            seed=args.seed + 10_000,
            env_kwargs=env_kwargs,
            video_dir=video_dir,
        )
        logger.eval_row(result.as_dict(), step)
        logger.selection(envs.selection_matrix(), envs.candidate_names, step)
        envs.reset_selection_stats()
        return result.mean_success

    def checkpoint_now(step: int) -> None:
        save_checkpoint(
            run_dir / "checkpoints" / f"step_{step}.pt",
            {
                "args": args,
                "actor": actor.state_dict(),
                "qf": qf.state_dict(),
                "qf_target": qf_target.state_dict(),
                "q_optimizer": q_optimizer.state_dict(),
                "actor_optimizer": actor_optimizer.state_dict(),
                "a_optimizer": a_optimizer.state_dict(),
                "log_alpha": log_alpha.detach().clone(),
                "envs": envs,
                "rb": rb,
                "obs": obs,
                "global_step": step,
                "update_credit": update_credit,
                "episode_return": episode_return,
                "episode_length": episode_length,
                "last_eval_step": last_eval_step,
                "next_eval": next_eval,
                "next_checkpoint": next_checkpoint,
            },
        )

    start_time, start_step = time.time(), global_step
    last_success = float("nan")
    bar = tqdm(
        total=args.total_timesteps,
        initial=global_step,
        disable=not args.progress,
        unit="step",
        mininterval=1.0 if sys.stderr.isatty() else 30.0,  # keep CI logs short
    )
    while global_step < args.total_timesteps:
        # ALGO LOGIC: every task's own policy acts (sub-env k runs task k: rows are task-major).
        with torch.no_grad():
            obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)
            actions, _, _ = actor.get_action(obs_t.unsqueeze(1))
            actions = actions.squeeze(1).cpu().numpy()

        # The wrapper may execute another task's proposal; the buffer stores infos["qmp_action"].
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        global_step += num_tasks
        bar.update(num_tasks)

        episode_return += rewards
        episode_length += 1
        dones = terminations | truncations
        real_next_obs = next_obs.copy()
        if dones.any():
            real_next_obs[dones] = np.stack(infos["final_obs"][dones])
            logger.scalars(
                {
                    "charts/episodic_return": float(episode_return[dones].mean()),
                    "charts/episodic_length": float(episode_length[dones].mean()),
                    "charts/episode_success": float(
                        infos["final_info"]["episode_success"][dones].mean()
                    ),
                },
                global_step,
            )
            episode_return[dones], episode_length[dones] = 0.0, 0
        rb.add(obs, real_next_obs, actions, rewards, terminations, infos)
        obs = next_obs

        # ALGO LOGIC: training, all tasks in one batched update.
        if global_step >= args.learning_starts:
            update_credit += args.updates_per_step
        updated = update_credit >= 1.0
        while update_credit >= 1.0:
            update_credit -= 1.0
            data = rb.sample_tasks(args.batch_size)
            alpha = log_alpha.exp().detach()[:, None, None]
            with torch.no_grad():
                next_actions, next_log_pi, _ = actor.get_action(data.next_observations)
                qf1_next, qf2_next = qf_target(data.next_observations, next_actions)
                min_qf_next = torch.min(qf1_next, qf2_next) - alpha * next_log_pi
                next_q_value = (
                    data.rewards.unsqueeze(-1)
                    + (1 - data.dones.unsqueeze(-1)) * args.gamma * min_qf_next
                )

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
                alpha_loss = (
                    (-log_alpha.exp()[:, None, None] * (log_pi.detach() + target_entropy))
                    .mean((1, 2))
                    .sum()
                )
                a_optimizer.zero_grad()
                alpha_loss.backward()
                a_optimizer.step()

            with torch.no_grad():
                for param, target_param in zip(
                    qf.parameters(), qf_target.parameters(), strict=True
                ):
                    target_param.lerp_(param, args.tau)

        if updated and global_step % args.log_every < num_tasks:
            sps = int((global_step - start_step) / (time.time() - start_time))
            alphas = log_alpha.exp().tolist()
            logger.scalars(
                {
                    "losses/qf1_values": qf1_values.mean().item(),
                    "losses/qf2_values": qf2_values.mean().item(),
                    "losses/qf1_loss": qf1_loss.item() / num_tasks,
                    "losses/qf2_loss": qf2_loss.item() / num_tasks,
                    "losses/qf_loss": qf_loss.item() / num_tasks / 2.0,
                    "losses/actor_loss": actor_loss.item() / num_tasks,
                    "losses/alpha": float(np.mean(alphas)),
                    "charts/SPS": sps,
                    **{f"losses/alpha/{n}": a for n, a in zip(task_names, alphas, strict=True)},
                },
                global_step,
            )
            if args.autotune:
                logger.scalars({"losses/alpha_loss": alpha_loss.item() / num_tasks}, global_step)

        if global_step >= next_eval:
            next_eval += args.eval_every
            last_success, last_eval_step = evaluate(global_step), global_step
        if next_checkpoint is not None and global_step >= next_checkpoint:
            next_checkpoint += args.checkpoint_every
            checkpoint_now(global_step)
        sps = int((global_step - start_step) / max(time.time() - start_time, 1e-9))
        bar.set_postfix(SPS=sps, success=f"{last_success:.2f}", refresh=False)

    bar.close()
    if last_eval_step != global_step:
        evaluate(global_step)
    checkpoint_now(global_step)
    envs.close()
    logger.close()
    print(f"done: {global_step} env steps; metrics in {run_dir / 'metrics.csv'}")
    return run_dir


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    out_dir = main(cli_args)
    if cli_args.demo:
        from cleanrl_qmp.plot import plot_runs

        for path in plot_runs([out_dir], out_dir):
            print(f"plot: {path}")
