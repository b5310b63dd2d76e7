"""A signed manifest is still checked for every value the edge divides by or trusts (scaling, quantization, window
shape): a zero std passed verification and made every forecast NaN on real data (issue 13)."""

from __future__ import annotations

import copy
import math

import pytest

from shared import manifest as mf
from shared.agent_client import AgentClient, ApiError
from shared.window import WindowSpec
from tests.helpers.models import TOKEN


def valid() -> dict:
    spec = WindowSpec("next", 32, 1, mean=0.43, std=0.17, residual="value")
    return {"schema_version": 1, "kind": "cnn", "horizon_steps": 1, "name": "cnn-1", "version": "20260101T000000Z",
            "window": spec.to_dict(),
            "input": {"shape": [1, 32, 8], "dtype": "int8", "scale": 0.028, "zero_point": -82},
            "output": {"shape": [1, 1], "dtype": "int8", "scale": 0.0028, "zero_point": -42, "unit": "kWh"},
            "model": {"file": "model.tflite", "sha256": "ab" * 32, "bytes": 25408}}


def valid_day() -> dict:
    spec = WindowSpec("day", 96, 96, mean=0.39, std=0.16, residual="median7")
    doc = valid() | {"name": "cnn-96", "horizon_steps": 96, "window": spec.to_dict()}
    doc["input"] = {**doc["input"], "shape": [1, 96, spec.n_features]}
    doc["output"] = {**doc["output"], "shape": [1, 96]}
    return doc


def _set(path: str, value):
    def change(doc):
        *parents, last = path.split(".")
        d = doc
        for p in parents:
            d = d[p]
        if value is DELETE:
            del d[last]
        else:
            d[last] = value
    return change


DELETE = object()
NAN, INF = math.nan, math.inf


def _both_std(value):
    def change(doc):
        doc["window"]["std"] = value
        doc["window"]["scaling"]["std"] = value
    return change


def _drop_feature(name):
    def change(doc):
        doc["window"]["features"].remove(name)
        doc["input"]["shape"][2] -= 1
    return change


CASES = {
    "std zero": (_both_std(0.0), "window.std"),
    "std negative": (_both_std(-0.1), "window.std"),
    "std NaN": (_both_std(NAN), "window.std"),
    "std infinite": (_both_std(INF), "window.std"),
    "std a string": (_both_std("0.2"), "window.std"),
    "mean NaN": (lambda d: [d["window"].update(mean=NAN), d["window"]["scaling"].update(mean=NAN)], "window.mean"),
    "scaling std zero": (_set("window.scaling.std", 0.0), "window.scaling.std"),
    "scaling differs": (_set("window.scaling.std", 0.5), "window.scaling"),
    "scaling not an object": (_set("window.scaling", [1, 2]), "window.scaling"),
    "steps a string": (_set("window.steps", "32"), "window.steps"),
    "steps zero": (_set("window.steps", 0), "window.steps"),
    "steps a bool": (_set("window.steps", True), "window.steps"),
    "max_missing above 1": (_set("window.max_missing", 1.5), "window.max_missing"),
    "max_missing NaN": (_set("window.max_missing", NAN), "window.max_missing"),
    "step_seconds": (_set("window.step_seconds", 60), "window.step_seconds"),
    "features not strings": (_set("window.features", [1, 2]), "window.features"),
    "duplicate feature": (lambda d: d["window"]["features"].__setitem__(1, "value"), "window.features"),
    "no fill feature": (_drop_feature("next_median7"), "next_median7"),
    "residual not a string": (_set("window.residual", 3), "window.residual"),
    "input scale zero": (_set("input.scale", 0.0), "input.scale"),
    "input scale NaN": (_set("input.scale", NAN), "input.scale"),
    "output scale negative": (_set("output.scale", -0.01), "output.scale"),
    "output scale infinite": (_set("output.scale", INF), "output.scale"),
    "input zero point out of int8": (_set("input.zero_point", 200), "input.zero_point"),
    "output zero point out of int8": (_set("output.zero_point", -129), "output.zero_point"),
    "model bytes zero": (_set("model.bytes", 0), "model.bytes"),
}


def test_the_valid_manifests_pass():
    mf.validate(valid())
    mf.validate(valid_day())


@pytest.mark.parametrize("case", list(CASES))
def test_bad_values_are_rejected_naming_the_key(case):
    change, key = CASES[case]
    doc = copy.deepcopy(valid())
    change(doc)
    with pytest.raises(mf.ManifestError) as err:
        mf.validate(doc)
    assert key in str(err.value), str(err.value)


def test_a_day_window_shorter_than_its_horizon_is_rejected():
    doc = valid_day()
    doc["window"]["steps"] = 48
    doc["input"]["shape"][1] = 48
    with pytest.raises(mf.ManifestError, match="window.steps"):
        mf.validate(doc)


def test_a_day_window_without_its_fill_feature_is_rejected():
    doc = valid_day()
    _drop_feature("median7")(doc)
    doc["window"]["residual"] = "pool7d8_q50"
    with pytest.raises(mf.ManifestError, match="median7"):
        mf.validate(doc)


def test_a_signed_bundle_with_zero_std_is_refused_by_the_agent(agent_with_api, signed):
    client = AgentClient(agent_with_api.components["api"].url, TOKEN)
    for change in (_both_std(0.0), _both_std(NAN)):
        bundle = signed("cnn-1", "20260101T000000Z", mutate=change, tag=str(id(change)))
        with pytest.raises(ApiError) as err:
            client.push(bundle)
        assert err.value.code == "bad_manifest" and "window.std" in err.value.message, err.value
    assert client.status()["models"]["cnn-1"]["active"] is None
