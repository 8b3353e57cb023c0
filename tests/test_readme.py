"""The README's Python blocks run as written, and the custom-robot family they build is a proper family."""

import re
import warnings
from pathlib import Path

import numpy as np
from gymnasium.utils.env_checker import check_env as gym_check_env
from metarl.envs import registry
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import metarl

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run_and_the_crawler_family_works():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3
    saved = dict(registry._REGISTRY)
    try:
        namespace: dict = {}
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)
        assert namespace["frame"].shape == (480, 480, 3) and namespace["frame"].std() > 5
        assert namespace["truncated"]  # horizon=100 steps were taken
        family = metarl.envs.make("CrawlerGoal-v0", horizon=50)
        train, test = family.train_tasks[0], family.test_tasks[0]
        env = family.make_env(train)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*infinity.*")
            sb3_check_env(env)
            gym_check_env(env, skip_render_check=True)
        u = env.unwrapped
        masses = u.model.body_mass.copy()
        u.set_task(test)
        np.testing.assert_allclose(u.model.body_mass, u.scaler.original["body_mass"] * test.array("body_mass"))
        assert not np.allclose(masses, u.model.body_mass)
        env.reset(seed=0)
        _, reward, *_ = env.step(np.zeros(8))
        torso = u.data.body("torso").xpos[:2]
        assert reward == np.float64(-np.linalg.norm(torso - test.array("goal")))
    finally:
        registry._REGISTRY.clear()
        registry._REGISTRY.update(saved)


DOCS = [README, README.parent / "experiments" / "README.md", *sorted((README.parent / "docs").glob("*.md")),
        *sorted((README.parent / "experiments" / "results").glob("*/README.md"))]
ENTRY_POINT_GROUPS = {"metarl.task_families"}


def _code_spans(path: Path) -> list[str]:
    """The inline code and the fenced blocks of a markdown file."""
    text = path.read_text()
    return re.findall(r"```[a-z]*\n(.*?)```", text, re.S) + re.findall(r"`([^`\n]+)`", text)


def test_the_docs_name_only_files_that_exist():
    """Every repository path in the code of the READMEs (the project's, experiments/ and its results') and docs/
    exists; a path that goes on with a placeholder (``<name>``, ``{a,b}``, ``*``) or a gymnasium id
    (``metarl/X-v0``) is a pattern."""
    missing = []
    for doc in DOCS:
        for span in _code_spans(doc):
            pattern = r"(?<![\w/.])((?:metarl|envs|agents|experiments|benchmarks|tests|docs)/[\w./-]+)([<{*]?)"
            for path, placeholder in re.findall(pattern, span):
                path = path.rstrip(".")
                if placeholder or re.search(r"-v\d+$", path) or path.endswith(("_", "-seed")):
                    continue
                if not (README.parent / path).exists():
                    missing.append(f"{doc.name}: {path}")
    assert not missing, missing


def test_the_docs_name_only_python_names_that_exist():
    """Every dotted ``metarl.*`` name in a code span of the docs imports or is an attribute of what imports."""
    import importlib

    missing = []
    for doc in DOCS:
        for span in _code_spans(doc):
            for name in re.findall(r"\bmetarl(?:\.[A-Za-z_]\w*)+", span):
                if name in ENTRY_POINT_GROUPS:
                    continue
                parts = name.split(".")
                for cut in range(len(parts), 0, -1):
                    try:
                        obj = importlib.import_module(".".join(parts[:cut]))
                        break
                    except ImportError:
                        continue
                for attribute in parts[cut:]:
                    if not hasattr(obj, attribute):
                        missing.append(f"{doc.name}: {name}")
                        break
                    obj = getattr(obj, attribute)
    assert not missing, missing
