"""Few-shot data: Omniglot splits, the episode sampler, the sinusoid, user data, and Prototypical Networks."""

import csv
import json

import numpy as np
import pytest
import torch
from conftest import toy_episodes
from metarl.agents import ProtoNet, ProtoNetConfig
from metarl.agents.protonet import prototype_logits
from metarl.envs import FewShotEpisodes, LabelledData, load_tasks, preprocess_drawings, save_tasks
from metarl.envs.omniglot import omniglot_split

import metarl
from metarl.running.cli import main
from metarl.running.config import RunConfig
from metarl.running.trainer import Trainer


def test_omniglot_vinyals_split_sizes_and_rotations():
    train, test = omniglot_split("train"), omniglot_split("test")
    assert (train.num_classes, test.num_classes) == (4112, 1692)
    assert train.x.shape[1:] == (1, 28, 28) and train.x.dtype == torch.uint8 and train.min_examples() == 20
    assert not set(train.class_names) & set(test.class_names)
    # class i+1 is class i rotated by 90 degrees (split files list rot000, rot090, rot180, rot270 in turn)
    assert train.class_names[0].endswith("rot000") and train.class_names[1].endswith("rot090")
    base, turned = train.x[train.class_index[0]], train.x[train.class_index[1]]
    assert torch.equal(torch.rot90(base, 1, dims=(-2, -1)), turned)
    assert 0.03 < train.x.float().mean() / 255 < 0.2  # ink is the minority of pixels
    back, evaluation = omniglot_split("background"), omniglot_split("evaluation")
    assert (back.num_classes, evaluation.num_classes) == (964, 659)


def test_omniglot_training_episodes_never_use_test_classes():
    source = metarl.envs.make("Omniglot-v0", ways=20, shots=1, queries=5)
    test_names = set(source.splits["test"].class_names)
    train_names = source.splits["train"].class_names
    seen = {train_names[c] for t in source.sample_tasks(200, seed=1) for c in t["classes"]}
    assert len(seen) > 1000 and not seen & test_names
    assert all(t["split"] == "test" for t in source.test_tasks)


