"""QMPBehaviorWrapper: exactness against brute force, variants, diagnostics and errors."""

import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

import qmp_envs
from qmp_wrappers import QMPBehaviorWrapper

N, OBS_DIM, ACT_DIM = 5, 23, 6  # Multistage Reacher


class PerTaskNets:
    """Independent per-task modules; the callables loop over rows (slow, obviously correct)."""

    def __init__(self, seed=0):
        torch.manual_seed(seed)

        def net(out):
            return nn.Sequential(nn.Linear(OBS_DIM, 16), nn.Tanh(), nn.Linear(16, out))

        self.mean_nets = [net(ACT_DIM) for _ in range(N)]
        self.noise_nets = [net(ACT_DIM) for _ in range(N)]
        self.q1 = [
            nn.Sequential(nn.Linear(OBS_DIM + ACT_DIM, 16), nn.Tanh(), nn.Linear(16, 1))
            for _ in range(N)
        ]
        self.q2 = [
            nn.Sequential(nn.Linear(OBS_DIM + ACT_DIM, 16), nn.Tanh(), nn.Linear(16, 1))
            for _ in range(N)
        ]

    def one(self, obs_row):
        """(sampled, mean) of the policy named by the row's one-hot."""
        j = int(obs_row[-N:].argmax())
        mean = torch.tanh(self.mean_nets[j](obs_row))
        return torch.clamp(mean + 0.3 * torch.tanh(self.noise_nets[j](obs_row)), -1, 1), mean

    def policy(self, obs):
        with torch.no_grad():
            pairs = [self.one(row) for row in obs]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def q_one(self, obs_row, action):
        i = int(obs_row[-N:].argmax())
        x = torch.cat([obs_row, action])
        return self.q1[i](x)[0], self.q2[i](x)[0]

    def q_function(self, obs, actions):
        with torch.no_grad():
            pairs = [self.q_one(o, a) for o, a in zip(obs, actions, strict=True)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def brute_force(nets, obs, agent_actions, scoring):
    """The paper's rule, candidate by candidate, for each env row."""
    executed, chosen = [], []
    with torch.no_grad():
        for obs_row, agent_action in zip(
            torch.as_tensor(obs), torch.as_tensor(agent_actions), strict=True
        ):
            task = int(obs_row[-N:].argmax())
            scores, samples = [], []
            for j in range(N):
                relabelled = obs_row.clone()
                relabelled[-N:] = 0
                relabelled[OBS_DIM - N + j] = 1
                sampled, mean = nets.one(relabelled)
                if j == task:
                    sampled = agent_action
                q1, q2 = nets.q_one(obs_row, mean if scoring == "original" else sampled)
                scores.append(float(q1) if scoring == "original" else float(torch.min(q1, q2)))
                samples.append(sampled.numpy())
            best = int(np.argmax(scores))
            chosen.append(best)
            executed.append(samples[best])
    return np.array(executed), np.array(chosen)


@pytest.mark.parametrize("scoring", ["original", "min_twin"])
@pytest.mark.parametrize("vector", [True, False])
def test_choice_equals_brute_force_argmax(scoring, vector):
    nets = PerTaskNets(seed=1)
    base = (
        gym.make_vec("qmp/MultistageReacher-v0") if vector else gym.make("qmp/MultistageReacher-v0")
    )
    env = QMPBehaviorWrapper(base, scoring=scoring)
    assert env.num_tasks == N
    env.attach(policy=nets.policy, q_function=nets.q_function, device="cpu")
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    chosen_all = []
    for _ in range(25):
        agent = rng.uniform(-1, 1, (N, ACT_DIM) if vector else (ACT_DIM,)).astype(np.float32)
        expected_action, expected_choice = brute_force(
            nets, obs.reshape(-1, OBS_DIM), agent.reshape(-1, ACT_DIM), scoring
        )
        obs, _, terminated, truncated, info = env.step(agent)
        np.testing.assert_allclose(
            np.reshape(info["qmp_action"], (-1, ACT_DIM)), expected_action, atol=1e-6
        )
        assert np.reshape(info["qmp_policy"], -1).tolist() == expected_choice.tolist()
        chosen_all.extend(expected_choice.tolist())
        if not vector and (terminated or truncated):
            obs, _ = env.reset()
    assert len(set(chosen_all)) > 1  # the test exercises real switching


def test_single_task_and_disabled_mixture_pass_actions_bit_for_bit():
    env = QMPBehaviorWrapper(gym.make("qmp/PointReach-v0"))
    env.attach(policy=lambda o: np.zeros((len(o), 2)), q_function=lambda o, a: np.zeros(len(o)))
    env.reset(seed=0)
    action = np.array([0.123456789, -0.987654321], dtype=np.float32)
    _, _, _, _, info = env.step(action)
    assert info["qmp_action"].tobytes() == action.tobytes() and info["qmp_policy"] == 0

    nets = PerTaskNets()
    env = QMPBehaviorWrapper(gym.make_vec("qmp/MultistageReacher-v0"))
    env.attach(nets.policy, nets.q_function, device="cpu")
    env.enabled = False
    env.reset(seed=0)
    agent = np.random.default_rng(0).uniform(-1, 1, (N, ACT_DIM)).astype(np.float32)
    _, _, _, _, info = env.step(agent)
    assert info["qmp_action"].tobytes() == agent.tobytes()
    assert info["qmp_policy"].tolist() == list(range(N))


def scripted(preferred, num_tasks=N, action_dim=ACT_DIM):
    """Policy j proposes j / 10 in every dimension; every Q prefers ``preferred / 10``."""

    def policy(obs):
        proposal = np.repeat(
            obs[:, -num_tasks:].argmax(1, keepdims=True) / 10.0, action_dim, axis=1
        )
        return proposal.astype(np.float32), proposal.astype(np.float32)

    def q_function(obs, actions):
        target = preferred(obs) if callable(preferred) else preferred
        return -np.abs(actions - np.asarray(target)[..., None] / 10.0).sum(1)

    return policy, q_function


@pytest.mark.parametrize("scoring", ["original", "min_twin"])
def test_scripted_preference_is_executed_and_counted(scoring):
    env = QMPBehaviorWrapper(gym.make_vec("qmp/MultistageReacher-v0"), scoring=scoring)
    policy, q_function = scripted(3)
    env.attach(policy, q_function)
    obs, _ = env.reset(seed=0)
    for _ in range(4):
        obs, _, _, _, info = env.step(policy(obs)[0])  # each task's agent proposes its own j / 10
        assert info["qmp_policy"].tolist() == [3] * N
        np.testing.assert_allclose(info["qmp_action"], 0.3)
    counts = env.selection_counts
    assert counts[:, 3].tolist() == [4] * N and counts.sum() == 4 * N
    assert env.selection_matrix()[:, 3].tolist() == [1.0] * N
    assert env.candidate_names[:2] == ["reach-g0-g1-g2", "reach-g0-g1-g3-shifted"]
    env.reset_selection_stats()
    assert env.selection_counts.sum() == 0


def test_hold_steps_keeps_the_choice_and_skips_scoring():
    calls = []

    def preferred(obs):
        calls.append(1)
        return np.full(len(obs), (len(calls) - 1) % N)  # a new favourite at every Q call

    env = QMPBehaviorWrapper(gym.make_vec("qmp/MultistageReacher-v0"), hold_steps=3)
    env.attach(*scripted(preferred))
    env.reset(seed=0)
    choices = [env.step(np.zeros((N, ACT_DIM), np.float32))[4]["qmp_policy"][0] for _ in range(9)]
    assert choices == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert len(calls) == 3


def test_uniform_mixture_is_uniform_and_seeded():
    def run(seed):
        env = QMPBehaviorWrapper(gym.make_vec("qmp/MultistageReacher-v0"), mixture="uniform")
        env.attach(*scripted(0))
        env.reset(seed=seed)
        return np.concatenate(
            [env.step(np.zeros((N, ACT_DIM), np.float32))[4]["qmp_policy"] for _ in range(200)]
        )

    choices = run(0)
    freqs = np.bincount(choices, minlength=N) / len(choices)
    assert np.all(np.abs(freqs - 0.2) < 0.04), freqs
    np.testing.assert_array_equal(choices, run(0))
    assert not np.array_equal(choices, run(1))


def test_softmax_tiny_temperature_equals_argmax_and_moderate_one_samples():
    nets = PerTaskNets(seed=2)
    results = {}
    for mixture, temperature in [("qswitch", 1.0), ("softmax", 1e-6)]:
        env = QMPBehaviorWrapper(
            gym.make_vec("qmp/MultistageReacher-v0"), mixture=mixture, temperature=temperature
        )
        env.attach(nets.policy, nets.q_function, device="cpu")
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        results[mixture] = [
            env.step(rng.uniform(-1, 1, (N, ACT_DIM)).astype(np.float32))[4]["qmp_policy"]
            for _ in range(10)
        ]
    np.testing.assert_array_equal(results["qswitch"], results["softmax"])

    # Scores -|a - 0.3| * 6 over proposals j/10: softmax with temperature 1 gives known odds.
    env = QMPBehaviorWrapper(
        gym.make_vec("qmp/MultistageReacher-v0"), mixture="softmax", temperature=1.0
    )
    env.attach(*scripted(3))
    env.reset(seed=0)
    choices = np.concatenate(
        [env.step(np.zeros((N, ACT_DIM), np.float32))[4]["qmp_policy"] for _ in range(400)]
    )
    scores = -np.abs(np.arange(N) / 10 - 0.3) * ACT_DIM
    probs = np.exp(scores) / np.exp(scores).sum()
    np.testing.assert_allclose(np.bincount(choices, minlength=N) / len(choices), probs, atol=0.03)


def test_extra_policies_join_every_task_candidates():
    helpers = qmp_envs.helper_policies(["up", "right", "up-right"], seed=0)
    env = QMPBehaviorWrapper(gym.make("qmp/PointReach-v0"), extra_policies=helpers)
    # Q prefers moving diagonally: the up-right helper wins over the agent and the others.
    env.attach(
        policy=lambda o: np.zeros((len(o), 2)),
        q_function=lambda o, a: a.sum(1) - np.abs(a[:, 0] - a[:, 1]),
    )
    env.reset(seed=0)
    for _ in range(5):
        _, _, _, _, info = env.step(np.zeros(2, np.float32))
        assert info["qmp_policy"] == 3
    assert env.candidate_names == ["reach-top-right", "up", "right", "up-right"]
    assert env.selection_counts.tolist() == [[0, 0, 0, 5]]


def test_selection_is_not_counted_on_next_step_autoreset_steps():
    env = QMPBehaviorWrapper(gym.make_vec("qmp/PointReach-v0", num_envs=2))
    env.attach(
        policy=lambda o: np.zeros((len(o), 2)),
        q_function=lambda o, a: np.zeros(len(o)),
        device="cpu",
    )
    env.reset(seed=0)
    steps = 0
    for _ in range(60):  # one 50-step episode, one reset step, then 9 more
        env.step(np.zeros((2, 2), np.float32))
        steps += 1
    assert env.selection_counts.sum() == 2 * (steps - 1)


def test_pickling_keeps_state_and_drops_attached_callables():
    env = QMPBehaviorWrapper(gym.make_vec("qmp/MazeLarge10-v0"), mixture="uniform", seed=0)
    env.attach(*scripted(0, num_tasks=10, action_dim=2))
    env.reset(seed=0)
    env.step(np.zeros((10, 2), np.float32))
    clone = pickle.loads(pickle.dumps(env))
    assert not clone.attached and clone.selection_counts.sum() == 10
    clone.attach(*scripted(0, num_tasks=10, action_dim=2))
    a = [env.step(np.zeros((10, 2), np.float32))[4]["qmp_policy"] for _ in range(5)]
    b = [clone.step(np.zeros((10, 2), np.float32))[4]["qmp_policy"] for _ in range(5)]
    np.testing.assert_array_equal(a, b)


# -- errors ------------------------------------------------------------------------------------


@pytest.fixture
def reacher_vec():
    env = QMPBehaviorWrapper(gym.make_vec("qmp/MultistageReacher-v0"))
    env.reset(seed=0)
    return env


def test_wrong_action_shape_and_nan_actions(reacher_vec):
    with pytest.raises(ValueError, match=r"actions have shape \(5, 5\), expected \(5, 6\)"):
        reacher_vec.step(np.zeros((5, 5)))
    bad = np.zeros((5, 6))
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="agent's actions contain NaN"):
        reacher_vec.step(bad)


