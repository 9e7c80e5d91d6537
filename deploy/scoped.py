"""The context shape of the test machinery that builds things up (a test network, a swarm,
a Docker engine of its own): what ``up()`` built is taken down by ``down()``, also when
``up()`` failed half-way."""

from __future__ import annotations

from typing import Self


class Scoped:
    def up(self) -> None:
        raise NotImplementedError

    def down(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.down()
