"""Llama and its close relatives: Mistral, Qwen2 and Qwen3.

One decoder implementation serves all four; what differs is read from the config
(:meth:`LlamaConfig.layout` for biases and q/k norms, :meth:`LlamaConfig.sliding_windows`
for local attention). Module names follow the reference checkpoints
(``model.layers.0.self_attn.q_proj.weight``) so weights load by name.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import PretrainedConfig
from ..errors import ConfigError, UnsupportedArgumentError
from ..generation.utils import GenerationMixin
from ..modeling import PreTrainedModel
from ..nn.attention import attend, build_attention_mask
from ..nn.cache import DynamicCache
from ..nn.heads import pool_last_token
from ..nn.linear import Linear, project
from ..nn.losses import causal_lm_loss, sequence_classification_loss
from ..nn.mlp import GatedMLP, get_activation
from ..nn.norms import RMSNorm
from ..nn.rotary import RotaryEmbedding, apply_rotary, rope_parameters, validate_rope_parameters
from ..outputs import BaseModelOutputWithPast, CausalLMOutputWithPast, SequenceClassifierOutputWithPast


class DecoderLayout(NamedTuple):
    """Which optional parameters a family's decoder layers have."""

    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    qk_norm: bool


_COMMON_DEFAULTS: dict[str, Any] = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": None,
    "head_dim": None,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-6,
    "use_cache": True,
    "pad_token_id": None,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": False,
    "rope_parameters": None,
    "attention_dropout": 0.0,
}


class LlamaConfig(PretrainedConfig):
    """Configuration of Llama models, with the reference library's defaults.

    RoPE settings may be given as ``rope_parameters`` or in the older ``rope_theta`` +
    ``rope_scaling`` form; both end up in ``rope_parameters`` (as the reference stores them).
    Supported ``rope_type``: default, linear, dynamic, llama3, yarn.
    """

    model_type = "llama"
    defaults = {**_COMMON_DEFAULTS, "pretraining_tp": 1, "attention_bias": False, "mlp_bias": False}
    attribute_map: ClassVar[dict[str, str]] = {"rope_scaling": "rope_parameters"}

    def normalize(self) -> None:
        # Derived values need these to be sane; checking here names the key that is not.
        self.require_positive_ints("hidden_size", "num_attention_heads", "num_hidden_layers", "max_position_embeddings")
        if self.rope_parameters is not None and not isinstance(self.rope_parameters, dict):
            raise ConfigError(
                f"{type(self).__name__}: rope_parameters (or rope_scaling) must be a dict such as "
                f'{{"rope_type": "linear", "factor": 2.0}}, got {self.rope_parameters!r}.'
            )
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None and isinstance(self.num_attention_heads, int) and self.num_attention_heads > 0:
            self.head_dim = self.hidden_size // self.num_attention_heads
        legacy_theta = self.__dict__.pop("rope_theta", None)
        params = dict(self.rope_parameters or {})
        if legacy_theta is not None:
            params.setdefault("rope_theta", legacy_theta)
        self.rope_parameters = rope_parameters(_RopeSource(params, self.max_position_embeddings))

    def validate(self) -> None:
        super().validate()
        self.require_positive_ints(
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "max_position_embeddings",
        )
        name = type(self).__name__
        # Only the reference's Llama insists on this; its relatives accept any head_dim.
        if self.model_type == "llama" and self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"{name}: hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads "
                f"({self.num_attention_heads})."
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"{name}: num_attention_heads ({self.num_attention_heads}) is not a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})."
            )
        get_activation(self.hidden_act)
        validate_rope_parameters(self.rope_parameters)
        windows = [w for w in self.sliding_windows() if w is not None]
        if any(not isinstance(w, int) or w <= 0 for w in windows):
            raise ConfigError(f"{name}: sliding_window must be a positive integer, got {windows[0]!r}.")

    def layout(self) -> DecoderLayout:
        return DecoderLayout(self.attention_bias, self.attention_bias, self.mlp_bias, qk_norm=False)

    def sliding_windows(self) -> list[int | None]:
        """The attention window of each layer (``None``: the whole past)."""
        return [None] * self.num_hidden_layers


class _RopeSource(NamedTuple):
    rope_parameters: dict[str, Any]
    max_position_embeddings: int


class MistralConfig(LlamaConfig):
    """Configuration of Mistral models: Llama with local attention over ``sliding_window`` tokens."""

    model_type = "mistral"
    defaults = {**_COMMON_DEFAULTS, "intermediate_size": 14336, "num_key_value_heads": 8,
                "max_position_embeddings": 4096 * 32, "sliding_window": 4096}

    def layout(self) -> DecoderLayout:
        return DecoderLayout(False, False, False, qk_norm=False)

    def sliding_windows(self) -> list[int | None]:
        return [self.sliding_window] * self.num_hidden_layers


