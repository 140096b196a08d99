"""Every script's update schedule, counted, against the paper's numbers (spec section 10.1/10.2).

What one gradient step is decides how fast every method learns per env step. The original
(clvrai/qmp) collects S env steps per iteration (S / N per task) and then makes G gradient steps:

- separate networks (No-Sharing, DnC, UDS; our per-task scripts, CTPG too): each step samples
  ``Minibatch`` transitions of ONE task and updates that task's networks, so per task
  G / N updates per S / N task steps, each on ``Minibatch`` rows. A batched ensemble that
  updates all N members at once on ``Minibatch`` rows each does the same work;
- multi-head networks (Parameter-Sharing, mtsac_qmp.py): ONE network; each of the G steps
  samples ONE minibatch of ``Minibatch`` rows mixed across tasks from the shared buffer.

The tests run each script in-process for a few hundred steps and count the minibatches sampled,
their rows and the target-network updates.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from cleanrl_qmp.networks import MultiHeadTwinCritic, TwinCritic
from qmp_harness.config import PRESETS
from qmp_wrappers import MultiTaskReplayBuffer, QMPReplayBuffer


@dataclass(frozen=True)
class PaperSchedule:
    """One row of the spec's section 10.2 table."""

    num_tasks: int
    env_steps_per_iteration: int
    gradient_steps_per_iteration: int
    minibatch: int


# ../shared/spec/environments.md section 10.2, copied by hand: the tests compare our presets
# and scripts with these numbers.
PAPER = {
    "qmp/MultistageReacher-v0": PaperSchedule(5, 1000, 1000, 32),
    "qmp/MazeLarge10-v0": PaperSchedule(10, 6000, 1000, 256),
    "qmp/Walker2dMT4-v0": PaperSchedule(4, 4000, 6000, 32),
    "qmp/MetaWorldCDS-v0": PaperSchedule(4, 2000, 200, 256),
    "qmp/MetaWorldMT10-v0": PaperSchedule(10, 5000, 500, 2560),
    "qmp/MetaWorldMT50-v0": PaperSchedule(50, 25000, 2500, 1280),
    "qmp/KitchenMTEasy-v0": PaperSchedule(10, 2000, 500, 1280),
}


@pytest.mark.parametrize("env_id", sorted(PAPER))
def test_presets_hold_the_papers_rate_and_minibatch(env_id):
    paper, preset = PAPER[env_id], PRESETS[env_id]
    rate = Fraction(paper.gradient_steps_per_iteration, paper.env_steps_per_iteration)
    assert Fraction(preset.updates_per_step).limit_denominator(10_000) == rate
    assert preset.batch_size == paper.minibatch


class Counter:
    """Records the minibatch sizes drawn from the replay buffers and the target updates."""

    def __init__(self, monkeypatch, module):
        self.task_minibatches: list[int] = []  # per-task rows of one ensemble update
        self.shared_minibatches: list[int] = []  # rows of one shared-buffer update
        self.target_updates = 0
        sample_tasks, sample = MultiTaskReplayBuffer.sample_tasks, QMPReplayBuffer.sample

        def counted_sample_tasks(buffer, batch_size, *args, **kwargs):
            self.task_minibatches.append(batch_size)
            return sample_tasks(buffer, batch_size, *args, **kwargs)

        def counted_sample(buffer, batch_size, *args, **kwargs):
            self.shared_minibatches.append(batch_size)
            return sample(buffer, batch_size, *args, **kwargs)

        soft_update = module.soft_update

        def counted_soft_update(source, *args, **kwargs):
            # The task critics' targets (CTPG's guide has target critics of its own).
            self.target_updates += isinstance(source, TwinCritic | MultiHeadTwinCritic)
            return soft_update(source, *args, **kwargs)

        monkeypatch.setattr(MultiTaskReplayBuffer, "sample_tasks", counted_sample_tasks)
        monkeypatch.setattr(QMPReplayBuffer, "sample", counted_sample)
        monkeypatch.setattr(module, "soft_update", counted_soft_update)


LEARNING_STARTS = 50
VECTOR_STEPS_TRAINED = 30  # vector steps (N env steps each) after learning starts


def run_script(
    name: str, env_id: str, tmp_path: Path, monkeypatch, total: int | None = None, **flags
) -> Counter:
    module = importlib.import_module(f"cleanrl_qmp.{name}")
    counter = Counter(monkeypatch, module)
    n = PAPER[env_id].num_tasks
    args = module.Args(
        env_id=env_id,
        seed=1,
        total_timesteps=total or LEARNING_STARTS + n * VECTOR_STEPS_TRAINED,
        learning_starts=LEARNING_STARTS,
        hidden=(8, 8),
        eval_every=10**9,
        eval_episodes=1,
        eval_stop_at_success=True,
        progress=False,
        run_dir=str(tmp_path / name),
        **flags,
    )
    module.main(args)
    return counter