@pytest.mark.parametrize(
    ("policy", "q_function", "match"),
    [
        (
            lambda o: np.full((len(o), 6), np.nan),
            lambda o, a: np.zeros(len(o)),
            "policy sampled action contains NaN",
        ),
        (
            lambda o: np.zeros((len(o), 5)),
            lambda o, a: np.zeros(len(o)),
            r"policy returned sampled actions of shape \(25, 5\)",
        ),
        (
            lambda o: np.zeros((len(o), 6)),
            lambda o, a: np.zeros(3),
            r"q_function returned shape \(3, 1\)",
        ),
        (
            lambda o: np.zeros((len(o), 6)),
            lambda o, a: np.full(len(o), np.inf),
            "q_function output contains NaN or inf",
        ),
    ],
)
def test_bad_callable_outputs(reacher_vec, policy, q_function, match):
    reacher_vec.attach(policy=policy, q_function=q_function)
    with pytest.raises(ValueError, match=match):
        reacher_vec.step(np.zeros((5, 6)))


def test_observation_without_task_id_and_unknown_task_count():
    pendulum = QMPBehaviorWrapper(gym.make("Pendulum-v1"))
    with pytest.raises(ValueError, match="task count is unknown"):
        pendulum.attach(policy=lambda o: o, q_function=lambda o, a: a)
    pendulum.reset(seed=0)
    pendulum.step(np.zeros(1, np.float32))  # unattached: actions pass through

    two_tasks = QMPBehaviorWrapper(gym.make("Pendulum-v1"), num_tasks=2)
    two_tasks.attach(
        policy=lambda o: np.zeros((len(o), 1)), q_function=lambda o, a: np.zeros(len(o))
    )
    two_tasks.reset(seed=0)
    with pytest.raises(ValueError, match="no recognisable task id"):
        two_tasks.step(np.zeros(1, np.float32))