class Qwen2Config(LlamaConfig):
    """Configuration of Qwen2 models: biases on q, k and v; optional sliding window on upper layers."""

    model_type = "qwen2"
    defaults = {**_COMMON_DEFAULTS, "vocab_size": 151936, "intermediate_size": 22016, "num_key_value_heads": 32,
                "max_position_embeddings": 32768, "bos_token_id": None, "eos_token_id": None,
                "use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 28, "layer_types": None}

    def normalize(self) -> None:
        # The reference's Qwen2 config has no head_dim: a derived one is not written back.
        self._derived_head_dim = self.head_dim is None
        super().normalize()
        if not self.use_sliding_window:
            self.sliding_window = None
        if self.layer_types is None:
            self.layer_types = [
                "sliding_attention" if self.sliding_window is not None and i >= self.max_window_layers
                else "full_attention"
                for i in range(self.num_hidden_layers)
            ]

    def validate(self) -> None:
        super().validate()
        if len(self.layer_types) != self.num_hidden_layers or not set(self.layer_types) <= {
            "full_attention", "sliding_attention"
        }:
            raise ConfigError(
                f"{type(self).__name__}: layer_types must list 'full_attention' or 'sliding_attention' for each "
                f"of the {self.num_hidden_layers} layers."
            )

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        if self._derived_head_dim and output.get("head_dim") == self.hidden_size // self.num_attention_heads:
            del output["head_dim"]
        return output

    def layout(self) -> DecoderLayout:
        return DecoderLayout(True, False, False, qk_norm=False)

    def sliding_windows(self) -> list[int | None]:
        return [self.sliding_window if kind == "sliding_attention" else None for kind in self.layer_types]


class Qwen3Config(Qwen2Config):
    """Configuration of Qwen3 models: RMS norms on each query and key head."""

    model_type = "qwen3"
    defaults = {**Qwen2Config.defaults, "head_dim": 128, "attention_bias": False}

    def layout(self) -> DecoderLayout:
        return DecoderLayout(self.attention_bias, self.attention_bias, False, qk_norm=True)


class LlamaAttention(nn.Module):
    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        layout = config.layout()
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.sliding_window = config.sliding_windows()[layer_idx]
        hidden = config.hidden_size
        self.q_proj = Linear(hidden, self.num_heads * self.head_dim, bias=layout.qkv_bias)
        self.k_proj = Linear(hidden, self.num_kv_heads * self.head_dim, bias=layout.qkv_bias)
        self.v_proj = Linear(hidden, self.num_kv_heads * self.head_dim, bias=layout.qkv_bias)
        self.o_proj = Linear(self.num_heads * self.head_dim, hidden, bias=layout.o_bias)
        if layout.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.attn_implementation = config._attn_implementation

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        past_key_values: DynamicCache | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, _ = hidden_states.shape
        q, k, v = project(hidden_states, (self.q_proj, self.k_proj, self.v_proj))
        q = q.view(batch, length, -1, self.head_dim)
        k = k.view(batch, length, -1, self.head_dim)
        v = v.view(batch, length, -1, self.head_dim).transpose(1, 2)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rotary(q.transpose(1, 2), k.transpose(1, 2), *position_embeddings)
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx)
        output, weights = attend(
            q, k, v, attention_mask,
            scaling=self.scaling,
            dropout=self.attention_dropout if self.training else 0.0,
            implementation=self.attn_implementation,
            output_attentions=output_attentions,
        )
        return self.o_proj(output.reshape(batch, length, -1)), weights


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(config, layer_idx)
        self.mlp = GatedMLP(config.hidden_size, config.intermediate_size, config.hidden_act, config.layout().mlp_bias)
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        past_key_values: DynamicCache | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.self_attn(
            self.input_layernorm(hidden_states), position_embeddings, attention_mask, past_key_values,
            output_attentions,
        )
        hidden_states = hidden_states + attended
        hidden_states = hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states, weights


class LlamaPreTrainedModel(PreTrainedModel):
    config_class = LlamaConfig
    base_model_prefix = "model"
    _no_split_modules: ClassVar[list[str]] = ["LlamaDecoderLayer"]


