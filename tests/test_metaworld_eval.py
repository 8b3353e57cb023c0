"""Meta-World's own evaluator scores metarl agents (MAML-TRPO, ProMP, RL², PEARL): end to end on a tiny budget,
and exactly as our evaluation.

Meta-World's evaluator takes its goal count and rounds as arguments (``total_tasks_per_cls`` of
``make_ml_envs_test``, ``num_evals``): nothing is hard-coded to 40 goals. The budget here is 2 goals, 2
environments (one goal each, so environment ``k`` holds test goal ``k``), 1 round and 20-step episodes.
"""

import json

import numpy as np
import pytest
import torch
from metarl.agents import MAMLTRPO, PEARL, RL2, MAMLTRPOConfig, PEARLConfig, ProMP, ProMPConfig, RL2Config
from metarl.envs.meta_world_eval import MetaWorldAgent, make_test_envs, metaworld_evaluation
from metaworld.evaluation import metalearning_evaluation

import metarl
from metarl.contract import Capability
from metarl.errors import ConfigError
from metarl.rl.recurrent import RecurrentActor
from metarl.rl.sampler import Sampler
from metarl.running.cli import main
from metarl.seeding import derive_seed, eval_seed

HORIZON, GOALS, SEED = 20, 2, 5


@pytest.fixture(scope="module")
def family():
    return metarl.envs.make("ML1-v0", env_name="reach-v3", horizon=HORIZON)


@pytest.fixture(scope="module")
def envs(family):
    envs = make_test_envs(family, goals_per_class=GOALS, meta_batch_size=GOALS)
    yield envs
    envs.close()


class Recording(MetaWorldAgent):
    """Keeps RL²'s hidden state after each adaptation step (the evaluation episodes carry it on)."""

    def adapt(self) -> None:
        super().adapt()
        self.adapted = self.state["hidden"].clone()


@pytest.mark.parametrize("agent_cls, config_cls", [(MAMLTRPO, MAMLTRPOConfig), (ProMP, ProMPConfig)])
def test_maml_agents_adapt_and_score_exactly_as_in_our_evaluation(family, envs, agent_cls, config_cls):
    agent = agent_cls(family, config_cls(meta_batch_size=2, episodes_per_task=3, hidden_sizes=[16]), seed=1)
    adapter = MetaWorldAgent(agent, envs, family, 3, SEED)
    success, mean_return, per_class = metalearning_evaluation(adapter, envs, num_evals=1, adaptation_steps=1,
                                                              adaptation_episodes=3, evaluation_episodes=2)
    assert [t["rand_vec"] for t in adapter.tasks] == [t["rand_vec"] for t in family.test_tasks[:GOALS]]
    ours = agent.collect(family.test_tasks[:GOALS], derive_seed(SEED, 0), steps=1)
    for name, value in ours.query_params.items():  # the same adaptation episodes, so the same inner step (up to
        # rounding: the sampler evaluates the policy on [tasks, episodes] batches, the evaluator's loop on [tasks, 1])
        torch.testing.assert_close(adapter.adaptation.params[name], value, rtol=1e-5, atol=1e-6)
    # Meta-World's evaluation stops once each class has evaluation_episodes finished episodes: here both
    # environments' first, which no success cut short, so their returns are our query episodes 0
    assert adapter.env_steps == GOALS * HORIZON * (3 + 1)
    assert success == per_class["reach-v3"] == 0.0
    np.testing.assert_allclose(mean_return, ours.query.episode_returns()[:, 0].mean().item(), rtol=1e-6)


def test_rl2_runs_its_trial_through_the_evaluator_as_the_sampler_runs_it(family, envs):
    agent = RL2(family, RL2Config(meta_batch_size=2, episodes_per_trial=3, hidden_size=16), seed=1)
    adapter = Recording(agent, envs, family, 2, SEED)
    metalearning_evaluation(adapter, envs, num_evals=1, adaptation_steps=1, adaptation_episodes=2,
                            evaluation_episodes=1)
    trials = Sampler(family).run_trials(family.test_tasks[:GOALS], RecurrentActor(agent.policy), trials_per_task=1,
                                        episodes_per_trial=2, seed=derive_seed(SEED, 0))
    torch.testing.assert_close(adapter.adapted, trials.state["hidden"], rtol=0, atol=0)
    assert adapter.env_steps == GOALS * HORIZON * 3


def test_pearl_draws_z_from_the_adaptation_episodes_as_its_own_evaluation(family, envs):
    config = PEARLConfig(latent_size=3, encoder_hidden_sizes=[16], hidden_sizes=[16], num_exp_traj_eval=1,
                         eval_deterministic=False)  # sampled actions: the episodes' streams must agree too
    agent = PEARL(family, config, seed=1)
    adapter = MetaWorldAgent(agent, envs, family, 1, SEED)
    success, mean_return, _ = metalearning_evaluation(adapter, envs, num_evals=1, adaptation_steps=2,
                                                      adaptation_episodes=1, evaluation_episodes=2)
    # our evaluation: trajectory 0 with z from the prior, 1 and 2 from the posterior over those before
    returns, _, context, mask = agent._trial(family.test_tasks[:GOALS], 3, derive_seed(SEED, 0))
    torch.testing.assert_close(adapter.adaptation.context, context[:, : 2 * HORIZON], rtol=0, atol=0)
    torch.testing.assert_close(adapter.adaptation.mask, mask[:, : 2 * HORIZON], rtol=0, atol=0)
    assert adapter.env_steps == GOALS * HORIZON * 3 and success == 0.0
    np.testing.assert_allclose(mean_return, returns[2].mean(), rtol=1e-6)  # the evaluation acts as trajectory 2
    with pytest.raises(ConfigError, match="use_next_obs_in_context"):
        MetaWorldAgent(PEARL(family, PEARLConfig(use_next_obs_in_context=True, encoder_hidden_sizes=[8],
                                                 hidden_sizes=[8])), envs, family, 1, 0)


