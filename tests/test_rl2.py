"""RL^2: trial-long hidden state, log-probabilities recomputed exactly, resume, reference strategies."""

import json

import numpy as np
import pytest
import torch
import yaml
from metarl.agents import RL2, RL2Config
from metarl.agents.references import evaluate_references, gittins_indices

import metarl
from metarl.rl.recurrent import RecurrentActor
from metarl.rl.sampler import Sampler
from metarl.running.cli import main


@pytest.fixture(scope="module")
def nav_agent():
    family = metarl.envs.make("Navigation2D-v0", horizon=8)
    agent = RL2(family, RL2Config(meta_batch_size=3, trials_per_task=2, episodes_per_trial=3, hidden_size=16), seed=0)
    return family, agent


def test_recomputed_log_probs_equal_the_recorded_ones(nav_agent):
    family, agent = nav_agent
    trials = agent.collect(family.sample_tasks(3, seed=0), seed=1)
    assert trials.inputs.shape == (6, 24, 2 + 2 + 2)
    dist, _, _ = agent.policy.unroll(trials.inputs, agent.policy.initial_state(6))
    m = trials.mask
    torch.testing.assert_close(dist.log_prob(trials.actions) * m, trials.log_probs * m)


def test_hidden_state_is_carried_across_the_episodes_of_a_trial_and_reset_between_trials(nav_agent):
    family, agent = nav_agent
    tasks = family.sample_tasks(3, seed=0)
    trials = agent.collect(tasks, seed=1)
    # The log-probabilities recorded while acting equal an unroll of the whole trial from one zero state: had
    # the state been reset at each episode, the second and third episodes would differ from that unroll.
    def unrolled(j: int, episodes: int) -> torch.Tensor:  # log-probs of steps 8j.. of `episodes` episodes, from zeros
        steps = slice(8 * j, 8 * (j + episodes))
        dist = agent.policy.unroll(trials.inputs[:, steps], agent.policy.initial_state(6))[0]
        return dist.log_prob(trials.actions[:, steps])

    whole, per_episode_reset = unrolled(0, 3), torch.cat([unrolled(j, 1) for j in range(3)], dim=1)
    torch.testing.assert_close(whole, trials.log_probs)
    assert not torch.allclose(per_episode_reset[:, 8:], trials.log_probs[:, 8:])
    # Episode boundaries are marked in the inputs: done flag 1 on the first step of episodes 2 and 3 only.
    done_flags = trials.inputs[0, :, -1]
    assert done_flags[[8, 16]].tolist() == [1.0, 1.0] and done_flags[:8].sum() == 0
    # A new trial starts from zeros: the same seed gives the same trial even after other trials ran.
    agent.collect(family.sample_tasks(3, seed=5), seed=7)
    again = agent.collect(tasks, seed=1)
    assert torch.equal(again.log_probs, trials.log_probs) and torch.equal(again.inputs, trials.inputs)


@pytest.mark.parametrize("name", ["Bandit-v0", "HalfCheetahVel-v0"])
def test_trials_split_by_tasks_are_the_same_bit_for_bit(name):
    """Trials of a meta-batch in one call, and as two calls over task subsets with their indices (as two workers
    would run them): the same episodes and the same final actor state."""
    family = metarl.envs.make(name, horizon=6)
    agent = RL2(family, RL2Config(hidden_size=16), seed=0)
    tasks = family.sample_tasks(5, seed=2)

    def trials(tasks, task_ids):  # a fresh sampler per call, as on a worker of its own
        return Sampler(family).run_trials(tasks, RecurrentActor(agent.policy), trials_per_task=2, episodes_per_trial=3,
                                          seed=3, task_ids=task_ids)

    whole, first, second = trials(tasks, None), trials(tasks[:2], range(2)), trials(tasks[2:], range(2, 5))
    for j in range(3):
        for field in ("obs", "actions", "rewards", "mask", "log_probs", "last_obs", "terminated"):
            joined = torch.cat([getattr(first.episodes[j], field), getattr(second.episodes[j], field)])
            assert torch.equal(getattr(whole.episodes[j], field), joined), (j, field)
    for key, value in whole.state.items():
        assert torch.equal(value, torch.cat([first.state[key], second.state[key]])), key


