"""text-generation: continue prompts or chats with a causal language model, through ``generate()``."""

from __future__ import annotations

import copy
import enum
import inspect
from typing import Any, ClassVar

import torch

from ..errors import PipelineError, UnsupportedArgumentError
from ..generation.config import GenerationConfig
from ..generation.utils import GenerationMixin
from .base import Batch, Feature, Pipeline, encoding_rows


class ReturnType(enum.Enum):
    TENSORS = 0
    NEW_TEXT = 1
    FULL_TEXT = 2


# What the pipeline generates with unless the user or the model's generation config says otherwise,
# as in the reference library.
PIPELINE_GENERATION_DEFAULTS = {"max_new_tokens": 256, "do_sample": True, "temperature": 0.7}
SAMPLING_SETTINGS = {"temperature", "top_k", "top_p", "min_p", "top_h", "typical_p", "epsilon_cutoff", "eta_cutoff"}


def generation_keywords() -> set[str]:
    """The keywords ``generate()`` takes: every GenerationConfig setting and its own arguments."""
    settings = {key for key in vars(GenerationConfig()) if not key.startswith("_")}
    arguments = set(inspect.signature(GenerationMixin.generate).parameters) - {"self", "inputs", "kwargs"}
    return settings | arguments


def is_message(value: Any) -> bool:
    return isinstance(value, dict) and "role" in value and "content" in value


