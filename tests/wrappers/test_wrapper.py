"""QMPBehaviorWrapper: exactness against brute force, variants, diagnostics and errors."""

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

import qmp_envs
from qmp_wrappers import QMPBehaviorWrapper, find_qmp_wrapper
from qmp_wrappers.vector import QMPBehaviorWrapper as VectorQMPBehaviorWrapper


def wrap(env, **options):
    """The QMP wrapper for ``env``'s kind: Gymnasium's convention of two classes of one name."""
    cls = VectorQMPBehaviorWrapper if isinstance(env, gym.vector.VectorEnv) else QMPBehaviorWrapper
    return cls(env, **options)


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
    env = wrap(base, scoring=scoring)
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
    env = wrap(gym.make("qmp/PointReach-v0"))
    env.attach(policy=lambda o: np.zeros((len(o), 2)), q_function=lambda o, a: np.zeros(len(o)))
    env.reset(seed=0)
    action = np.array([0.123456789, -0.987654321], dtype=np.float32)
    _, _, _, _, info = env.step(action)
    assert info["qmp_action"].tobytes() == action.tobytes() and info["qmp_policy"] == 0

    nets = PerTaskNets()
    env = wrap(gym.make_vec("qmp/MultistageReacher-v0"))
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
    env = wrap(gym.make_vec("qmp/MultistageReacher-v0"), scoring=scoring)
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

    env = wrap(gym.make_vec("qmp/MultistageReacher-v0"), hold_steps=3)
    env.attach(*scripted(preferred))
    calls.clear()  # attach's probe call
    env.reset(seed=0)
    choices = [env.step(np.zeros((N, ACT_DIM), np.float32))[4]["qmp_policy"][0] for _ in range(9)]
    assert choices == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert len(calls) == 3


def test_uniform_mixture_is_uniform_and_seeded():
    def run(seed):
        env = wrap(gym.make_vec("qmp/MultistageReacher-v0"), mixture="uniform")
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
        env = wrap(
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
    env = wrap(gym.make_vec("qmp/MultistageReacher-v0"), mixture="softmax", temperature=1.0)
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
    env = wrap(gym.make("qmp/PointReach-v0"), extra_policies=helpers)
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
    env = wrap(gym.make_vec("qmp/PointReach-v0", num_envs=2))
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
    env = wrap(gym.make_vec("qmp/MazeLarge10-v0"), mixture="uniform", seed=0)
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
    env = wrap(gym.make_vec("qmp/MultistageReacher-v0"))
    env.reset(seed=0)
    return env


def test_wrong_action_shape_and_nan_actions(reacher_vec):
    with pytest.raises(ValueError, match=r"action array has shape \(5, 5\), expected \(5, 6\)"):
        reacher_vec.step(np.zeros((5, 5)))
    bad = np.zeros((5, 6))
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"action array contains NaN.*at index \(2, 1\)"):
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
            r"policy returned sampled actions of shape \(25, 5\), expected \(25, 6\)",
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
        (
            lambda o: np.full((len(o), 6), 2.0),
            lambda o, a: np.zeros(len(o)),
            "sampled action lies outside the action space.*raw forward",
        ),
        (  # an unsquashed output that is inside the bounds at the zero point only
            lambda o: (np.tanh(o[:, :6]), 0.5 * o[:, :6]),
            lambda o, a: np.zeros(len(o)),
            "mean action lies outside the action space.*raw forward",
        ),
    ],
)
def test_bad_callable_outputs_are_named_at_attach(reacher_vec, policy, q_function, match):
    with pytest.raises(ValueError, match=match):
        reacher_vec.attach(policy=policy, q_function=q_function)
    assert not reacher_vec.attached


