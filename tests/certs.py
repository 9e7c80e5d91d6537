"""Test certificates made with the machine's ``openssl`` (no network): a CA, a server
certificate for 127.0.0.1 and a client certificate it signed, and a client certificate from
another CA that nobody trusts."""

import subprocess
from dataclasses import dataclass
from pathlib import Path

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def openssl(*argv: str) -> None:
    subprocess.run(["openssl", *argv], check=True, capture_output=True, timeout=60)


def authority(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    openssl("req", "-x509", *EC, "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    return cert, key


def issue(folder: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    cert, key, request = (folder / f"{name}{suffix}" for suffix in (".pem", ".key", ".csr"))
    openssl("req", *EC, "-keyout", str(key), "-out", str(request), "-subj", f"/CN={name}")
    (folder / f"{name}.ext").write_text(extensions)
    openssl("x509", "-req", "-in", str(request), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
            "-CAcreateserial", "-out", str(cert), "-days", "2",
            "-extfile", str(folder / f"{name}.ext"))  # fmt: skip
    return cert, key


@dataclass
class Pki:
    ca: Path
    server: tuple[Path, Path]  # certificate, key
    client: tuple[Path, Path]
    stranger: tuple[Path, Path]  # signed by a CA the endpoint does not trust


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    ca, other = authority(folder, "test-ca"), authority(folder, "other-ca")
    leaf = "basicConstraints=CA:FALSE\nextendedKeyUsage="
    return Pki(
        ca=ca[0],
        server=issue(folder, "server", ca, f"{leaf}serverAuth\nsubjectAltName=IP:127.0.0.1\n"),
        client=issue(folder, "prometheus", ca, f"{leaf}clientAuth\n"),
        stranger=issue(folder, "stranger", other, f"{leaf}clientAuth\n"),
    )