def test_custom_task_layout_via_task_id_fn_and_relabel_fn():
    # A third-party layout: the task id is a single integer feature in the first entry.
    class IdFirst(gym.ObservationWrapper):
        def __init__(self, env):
            super().__init__(env)
            n = env.unwrapped.num_tasks
            low, high = env.observation_space.low, env.observation_space.high
            self.observation_space = gym.spaces.Box(
                np.concatenate([[0], low[:-n]]).astype(np.float32),
                np.concatenate([[n - 1], high[:-n]]).astype(np.float32),
                dtype=np.float32,
            )

        def observation(self, obs):
            n = self.env.unwrapped.num_tasks
            return np.concatenate([[obs[-n:].argmax()], obs[:-n]]).astype(np.float32)

    def relabel(obs, task_ids):
        out = obs.copy()
        out[:, 0] = task_ids
        return out

    env = QMPBehaviorWrapper(
        IdFirst(gym.make("qmp/MazeLarge10-v0", task=4)),
        task_id_fn=lambda o: o[:, 0].astype(int),
        relabel_fn=relabel,
    )
    env.attach(
        policy=lambda o: np.repeat(o[:, :1] / 10, 2, axis=1),
        q_function=lambda o, a: -np.abs(a[:, 0] - 0.7),
    )
    env.reset(seed=0)
    assert env.step(np.zeros(2, np.float32))[4]["qmp_policy"] == 7
    with pytest.raises(ValueError, match="given together"):
        QMPBehaviorWrapper(gym.make("qmp/MazeLarge10-v0"), task_id_fn=lambda o: o[:, 0])