def test_missing_or_wrong_data_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        omniglot_split("train", data_dir=tmp_path)
    np.savez(tmp_path / "omniglot.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="sha256"):
        omniglot_split("train", data_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown Omniglot split 'mine'"):
        metarl.envs.make("Omniglot-v0", split="mine")


def test_episodes_are_seeded_and_support_query_disjoint():
    source = toy_episodes(ways=4, shots=3, queries=5)
    a, b = source.sample_tasks(20, seed=7), source.sample_tasks(20, seed=7)
    assert a == b and a != source.sample_tasks(20, seed=8)
    for task in a:
        support = {i for row in task["support"] for i in row}
        query = {i for row in task["query"] for i in row}
        assert len(support) == 12 and len(query) == 20 and not support & query
    batch, again = source.batch(a[:5]), source.batch(b[:5])
    assert torch.equal(batch.support_x, again.support_x) and torch.equal(batch.query_x, again.query_x)
    assert batch.support_x.shape == (5, 12, 1, 16, 16) and batch.query_x.shape == (5, 20, 1, 16, 16)
    assert batch.support_y[0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    # the labels follow the episode's classes: every support example of label k is an example of classes[k]
    data = source.splits["train"]
    for k, c in enumerate(a[0]["classes"]):
        assert set(a[0]["support"][k]) <= set(data.class_index[c].tolist())


def test_test_episodes_save_reload_and_validation(tmp_path):
    source = toy_episodes(num_test_tasks=30)
    path = tmp_path / "episodes.jsonl"
    save_tasks(source.test_tasks, path)
    reloaded = toy_episodes(num_test_tasks=30, test_episodes=str(path))
    assert reloaded.test_tasks == source.test_tasks
    save_tasks(toy_episodes(test_ways=2, test_shots=1, test_queries=3, num_test_tasks=7).test_tasks, path)
    assert toy_episodes(test_episodes=str(path)).describe()["test"] == \
        f"2-way 1-shot 3-query, 7 episodes of {path} from 8 classes"  # the file's protocol, not the config's
    task = source.test_tasks[0].to_dict()
    task["params"]["support"][0][0] = task["params"]["query"][1][0]  # an example of another class
    path.write_text(json.dumps(task) + "\n")
    with pytest.raises(ValueError, match="does not belong"):
        _ = reloaded.test_tasks
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_tasks(tmp_path / "missing.jsonl")


def test_episode_sizes_are_checked_against_the_data():
    with pytest.raises(ValueError, match="30-way"):
        toy_episodes(ways=30)
    with pytest.raises(ValueError, match="shots must be a positive integer"):
        toy_episodes(shots=0)


def test_labelled_data_from_an_image_folder(tmp_path):
    from PIL import Image

    for c in range(3):
        (tmp_path / f"class{c}").mkdir()
        for i in range(4):
            Image.fromarray(np.full((40, 30), 80 * c, np.uint8)).save(tmp_path / f"class{c}" / f"{i}.png")
    data = LabelledData.from_folder(tmp_path, image_size=20)
    assert data.x.shape == (12, 1, 20, 20) and data.class_names == ["class0", "class1", "class2"]
    assert int(data.x[data.class_index[2][0]].float().mean()) == 160
    source = FewShotEpisodes(train=data.subset([0, 1]), test=data.subset([2, 0]), ways=2, shots=1, queries=3,
                             test_queries=3)
    assert source.batch(source.sample_tasks(2, seed=0)).query_x.shape == (2, 6, 1, 20, 20)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        LabelledData.from_folder(tmp_path / "nowhere")


def test_drawings_from_a_folder_are_made_as_the_omniglot_loader_makes_its_images(tmp_path):
    from PIL import Image

    ink = np.random.default_rng(0).random((4, 105, 105)) < 0.2  # Omniglot's drawings: 105 x 105, True = ink
    for c in range(2):
        (tmp_path / f"glyph{c}").mkdir()
        for i in range(2):  # as Omniglot's PNG files: 1-bit, dark ink on a white background
            Image.fromarray(~ink[2 * c + i]).save(tmp_path / f"glyph{c}" / f"{i}.png")
    loader = (torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(ink[:, None]).float(), 28) * 255).round()
    made = preprocess_drawings(ink, ink="light")
    assert made.dtype == torch.uint8 and made.shape == (4, 1, 28, 28) and torch.equal(made, loader.to(torch.uint8))
    assert torch.equal(preprocess_drawings(~ink[:, None]), made)  # dark ink, with a channel axis
    assert torch.equal(preprocess_drawings((~ink).astype(np.uint8) * 255), made)
    assert torch.equal(LabelledData.from_folder(tmp_path, ink="dark").x, made)
    assert not torch.equal(LabelledData.from_folder(tmp_path).x, made)  # photographs: Lanczos, values kept
    with pytest.raises(ValueError, match="ink must be one of"):
        preprocess_drawings(ink, ink="black")
    with pytest.raises(ValueError, match=r"float images must hold values in \[0, 1\]"):
        preprocess_drawings(ink * 255.0)
    with pytest.raises(ValueError, match=r"grayscale, \[n, H, W\] or \[n, 1, H, W\]"):
        preprocess_drawings(np.zeros((2, 3, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="grayscale=True and an int image_size"):
        LabelledData.from_folder(tmp_path, ink="dark", grayscale=False)


def test_sinusoid_follows_its_formula_and_is_seeded():
    source = metarl.envs.make("Sinusoid-v0", shots=10, test_shots=5, test_queries=100)
    task = source.test_tasks[3]
    batch = source.batch([task])
    assert batch.support_x.shape == (1, 5, 1) and batch.query_x.shape == (1, 100, 1)
    x = torch.cat([batch.support_x, batch.query_x], 1).double()
    y = torch.cat([batch.support_y, batch.query_y], 1).double()
    assert torch.allclose(y, task["amplitude"] * torch.sin(x - task["phase"]), atol=1e-5)
    assert x.min() >= -5 and x.max() <= 5 and 0.1 <= task["amplitude"] <= 5 and 0 <= task["phase"] <= np.pi
    assert torch.equal(source.batch([task]).support_x, batch.support_x)
    assert source.batch(source.sample_tasks(3, seed=0)).support_x.shape == (3, 10, 1)


def test_prototype_logits_by_hand():
    support = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [0.0, 3.0]]])  # class 0: two points, class 1: one
    labels = torch.tensor([[0, 0, 1]])
    query = torch.tensor([[[1.0, 1.0]]])
    logits = prototype_logits(support, labels, query, ways=2)
    assert torch.allclose(logits, torch.tensor([[[-1.0, -5.0]]]))  # prototypes (1, 0) and (0, 3)
    cosine = prototype_logits(support, labels, query, ways=2, distance="cosine", scale=1.0)
    assert torch.allclose(cosine, torch.tensor([[[2 ** -0.5, 2 ** -0.5]]]))


def test_protonet_learns_the_toy_problem():
    torch.set_num_threads(1)
    source = toy_episodes(test_queries=4, num_test_tasks=60)
    agent = ProtoNet(source, ProtoNetConfig(channels=8, lr=1e-2), seed=0)
    losses = [agent.meta_step(source.sample_tasks(4, seed=i), seed=i)["loss"] for i in range(60)]
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    assert agent.adaptation_curve(source.test_tasks, 0, seed=0).mean() > 90.0
    with pytest.raises(ValueError, match="distance"):
        ProtoNetConfig(distance="manhattan")


def test_supervised_resume_reproduces_the_uninterrupted_run(tmp_path):
    torch.set_num_threads(1)
    source = toy_episodes()
    config = RunConfig(family="Toy", agent="protonet", iterations=6, checkpoint_every=3, evaluate=False)

    def trainer(run_dir):
        return Trainer(config, source, ProtoNet(source, ProtoNetConfig(channels=8, lr=1e-2), seed=0), run_dir)

    whole = trainer(tmp_path / "whole")
    whole.train(progress=False)
    cut = trainer(tmp_path / "cut")
    cut.config = RunConfig(family="Toy", agent="protonet", iterations=3, checkpoint_every=3, evaluate=False)
    cut.train(progress=False)
    resumed = trainer(tmp_path / "cut")
    resumed.train(resume=True, progress=False)
    for a, b in zip(whole.agent.model.state_dict().values(), resumed.agent.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    def logged(run):
        rows = list(csv.DictReader((tmp_path / run / "metrics.csv").open()))
        return [(r["iteration"], r["loss"], r["accuracy"]) for r in rows]

    assert len(logged("whole")) == 6 and logged("whole") == logged("cut")


def test_cli_trains_and_evaluates_omniglot_per_setting(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "experiments/protonet_omniglot_1shot.yaml", "iterations=2", "eval_tasks=20",
            "family_overrides.ways=5", "agent_config.channels=8", "--run-dir", str(run), "--no-progress"]
    assert main(args) == 0
    report = json.loads((run / "eval.json").read_text())
    assert report["metric"] == "accuracy" and report["num_tasks"] == 20 and 20 <= report["steps"][0]["mean_accuracy"] <= 100
    assert "mean_return" not in report["steps"][0] and len(report["per_task_accuracy"][0]) == 20
    assert main(["eval", str(run), "--tasks", "10", "family_overrides.test_ways=20", "--name", "eval_20way"]) == 0
    wide = json.loads((run / "eval_20way.json").read_text())
    assert wide["family_overrides"]["test_ways"] == 20 and "20-way 1-shot" in wide["x_label"]
    assert wide["num_tasks"] == 10
    assert main(["eval", str(run), "agent_config.lr=3"]) == 2
    assert "accepts only the overrides" in capsys.readouterr().err
