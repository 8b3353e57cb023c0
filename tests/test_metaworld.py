"""Meta-World families: the benchmark's own splits, and the upstream ML1 split defect kept out."""

import pickle

import gymnasium as gym
import metaworld
import numpy as np
import pytest

import metarl
from metarl import Task


def test_ml1_train_tasks_are_not_the_test_tasks():
    fam = metarl.envs.make("ML1-v0", env_name="push-v3")
    train = {t["rand_vec"] for t in fam.train_tasks}
    test = {t["rand_vec"] for t in fam.test_tasks}
    assert len(train) == len(test) == 50 and not train & test


def test_ml1_splits_are_the_classic_api_train_and_test_goals():
    fam = metarl.envs.make("ML1-v0", env_name="reach-v3", seed=3)
    bench = metaworld.ML1("reach-v3", seed=3)
    for ours, theirs in ((fam.train_tasks, bench.train_tasks), (fam.test_tasks, bench.test_tasks)):
        np.testing.assert_array_equal([t["rand_vec"] for t in ours], [pickle.loads(t.data)["rand_vec"] for t in theirs])


def test_the_ml1_train_vector_id_builds_the_test_goals_which_our_train_split_never_holds():
    """The upstream defect the family works around (metaworld 3.1.1; PR #573): ``Meta-World/ML1-train`` binds its
    split late and builds the test goals. If this starts failing, upstream fixed it."""
    vec = gym.make_vec("Meta-World/ML1-train", env_name="reach-v3", seed=0, meta_batch_size=1)
    built = {tuple(pickle.loads(t.data)["rand_vec"]) for t in vec.get_attr("tasks")[0]}
    vec.close()
    fam = metarl.envs.make("ML1-v0", env_name="reach-v3", seed=0)
    assert built == {t["rand_vec"] for t in fam.test_tasks}
    assert not built & {t["rand_vec"] for t in fam.train_tasks}


def test_task_list_cache_is_written_whole_and_an_unreadable_one_is_rebuilt(tmp_path, monkeypatch):
    from metarl.envs import meta_world

    monkeypatch.setenv("METARL_CACHE_DIR", str(tmp_path))
    meta_world.benchmark_tasks.cache_clear()
    try:
        built = meta_world.benchmark_tasks("ML1", "reach-v3", 5)
        (cached,) = tmp_path.iterdir()  # one file, no temporary left beside it
        assert cached.name.endswith("ML1-reach-v3-seed5.json")
        cached.write_text('{"train": [["reach-v3", [0.1')  # what a write cut short by a kill would leave
        meta_world.benchmark_tasks.cache_clear()
        assert meta_world.benchmark_tasks("ML1", "reach-v3", 5) == built
        assert [p.name for p in tmp_path.iterdir()] == [cached.name]
        meta_world.benchmark_tasks.cache_clear()
        assert meta_world.benchmark_tasks("ML1", "reach-v3", 5) == built  # read back from the rebuilt file
    finally:
        meta_world.benchmark_tasks.cache_clear()


def test_ml10_classes_and_set_task_switches_class_and_goal():
    fam = metarl.envs.make("ML10-v0")
    assert {t["env_name"] for t in fam.train_tasks} == set(metaworld.env_dict.ML10_V3["train"])
    assert {t["env_name"] for t in fam.test_tasks} == {
        "drawer-open-v3", "door-close-v3", "shelf-place-v3", "sweep-into-v3", "lever-pull-v3",
    }
    benchmark = metaworld.ML10(seed=0)  # the same tasks, the classes taking turns: any first N cover them evenly
    for split, classes in (("train", 10), ("test", 5)):
        ours = [(t["env_name"], t["rand_vec"]) for t in getattr(fam, f"{split}_tasks")]
        theirs = [(t.env_name, tuple(pickle.loads(t.data)["rand_vec"])) for t in getattr(benchmark, f"{split}_tasks")]
        assert len(ours) == len(theirs) == 50 * classes and set(ours) == set(theirs)
        assert ours[:classes] == [next(t for t in theirs if t[0] == name) for name, _ in ours[:classes]]
        assert len({name for name, _ in ours[:classes]}) == classes
        assert len({name for name, _ in ours[classes: 2 * classes]}) == classes
    assert {t["env_name"] for t in metarl.envs.make("ML10-v0", num_test_tasks=10).test_tasks} == set(
        metaworld.env_dict.ML10_V3["test"])
    env = fam.make_env(fam.train_tasks[0])
    obs0, _ = env.reset(seed=0)
    task = fam.test_tasks[60]
    env.unwrapped.set_task(task)
    obs1, _ = env.reset(seed=0)
    assert type(env.unwrapped.env).__name__ != type(fam.make_env(fam.train_tasks[0]).unwrapped.env).__name__
    np.testing.assert_array_equal(env.unwrapped.env._last_rand_vec, task.array("rand_vec"))
    assert not np.allclose(obs0, obs1)
    _, _, _, _, info = env.step(np.zeros(4, dtype=np.float32))
    assert "success" in info


def test_set_task_changes_the_goal_and_so_the_reward():
    fam = metarl.envs.make("ML1-v0")
    env = fam.make_env(fam.train_tasks[0])
    rewards = []
    for task in fam.train_tasks[:2]:
        env.unwrapped.set_task(task)
        env.reset(seed=0)
        rewards.append(env.step(np.zeros(4, dtype=np.float32))[1])
    assert rewards[0] != rewards[1]


def test_ml_horizon_and_names_are_checked():
    with pytest.raises(ValueError, match="'reach-v9'.*reach-v3"):
        metarl.envs.make("ML1-v0", env_name="reach-v9")
    with pytest.raises(ValueError, match="at most 500"):
        metarl.envs.make("ML1-v0", horizon=501)
    fam = metarl.envs.make("ML1-v0", horizon=3, num_train_tasks=5)
    assert len(fam.train_tasks) == 5 and len(fam.test_tasks) == 50
    env = fam.make_env(fam.train_tasks[0])
    env.reset(seed=0)
    assert [env.step(np.zeros(4, dtype=np.float32))[3] for _ in range(3)] == [False, False, True]
    with pytest.raises(ValueError, match="not a ML1-v0 task"):
        env.unwrapped.set_task(Task("ML1-v0", {"env_name": "push-v3", "rand_vec": (0.0,) * 6}))
