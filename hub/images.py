"""Build the service's images offline (user servers, hubkeeper), cached by recipe hash.

No registry is reachable: the base image is a debootstrap root file system imported into
Docker, and Python packages are wheels downloaded on the host and copied in.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

RECIPES = Path(__file__).parent / "image"
RECIPE_LABEL = "org.hubkeeper.recipe"
BASE_IMAGE = "hubkeeper/base:bookworm"
SINGLEUSER_IMAGE = "hubkeeper/singleuser:latest"
ALT_IMAGE = "hubkeeper/singleuser-alt:latest"
BASE_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates"
WHEEL_PLATFORMS = (
    "manylinux2014_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_34_x86_64",
    "any",
)
BOOKWORM_PYTHON = "3.11.2"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ImageRecipe:
    name: str
    dockerfile: str
    needs_wheels: bool


USER_IMAGES = (
    ImageRecipe(SINGLEUSER_IMAGE, "singleuser.Dockerfile", needs_wheels=True),
    ImageRecipe(ALT_IMAGE, "alt.Dockerfile", needs_wheels=False),
)


def debian_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt uses (never written into the repo)."""
    candidates = sorted(sources_dir.glob("sources.list.d/*.sources"))
    candidates.append(sources_dir / "sources.list")
    for path in candidates:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in re.finditer(
            r"(?:URIs:\s*|^deb\s+(?:\[[^]]*\]\s+)?)(\S+/debian)/?\s", text, re.M
        ):
            return match.group(1)
    raise RuntimeError(f"no Debian mirror found in {sources_dir}/sources.list(.d)")


def recipe_hash(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _current(client: docker.DockerClient, name: str, wanted: str) -> bool:
    try:
        image = client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return (image.labels or {}).get(RECIPE_LABEL) == wanted


def ensure_base(client: docker.DockerClient, progress: Progress) -> str:
    wanted = recipe_hash("debootstrap", "bookworm", "minbase", BASE_PACKAGES)
    if _current(client, BASE_IMAGE, wanted):
        return BASE_IMAGE
    progress(f"building {BASE_IMAGE} with debootstrap (about a minute)")
    with tempfile.TemporaryDirectory(prefix="hubkeeper-rootfs-") as tmp:
        rootfs, tarball = Path(tmp) / "rootfs", Path(tmp) / "rootfs.tar"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={BASE_PACKAGES}",
                "bookworm",
                str(rootfs),
                debian_mirror(),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
        repository, tag = BASE_IMAGE.split(":")
        client.api.import_image_from_file(
            str(tarball), repository=repository, tag=tag, changes=[f"LABEL {RECIPE_LABEL}={wanted}"]
        )
    return BASE_IMAGE


def download_wheels(target: Path, requirements: list[str]) -> None:
    platforms = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "-d",
            str(target),
            "--python-version",
            BOOKWORM_PYTHON,
            "--only-binary=:all:",
            *platforms,
            *requirements,
        ],
        check=True,
    )


def ensure_user_images(client: docker.DockerClient, progress: Progress) -> list[str]:
    """Build the single-user images whose recipe (or parent) changed; return their names."""
    parent_hash = client.images.get(BASE_IMAGE).id
    jupyterhub_version = importlib.metadata.version("jupyterhub")
    requirements = [f"jupyterhub=={jupyterhub_version}", "jupyter_server"]
    for recipe in USER_IMAGES:
        dockerfile = (RECIPES / recipe.dockerfile).read_text(encoding="utf-8")
        wanted = recipe_hash(dockerfile, parent_hash, *requirements)
        if not _current(client, recipe.name, wanted):
            progress(f"building {recipe.name}")
            with tempfile.TemporaryDirectory(prefix="hubkeeper-image-") as tmp:
                context = Path(tmp)
                shutil.copy(RECIPES / recipe.dockerfile, context / "Dockerfile")
                if recipe.needs_wheels:
                    download_wheels(context / "wheels", requirements)
                client.images.build(
                    path=str(context),
                    tag=recipe.name,
                    labels={RECIPE_LABEL: wanted},
                    rm=True,
                    forcerm=True,
                    network_mode="host",
                )
        parent_hash = client.images.get(recipe.name).id
    return [recipe.name for recipe in USER_IMAGES]


def ensure_images(client: docker.DockerClient, progress: Progress = print) -> list[str]:
    ensure_base(client, progress)
    return ensure_user_images(client, progress)


HUBKEEPER_IMAGE = "hubkeeper/hubkeeper:latest"
PROJECT = Path(__file__).resolve().parent.parent
PROJECT_SOURCES = (
    "pyproject.toml",
    "hubkeeper",
    "watchers",
    "shippers",
    "dashboards",
    "alerts",
    "hub",
    "deploy",
)


def source_hash() -> str:
    """A hash of everything that goes into the hubkeeper wheel."""
    parts = []
    for name in PROJECT_SOURCES:
        root = PROJECT / name
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            if "__pycache__" not in path.parts:
                parts += [str(path.relative_to(PROJECT)), path.read_bytes().hex()]
    return recipe_hash(*parts)


def ensure_hubkeeper_image(client: docker.DockerClient, progress: Progress = print) -> str:
    """hubkeeper's own image: the project's wheel and its dependencies on the base image."""
    ensure_base(client, progress)
    dockerfile = PROJECT / "deploy" / "images" / "hubkeeper.Dockerfile"
    wanted = recipe_hash(
        dockerfile.read_text(encoding="utf-8"), client.images.get(BASE_IMAGE).id, source_hash()
    )
    if _current(client, HUBKEEPER_IMAGE, wanted):
        return HUBKEEPER_IMAGE
    progress(f"building {HUBKEEPER_IMAGE}")
    with tempfile.TemporaryDirectory(prefix="hubkeeper-image-") as tmp:
        context = Path(tmp)
        shutil.copy(dockerfile, context / "Dockerfile")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "-w",
                str(context / "wheels"),
                str(PROJECT),
            ],
            check=True,
        )
        requirements = importlib.metadata.requires("hubkeeper") or []
        download_wheels(context / "wheels", [r for r in requirements if "extra ==" not in r])
        client.images.build(
            path=str(context),
            tag=HUBKEEPER_IMAGE,
            labels={RECIPE_LABEL: wanted},
            rm=True,
            forcerm=True,
            network_mode="host",
        )
    return HUBKEEPER_IMAGE
