"""``metarl report``: runs grouped into methods by config, multi-seed statistics, one self-contained page."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from metarl.running.cli import main
from metarl.running.evaluation import read_report
from metarl.running.report import Run, group_runs, load_run, method_label

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "experiments" / "maml_trpo_navigation2d_quick.yaml")
TINY = ["iterations=2", "agent_config.meta_batch_size=2", "agent_config.episodes_per_task=2", "eval_tasks=4",
        "eval_steps=1", "family_overrides.horizon=20"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Method ``tiny`` with seeds 0 and 1, and method ``other`` (3 held-out tasks, 3 points) with seed 0."""
    root = tmp_path_factory.mktemp("runs")
    assert main(["train", QUICK, *TINY, "--run-dir", str(root / "tiny"), "--seeds", "0", "1", "--no-progress"]) == 0
    assert main(["train", QUICK, *TINY, "eval_tasks=3", "eval_steps=2", "--run-dir", str(root / "other-seed0"),
                 "--no-progress"]) == 0
    return root


def _scores(run_dirs: list[Path], point: int) -> np.ndarray:
    return np.array([json.loads((d / "eval.json").read_text())["per_task_returns"][point] for d in run_dirs])


def test_html_report_groups_seeds_and_shows_the_statistics_of_metarl_statistics(runs, tmp_path, capsys):
    out = tmp_path / "report"
    dirs = [runs / "tiny-seed0", runs / "tiny-seed1", runs / "other-seed0"]
    assert main(["report", *map(str, dirs), "--out", str(out)]) == 0
    assert "report.html" in capsys.readouterr().out
    page = (out / "report.html").read_text()
    assert page.count("<table>") == 3 and "<h2>Final numbers</h2>" in page
    assert "<pre>metarl report " in page and f"--out {out}" in page  # the command that made it, at the top
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', page)) == 2
    assert "<td>tiny</td>" in page and "<td>other</td>" in page and "<td>0, 1</td>" in page
    assert (out / "adaptation_Navigation2D-v0.png").stat().st_size > 1000
    assert (out / "learning_Navigation2D-v0.png").stat().st_size > 1000

    summary = json.loads((out / "summary.json").read_text())
    tiny, other = summary["methods"]
    assert (tiny["label"], tiny["seeds"], other["label"], other["seeds"]) == ("tiny", [0, 1], "other", [0])
    assert len(tiny["adaptation"]["points"]) == 2 and len(other["adaptation"]["points"]) == 3  # may differ
    assert other["adaptation"]["num_tasks"] == 3 and tiny["adaptation"]["num_tasks"] == 4
    for point in range(2):
        # By hand: each seed's mean and IQM over its 4 tasks (the middle two of the sorted scores), averaged
        # over the 2 seeds; a bootstrap over 2 seeds puts a quarter of its mass on each seed alone, so the 95%
        # interval runs from one seed's value to the other's.
        scores = _scores(dirs[:2], point)
        means = scores.mean(1)
        iqms = np.sort(scores, axis=1)[:, 1:3].mean(1)
        shown = tiny["adaptation"]["points"][point]
        assert (shown["runs"], shown["tasks"]) == (2, 4)
        np.testing.assert_allclose(shown["per_seed_mean"], means)
        np.testing.assert_allclose([shown["mean"], *shown["mean_ci"]], [means.mean(), means.min(), means.max()])
        np.testing.assert_allclose([shown["iqm"], *shown["iqm_ci"]], [iqms.mean(), iqms.min(), iqms.max()])
        assert f"<td>{iqms.mean():.2f} [{iqms.min():.2f}, {iqms.max():.2f}]</td>" in page
        assert f"<td>{means[0]:.2f}, {means[1]:.2f}</td>" in page  # the per-seed means beside them
    gains = (_scores(dirs[:2], 1) - _scores(dirs[:2], 0)).mean(1)
    final = tiny["adaptation"]["points"][1]
    np.testing.assert_allclose([final["gain_mean"], *final["gain_mean_ci"]], [gains.mean(), gains.min(), gains.max()])
    np.testing.assert_allclose(final["gain_per_seed_mean"], gains)

    learning = tiny["learning"]
    rows = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for d in dirs[:2]]
    assert learning["key"] == "return_post" and learning["iterations"] == [0, 1]
    np.testing.assert_allclose(learning["mean"], np.mean([[r["return_post"] for r in rs] for rs in rows], axis=0))
    assert learning["elapsed_s"] == [rs[-1]["elapsed_s"] for rs in rows]
    assert learning["total_env_steps"] == [rs[-1]["total_env_steps"] for rs in rows]
    assert "one seed: no interval over seeds" in other["notes"]


