"""Turn a model name or path into local files: a directory, the hub cache, or the hub itself.

Local directories are used as they are. Anything else is a hub id handed to
``huggingface_hub``, which owns the cache layout (``models--org--name/snapshots/<rev>/``),
``HF_HUB_OFFLINE``, tokens and revisions; it is imported only when a hub id is used.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import FileResolutionError, describe_path

_TRUE_VALUES = {"1", "on", "yes", "true"}


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` asks for cached files only (read at call time)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE_VALUES


def resolve_file(
    name_or_path: str | os.PathLike,
    filename: str,
    *,
    subfolder: str = "",
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    force_download: bool = False,
    required: bool = True,
) -> str | None:
    """Return the local path of ``filename`` for a model directory or hub id.

    With ``required=False`` a file the model simply does not have gives ``None``; any other
    failure (no such repository, no network and nothing cached) raises FileResolutionError.
    """
    name = os.fspath(name_or_path)
    relative = os.path.join(subfolder, filename) if subfolder else filename
    if os.path.isdir(name):
        candidate = os.path.join(name, relative)
        if os.path.isfile(candidate):
            return candidate
        if required:
            raise FileResolutionError(
                f"{describe_path(name)} has no file {relative!r}; check the directory holds a saved model."
            )
        return None
    return _resolve_hub_file(
        name,
        filename,
        subfolder=subfolder,
        cache_dir=cache_dir,
        revision=revision,
        local_files_only=local_files_only or hub_offline(),
        token=token,
        force_download=force_download,
        required=required,
    )


def _resolve_hub_file(name: str, filename: str, *, required: bool, local_files_only: bool, **kwargs: Any) -> str | None:
    import huggingface_hub
    from huggingface_hub import errors as hub_errors

    subfolder = kwargs.pop("subfolder") or None
    cache_dir = kwargs.pop("cache_dir")
    revision = kwargs.pop("revision")
    where = f"{name!r}" + (f" at revision {revision!r}" if revision else "")
    try:
        if local_files_only:
            cached = huggingface_hub.try_to_load_from_cache(
                name, os.path.join(subfolder, filename) if subfolder else filename,
                cache_dir=cache_dir, revision=revision,
            )
            if isinstance(cached, str):
                return cached
            if cached is not None:  # the cache records that the repository lacks this file
                if required:
                    raise FileResolutionError(f"The model {where} has no file {filename!r}.")
                return None
            if not required and _snapshot_is_cached(name, revision, cache_dir):
                return None
            raise FileResolutionError(
                f"{filename!r} of {where} is not in the local cache "
                f"({describe_path(cache_dir or huggingface_hub.constants.HF_HUB_CACHE)}) and downloads are "
                "off (local_files_only=True or HF_HUB_OFFLINE=1); download it first or pass a local directory."
            )
        return huggingface_hub.hf_hub_download(
            name, filename, subfolder=subfolder, cache_dir=cache_dir, revision=revision,
            library_name="torchformers", **kwargs,
        )
    except hub_errors.EntryNotFoundError:
        if required:
            raise FileResolutionError(f"The model {where} has no file {filename!r}.") from None
        return None
    except hub_errors.HFValidationError:
        raise FileResolutionError(
            f"{name!r} is neither a local directory nor a valid hub model id; check the path exists."
        ) from None
    except (hub_errors.RepositoryNotFoundError, hub_errors.GatedRepoError) as error:
        raise FileResolutionError(
            f"The hub repository {name!r} is not found or not accessible ({type(error).__name__}); "
            "check the name, or pass token= for a private or gated model."
        ) from None
    except hub_errors.RevisionNotFoundError:
        raise FileResolutionError(f"The hub repository {name!r} has no revision {revision!r}.") from None
    except hub_errors.LocalEntryNotFoundError:
        raise FileResolutionError(
            f"{filename!r} of {where} could not be downloaded and is not cached; connect to the network, "
            "or pass a local directory."
        ) from None
    except OSError as error:
        if isinstance(error, FileResolutionError):
            raise
        raise FileResolutionError(f"Could not fetch {filename!r} of {where}: {error}") from None


def _snapshot_is_cached(name: str, revision: str | None, cache_dir: str | os.PathLike | None) -> bool:
    """True if the cache holds a snapshot of this revision (so a missing file is really absent)."""
    import huggingface_hub

    root = os.fspath(cache_dir or huggingface_hub.constants.HF_HUB_CACHE)
    repo_dir = os.path.join(root, "models--" + name.replace("/", "--"))
    revision = revision or "main"
    ref_file = os.path.join(repo_dir, "refs", revision)
    if os.path.isfile(ref_file):
        with open(ref_file, encoding="utf-8") as handle:
            revision = handle.read().strip()
    return os.path.isdir(os.path.join(repo_dir, "snapshots", revision))
