import json

import numpy as np
import pytest

from metarl import Task


def test_task_is_immutable_hashable_and_json_round_trips():
    a = Task("Fam-v0", {"goal": np.array([0.5, -0.25]), "k": 3, "name": "x"})
    b = Task("Fam-v0", {"name": "x", "k": np.int64(3), "goal": [0.5, -0.25]})
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a["goal"] == (0.5, -0.25) and isinstance(a["k"], int)
    with pytest.raises(AttributeError):
        a.family = "other"
    text = a.to_json()
    assert json.loads(text) == {"family": "Fam-v0", "params": {"goal": [0.5, -0.25], "k": 3, "name": "x"}}
    assert Task.from_json(text) == a
    arr = a.array("goal")
    arr[0] = 99.0  # a copy: the task is unchanged
    assert a["goal"][0] == 0.5


def test_nested_arrays_are_frozen_to_nested_tuples():
    m = np.arange(6.0).reshape(2, 3)
    t = Task("F", {"m": m})
    assert t["m"] == ((0.0, 1.0, 2.0), (3.0, 4.0, 5.0))
    np.testing.assert_array_equal(t.array("m"), m)


def test_bad_task_values_are_refused_with_the_value_named():
    with pytest.raises(TypeError, match="object"):
        Task("F", {"x": object()})
    with pytest.raises(KeyError, match="'missing'"):
        Task("F", {"x": 1})["missing"]
    with pytest.raises(ValueError, match="'family' and 'params'"):
        Task.from_dict({"family": "F"})
    with pytest.raises(TypeError, match="non-empty string"):
        Task("", {})