def test_markdown_report_links_its_figures(runs, tmp_path):
    out = tmp_path / "md"
    assert main(["report", str(runs / "tiny-seed0"), str(runs / "tiny-seed1"), "--out", str(out), "--format", "md"]) == 0
    page = (out / "report.md").read_text()
    assert page.startswith("# metarl report\n\n```\nmetarl report ")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page)
    assert links == ["adaptation_Navigation2D-v0.png", "learning_Navigation2D-v0.png"]
    assert all((out / link).is_file() for link in links)
    assert "| tiny | Navigation2D-v0 | maml_trpo | 0, 1 | 4 |" in page


def test_report_scores_each_run_by_the_evaluation_named_where_it_has_one(runs, tmp_path, capsys):
    tuned = tmp_path / "tiny-seed1"
    shutil.copytree(runs / "tiny-seed1", tuned)
    assert main(["eval", str(tuned), "--step-size", "0.05", "--name", "eval_tuned"]) == 0
    assert _scores([tuned], 1).tolist() != json.loads((tuned / "eval_tuned.json").read_text())["per_task_returns"][1]
    out = tmp_path / "report"
    assert main(["report", str(runs / "tiny-seed0"), str(tuned), "--out", str(out), "--eval", "eval_tuned"]) == 0
    [method] = json.loads((out / "summary.json").read_text())["methods"]
    assert method["notes"] == ["held-out scores from eval.json, eval_tuned.json"]
    seed1 = np.array(json.loads((tuned / "eval_tuned.json").read_text())["per_task_returns"][1])
    expected = (_scores([runs / "tiny-seed0"], 1).mean() + seed1.mean()) / 2
    assert method["adaptation"]["points"][1]["mean"] == pytest.approx(expected)
    assert "--eval eval_tuned" in (out / "report.html").read_text()