def trained_vector_steps(n: int) -> int:
    """Vector steps whose env-step count reached ``LEARNING_STARTS`` (credit starts there)."""
    first = -(-LEARNING_STARTS // n)  # the vector step whose count first reaches it
    return (LEARNING_STARTS + n * VECTOR_STEPS_TRAINED) // n - first + 1


PER_TASK_SCRIPTS = {
    "sac_qmp": {},
    "uds_qmp": {},
    "dnc_sac": {},  # no distillation within the budget (--distill-every 0)
    "ctpg_sac": {},
}


# Every script on Reacher (1 update per task step); a fractional rate (Maze's 1/6) once.
SEPARATE_CASES = [(s, "qmp/MultistageReacher-v0") for s in sorted(PER_TASK_SCRIPTS)]
SEPARATE_CASES.append(("sac_qmp", "qmp/MazeLarge10-v0"))
SHARED_CASES = [
    ("qmp/MultistageReacher-v0", False),
    ("qmp/MazeLarge10-v0", False),
    ("qmp/MultistageReacher-v0", True),
]


@pytest.mark.parametrize(("script", "env_id"), SEPARATE_CASES)
def test_separate_networks_update_each_task_at_the_papers_rate(script, env_id, tmp_path, mp):
    paper = PAPER[env_id]
    counter = run_script(script, env_id, tmp_path, mp, **PER_TASK_SCRIPTS[script])
    # Per task: G / N updates per S / N task steps = G / S updates per task step; one vector
    # step is one step of every task, and one ensemble update serves all N tasks at once.
    rate = Fraction(paper.gradient_steps_per_iteration, paper.env_steps_per_iteration)
    expected = int(rate * trained_vector_steps(paper.num_tasks))
    assert abs(len(counter.task_minibatches) - expected) <= 1
    assert set(counter.task_minibatches) == {paper.minibatch}  # rows per task per update
    assert counter.target_updates == len(counter.task_minibatches)
    assert counter.shared_minibatches == []


@pytest.mark.parametrize(("env_id", "fully_shared"), SHARED_CASES)
def test_parameter_sharing_makes_the_papers_gradient_steps(env_id, fully_shared, tmp_path, mp):
    paper = PAPER[env_id]
    counter = run_script("mtsac_qmp", env_id, tmp_path, mp, fully_shared=fully_shared)
    # G updates of the ONE network per S env steps, each on ONE mixed minibatch of Minibatch.
    rate = Fraction(paper.gradient_steps_per_iteration, paper.env_steps_per_iteration)
    expected = int(rate * paper.num_tasks * trained_vector_steps(paper.num_tasks))
    assert abs(len(counter.shared_minibatches) - expected) <= 1
    assert set(counter.shared_minibatches) == {paper.minibatch}  # rows in total, mixed
    assert counter.target_updates == len(counter.shared_minibatches)
    assert counter.task_minibatches == []


def test_learning_starts_per_task_counts_the_warm_up_per_task(tmp_path, mp):
    """The original's separate networks waited for the table's minimum buffer in EVERY task."""
    env_id, n = "qmp/MultistageReacher-v0", PAPER["qmp/MultistageReacher-v0"].num_tasks
    total = n * LEARNING_STARTS + n * 10
    counter = run_script("sac_qmp", env_id, tmp_path, mp, total, learning_starts_per_task=True)
    # Updates begin at N x LEARNING_STARTS env steps (vector step LEARNING_STARTS), not before.
    assert len(counter.task_minibatches) == 11


@pytest.fixture
def mp(monkeypatch):
    """monkeypatch, with one torch thread as the driver runs scripts (tiny networks wait on a
    second thread far longer than they compute, worst on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield monkeypatch
    torch.set_num_threads(threads)


def test_xavier_initialises_each_head_as_its_own_layer():
    """The original's heads are separate layers: Xavier's bound uses one head's fan-out."""
    from cleanrl_qmp.networks import MultiHeadMLP

    torch.manual_seed(0)
    net = MultiHeadMLP(10, [64], out_dim=2, num_heads=50, scheme="xavier_uniform")
    bound = (6.0 / (64 + 2)) ** 0.5  # per head; the fused matrix's would be (6 / (64 + 100)) ** 0.5
    assert 0.9 * bound < float(net.heads.weight.detach().abs().max()) <= bound
    assert float(net.heads.bias.detach().abs().max()) == 0.0
    trunk = net.trunk[0]
    assert float(trunk.weight.detach().abs().max()) <= (6.0 / (10 + 64)) ** 0.5
