"""The spawners' poll rule: an engine that does not answer is no news of the server."""

import docker.errors
import pytest
import requests

from hubkeeper.hub.spawner import engine_unanswered


def wrapped(error: BaseException) -> docker.errors.DockerException:
    """What docker-py raises when its first call (the API version) gets no answer."""
    try:
        raise docker.errors.DockerException(f"Error while fetching server API version: {error}")
    except docker.errors.DockerException as outer:
        outer.__cause__ = error
        return outer


@pytest.mark.parametrize(
    "error",
    [
        requests.ConnectionError("('Connection aborted.', FileNotFoundError(2, ...))"),
        requests.exceptions.ConnectTimeout("connect timed out"),
        requests.exceptions.ReadTimeout("read timed out"),
        wrapped(requests.ConnectionError("connection refused")),
    ],
    ids=["socket_gone", "connect_timeout", "read_timeout", "no_api_version"],
)
def test_an_engine_that_does_not_answer_is_no_news_of_the_server(error: BaseException) -> None:
    assert engine_unanswered(error)


def response(status: int) -> requests.Response:
    answer = requests.Response()
    answer.status_code = status
    return answer


@pytest.mark.parametrize(
    "error",
    [
        docker.errors.NotFound("No such container", response=response(404)),
        docker.errors.APIError("server error", response=response(500)),
        docker.errors.DockerException("Invalid response from docker daemon"),
        ValueError("a bug"),
        wrapped(ValueError("not a network failure")),
    ],
    ids=["not_found", "server_error", "bad_answer", "bug", "wrapped_bug"],
)
def test_an_answer_or_a_bug_is_not_taken_for_an_engine_that_is_down(
    error: BaseException,
) -> None:
    assert not engine_unanswered(error)
