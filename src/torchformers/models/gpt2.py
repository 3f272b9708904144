"""GPT-2: a pre-norm decoder with learned absolute positions and "Conv1D" projections.

GPT-2's projections store their weight as (in_features, out_features), the transpose of
``nn.Linear``; :class:`Conv1D` keeps that layout so checkpoints load and save unchanged
(``transformer.h.0.attn.c_attn.weight`` is (hidden, 3 * hidden)). Attention, masks, the
KV cache, losses and ``generate()`` are the shared ones. Cross-attention
(``add_cross_attention``) is not supported and raises.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import PretrainedConfig
from ..errors import ConfigError, UnsupportedArgumentError
from ..generation.utils import GenerationMixin
from ..modeling import PreTrainedModel
from ..nn.attention import attend, build_attention_mask
from ..nn.cache import DynamicCache
from ..nn.heads import pool_last_token, span_logits
from ..nn.linear import Linear, linear_transposed, packed_product
from ..nn.losses import causal_lm_loss, question_answering_loss, sequence_classification_loss, token_loss
from ..nn.mlp import get_activation
from ..outputs import (
    BaseModelOutputWithPastAndCrossAttentions,
    CausalLMOutputWithCrossAttentions,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutputWithPast,
    TokenClassifierOutput,
    returned,
)


class GPT2Config(PretrainedConfig):
    """Configuration of GPT-2 models, with the reference library's defaults (gpt2 small).

    ``hidden_size``, ``max_position_embeddings``, ``num_attention_heads`` and
    ``num_hidden_layers`` are the standard names of ``n_embd``, ``n_positions``, ``n_head``
    and ``n_layer``. The ``summary_*`` keys belong to the reference's double-heads model and
    are kept so files round-trip.
    """

    model_type = "gpt2"
    attribute_map: ClassVar[dict[str, str]] = {
        "hidden_size": "n_embd",
        "max_position_embeddings": "n_positions",
        "num_attention_heads": "n_head",
        "num_hidden_layers": "n_layer",
    }
    defaults: ClassVar[dict[str, Any]] = {
        "vocab_size": 50257,
        "n_positions": 1024,
        "n_embd": 768,
        "n_layer": 12,
        "n_head": 12,
        "n_inner": None,
        "activation_function": "gelu_new",
        "resid_pdrop": 0.1,
        "embd_pdrop": 0.1,
        "attn_pdrop": 0.1,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "summary_activation": None,
        "summary_proj_to_labels": True,
        "summary_first_dropout": 0.1,
        "scale_attn_weights": True,
        "use_cache": True,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "pad_token_id": None,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "add_cross_attention": False,
        "tie_word_embeddings": True,
    }

    def validate(self) -> None:
        super().validate()
        self.require_positive_ints("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")
        if self.n_inner is not None:
            self.require_positive_ints("n_inner")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"{type(self).__name__}: n_embd ({self.n_embd}) is not a multiple of n_head ({self.n_head})."
            )
        get_activation(self.activation_function)


class Conv1D(nn.Module):
    """A linear layer whose ``weight`` is (in_features, out_features), as GPT-2's checkpoints store
    it: ``y = x @ weight + bias``. ``nf`` is the output size, ``nx`` the input size.

    In memory the weight is the transpose of an (out, in) matrix: the shape, the state dict and
    the files are GPT-2's, but the layer takes the routes of (out, in) layers: a decode step
    multiplies by rows that sit contiguously, which the CPU streams about 10% faster (GPT-2's
    layer shapes, one row), and CPU training uses oneDNN's products (9% faster on a 1024 x 768
    x 3072 forward and backward). Loading copies the checkpoint's (in, out) tensor into that
    layout once.
    """

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.nx = nx
        self.weight = nn.Parameter(torch.empty(nf, nx).t())
        self.bias = nn.Parameter(torch.zeros(nf))

    packs_for_decoding = True  # a batch's decode steps may multiply by a oneDNN-packed copy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            packed = packed_product(self, x, self.weight, self.weight.t(), self.bias)
            if packed is not None:
                return packed
        return linear_transposed(x, self.weight, self.bias)  # addmm, with a faster CPU route for decoding

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        weight = self.weight
        if weight.is_contiguous() and not weight.is_meta and weight.dim() == 2 and 1 not in weight.shape:
            # Assigned as the checkpoint stores it: move to the (out, in) layout, same values.
            self.weight = nn.Parameter(weight.detach().t().contiguous().t(), requires_grad=weight.requires_grad)

    def extra_repr(self) -> str:
        return f"nf={self.nf}, nx={self.nx}"


class GPT2Attention(nn.Module):
    def __init__(self, config: GPT2Config, layer_idx: int) -> None:
        super().__init__()
        hidden = config.n_embd
        self.layer_idx = layer_idx
        self.head_dim = hidden // config.n_head
        self.split_size = hidden
        self.scaling = self.head_dim**-0.5 if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            self.scaling /= float(layer_idx + 1)
        self.upcast = config.reorder_and_upcast_attn
        self.c_attn = Conv1D(3 * hidden, hidden)
        self.c_proj = Conv1D(hidden, hidden)
        self.attn_dropout = nn.Dropout(config.attn_pdrop)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)
        self.attn_implementation = config._attn_implementation

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        past_key_values: DynamicCache | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, _ = hidden_states.shape
        shape = (batch, length, -1, self.head_dim)
        q, k, v = (t.view(shape).transpose(1, 2) for t in self.c_attn(hidden_states).split(self.split_size, dim=2))
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx)
        output, weights = attend(
            q, k, v, attention_mask,
            scaling=self.scaling,
            dropout=self.attn_dropout.p if self.training else 0.0,
            implementation=self.attn_implementation,
            output_attentions=output_attentions,
            upcast=self.upcast,
        )
        return self.resid_dropout(self.c_proj(output.reshape(batch, length, -1))), weights


class GPT2MLP(nn.Module):
    def __init__(self, intermediate_size: int, config: GPT2Config) -> None:
        super().__init__()
        self.c_fc = Conv1D(intermediate_size, config.n_embd)
        self.c_proj = Conv1D(config.n_embd, intermediate_size)
        self.act = get_activation(config.activation_function)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(hidden_states))))


class GPT2Block(nn.Module):
    """Pre-norm block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPT2Config, layer_idx: int) -> None:
        super().__init__()
        hidden = config.n_embd
        self.ln_1 = nn.LayerNorm(hidden, eps=config.layer_norm_epsilon)
        self.attn = GPT2Attention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(hidden, eps=config.layer_norm_epsilon)
        self.mlp = GPT2MLP(config.n_inner if config.n_inner is not None else 4 * hidden, config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        past_key_values: DynamicCache | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.attn(self.ln_1(hidden_states), attention_mask, past_key_values, output_attentions)
        hidden_states = hidden_states + attended
        return hidden_states + self.mlp(self.ln_2(hidden_states)), weights


class GPT2PreTrainedModel(PreTrainedModel):
    config_class = GPT2Config
    base_model_prefix = "transformer"
    _no_split_modules: ClassVar[list[str]] = ["GPT2Block"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, Conv1D):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            nn.init.zeros_(module.bias)
        elif isinstance(module, (GPT2Attention, GPT2MLP)):
            # GPT-2's scheme: the projections into the residual stream shrink with depth (1/sqrt(2 * layers)).
            nn.init.normal_(module.c_proj.weight, mean=0.0, std=std / (2 * self.config.n_layer) ** 0.5)

    def _add_base_model(self, config: GPT2Config) -> None:
        self.transformer = GPT2Model(config)


class GPT2Model(GPT2PreTrainedModel):
    """The decoder stack: token and position embeddings, blocks and the final LayerNorm."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__(config)
        if config.add_cross_attention:
            raise ConfigError("GPT2Config: add_cross_attention is not supported by torchformers; set it to false.")
        self.embed_dim = config.n_embd
        self.wte = nn.Embedding(config.vocab_size, self.embed_dim)
        self.wpe = nn.Embedding(config.n_positions, self.embed_dim)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(GPT2Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(self.embed_dim, eps=config.layer_norm_epsilon)
        self.gradient_checkpointing = False
        self.checkpoint_options: dict[str, Any] = {"use_reentrant": False}
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.wte = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        past_key_values: DynamicCache | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPastAndCrossAttentions | tuple:
        """``token_type_ids`` are embedded with the token embeddings (``wte``), as GPT-2 does."""
        if encoder_hidden_states is not None or encoder_attention_mask is not None:
            raise UnsupportedArgumentError("GPT-2 cross-attention (encoder_hidden_states) is not supported.")
        if (input_ids is None) == (inputs_embeds is None):
            raise UnsupportedArgumentError("Pass exactly one of input_ids and inputs_embeds.")
        config = self.config
        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids)
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        use_cache = config.use_cache if use_cache is None else use_cache
        checkpointing = self.gradient_checkpointing and self.training
        if checkpointing:
            use_cache, past_key_values = False, None  # recomputation in backward cannot replay cache writes
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache()
        batch, length = inputs_embeds.shape[:2]
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past_length, past_length + length, device=inputs_embeds.device)[None]
        hidden_states = inputs_embeds + self.wpe(position_ids)
        if token_type_ids is not None:
            hidden_states = hidden_states + self.wte(token_type_ids)
        hidden_states = self.drop(hidden_states)
        mask = build_attention_mask(
            attention_mask, batch_size=batch, query_length=length, past_length=past_length,
            device=inputs_embeds.device,
        )
        all_hidden_states: tuple[torch.Tensor, ...] = ()
        all_attentions: tuple[torch.Tensor, ...] = ()
        for block in self.h:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if checkpointing:
                hidden_states, weights = checkpoint(
                    block, hidden_states, mask, None, output_attentions, **self.checkpoint_options
                )
            else:
                hidden_states, weights = block(hidden_states, mask, past_key_values, output_attentions)
            if output_attentions:
                all_attentions += (weights,)
        hidden_states = self.ln_f(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        output = BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=hidden_states,
            past_key_values=past_key_values if use_cache else None,
            hidden_states=all_hidden_states or None,
            attentions=all_attentions or None,
        )
        return returned(output, return_dict, config)


class GPT2LMHeadModel(GPT2PreTrainedModel, GenerationMixin):
    """GPT-2 with its language-model head (tied to ``wte``); ``labels`` give the next-token loss."""

    _tied_weights_keys: ClassVar[dict[str, str]] = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: GPT2Config) -> None:
        super().__init__(config)
        self._add_base_model(config)
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        past_key_values: DynamicCache | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> CausalLMOutputWithCrossAttentions | tuple:
        """``logits_to_keep=n`` computes logits for the last ``n`` positions only (0: all)."""
        outputs = self.transformer(
            input_ids, past_key_values=past_key_values, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, inputs_embeds=inputs_embeds, encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask, use_cache=use_cache, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True,
        )
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(outputs.last_hidden_state[:, keep])
        loss = causal_lm_loss(logits, labels, num_items_in_batch) if labels is not None else None
        output = CausalLMOutputWithCrossAttentions(
            loss=loss, logits=logits, past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states, attentions=outputs.attentions,
        )
        return returned(output, return_dict, self.config)


class GPT2ForSequenceClassification(GPT2PreTrainedModel):
    """GPT-2 with a linear ``score`` head read at each sequence's last non-padding token."""

    _new_head_prefixes = ("score",)

    def __init__(self, config: GPT2Config) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self._add_base_model(config)
        self.score = nn.Linear(config.n_embd, config.num_labels, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        past_key_values: DynamicCache | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SequenceClassifierOutputWithPast | tuple:
        outputs = self.transformer(
            input_ids, past_key_values=past_key_values, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, inputs_embeds=inputs_embeds, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        logits = pool_last_token(self.score(outputs.last_hidden_state), input_ids, self.config.pad_token_id)
        loss = sequence_classification_loss(logits, labels, self.config) if labels is not None else None
        output = SequenceClassifierOutputWithPast(
            loss=loss, logits=logits, past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states, attentions=outputs.attentions,
        )
        return returned(output, return_dict, self.config)


class GPT2ForTokenClassification(GPT2PreTrainedModel):
    """GPT-2 with a linear classifier on every token."""

    _new_head_prefixes = ("classifier",)

    def __init__(self, config: GPT2Config) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self._add_base_model(config)
        dropout = getattr(config, "classifier_dropout", None)
        if dropout is None:
            dropout = getattr(config, "hidden_dropout", None)
        self.dropout = nn.Dropout(0.1 if dropout is None else dropout)
        self.classifier = nn.Linear(config.n_embd, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        past_key_values: DynamicCache | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> TokenClassifierOutput | tuple:
        outputs = self.transformer(
            input_ids, past_key_values=past_key_values, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, inputs_embeds=inputs_embeds, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        loss = token_loss(logits, labels) if labels is not None else None
        output = TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return returned(output, return_dict, self.config)


class GPT2ForQuestionAnswering(GPT2PreTrainedModel):
    """GPT-2 with a span head: start and end scores for every token."""

    _new_head_prefixes = ("qa_outputs",)

    def __init__(self, config: GPT2Config) -> None:
        super().__init__(config)
        self._add_base_model(config)
        self.qa_outputs = nn.Linear(config.n_embd, 2)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        start_positions: torch.LongTensor | None = None,
        end_positions: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> QuestionAnsweringModelOutput | tuple:
        outputs = self.transformer(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, position_ids=position_ids,
            inputs_embeds=inputs_embeds, use_cache=False, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True,
        )
        start_logits, end_logits = span_logits(self.qa_outputs(outputs.last_hidden_state))
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = question_answering_loss(start_logits, end_logits, start_positions, end_positions)
        output = QuestionAnsweringModelOutput(
            loss=loss, start_logits=start_logits, end_logits=end_logits, hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return returned(output, return_dict, self.config)