def test_device_mismatch_and_bad_arguments():
    env = QMPBehaviorWrapper(gym.make_vec("qmp/MultistageReacher-v0"))
    on_meta = nn.Linear(2, 2, device="meta")
    with pytest.raises(ValueError, match="different devices"):
        env.attach(policy=on_meta, q_function=nn.Linear(2, 2))
    with pytest.raises(ValueError, match="device=cpu but the networks are on meta"):
        env.attach(policy=on_meta, q_function=on_meta, device="cpu")
    with pytest.raises(TypeError, match="policy must be callable"):
        env.attach(policy=3, q_function=lambda o, a: a)
    for kwargs, match in [
        ({"scoring": "max"}, "scoring"),
        ({"mixture": "greedy"}, "mixture"),
        ({"temperature": 0}, "temperature"),
        ({"hold_steps": 0}, "hold_steps"),
        ({"extra_policies": [1]}, "not callable"),
    ]:
        with pytest.raises((ValueError, TypeError), match=match):
            QMPBehaviorWrapper(gym.make_vec("qmp/MultistageReacher-v0"), **kwargs)
    with pytest.raises(TypeError, match="gymnasium Env or VectorEnv"):
        QMPBehaviorWrapper(object())
    with pytest.raises(RuntimeError, match="reset"):
        QMPBehaviorWrapper(gym.make("qmp/PointReach-v0")).step(np.zeros(2))