def test_rl2_learns_to_prefer_the_better_arm_on_a_tiny_bandit():
    family = metarl.envs.make("Bandit-v0", arms=2, horizon=10)
    agent = RL2(family, RL2Config(meta_batch_size=40, trials_per_task=2, episodes_per_trial=1, hidden_size=32,
                                  learning_rate=3e-3, gae_lambda=0.3), seed=0)
    tasks = family.test_tasks[:40]
    before = agent.adaptation_curve(tasks, 0, seed=0).mean()
    for it in range(80):  # about 6.3 after 40 iterations, 6.5 after 80 (knowing the better arm: 6.67)
        agent.meta_step(family.sample_tasks(40, seed=it), seed=it)
    after = agent.adaptation_curve(tasks, 0, seed=0).mean()
    assert after > before + 0.5  # random play earns 5 of 10 on average; learning moves it up


@pytest.mark.parametrize("outer", ["ppo", "trpo"])  # trpo: the separate critic is checkpointed too
def test_rl2_resume_reproduces_the_uninterrupted_run(tmp_path, outer):
    config = {
        "family": "Bandit-v0", "family_overrides": {"arms": 3, "horizon": 5}, "agent": "rl2",
        "agent_config": {"meta_batch_size": 4, "trials_per_task": 2, "episodes_per_trial": 2, "hidden_size": 8,
                         "outer": outer},
        "seed": 1, "iterations": 2, "checkpoint_every": 2, "evaluate": False,
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--run-dir", str(tmp_path / "a"), "--no-progress"]) == 0
    assert main(["train", "--resume", str(tmp_path / "a"), "iterations=4", "--no-progress"]) == 0
    assert main(["train", str(path), "iterations=4", "--run-dir", str(tmp_path / "b"), "--no-progress"]) == 0

    def rows(d):
        return [{k: v for k, v in json.loads(line).items() if k not in ("time_s", "elapsed_s")}
                for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]

    assert rows("a") == rows("b") and len(rows("a")) == 4


def test_gittins_indices_match_published_values_and_exceed_the_posterior_mean():
    table = gittins_indices(101, 0.99)
    # The tabulated Bernoulli indices for discount 0.99 (Gittins, Glazebrook & Weber 2011): 0.8699 for Beta(1, 1),
    # 0.9102 for Beta(2, 1); the grid here has a step of 5e-4.
    assert table[0, 0] == pytest.approx(0.8699, abs=1e-3) and table[1, 0] == pytest.approx(0.9102, abs=1e-3)
    s, f = np.meshgrid(np.arange(30), np.arange(30), indexing="ij")
    assert (table[s, f] >= (1 + s) / (2 + s + f) - 1e-3).all()  # an exploration bonus, never a malus
    assert table[0, 0] - 0.5 > table[20, 20] - 0.5 > 0  # that shrinks as evidence accumulates


def test_reference_strategies_rank_as_expected():
    bandits = metarl.envs.make("Bandit-v0", arms=5, horizon=100)
    results = {k: v.sum(0).mean() for k, v in evaluate_references(bandits, bandits.test_tasks[:40], 1, 0).items()}
    assert results["UCB1"] > results["random"] + 10 and results["Thompson"] > results["random"] + 10
    assert results["Gittins"] > results["random"] + 10
    mdps = metarl.envs.make("TabularMDP-v0")
    out = evaluate_references(mdps, mdps.test_tasks[:10], 10, 0)
    assert out["PSRL"].shape == (10, 10)
    assert out["PSRL"][5:].mean() > out["random"][5:].mean() + 1.0  # PSRL improves over the trial
    with pytest.raises(ValueError, match="Bandit and TabularMDP"):
        evaluate_references(metarl.envs.make("Navigation2D-v0"), [metarl.envs.make("Navigation2D-v0").test_tasks[0]], 1, 0)
    assert np.isfinite(out["random"]).all()


@pytest.mark.parametrize("critic", ["shared", "separate"])
def test_value_normalisation_preserves_the_heads_outputs_and_tracks_the_returns(critic):
    family = metarl.envs.make("Bandit-v0", arms=3, horizon=5)
    agent = RL2(family, RL2Config(meta_batch_size=2, hidden_size=8, critic=critic), seed=0)
    x = torch.randn(4, 6, agent.policy.input_size)

    def values() -> torch.Tensor:
        return agent.policy.unroll(x, agent.policy.initial_state(4))[1] if agent.critic is None else agent.critic(x)

    before = agent.popart.denormalize(values())
    returns = torch.tensor([10.0, 20.0, 30.0, 40.0])
    agent.popart.update(returns)
    mean, std, count = agent.popart.mean, agent.popart.std, agent.popart.count
    assert (mean, count) == (25.0, 4.0) and std == pytest.approx(returns.std(unbiased=False).item())
    torch.testing.assert_close(agent.popart.denormalize(values()), before)  # the same values in return units
    agent.popart.update(torch.tensor([50.0, 60.0]))
    mean, std, count = agent.popart.mean, agent.popart.std, agent.popart.count
    everything = torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
    assert count == 6 and mean == pytest.approx(35.0) and std == pytest.approx(everything.std(unbiased=False).item())


def test_the_network_reads_the_previous_action_one_hot_and_nothing_before_the_first():
    family = metarl.envs.make("Bandit-v0", arms=4, horizon=6)
    agent = RL2(family, RL2Config(meta_batch_size=2, hidden_size=8, episodes_per_trial=1), seed=0)
    trials = agent.collect(family.sample_tasks(2, seed=0), seed=0)
    prev_actions = trials.inputs[:, :, 1:5]  # after the 1-d constant observation
    assert not prev_actions[:, 0].any()
    expected = torch.nn.functional.one_hot(trials.actions[:, :-1], 4).float()
    torch.testing.assert_close(prev_actions[:, 1:], expected)
    torch.testing.assert_close(trials.inputs[:, 1:, 5], trials.rewards[:, :-1])  # the previous reward


def test_rl2_trpo_step_keeps_the_kl_bound_and_improves_the_surrogate():
    family = metarl.envs.make("Bandit-v0", arms=3, horizon=8)
    config = RL2Config(outer="trpo", meta_batch_size=16, trials_per_task=2, episodes_per_trial=2, hidden_size=16,
                       max_kl=0.01)
    agent = RL2(family, config, seed=0)
    trials = agent.collect(family.sample_tasks(16, seed=0), seed=0)
    critic_before = agent.critic.value.weight.detach().clone()
    state = agent.policy.initial_state(trials.mask.shape[0])
    with torch.no_grad():
        old, _, _ = agent.policy.unroll(trials.inputs, state)
    metrics = agent.update(trials, seed=0)
    with torch.no_grad():
        new, _, _ = agent.policy.unroll(trials.inputs, state)
    m = trials.mask
    kl = (torch.distributions.kl_divergence(old, new) * m).sum() / m.sum()
    assert metrics["line_search_accepted"] == 1.0
    assert 0 < kl.item() <= config.max_kl * 1.0001 and abs(kl.item() - metrics["kl"]) < 1e-5
    assert metrics["loss_after"] < metrics["loss_before"]
    assert not torch.equal(critic_before, agent.critic.value.weight)  # the critic is fitted afterwards
    with pytest.raises(ValueError, match="outer"):
        RL2Config(outer="sgd")
    assert config.critic == "separate" and RL2Config().critic == "shared"
    with pytest.raises(ValueError, match="critic: separate"):
        RL2Config(outer="trpo", critic="shared")
    with pytest.raises(ValueError, match="critic must be one of"):
        RL2Config(critic="own")


def test_rl2_trpo_learns_to_prefer_the_better_arm_on_a_tiny_bandit():
    family = metarl.envs.make("Bandit-v0", arms=2, horizon=10)
    agent = RL2(family, RL2Config(outer="trpo", meta_batch_size=40, trials_per_task=2, episodes_per_trial=1,
                                  hidden_size=32, learning_rate=3e-3, gae_lambda=0.3, max_kl=0.05), seed=0)
    tasks = family.test_tasks[:40]
    before = agent.adaptation_curve(tasks, 0, seed=0).mean()
    for it in range(40):
        agent.meta_step(family.sample_tasks(40, seed=it), seed=it)
    assert agent.adaptation_curve(tasks, 0, seed=0).mean() > before + 0.5
