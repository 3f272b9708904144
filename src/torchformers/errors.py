"""The errors users catch.

Each class also derives from the built-in exception the reference library raises in the
same situation (``OSError`` for files, ``ValueError`` for values, ``TypeError`` for
keywords), so code written against the reference keeps catching them. Messages name the
file and the key involved and say what to do next.
"""

from __future__ import annotations

import os


class TorchformersError(Exception):
    """Base class of every error raised by torchformers."""


class FileResolutionError(TorchformersError, OSError):
    """A model name or path could not be turned into the local files it needs."""


class CheckpointError(TorchformersError, OSError):
    """A weights file is unreadable: truncated, corrupt, or a shard is missing."""


class WeightsMismatchError(TorchformersError, ValueError):
    """The checkpoint's tensors do not fit the model: a weight is missing or has the wrong shape."""


class ConfigError(TorchformersError, ValueError):
    """A configuration file or value is malformed or invalid."""


class UnknownModelTypeError(ConfigError):
    """``model_type`` names no family that torchformers knows."""


class UnsupportedArgumentError(TorchformersError, TypeError):
    """A keyword argument torchformers does not support (it is never silently ignored)."""


class GenerationError(TorchformersError, ValueError):
    """``generate()`` got inputs or options that cannot work together: an empty prompt without a
    BOS token, conflicting options, a cache too small for the requested length."""


class RemoteCodeError(TorchformersError, ValueError):
    """``trust_remote_code=True`` was asked for; torchformers never runs code from a model repository."""


def describe_path(path: str | os.PathLike) -> str:
    """A path as messages show it: absolute, so users can find the file."""
    return os.path.abspath(os.fspath(path))


class TokenizerError(TorchformersError, ValueError):
    """A tokenizer's input or configuration is invalid: a non-string text, an inconsistent special token,
    a truncation that cannot be done."""


class TokenizerFileError(TorchformersError, OSError):
    """A tokenizer file (``vocab.txt``, ``tokenizer.json``, ``tokenizer.model``...) is missing or corrupt."""


class ChatTemplateError(TokenizerError):
    """A chat template failed to compile or raised while rendering; the message names the template."""


class PipelineError(TorchformersError, ValueError):
    """A pipeline got a model of the wrong kind for its task, a missing argument, or an input it cannot
    handle (no mask token for fill-mask, no candidate labels for zero-shot classification...)."""


class UnknownTaskError(PipelineError, KeyError):
    """``pipeline()`` was asked for a task it does not know; the message lists the supported ones."""

    def __str__(self) -> str:
        # KeyError would show the message quoted like a dict key.
        return str(self.args[0]) if self.args else ""


class TrainingError(TorchformersError, ValueError):
    """The Trainer's inputs do not fit: a batch without the model's inputs, labels of the wrong shape,
    a checkpoint to resume from that is incomplete or corrupt."""
