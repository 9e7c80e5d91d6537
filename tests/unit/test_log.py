import logging
from datetime import datetime

from hubkeeper import log
from hubkeeper.config import Secret


def test_events_are_json_lines_with_level_timestamp_and_context(json_logs) -> None:
    log.get_logger("hubkeeper.test").info("hub up", hub="a", latency_seconds=0.012)
    (event,) = json_logs()
    assert event["event"] == "hub up"
    assert event["level"] == "info"
    assert event["logger"] == "hubkeeper.test"
    assert event["hub"] == "a" and event["latency_seconds"] == 0.012
    timestamp = datetime.fromisoformat(event["timestamp"])
    assert timestamp.utcoffset().total_seconds() == 0


def test_secrets_and_credentials_are_redacted(json_logs) -> None:
    log.get_logger("t").warning(
        "calling https://bob:hunter2@hub/api?token=tok-1 failed",
        token=Secret("tok-2"),
        nested={"auth": [Secret("tok-3"), "Authorization: token tok-4"]},
        obj=ValueError("token=tok-5"),
    )
    line = json_logs()[0]
    text = str(line)
    for secret in ("hunter2", "tok-1", "tok-2", "tok-3", "tok-4", "tok-5"):
        assert secret not in text
    assert line["token"] == "***"
    assert line["nested"]["auth"][0] == "***"


def test_exceptions_are_rendered_and_redacted(json_logs) -> None:
    try:
        raise RuntimeError("connect failed: Authorization: Bearer tok-6")
    except RuntimeError:
        log.get_logger("t").exception("probe failed")
    (event,) = json_logs()
    assert event["level"] == "error"
    assert "Traceback" in event["exception"] and "RuntimeError" in event["exception"]
    assert "tok-6" not in event["exception"]


def test_level_filters_events(json_logs) -> None:
    log.configure("warning")
    logger = log.get_logger("t")
    logger.info("hidden")
    logging.getLogger("t").info("hidden too")
    logger.warning("shown")
    assert [event["event"] for event in json_logs()] == ["shown"]


def test_stdlib_logging_goes_through_the_same_pipeline(json_logs) -> None:
    logging.getLogger("urllib3.test").debug("GET /hub/api?token=%s", "tok-7")
    (event,) = json_logs()
    assert event["logger"] == "urllib3.test"
    assert event["level"] == "debug"
    assert event["event"] == "GET /hub/api?token=***"


def test_configure_twice_does_not_duplicate_lines(json_logs) -> None:
    log.configure("debug")
    logging.getLogger("x").info("once")
    assert len(json_logs()) == 1
