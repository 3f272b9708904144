"""``pipeline()``: the one-line inference API, and the registry of the tasks it knows.

A task names its pipeline class and the Auto class its model is loaded with. Task modules are
imported when a pipeline of theirs is built, so ``pipeline("fill-mask", ...)`` never imports
the generation code.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from typing import Any

from ..errors import (
    PipelineError,
    RemoteCodeError,
    UnknownModelTypeError,
    UnknownTaskError,
    UnsupportedArgumentError,
)
from .base import Pipeline

logger = logging.getLogger("torchformers")


@dataclass(frozen=True)
class Task:
    """A task's pipeline class (module and name under this package) and its model's Auto class."""

    module: str
    class_name: str
    auto_class: str
    example_model: str  # what to suggest when no model is given (the reference's default where we support it)


SUPPORTED_TASKS: dict[str, Task] = {
    "text-generation": Task("text_generation", "TextGenerationPipeline", "AutoModelForCausalLM",
                            "HuggingFaceTB/SmolLM2-135M-Instruct"),
    "text-classification": Task("text_classification", "TextClassificationPipeline",
                                "AutoModelForSequenceClassification",
                                "distilbert/distilbert-base-uncased-finetuned-sst-2-english"),
    "token-classification": Task("token_classification", "TokenClassificationPipeline",
                                 "AutoModelForTokenClassification", "dbmdz/bert-large-cased-finetuned-conll03-english"),
    "question-answering": Task("question_answering", "QuestionAnsweringPipeline", "AutoModelForQuestionAnswering",
                               "distilbert/distilbert-base-cased-distilled-squad"),
    "fill-mask": Task("fill_mask", "FillMaskPipeline", "AutoModelForMaskedLM", "distilbert/distilroberta-base"),
    "feature-extraction": Task("feature_extraction", "FeatureExtractionPipeline", "AutoModel",
                               "distilbert/distilbert-base-cased"),
    "sentence-embedding": Task("feature_extraction", "SentenceEmbeddingPipeline", "AutoModel",
                               "sentence-transformers/all-MiniLM-L6-v2"),
    "zero-shot-classification": Task("zero_shot_classification", "ZeroShotClassificationPipeline",
                                     "AutoModelForSequenceClassification", "cross-encoder/nli-distilroberta-base"),
}
TASK_ALIASES: dict[str, str] = {"sentiment-analysis": "text-classification", "ner": "token-classification"}

# Architecture name endings -> the task a checkpoint of that class is for (checked in this order).
_TASK_BY_ARCHITECTURE = (
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForMaskedLM", "fill-mask"),
    ("ForCausalLM", "text-generation"),
    ("LMHeadModel", "text-generation"),
    ("Model", "feature-extraction"),
)
_HUB_KEYS = ("revision", "token", "cache_dir", "local_files_only", "force_download", "subfolder")


def get_supported_tasks() -> list[str]:
    """Every task name ``pipeline()`` accepts, aliases included."""
    return sorted([*SUPPORTED_TASKS, *TASK_ALIASES])


def check_task(task: str) -> tuple[str, Task]:
    """The canonical name and definition of ``task`` (an alias is resolved)."""
    name = TASK_ALIASES.get(task, task)
    if name not in SUPPORTED_TASKS:
        raise UnknownTaskError(f"Unknown task {task!r}; the supported tasks are {get_supported_tasks()}.")
    return name, SUPPORTED_TASKS[name]


def task_for_architecture(architecture: str) -> str | None:
    for ending, task in _TASK_BY_ARCHITECTURE:
        if architecture.endswith(ending):
            return task
    return None


def task_pipeline_class(task: Task) -> type[Pipeline]:
    return getattr(importlib.import_module(f".{task.module}", __name__), task.class_name)


def pipeline(
    task: str | None = None,
    model: Any = None,
    config: Any = None,
    tokenizer: Any = None,
    revision: str | None = None,
    use_fast: bool = True,
    token: str | bool | None = None,
    device: Any = None,
    device_map: Any = None,
    dtype: Any = "auto",
    trust_remote_code: bool | None = None,
    model_kwargs: dict[str, Any] | None = None,
    pipeline_class: type[Pipeline] | None = None,
    batch_size: int | None = None,
    **kwargs: Any,
) -> Pipeline:
    """Build the pipeline for ``task`` around a model: ``pipeline("sentiment-analysis", model=path)``.

    ``model`` is a local directory, a hub id (read from the local cache or downloaded through
    huggingface_hub) or a model object; ``tokenizer`` likewise (default: the model's own).
    ``task`` may be omitted when the checkpoint's ``config.json`` names its architecture
    (``BertForTokenClassification`` means token-classification). ``device`` (``"cpu"``,
    ``"cuda:0"``, ``0``, ``-1``; default: the first GPU if any), ``device_map``, ``dtype``
    (default ``"auto"``: the checkpoint's), ``revision``, ``token`` and ``model_kwargs`` go
    to loading; ``batch_size`` and the task's options (``top_k``, ``aggregation_strategy``,
    ``max_new_tokens``...) become the pipeline's defaults, which each call may override.

    Differences from the reference library: no model is ever picked for you (without
    ``model`` the error names one to pass), the task is inferred from the local config instead
    of the hub, ``trust_remote_code=True`` is refused, and only the text tasks exist.
    """
    if trust_remote_code:
        from ..config import REMOTE_CODE_MESSAGE

        raise RemoteCodeError(REMOTE_CODE_MESSAGE)
    for option in ("feature_extractor", "image_processor", "video_processor", "processor"):
        if kwargs.pop(option, None) is not None:
            raise UnsupportedArgumentError(f"pipeline(): {option} is not supported; torchformers has text tasks only.")
    model_kwargs = dict(model_kwargs or {})
    hub_kwargs = {"revision": revision, "token": token}
    for key in ("cache_dir", "local_files_only", "force_download"):
        if key in kwargs:
            hub_kwargs[key] = kwargs.pop(key)
    if "torch_dtype" in kwargs:
        legacy = kwargs.pop("torch_dtype")
        dtype = legacy if dtype == "auto" else dtype
    if isinstance(model, os.PathLike):
        model = os.fspath(model)

    if model is None:
        if task is None:
            raise PipelineError("pipeline() needs a task or a model (or both).")
        spec = check_task(task)[1]
        raise PipelineError(
            f"pipeline({task!r}) needs model=...: torchformers does not download a default model behind your back. "
            f"Pass a local directory, a hub id or a model object; for example model={spec.example_model!r}."
        )
    if task is None:
        task = _infer_task(model, config, hub_kwargs)
    name, spec = check_task(task)

    if isinstance(config, (str, os.PathLike)):
        from ..models.auto import AutoConfig

        config = AutoConfig.from_pretrained(config, **{k: v for k, v in hub_kwargs.items() if v is not None})
    placed_by_device_map = False
    if isinstance(model, str):
        load_kwargs = {**{k: v for k, v in hub_kwargs.items() if v is not None}, **model_kwargs}
        if config is not None:
            load_kwargs["config"] = config
        if dtype is not None:
            load_kwargs.setdefault("dtype", dtype)
        if device_map is not None:
            if "device_map" in model_kwargs:
                raise PipelineError("device_map is given twice: as an argument and in model_kwargs.")
            if device is not None:
                logger.warning("Both device and device_map are given; device wins and the whole model moves there.")
            else:
                load_kwargs["device_map"] = device_map
                placed_by_device_map = True
        model = _load_model(name, spec, model, load_kwargs)
    elif device_map is not None:
        raise UnsupportedArgumentError("pipeline(): device_map places a model while loading it; with a model object, "
                                       "use device=... (or load the model with device_map yourself).")
    tokenizer = _load_tokenizer(tokenizer, model, config, use_fast, hub_kwargs)
    cls = pipeline_class or task_pipeline_class(spec)
    return cls(model=model, tokenizer=tokenizer, task=name, device=device, batch_size=batch_size,
               placed_by_device_map=placed_by_device_map, **kwargs)


def _infer_task(model: Any, config: Any, hub_kwargs: dict[str, Any]) -> str:
    if isinstance(model, str):
        from ..models.auto import AutoConfig

        config = config if config is not None and not isinstance(config, str) else AutoConfig.from_pretrained(
            config or model, **{k: v for k, v in hub_kwargs.items() if v is not None})
        architectures = list(getattr(config, "architectures", None) or [])
    else:
        architectures = [type(model).__name__]
    for architecture in architectures:
        task = task_for_architecture(architecture)
        if task is not None:
            return task
    raise PipelineError(
        f"pipeline() cannot tell the task from the model's architectures {architectures}; pass task=... (one of "
        f"{get_supported_tasks()})."
    )


def _load_model(task_name: str, spec: Task, model: str, load_kwargs: dict[str, Any]) -> Any:
    from ..models import auto

    auto_class = getattr(auto, spec.auto_class)
    try:
        return auto_class.from_pretrained(model, **load_kwargs)
    except UnknownModelTypeError as error:
        raise PipelineError(
            f"The {task_name} pipeline loads models with {spec.auto_class}, and {model!r} cannot be loaded that way: "
            f"{error}"
        ) from None


def _load_tokenizer(tokenizer: Any, model: Any, config: Any, use_fast: bool, hub_kwargs: dict[str, Any]) -> Any:
    if tokenizer is not None and not isinstance(tokenizer, (str, os.PathLike, tuple)):
        return tokenizer
    options: dict[str, Any] = {}
    if isinstance(tokenizer, tuple):
        tokenizer, options = tokenizer
    source = tokenizer or (config if isinstance(config, str) else None) or getattr(model, "name_or_path", None)
    if not source:
        raise PipelineError("pipeline() cannot tell which tokenizer to use with this model object; pass tokenizer=... "
                            "(a directory, a hub id or a tokenizer object).")
    from ..tokenization.auto import AutoTokenizer

    return AutoTokenizer.from_pretrained(source, use_fast=use_fast,
                                         **{k: v for k, v in hub_kwargs.items() if v is not None}, **options)


__all__ = ["Pipeline", "SUPPORTED_TASKS", "TASK_ALIASES", "check_task", "get_supported_tasks", "pipeline",
           "task_pipeline_class"]