def test_metaworld_evaluation_reports_the_evaluator_numbers_and_settings(family, envs):
    agent = MAMLTRPO(family, MAMLTRPOConfig(meta_batch_size=2, episodes_per_task=2, hidden_sizes=[16]), seed=0)
    out = metaworld_evaluation(agent, family, envs, seed=0, num_evals=2, adaptation_episodes=1, evaluation_episodes=1)
    assert out["benchmark"] == "reach-v3" and out["goals_per_class"] == GOALS and out["meta_batch_size"] == GOALS
    assert set(out["per_class_success"]) == {"reach-v3"} and 0.0 <= out["success_rate"] <= 1.0
    assert out["env_steps"] == 2 * GOALS * HORIZON * 2 and np.isfinite(out["mean_return"])


def test_the_train_split_scores_the_training_goals(family):
    envs = make_test_envs(family, goals_per_class=GOALS, meta_batch_size=GOALS, split="train")
    try:
        agent = MAMLTRPO(family, MAMLTRPOConfig(meta_batch_size=2, episodes_per_task=1, hidden_sizes=[8]), seed=0)
        adapter = MetaWorldAgent(agent, envs, family, 1, SEED)
        metalearning_evaluation(adapter, envs, num_evals=1, adaptation_episodes=1, evaluation_episodes=1)
    finally:
        envs.close()
    assert [t["rand_vec"] for t in adapter.tasks] == [t["rand_vec"] for t in family.train_tasks[:GOALS]]
    with pytest.raises(ConfigError, match="split must be 'train' or 'test', got 'val'"):
        make_test_envs(family, split="val")


class InnerStepsOnly:
    """An agent that adapts only on episodes it samples itself."""

    capabilities = frozenset({Capability.ADAPT})


def test_what_the_protocol_cannot_score_is_refused(family, envs):
    with pytest.raises(ConfigError, match="InnerStepsOnly cannot be scored by Meta-World's protocol: it does not have "
                                          "the capability 'adapt_on_given_episodes'"):
        MetaWorldAgent(InnerStepsOnly(), envs, family, 2, 0)
    with pytest.raises(ConfigError, match="bootstrap_time_limit"):
        MetaWorldAgent(MAMLTRPO(family, MAMLTRPOConfig(bootstrap_time_limit=True, hidden_sizes=[8])), envs, family,
                       2, 0)
    with pytest.raises(ConfigError, match="Meta-World families.*not Navigation2D-v0"):
        make_test_envs(metarl.envs.make("Navigation2D-v0"))
    with pytest.raises(ConfigError, match="multiple of 5.*got 12 and 40"):
        make_test_envs(metarl.envs.make("ML10-v0"), goals_per_class=40, meta_batch_size=12)
    with pytest.raises(ConfigError, match="num_evals must be a positive integer, got 0"):
        metaworld_evaluation(None, family, envs, seed=0, num_evals=0)


def test_metarl_eval_protocol_metaworld_writes_the_evaluator_numbers_beside_ours(tmp_path, capsys):
    config = tmp_path / "ml1.yaml"
    config.write_text("family: ML1-v0\nfamily_overrides: {env_name: reach-v3, horizon: 10}\nagent: maml_trpo\n"
                      "agent_config: {meta_batch_size: 2, episodes_per_task: 2, hidden_sizes: [16]}\n"
                      "iterations: 1\neval_tasks: 2\neval_steps: 1\n")
    run = tmp_path / "run"
    assert main(["train", str(config), "--run-dir", str(run), "--no-progress"]) == 0
    ours = json.loads((run / "eval.json").read_text())
    assert len(ours["success"]["steps"]) == 2 and set(ours["success"]["steps"][1]["per_class"]) == {"reach-v3"}
    capsys.readouterr()
    assert main(["eval", str(run), "--protocol", "metaworld", "--goals", "2", "--meta-batch", "2", "--evals", "1",
                 "--adapt-episodes", "2", "--eval-episodes", "1"]) == 0
    printed = capsys.readouterr().out
    theirs = json.loads((run / "eval_metaworld.json").read_text())
    assert (theirs["benchmark"], theirs["goals_per_class"], theirs["num_evals"]) == ("reach-v3", 2, 1)
    assert theirs["env_steps"] == 2 * 10 * (2 + 1) and "eval_metaworld.json" in printed
    assert f"success rate {theirs['success_rate']:.3f}" in printed
    assert main(["eval", str(run), "--protocol", "metaworld", "--tasks", "3"]) == 2  # our protocol's flag
    assert "--tasks belong to --protocol metarl" in capsys.readouterr().err
    # the meta-train numbers: ours on the first training goals, Meta-World's on its training goals
    assert main(["eval", str(run), "--split", "train"]) == 0
    train = json.loads((run / "eval_train.json").read_text())
    agent = metarl.load(run)
    curve = agent.adaptation_curve(agent.family.train_tasks[:2], 1, eval_seed(0))
    assert train["split"] == "train" and train["success"]["per_episode_success"] == agent.curve_success.tolist()
    assert train["per_task_returns"] == curve.tolist()  # the training goals' returns, not the held-out ones
    assert main(["eval", str(run), "--protocol", "metaworld", "--split", "train", "--goals", "2", "--meta-batch", "2",
                 "--evals", "1", "--adapt-episodes", "2", "--eval-episodes", "1"]) == 0
    assert json.loads((run / "eval_metaworld_train.json").read_text())["split"] == "train"