def is_chat(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(is_message(message) for message in value)


class TextGenerationPipeline(Pipeline):
    """Generate text after prompts, or the assistant's reply to chats, with a causal LM.

    Inputs: a prompt, a chat (a list of ``{"role", "content"}`` messages, rendered with the
    tokenizer's chat template), or a list of either. Every ``generate()`` option is accepted
    (``max_new_tokens``, ``do_sample``, ``num_beams``, ``num_return_sequences``...); as in the
    reference, settings neither the call nor the model's generation config gives default to
    ``max_new_tokens=256, do_sample=True, temperature=0.7``. Output options:
    ``return_full_text`` (default True: the prompt plus the new text; a chat gets the reply
    appended as an assistant message), ``return_tensors`` (token ids instead of text),
    ``skip_special_tokens``, ``clean_up_tokenization_spaces``, ``stop_sequence``, ``prefix``,
    ``handle_long_generation="hole"`` (cut the prompt's start to make room), ``continue_final_message``.
    Each input gives a list of ``num_return_sequences`` records.

    Difference: with ``batch_size > 1``, ``return_tensors`` ids do not include the batch's left
    padding (each record holds its own prompt and the new tokens).
    """

    auto_class_name: ClassVar[str] = "AutoModelForCausalLM"
    padding_side: ClassVar[str | None] = "left"

    def _sanitize_parameters(self, return_full_text: bool | None = None, return_tensors: bool | None = None,
                             return_text: bool | None = None, return_type: Any = None,
                             clean_up_tokenization_spaces: bool | None = None, prefix: str | None = None,
                             handle_long_generation: str | None = None, stop_sequence: str | list[str] | None = None,
                             truncation: bool | None = None, max_length: int | None = None,
                             continue_final_message: bool | None = None, skip_special_tokens: bool | None = None,
                             tokenizer_encode_kwargs: dict[str, Any] | None = None, tools: list | None = None,
                             documents: list | None = None, add_special_tokens: bool | None = None,
                             padding: Any = None, **generate_kwargs: Any) -> tuple[dict, dict, dict]:
        unknown = sorted(set(generate_kwargs) - generation_keywords())
        if unknown:
            raise UnsupportedArgumentError(
                f"text-generation got {unknown}, which are neither pipeline options nor generate() settings."
            )
        preprocess: dict[str, Any] = {}
        for name, value in (("add_special_tokens", add_special_tokens), ("padding", padding),
                            ("truncation", truncation), ("max_length", max_length), ("tools", tools),
                            ("documents", documents), ("continue_final_message", continue_final_message),
                            ("tokenizer_encode_kwargs", tokenizer_encode_kwargs)):
            if value is not None:
                preprocess[name] = value
        if max_length is not None:
            generate_kwargs["max_length"] = max_length
        if prefix is not None:
            preprocess["prefix"] = prefix
        if prefix:
            generate_kwargs["_prefix_length"] = len(self.tokenizer(prefix, add_special_tokens=bool(add_special_tokens))
                                                    ["input_ids"])
        if handle_long_generation is not None:
            if handle_long_generation != "hole":
                raise PipelineError(f"handle_long_generation must be 'hole' (or None), got {handle_long_generation!r}.")
            preprocess["handle_long_generation"] = handle_long_generation
        if stop_sequence is not None:
            generate_kwargs["stop_strings"] = [stop_sequence] if isinstance(stop_sequence, str) else stop_sequence
            generate_kwargs["tokenizer"] = self.tokenizer
        # "hole" needs the generation lengths while preparing the prompt.
        preprocess["_generate_kwargs"] = generate_kwargs

        postprocess: dict[str, Any] = {}
        if return_full_text is not None and return_type is None:
            if return_text is not None or return_tensors is not None:
                raise PipelineError("return_full_text cannot be combined with return_text or return_tensors.")
            return_type = ReturnType.FULL_TEXT if return_full_text else ReturnType.NEW_TEXT
        if return_tensors is not None and return_type is None:
            if return_text is not None:
                raise PipelineError("return_text cannot be combined with return_tensors.")
            return_type = ReturnType.TENSORS
        if return_type is not None:
            postprocess["return_type"] = ReturnType[getattr(return_type, "name", str(return_type)).upper()]
        for name, value in (("clean_up_tokenization_spaces", clean_up_tokenization_spaces),
                            ("continue_final_message", continue_final_message),
                            ("skip_special_tokens", skip_special_tokens)):
            if value is not None:
                postprocess[name] = value
        return preprocess, generate_kwargs, postprocess

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        model_prefix = getattr(self.model.config, "prefix", None)
        if model_prefix is not None and "prefix" not in self._params[0]:
            # A model's own prefix (config.prefix) goes before every prompt unless the user gave one.
            extra = self._sanitize_parameters(prefix=model_prefix)
            extra[0].pop("_generate_kwargs")
            self._params = tuple({**extra_part, **part} for extra_part, part in zip(extra, self._params, strict=True))

    def is_single(self, inputs: Any, preprocess_params: dict[str, Any]) -> bool:
        return isinstance(inputs, str) or is_chat(inputs)

    # -- generation settings ---------------------------------------------------------------
    def _settings_in_force(self, generate_kwargs: dict[str, Any]) -> dict[str, Any]:
        """The settings generate() will not take from its global defaults: the model's generation
        config, under a passed generation_config, under the keywords."""
        settings = self.model.generation_config.to_diff_dict() if self.model.generation_config else {}
        passed = generate_kwargs.get("generation_config")
        if passed is not None:
            settings.update(passed.to_diff_dict())
        return {**settings, **generate_kwargs}

    def _generate_kwargs(self, generate_kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's generate() keywords plus the pipeline's defaults for what nobody set."""
        generate_kwargs = {k: v for k, v in generate_kwargs.items() if not k.startswith("_")}
        in_force = self._settings_in_force(generate_kwargs)
        defaults = dict(PIPELINE_GENERATION_DEFAULTS)
        if self.tokenizer.pad_token_id is not None:
            defaults["pad_token_id"] = self.tokenizer.pad_token_id
        added = {k: v for k, v in defaults.items()
                 if k not in in_force and not (k == "max_new_tokens" and "max_length" in in_force)}
        if not {**in_force, **added}.get("do_sample"):
            added = {k: v for k, v in added.items() if k not in SAMPLING_SETTINGS}
        passed = generate_kwargs.get("generation_config")
        if passed is None:
            return {**generate_kwargs, **added}
        passed = copy.deepcopy(passed)
        passed.update(**added)
        return {**generate_kwargs, "generation_config": passed}

    # -- the three steps -------------------------------------------------------------------
    def preprocess(self, prompt: Any, prefix: str = "", handle_long_generation: str | None = None,
                   add_special_tokens: bool | None = None, truncation: bool | None = None, padding: Any = None,
                   max_length: int | None = None, continue_final_message: bool | None = None,
                   tokenizer_encode_kwargs: dict[str, Any] | None = None, tools: list | None = None,
                   documents: list | None = None, _generate_kwargs: dict[str, Any] | None = None) -> Feature:
        options = {k: v for k, v in (("add_special_tokens", add_special_tokens), ("truncation", truncation),
                                     ("padding", padding), ("max_length", max_length)) if v is not None}
        options.update(tokenizer_encode_kwargs or {})
        if is_chat(prompt):
            options.pop("add_special_tokens", None)
            if continue_final_message is None:
                continue_final_message = prompt[-1]["role"] == "assistant"
            encoded = self.tokenizer.apply_chat_template(
                list(prompt), add_generation_prompt=not continue_final_message,
                continue_final_message=continue_final_message, return_dict=True, tools=tools, documents=documents,
                **options,
            )
        elif isinstance(prompt, str):
            encoded = self.tokenizer(prefix + prompt, **options)
        else:
            raise PipelineError(f"text-generation takes a prompt (str) or a chat (a list of {{'role', 'content'}} "
                                f"messages) per input, got {type(prompt).__name__}.")
        row = encoding_rows(encoded, [k for k in ("input_ids", "attention_mask") if k in encoded])[0]
        if handle_long_generation == "hole":
            row = self._make_room(row, {**self._params[1], **(_generate_kwargs or {})})
        return Feature(row, {"prompt": prompt})

    def _make_room(self, row: dict[str, list[int]], generate_kwargs: dict[str, Any]) -> dict[str, list[int]]:
        """Drop the prompt's first tokens so the prompt and the new tokens fit the model's length."""
        length = len(row["input_ids"])
        in_force = self._settings_in_force(self._generate_kwargs(generate_kwargs))
        new_tokens = in_force.get("max_new_tokens")
        if new_tokens is None:
            new_tokens = in_force.get("max_length", 20) - length
            if new_tokens < 0:
                raise PipelineError("handle_long_generation='hole' cannot tell how many tokens to generate; pass "
                                    "max_new_tokens.")
        if length + new_tokens > self.tokenizer.model_max_length:
            keep = self.tokenizer.model_max_length - new_tokens
            if keep <= 0:
                raise PipelineError(f"max_new_tokens={new_tokens} alone exceeds the model's length "
                                    f"({self.tokenizer.model_max_length}); handle_long_generation='hole' cannot help.")
            row = {key: values[-keep:] for key, values in row.items()}
        return row

    def _forward(self, batch: Batch, **generate_kwargs: Any) -> list[dict[str, Any]]:
        input_ids = batch.inputs["input_ids"]
        attention_mask = batch.inputs.get("attention_mask")
        prefix_length = generate_kwargs.get("_prefix_length", 0)
        generate_kwargs = self._generate_kwargs(generate_kwargs)
        if prefix_length:
            # Lengths the user gave count the text after the prefix.
            in_force = self._settings_in_force(generate_kwargs)
            for total, new in (("max_length", "max_new_tokens"), ("min_length", "min_new_tokens")):
                if total in in_force and new not in in_force:
                    generate_kwargs[total] = in_force[total] + prefix_length
        rows = input_ids.shape[0]
        if input_ids.shape[1] == 0:
            input_ids = attention_mask = None  # empty prompts: generate starts from BOS
        output = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **generate_kwargs)
        sequences = output.sequences if hasattr(output, "sequences") else output
        per_row = sequences.shape[0] // rows
        extras = self._per_sequence_outputs(output, sequences.shape[0]) if hasattr(output, "sequences") else {}
        prompt_width = 0 if input_ids is None else input_ids.shape[1]
        sequences = sequences.cpu()
        results = []
        for row, feature in enumerate(batch.features):
            mine = slice(row * per_row, (row + 1) * per_row)
            own_prompt = sequences[row * per_row, prompt_width - len(feature):prompt_width].tolist()
            results.append({"prompt_ids": own_prompt, "new_ids": sequences[mine, prompt_width:].tolist(),
                            "extras": {key: values[mine] for key, values in extras.items()}})
        return results

    @staticmethod
    def _per_sequence_outputs(output: Any, count: int) -> dict[str, list[Any]]:
        """Tensors of a return_dict_in_generate output that have one entry per sequence (per step
        tuples stacked), as lists indexed by sequence."""
        extras = {}
        for key, value in output.items():
            if key in ("sequences", "past_key_values"):
                continue
            if isinstance(value, torch.Tensor) and value.shape[0] == count:
                extras[key] = value.cpu().tolist()
            elif isinstance(value, tuple) and value and isinstance(value[0], torch.Tensor) and len(value[0]) == count:
                extras[key] = torch.stack(value).swapaxes(0, 1).cpu().tolist()
        return extras

    def postprocess(self, features: list[Feature], outputs: list[dict[str, Any]],
                    return_type: ReturnType = ReturnType.FULL_TEXT, clean_up_tokenization_spaces: bool | None = None,
                    continue_final_message: bool | None = None, skip_special_tokens: bool | None = None) -> list[dict]:
        output, prompt = outputs[0], features[0].extra["prompt"]
        skip = True if skip_special_tokens is None else skip_special_tokens
        records = []
        for index, new_ids in enumerate(output["new_ids"]):
            if return_type is ReturnType.TENSORS:
                records.append({"generated_token_ids": output["prompt_ids"] + new_ids})
                continue
            text = self.tokenizer.decode(new_ids, skip_special_tokens=skip,
                                         clean_up_tokenization_spaces=clean_up_tokenization_spaces)
            if return_type is ReturnType.FULL_TEXT:
                text = self._full_text(prompt, text, continue_final_message)
            record: dict[str, Any] = {"generated_text": text}
            record.update({key: values[index] for key, values in output["extras"].items()})
            records.append(record)
        return records

    @staticmethod
    def _full_text(prompt: Any, text: str, continue_final_message: bool | None) -> Any:
        if isinstance(prompt, str):
            return prompt + text
        messages = list(prompt)
        if continue_final_message is None:
            continue_final_message = messages[-1]["role"] == "assistant"
        if continue_final_message:
            return messages[:-1] + [{"role": messages[-1]["role"], "content": messages[-1]["content"] + text}]
        return messages + [{"role": "assistant", "content": text}]
