"""Credentials for Kibana and Elasticsearch, read from files (never from the command line)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a session is made: the CLI builds its parser for every
    import requests  # command (ship-logs too), and requests takes a few hundredths of a second


class CredentialsError(Exception):
    """A credentials file cannot be read, or a user name came without its password."""


@dataclass(frozen=True)
class Credentials:
    """An API key (``Authorization: ApiKey``, for Kibana and Elasticsearch alike) or a user
    and password, both read from files."""

    api_key: str | None = None
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_files(
        cls, api_key_file: Path | None, username: str | None, password_file: Path | None
    ) -> Credentials:
        def read(path: Path | None) -> str | None:
            if path is None:
                return None
            try:
                return path.read_text(encoding="utf-8").strip()
            except OSError as error:
                raise CredentialsError(f"cannot read {path}: {error.strerror}") from None

        if username is not None and password_file is None:
            raise CredentialsError("--username needs --password-file")
        return cls(read(api_key_file), username, read(password_file))

    def apply(self, session: requests.Session) -> None:
        if self.api_key:
            session.headers["Authorization"] = f"ApiKey {self.api_key}"
        elif self.username is not None and self.password is not None:
            session.auth = (self.username, self.password)

    def session(self) -> requests.Session:
        import requests

        session = requests.Session()
        self.apply(session)
        return session


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-key-file", type=Path, help="file holding an encoded API key")
    parser.add_argument("--username", help="basic auth user (with --password-file)")
    parser.add_argument("--password-file", type=Path, help="file holding the password")


def from_arguments(args: argparse.Namespace) -> Credentials:
    return Credentials.from_files(args.api_key_file, args.username, args.password_file)
