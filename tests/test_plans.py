import json

import numpy as np
import pytest

from earlybird.errors import EarlyBirdError
from earlybird.plans import load_plan, make_plan, save_plan
from earlybird.records import Records


def records_with(msa=True, mlp=True):
    rng = np.random.default_rng(0)
    steps = np.array([0, 10, 20, 30])
    heads = rng.normal(size=(4, 3, 6))
    # step 20, hand-made: layer 0 keeps its 3 largest |c|, layer 1 ties -> lowest index pruned first
    heads[2, 0] = [0.9, -0.1, 0.5, 0.2, -0.8, 0.3]
    heads[2, 1] = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    heads[2, 2] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    neurons = rng.normal(size=(4, 3, 10))
    return Records.from_arrays(msa=heads if msa else None, mlp=neurons if mlp else None, steps=steps,
                               meta={"model_type": "vit"}, path="/runs/x")


def test_plan_lists_pruned_indices_per_layer():
    plan = make_plan(records_with(), 20, self_ratio=0.5, inter_ratio=0.3)
    assert plan["pruned_heads"] == {"0": [1, 3, 5], "1": [0, 1, 2], "2": [0, 1, 2]}
    assert all(len(v) == 3 for v in plan["pruned_intermediate"].values())
    assert plan["shape"] == {"layers": 3, "heads": 6, "intermediate": 10}
    provenance = plan["provenance"]
    assert provenance["step"] == 20 and provenance["self_ratio"] == 0.5 and provenance["inter_ratio"] == 0.3
    assert provenance["self_scope"] == "layerwise" and provenance["random_seed"] is None
    assert provenance["model"]["model_type"] == "vit" and provenance["records"].endswith("x")


def test_global_scope_and_zero_ratio():
    plan = make_plan(records_with(), 20, self_ratio=0.5, inter_ratio=0.0, self_scope="global")
    # 9 smallest of 18 overall, each layer keeping its largest
    assert sum(len(v) for v in plan["pruned_heads"].values()) == 9
    assert all(len(v) < 6 for v in plan["pruned_heads"].values())
    assert plan["pruned_intermediate"] == {"0": [], "1": [], "2": []}


def test_step_must_be_recorded_exactly():
    with pytest.raises(EarlyBirdError) as info:
        make_plan(records_with(), 15, 0.5, 0.3)
    message = str(info.value)
    assert "15" in message and "10, 20" in message and "0..30" in message


def test_random_baseline_keeps_per_layer_counts():
    records = records_with()
    real = make_plan(records, 10, 0.5, 0.3, self_scope="global")
    baseline = make_plan(records, 10, 0.5, 0.3, self_scope="global", random_seed=7)
    again = make_plan(records, 10, 0.5, 0.3, self_scope="global", random_seed=7)
    other = make_plan(records, 10, 0.5, 0.3, self_scope="global", random_seed=8)
    for key in ("pruned_heads", "pruned_intermediate"):
        assert {k: len(v) for k, v in baseline[key].items()} == {k: len(v) for k, v in real[key].items()}
    assert baseline == again
    assert baseline["pruned_intermediate"] != other["pruned_intermediate"]
    assert baseline["provenance"]["random_seed"] == 7


def test_absent_block():
    records = records_with(mlp=False)
    plan = make_plan(records, 0, 0.5, 0.0)
    assert plan["pruned_intermediate"] == {} and plan["shape"]["intermediate"] is None
    with pytest.raises(EarlyBirdError, match="no mlp"):
        make_plan(records, 0, 0.5, 0.2)


def test_bad_ratio():
    with pytest.raises(EarlyBirdError):
        make_plan(records_with(), 0, 1.0, 0.2)


def test_save_and_load_round_trip(tmp_path):
    plan = make_plan(records_with(), 30, 0.3, 0.5)
    path = tmp_path / "plan.json"
    save_plan(plan, path)
    assert load_plan(path) == json.loads(json.dumps(plan))
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]  # no temporary left behind


def valid_plan():
    return {"pruned_heads": {"0": [1], "1": []}, "pruned_intermediate": {"0": [0, 2]},
            "shape": {"layers": 2, "heads": 3, "intermediate": 4}, "provenance": {}}


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda p: p["pruned_heads"].update({"2": [0]}), "layer key"),
        (lambda p: p["pruned_heads"].update({"a": [0]}), "layer key"),
        (lambda p: p["pruned_heads"].update({"1": [3]}), "outside"),
        (lambda p: p["pruned_heads"].update({"1": [0, 0]}), "twice"),
        (lambda p: p["pruned_heads"].update({"1": [0, 1, 2]}), "at least one"),
        (lambda p: p["pruned_heads"].update({"1": [1.0]}), "integers"),
        (lambda p: p["pruned_heads"].update({"1": [True]}), "integers"),
        (lambda p: p.pop("shape"), "shape"),
        (lambda p: p.pop("pruned_intermediate"), "pruned_intermediate"),
    ],
)
def test_load_plan_rejects_bad_plans(tmp_path, mutate, match):
    plan = valid_plan()
    mutate(plan)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    with pytest.raises(EarlyBirdError, match=match):
        load_plan(path)


def test_load_plan_rejects_unreadable_files(tmp_path):
    with pytest.raises(EarlyBirdError, match="missing"):
        load_plan(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(EarlyBirdError, match="JSON"):
        load_plan(tmp_path / "bad.json")
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(valid_plan()))
    assert load_plan(path)["pruned_heads"]["0"] == [1]