class LlamaModel(LlamaPreTrainedModel):
    """The decoder stack: embeddings, layers and the final norm; returns hidden states."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.head_dim, config.rope_parameters, config.max_position_embeddings)
        self.gradient_checkpointing = False
        self.checkpoint_options: dict[str, Any] = {"use_reentrant": False}
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: DynamicCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPast | tuple:
        config = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise UnsupportedArgumentError("Pass exactly one of input_ids and inputs_embeds.")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        use_cache = config.use_cache if use_cache is None else use_cache
        checkpointing = self.gradient_checkpointing and self.training
        if checkpointing:
            # Recomputation in backward cannot replay cache writes.
            use_cache, past_key_values = False, None
        # A cache that is passed in is read and extended whatever use_cache says (as in the
        # reference); use_cache decides only whether it is returned.
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache()
        batch, length = inputs_embeds.shape[:2]
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past_length, past_length + length, device=inputs_embeds.device)[None]

        masks = {
            window: build_attention_mask(
                attention_mask, batch_size=batch, query_length=length, past_length=past_length,
                sliding_window=window, device=inputs_embeds.device,
            )
            for window in set(config.sliding_windows())
        }
        position_embeddings = self.rotary_emb(position_ids, inputs_embeds.dtype)
        hidden_states = inputs_embeds
        all_hidden_states: tuple[torch.Tensor, ...] = ()
        all_attentions: tuple[torch.Tensor, ...] = ()
        for layer in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            mask = masks[layer.self_attn.sliding_window]
            if checkpointing:
                hidden_states, weights = checkpoint(
                    layer, hidden_states, position_embeddings, mask, None, output_attentions,
                    **self.checkpoint_options,
                )
            else:
                hidden_states, weights = layer(
                    hidden_states, position_embeddings, mask, past_key_values, output_attentions
                )
            if output_attentions:
                all_attentions += (weights,)
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        output = BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            past_key_values=past_key_values if use_cache else None,
            hidden_states=all_hidden_states or None,
            attentions=all_attentions or None,
        )
        return output if (config.return_dict if return_dict is None else return_dict) else output.to_tuple()


class LlamaForCausalLM(LlamaPreTrainedModel, GenerationMixin):
    """The decoder with a language-model head; ``labels`` give the next-token loss."""

    _tied_weights_keys: ClassVar[dict[str, str]] = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.model = LlamaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: DynamicCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> CausalLMOutputWithPast | tuple:
        """``logits_to_keep=n`` computes logits for the last ``n`` positions only (0: all)."""
        outputs = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep])
        loss = causal_lm_loss(logits, labels, num_items_in_batch) if labels is not None else None
        output = CausalLMOutputWithPast(
            loss=loss, logits=logits, past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states, attentions=outputs.attentions,
        )
        return output if (self.config.return_dict if return_dict is None else return_dict) else output.to_tuple()


class LlamaForSequenceClassification(LlamaPreTrainedModel):
    """The decoder with a linear ``score`` head read at each sequence's last non-padding token."""

    _new_head_prefixes = ("score",)

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = LlamaModel(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: DynamicCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SequenceClassifierOutputWithPast | tuple:
        outputs = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        logits = self.score(outputs.last_hidden_state)
        pooled_logits = pool_last_token(logits, input_ids, self.config.pad_token_id)
        loss = sequence_classification_loss(pooled_logits, labels, self.config) if labels is not None else None
        output = SequenceClassifierOutputWithPast(
            loss=loss, logits=pooled_logits, past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states, attentions=outputs.attentions,
        )
        return output if (self.config.return_dict if return_dict is None else return_dict) else output.to_tuple()


def _family_classes(prefix: str, config_class: type[LlamaConfig]) -> tuple[type, ...]:
    """A relative's public classes: the Llama classes bound to its config class."""
    classes = []
    for base in (LlamaPreTrainedModel, LlamaModel, LlamaForCausalLM, LlamaForSequenceClassification):
        name = base.__name__.replace("Llama", prefix)
        classes.append(type(name, (base,), {"config_class": config_class, "__module__": __name__,
                                            "__qualname__": name, "__doc__": base.__doc__}))
    return tuple(classes)


MistralPreTrainedModel, MistralModel, MistralForCausalLM, MistralForSequenceClassification = _family_classes(
    "Mistral", MistralConfig
)
Qwen2PreTrainedModel, Qwen2Model, Qwen2ForCausalLM, Qwen2ForSequenceClassification = _family_classes(
    "Qwen2", Qwen2Config
)
Qwen3PreTrainedModel, Qwen3Model, Qwen3ForCausalLM, Qwen3ForSequenceClassification = _family_classes(
    "Qwen3", Qwen3Config
)
