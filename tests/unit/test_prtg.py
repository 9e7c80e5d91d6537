"""PRTG payloads and the strict checker of PRTG's HTTP Data Advanced format."""

import json

import pytest

from hubkeeper import prtg
from hubkeeper.prtg import Limits, channel


def test_channel_float_and_integer_forms() -> None:
    assert channel("Count", 3) == {"channel": "Count", "unit": "Count", "value": 3}
    cpu = channel("CPU", 12.3456, "CPU")
    assert cpu == {
        "channel": "CPU",
        "unit": "CPU",
        "value": 12.35,
        "float": 1,
        "decimalmode": "All",
    }
    memory = channel(
        "Memory",
        2**20,
        "BytesMemory",
        volume_size="MegaByte",
        limits=Limits(max_warning=80, max_error=95, error_msg="full"),
    )
    assert memory["limitmode"] == 1
    assert (memory["limitmaxwarning"], memory["limitmaxerror"]) == (80, 95)
    assert "limitminerror" not in memory
    assert channel("NaN", float("nan"))["value"] == 0.0  # JSON has no NaN


def test_sensor_and_error_payloads_pass_the_checker() -> None:
    payload = prtg.sensor([channel("A", 1), channel("B", 2.5, "Percent")], "all # good\n")
    assert prtg.check(payload) == []
    assert payload["prtg"]["text"] == "all no. good "
    error = prtg.error("Docker engine unreachable")
    assert error == {"prtg": {"error": 1, "text": "Docker engine unreachable"}}
    assert prtg.check(error) == []
    status, content_type, body = prtg.response(error)
    assert status == 200 and content_type.startswith("application/json")
    assert json.loads(body) == error


def test_sensor_refuses_too_many_or_repeated_channels() -> None:
    with pytest.raises(ValueError, match="at most 50"):
        prtg.sensor([channel(f"c{i}", i) for i in range(51)], "")
    with pytest.raises(ValueError, match="repeat"):
        prtg.sensor([channel("a", 1), channel("a", 2)], "")
    assert prtg.check(prtg.sensor([channel(f"c{i}", i) for i in range(50)], "")) == []


def test_text_is_cut_to_2000_characters() -> None:
    text = prtg.sensor([channel("a", 1)], "x" * 5000)["prtg"]["text"]
    assert len(text) == 2000 and text.endswith("...")


def result(**overrides: object) -> dict:
    item = {"channel": "a", "value": 1, "unit": "Count", **overrides}
    return {"prtg": {"result": [item], "text": "t"}}


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"prtg": {"result": []}}, "non-empty list"),
        ({"other": 1}, 'exactly one key, "prtg"'),
        ({"prtg": {"result": [{"channel": "a", "value": 1}], "txt": "x"}}, "prtg.txt: unknown"),
        ({"prtg": {"result": [{"value": 1}]}}, "non-empty name"),
        (result(unit="Bytes"), "unit: got 'Bytes'"),
        (result(value=1.5), "not an integer"),
        (result(value="many"), "expected a number"),
        (result(value=True), "expected a number"),
        (result(Value=1), "Value: unknown key"),
        (result(volumesize="Huge"), "volumesize"),
        (result(mode="Delta"), "mode"),
        (result(float=2, value=1.5), "float: got 2"),
        (result(limitmaxerror=5), "without limitmode"),
        (result(limitmode=1, limitmaxerror="x"), "limitmaxerror: got 'x'"),
        (result(customunit="req"), "only used with unit Custom"),
        ({"prtg": {"result": [{"channel": "a", "value": 1}] * 2}}, "repeats"),
        ({"prtg": {"result": [{"channel": f"c{i}", "value": i} for i in range(51)]}}, "51"),
        ({"prtg": {"result": [{"channel": "a", "value": 1}], "text": "a#b"}}, "'#'"),
        ({"prtg": {"result": [{"channel": "a", "value": 1}], "text": "x" * 2001}}, "2001"),
        ({"prtg": {"error": 1}}, "needs a text"),
        ({"prtg": {"error": "1", "text": "x"}}, "error: got '1'"),
        ({"prtg": {"error": 1, "text": "x", "result": []}}, "carries no result"),
    ],
)
def test_checker_names_each_problem(payload: dict, problem: str) -> None:
    problems = prtg.check(payload)
    assert any(problem in line for line in problems), problems


def test_checker_accepts_documented_fields() -> None:
    payload = result(
        value="12.5",
        float=1,
        unit="Custom",
        customunit="req/s",
        mode="Difference",
        speedsize="KiloByte",
        speedtime="Minute",
        decimalmode="Auto",
        showchart=0,
        showtable=1,
        warning=0,
        limitmode=1,
        limitminwarning=1,
        limitminerror=0,
        limitwarningmsg="low",
        valuelookup="prtg.standardlookups.yesno.stateyesok",
        notifychanged=1,
    )
    assert prtg.check(payload) == []