def test_report_refuses_what_is_not_a_run_and_duplicate_seeds(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    assert method_label("runs/maml-seed12") == "maml" and method_label("runs/seedless/") == "seedless"
    config = {"family": "Navigation2D-v0", "agent": "maml_trpo", "seed": 0}
    a, b = Run(tmp_path / "a-seed0", config, None, []), Run(tmp_path / "b-seed0", dict(config), None, [])
    with pytest.raises(ValueError, match="same config and seed 0"):
        group_runs([a, b])
    c = Run(tmp_path / "a-seed1", {**config, "agent": "rl2", "seed": 1}, None, [])
    labels = [m.label for m in group_runs([a, c])]
    assert labels == ["a", "a (2)"]  # different configs under one name are told apart


def test_runs_sampled_by_different_backends_are_one_method(tmp_path):
    """The sampler section says how a run's episodes were sampled (every backend gives the same), not what it is."""
    config = {"family": "Navigation2D-v0", "agent": "maml_trpo"}
    runs = [Run(tmp_path / "m-seed0", {**config, "seed": 0}, None, []),
            Run(tmp_path / "m-seed1", {**config, "seed": 1, "sampler": {"backend": "ray", "workers": 4}}, None, [])]
    assert [(m.label, m.seeds) for m in group_runs(runs)] == [("m", [0, 1])]


def test_a_run_saved_before_a_field_existed_groups_with_runs_that_save_it_at_its_default(runs, tmp_path):
    old = tmp_path / "tiny-seed2"
    shutil.copytree(runs / "tiny-seed1", old)
    config = yaml.safe_load((old / "config.yaml").read_text())
    config["seed"] = 2
    del config["agent_config"]["max_kl"]  # as if saved before the field existed; its default is what seed 1 saved
    config.pop("keep_checkpoints", None)  # a field of the run config alike
    (old / "config.yaml").write_text(yaml.safe_dump(config))
    assert load_run(old).config["agent_config"]["max_kl"] == load_run(runs / "tiny-seed1").config["agent_config"]["max_kl"]
    methods = group_runs([load_run(runs / "tiny-seed0"), load_run(runs / "tiny-seed1"), load_run(old)])
    assert [(m.label, m.seeds) for m in methods] == [("tiny", [0, 1, 2])]
    assert "keep_checkpoints" in yaml.safe_load((runs / "tiny-seed1" / "config.yaml").read_text())
    config["agent_config"]["max_kl"] = 0.5  # a value other than the default is a different method
    (old / "config.yaml").write_text(yaml.safe_dump(config))
    assert len(group_runs([load_run(runs / "tiny-seed0"), load_run(old)])) == 2


def test_a_large_budget_ceiling_is_reported_as_the_mean_over_seeds(runs, tmp_path):
    for seed, value in ((0, -8.0), (1, -6.0)):
        run = tmp_path / f"scratch-seed{seed}"
        shutil.copytree(runs / f"tiny-seed{seed}", run)
        report = json.loads((run / "eval.json").read_text())
        report["reference_ceiling"] = {"budgets": 50, "tasks": 5, "env_steps_per_task": 100000, "mean_return": value}
        (run / "eval.json").write_text(json.dumps(report))
    assert main(["report", str(tmp_path / "scratch-seed0"), str(tmp_path / "scratch-seed1"),
                 "--out", str(tmp_path / "r"), "--format", "md"]) == 0
    ceiling = json.loads((tmp_path / "r" / "summary.json").read_text())["methods"][0]["adaptation"]["ceiling"]
    assert ceiling["mean"] == pytest.approx(-7.0) and ceiling["per_seed"] == [-8.0, -6.0]
    row = ("| scratch | ceiling: 50 budgets | 100k env steps | — | -7.00 (-8.00 to -6.00) (first 5 tasks) | -8.00, -6.00 "
           "| 2 x 5 |")
    assert row in (tmp_path / "r" / "report.md").read_text()


def test_a_few_shot_run_evaluated_before_accuracy_had_its_own_name_still_renders(tmp_path, capsys):
    """experiments/results/maml_omniglot_5way1shot kept its accuracy under ``mean_return`` and
    ``per_task_returns``, as every few-shot evaluation did before reports named scores by their metric."""
    kept = ROOT / "experiments" / "results" / "maml_omniglot_5way1shot"
    assert "mean_return" in json.loads((kept / "eval.json").read_text())["steps"][1]
    report = read_report(kept / "eval.json")
    assert report["steps"][1]["mean_accuracy"] == pytest.approx(77.65, abs=0.005) and "mean_return" not in \
        report["steps"][1]
    assert len(report["per_task_accuracy"][1]) == 1000 and "per_task_returns" not in report
    assert main(["report", str(kept), "--out", str(tmp_path / "r"), "--format", "md"]) == 0
    page = (tmp_path / "r" / "report.md").read_text()
    row = r"\| maml_omniglot_5way1shot \| 1 \| 1 \| [0-9.]+ \(1 seed\) \| 77.65 \(1 seed\) \| 77.65 \| 1 x 1000 \|"
    assert re.search(row, page)  # point 1 of the curve table: the mean accuracy
    assert main(["plot", str(kept), "--out", str(tmp_path / "plot.png")]) == 0
    assert "   77.65 +-  0.65" in capsys.readouterr().out


def test_the_held_out_score_along_meta_training_is_shown_against_env_steps(tmp_path, capsys):
    """Two seeds scored at iterations 10 and 20 (eval_iter_<k>.json), one seed also at 30: the report's curve is at
    the iterations both have, the mean over seeds of each seed's mean held-out return at the last point."""
    from metarl.running.evaluation import adaptation_report

    scores = {0: {10: [-3.0, -5.0], 20: [-1.0, -2.0], 30: [0.0, 0.0]}, 1: {10: [-4.0, -4.0], 20: [-2.0, -2.0]}}
    dirs = []
    for seed, along in scores.items():
        run = tmp_path / f"nav-seed{seed}"
        run.mkdir()
        config = {"family": "Navigation2D-v0", "agent": "maml_trpo", "seed": seed, "eval_every": 10 + seed}
        (run / "config.yaml").write_text(yaml.safe_dump(config))
        for it, last in along.items():
            report = adaptation_report(np.array([[-9.0, -9.0], last]), run.name, "inner gradient steps", [0, 20])
            report.update(iteration=it, total_env_steps=1000 * it + seed)
            (run / f"eval_iter_{it:06d}.json").write_text(json.dumps(report))
        dirs.append(run)
    page = (main(["report", *map(str, dirs), "--out", str(tmp_path / "out"), "--format", "md"]) == 0
            and (tmp_path / "out" / "report.md").read_text())
    assert "## Held-out score along meta-training" in page and (tmp_path / "out" / "heldout_Navigation2D-v0.png").is_file()
    # iteration 10: seeds -4.0 and -4.0 -> -4.00; iteration 20: -1.5 and -2.0 -> -1.75; env steps 10k and 20k
    assert "| nav | 10 | 10k | -4.00 | -4.00, -4.00 |" in page
    assert "| nav | 20 | 20k | -1.75 | -1.50, -2.00 |" in page
    assert "| nav | 30 |" not in page
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    [method] = summary["methods"]  # eval_every differs between the seeds: still one method
    assert method["heldout"]["iterations"] == [10, 20] and method["heldout"]["env_steps"] == [10000.5, 20000.5]
    report = json.loads((dirs[0] / "eval_iter_000010.json").read_text())
    del report["iteration"]  # as a hand-made file might be
    (dirs[0] / "eval_iter_000040.json").write_text(json.dumps(report))
    capsys.readouterr()
    assert main(["report", *map(str, dirs), "--out", str(tmp_path / "bad")]) == 2
    assert "eval_iter_000040.json' does not say the iteration and env steps it scored" in capsys.readouterr().err