class CleanRLStyleActor(nn.Module):
    """The shape of CleanRL's SAC actor: forward gives (mean, log_std), get_action 3 outputs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(OBS_DIM, 16)
        self.mean, self.log_std = nn.Linear(16, ACT_DIM), nn.Linear(16, ACT_DIM)

    def forward(self, x):
        h = torch.relu(self.fc(x))
        log_std = -5 + 3.5 * (torch.tanh(self.log_std(h)) + 1)  # in [-5, 2]
        return self.mean(h), log_std

    def act(self, x):
        return self.get_action(x)[::2]

    def get_action(self, x):
        mean, log_std = self(x)
        action = torch.tanh(mean + log_std.exp() * torch.randn_like(mean))
        return action, torch.zeros(len(x), 1), torch.tanh(mean)


class QModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(OBS_DIM + ACT_DIM, 1)

    def forward(self, obs, act):
        return self.fc(torch.cat([obs, act], 1))


def q_module():
    return QModule()


def test_attach_names_third_party_mistakes(reacher_vec):
    actor = CleanRLStyleActor()

    def q(obs, act):
        return obs.sum(1) + act.sum(1)

    with pytest.raises(ValueError, match="returned 3 outputs.*get_action"):
        reacher_vec.attach(policy=actor.get_action, q_function=q)
    with pytest.raises(ValueError, match="outside the action space.*raw forward"):
        reacher_vec.attach(policy=actor, q_function=q)
    # A lambda around a module gets numpy arrays unless told the device.
    with pytest.raises(TypeError, match="numpy arrays.*pass device="):
        reacher_vec.attach(policy=lambda o: actor.get_action(o)[::2], q_function=q)
    reacher_vec.attach(policy=lambda o: actor.get_action(o)[::2], q_function=q, device="cpu")
    # A bound method of a module is recognised as torch without device=.
    reacher_vec.attach(policy=actor.act, q_function=q)


def test_attach_networks_without_parameters_twin_lists_and_grad_actions(reacher_vec):
    class Zero(nn.Module):  # no parameters: still a torch module, so it gets tensors
        def forward(self, obs):
            assert isinstance(obs, torch.Tensor)
            return torch.zeros(len(obs), ACT_DIM)

    def q1(obs, act):
        return -((act - 0.1) ** 2).sum(1)

    def q2(obs, act):
        return -((act - 0.2) ** 2).sum(1)

    reacher_vec.attach(policy=Zero(), q_function=[q1, q2], device="cpu")
    agent = torch.zeros(N, ACT_DIM, requires_grad=True)  # an agent stepping with a grad tensor
    info = reacher_vec.step(agent)[4]
    assert info["qmp_action"].shape == (N, ACT_DIM)
    with pytest.raises(ValueError, match="empty list"):
        reacher_vec.attach(policy=Zero(), q_function=[])
    with pytest.raises(TypeError, match=r"q_function\[1\] must be callable"):
        reacher_vec.attach(policy=Zero(), q_function=[q1, 3])


def test_twin_critic_list_equals_tuple_output():
    nets = PerTaskNets(seed=1)
    choices = {}
    for name, q_function in [
        ("tuple", nets.q_function),
        ("list", [lambda o, a: nets.q_function(o, a)[0], lambda o, a: nets.q_function(o, a)[1]]),
    ]:
        env = wrap(gym.make_vec("qmp/MultistageReacher-v0"), scoring="min_twin")
        env.attach(nets.policy, q_function, device="cpu")
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        choices[name] = [
            env.step(rng.uniform(-1, 1, (N, ACT_DIM)).astype(np.float32))[4]["qmp_policy"].tolist()
            for _ in range(8)
        ]
    assert choices["tuple"] == choices["list"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a CPU-only torch")
def test_unusable_and_meta_devices_are_refused_at_attach(reacher_vec):
    with pytest.raises(ValueError, match="device='cuda' is not usable"):
        reacher_vec.attach(
            policy=lambda o: o[:, :ACT_DIM], q_function=lambda o, a: a, device="cuda"
        )
    with pytest.raises(ValueError, match="meta device"):
        reacher_vec.attach(
            policy=nn.Linear(OBS_DIM, ACT_DIM, device="meta"), q_function=q_module().to("meta")
        )


def test_attach_probe_leaves_random_streams_unchanged(reacher_vec):
    actor, critics = CleanRLStyleActor(), [q_module(), q_module()]
    torch.manual_seed(5)
    np.random.seed(5)
    expected = torch.rand(3), np.random.rand(3)
    torch.manual_seed(5)
    np.random.seed(5)
    reacher_vec.attach(policy=actor.act, q_function=critics)  # samples noise in the probe
    assert torch.equal(torch.rand(3), expected[0])
    np.testing.assert_array_equal(np.random.rand(3), expected[1])


def test_observation_without_task_id_and_unknown_task_count():
    pendulum = wrap(gym.make("Pendulum-v1"))
    with pytest.raises(ValueError, match="task count is unknown"):
        pendulum.attach(policy=lambda o: o, q_function=lambda o, a: a)
    pendulum.reset(seed=0)
    pendulum.step(np.zeros(1, np.float32))  # unattached: actions pass through

    two_tasks = wrap(gym.make("Pendulum-v1"), num_tasks=2)
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

    env = wrap(
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
        wrap(gym.make("qmp/MazeLarge10-v0"), task_id_fn=lambda o: o[:, 0])


def test_device_mismatch_and_bad_arguments():
    env = wrap(gym.make_vec("qmp/MultistageReacher-v0"))
    on_meta = nn.Linear(2, 2, device="meta")
    with pytest.raises(ValueError, match="different devices"):
        env.attach(policy=on_meta, q_function=q_module())
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
            wrap(gym.make_vec("qmp/MultistageReacher-v0"), **kwargs)
    with pytest.raises(TypeError, match="expected a gymnasium Env, got object"):
        QMPBehaviorWrapper(object())
    with pytest.raises(TypeError, match="use qmp_wrappers.vector.QMPBehaviorWrapper"):
        QMPBehaviorWrapper(gym.make_vec("qmp/PointReach-v0"))
    with pytest.raises(TypeError, match="expected a gymnasium VectorEnv"):
        VectorQMPBehaviorWrapper(gym.make("qmp/PointReach-v0"))
    with pytest.raises(RuntimeError, match="reset"):
        wrap(gym.make("qmp/PointReach-v0")).step(np.zeros(2))


# -- Gymnasium conventions ---------------------------------------------------------------------


def test_single_env_wrapper_passes_check_env_and_rebuilds_from_its_spec():
    from gymnasium.utils.env_checker import check_env

    env = QMPBehaviorWrapper(gym.make("qmp/PointReach-v0"), hold_steps=2, seed=1)
    with warnings.catch_warnings():  # only Gymnasium's note that a wrapped env is checked
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*different from the unwrapped version")
        check_env(env, skip_render_check=True)
    rebuilt = gym.make(env.spec)
    assert isinstance(rebuilt, QMPBehaviorWrapper) and rebuilt.qmp.hold_steps == 2
    assert env.spec.make().qmp.hold_steps == 2


def test_every_switch_option_is_a_keyword_of_both_wrappers_and_recorded_in_the_spec():
    import dataclasses

    from qmp_wrappers.switch import SwitchOptions

    defaults = {f.name: f.default for f in dataclasses.fields(SwitchOptions)}
    env = QMPBehaviorWrapper(gym.make("qmp/PointReach-v0"), **defaults)
    recorded = env.spec.additional_wrappers[-1].kwargs
    assert recorded["hold_steps"] == 1 and set(defaults) <= set(recorded)
    spec = gym.envs.registration.EnvSpec.from_json(env.spec.to_json())
    assert gym.make(spec).qmp.extra_policy_names == []
    venv = VectorQMPBehaviorWrapper(gym.make_vec("qmp/PointReach-v0"), **defaults)
    assert venv.qmp.mixture == "qswitch" and venv.qmp.extra_policies == []
    with pytest.raises(TypeError, match="unexpected keyword argument 'hold_step'"):
        QMPBehaviorWrapper(gym.make("qmp/PointReach-v0"), hold_step=2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'hold_step'"):
        VectorQMPBehaviorWrapper(gym.make_vec("qmp/PointReach-v0"), hold_step=2)


@pytest.mark.parametrize("qmp_inside", [True, False])
def test_vector_wrapper_inside_and_outside_record_episode_statistics(qmp_inside):
    stats = gym.wrappers.vector.RecordEpisodeStatistics
    base = gym.make_vec("qmp/MultistageReacher-v0")
    envs = stats(wrap(base)) if qmp_inside else wrap(stats(base))
    qmp = find_qmp_wrapper(envs)
    assert qmp.num_tasks == N and qmp.candidate_names[:2] == [
        "reach-g0-g1-g2",
        "reach-g0-g1-g3-shifted",
    ]
    qmp.attach(*scripted(3))
    envs.reset(seed=0)
    info = envs.step(np.zeros((N, ACT_DIM), np.float32))[4]
    assert info["qmp_policy"].tolist() == [3] * N
    assert qmp.selection_counts[:, 3].tolist() == [1] * N


def test_executed_action_is_clipped_to_what_the_env_executes():
    # Outside [-1, 1] by float rounding only (an extra policy further outside is refused).
    env = QMPBehaviorWrapper(
        gym.make("qmp/MultistageReacher-v0", task=0),
        extra_policies=[lambda o: np.full((len(o), ACT_DIM), 1.00005)],
    )
    env.attach(
        policy=lambda o: np.zeros((len(o), ACT_DIM)),
        q_function=lambda o, a: a.sum(1),  # prefers the out-of-bounds helper
    )
    env.reset(seed=0)
    info = env.step(np.zeros(ACT_DIM, np.float32))[4]
    assert info["qmp_policy"] == N  # the helper won
    np.testing.assert_array_equal(info["qmp_action"], np.ones(ACT_DIM, np.float32))
    np.testing.assert_array_equal(env.unwrapped.data.ctrl, info["qmp_action"])


def test_softmax_at_tiny_temperature_picks_the_argmax():
    env = wrap(gym.make_vec("qmp/MultistageReacher-v0"), mixture="softmax", temperature=1e-38)
    env.attach(*scripted(4))
    env.reset(seed=0)
    for _ in range(5):
        assert env.step(np.zeros((N, ACT_DIM), np.float32))[4]["qmp_policy"].tolist() == [4] * N


def test_start_step_keeps_qmp_off_until_learning_starts():
    env = wrap(gym.make_vec("qmp/MultistageReacher-v0"), start_step=2 * N)
    env.attach(*scripted(3))
    env.reset(seed=0)
    chosen = [
        env.step(np.zeros((N, ACT_DIM), np.float32))[4]["qmp_policy"].tolist() for _ in range(3)
    ]
    assert chosen == [list(range(N)), list(range(N)), [3] * N]
    assert env.selection_counts.sum() == N  # the warm-up steps are not selections


def test_an_inner_clip_action_still_stores_what_the_env_executed():
    """``ClipAction`` inside the wrapper widens the action space to +-inf; the executed action
    reported (and stored) is still clipped to the bounds the env enforces."""
    helper = [lambda o: np.full((len(o), ACT_DIM), 5.0)]
    prefer_large = lambda o, a: a.sum(1)  # noqa: E731
    zeros = lambda o: np.zeros((len(o), ACT_DIM))  # noqa: E731
    env = QMPBehaviorWrapper(
        gym.wrappers.ClipAction(gym.make("qmp/MultistageReacher-v0", task=0)),
        extra_policies=helper,
    )
    env.attach(policy=zeros, q_function=prefer_large)
    env.reset(seed=0)
    info = env.step(np.zeros(ACT_DIM, np.float32))[4]
    np.testing.assert_array_equal(info["qmp_action"], np.ones(ACT_DIM, np.float32))
    np.testing.assert_array_equal(env.unwrapped.data.ctrl, info["qmp_action"])
    vec = VectorQMPBehaviorWrapper(
        gym.wrappers.vector.ClipAction(gym.make_vec("qmp/MultistageReacher-v0")),
        extra_policies=helper,
    )
    vec.attach(policy=zeros, q_function=prefer_large)
    vec.reset(seed=0)
    info = vec.step(np.zeros((N, ACT_DIM), np.float32))[4]
    np.testing.assert_array_equal(info["qmp_action"], np.ones((N, ACT_DIM), np.float32))


def test_integral_float_step_counts_are_accepted_as_cleanrl_gives_them():
    env = QMPBehaviorWrapper(gym.make("qmp/PointReach-v0"), start_step=5e3, hold_steps=2.0)
    assert env.qmp.start_step == 5000 and isinstance(env.qmp.start_step, int)
    with pytest.raises(ValueError, match="start_step must be an integer >= 0, got 2.5"):
        QMPBehaviorWrapper(gym.make("qmp/PointReach-v0"), start_step=2.5)


def test_vector_wrapper_reports_the_autoreset_mode_as_an_attribute():
    same_step = gym.vector.AutoresetMode.SAME_STEP
    env = VectorQMPBehaviorWrapper(gym.make_vec("qmp/PointReach-v0", autoreset_mode=same_step))
    assert env.autoreset_mode == same_step == env.metadata["autoreset_mode"]
