"""The meta-train success rates of a Meta-World run (the Meta-World paper's Table 1 reports meta-train beside
meta-test): our evaluation on the first 50 training goals, and Meta-World's evaluator on the training goals with its
defaults (20 environments, 10 rounds) and with one environment (40 rounds: every episode counted). Writes
``eval_train.json`` and ``eval_metaworld_train.json`` / ``eval_metaworld_train_1env.json`` in the run directory.

    python experiments/results/ml1_reach/meta_train_success.py RUN_DIR [ADAPT_EPISODES]
"""

import sys
from pathlib import Path

from metarl.envs.meta_world_eval import make_test_envs, metaworld_evaluation

import metarl
from metarl.running.config import load_config
from metarl.running.evaluation import success_report, write_report
from metarl.seeding import eval_seed

if __name__ == "__main__":
    run_dir, adaptation_episodes = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 10
    config = load_config(run_dir / "config.yaml")
    agent, seed = metarl.load(run_dir), eval_seed(config.seed)
    family = agent.family
    tasks = family.train_tasks[:50]
    curve = agent.adaptation_curve(tasks, config.eval_steps, seed)
    ours = {"split": "train", "tasks": len(tasks), "mean_return": curve.mean(1).tolist(),
            "success": success_report(agent.curve_success, [t["env_name"] for t in tasks])}
    write_report(ours, run_dir / "eval_train.json")
    print("ours, training goals: success", [round(p["success_rate"], 3) for p in ours["success"]["steps"]])
    for name, envs_per_class, rounds in (("eval_metaworld_train", 20, 10), ("eval_metaworld_train_1env", 1, 40)):
        envs = make_test_envs(family, 40, envs_per_class * len(family.split_classes["train"]), split="train")
        try:
            report = metaworld_evaluation(agent, family, envs, seed=seed, num_evals=rounds,
                                          adaptation_episodes=adaptation_episodes)
        finally:
            envs.close()
        report["split"] = "train"
        write_report(report, run_dir / f"{name}.json")
        print(f"Meta-World's evaluator, training goals, {envs_per_class} env(s) per class: success "
              f"{report['success_rate']:.3f}")
