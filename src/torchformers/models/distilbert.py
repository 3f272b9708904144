"""DistilBERT: a six-layer BERT without token types or pooler, under its own parameter names.

The math of a layer is BERT's (post-norm attention and feed-forward); the shared pieces
(attention, padding mask, layer stack, losses) come from ``nn/``. Module names follow the
reference checkpoints (``distilbert.transformer.layer.0.attention.q_lin.weight``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from ..config import PretrainedConfig
from ..errors import ConfigError, UnsupportedArgumentError
from ..modeling import PreTrainedModel
from ..nn.encoder import EncoderStack, feed_forward_in_chunks, padding_mask, self_attention
from ..nn.fused import fused_linear
from ..nn.heads import check_span_labels, flatten_choices, span_logits
from ..nn.losses import cross_entropy, question_answering_loss, sequence_classification_loss, token_loss
from ..nn.mlp import get_activation
from ..outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
    returned,
)

_LAYER_NORM_EPS = 1e-12  # fixed in DistilBERT, not a config value


class DistilBertConfig(PretrainedConfig):
    """Configuration of DistilBERT models, with the reference library's defaults.

    ``hidden_size``, ``num_attention_heads`` and ``num_hidden_layers`` are the standard
    names of ``dim``, ``n_heads`` and ``n_layers``.
    """

    model_type = "distilbert"
    attribute_map: ClassVar[dict[str, str]] = {
        "hidden_size": "dim", "num_attention_heads": "n_heads", "num_hidden_layers": "n_layers",
    }
    defaults: ClassVar[dict[str, Any]] = {
        "vocab_size": 30522,
        "max_position_embeddings": 512,
        "sinusoidal_pos_embds": False,
        "n_layers": 6,
        "n_heads": 12,
        "dim": 768,
        "hidden_dim": 4 * 768,
        "dropout": 0.1,
        "attention_dropout": 0.1,
        "activation": "gelu",
        "initializer_range": 0.02,
        "qa_dropout": 0.1,
        "seq_classif_dropout": 0.2,
        "pad_token_id": 0,
        "eos_token_id": None,
        "bos_token_id": None,
        "tie_word_embeddings": True,
    }

    def validate(self) -> None:
        super().validate()
        self.require_positive_ints("vocab_size", "max_position_embeddings", "n_layers", "n_heads", "dim", "hidden_dim")
        if self.dim % self.n_heads:
            raise ConfigError(f"{type(self).__name__}: dim ({self.dim}) is not a multiple of n_heads ({self.n_heads}).")
        get_activation(self.activation)


def sinusoidal_positions(num_positions: int, dim: int) -> torch.Tensor:
    """The fixed sin/cos position table (``sinusoidal_pos_embds``): sin on even, cos on odd features."""
    positions = torch.arange(num_positions, dtype=torch.float64)[:, None]
    rates = torch.pow(10000.0, 2 * (torch.arange(dim, dtype=torch.float64) // 2) / dim)
    angles = positions / rates
    table = torch.empty(num_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles[:, 0::2])
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    return table.float()


class DistilBertEmbeddings(nn.Module):
    """Word + position embeddings, then LayerNorm and dropout (no token types)."""

    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.dim, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.dim)
        self.LayerNorm = nn.LayerNorm(config.dim, eps=_LAYER_NORM_EPS)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        if position_ids is None:
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device)[None]
        return self.dropout(self.LayerNorm(inputs_embeds + self.position_embeddings(position_ids)))


class DistilBertSelfAttention(nn.Module):
    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.q_lin = nn.Linear(config.dim, config.dim)
        self.k_lin = nn.Linear(config.dim, config.dim)
        self.v_lin = nn.Linear(config.dim, config.dim)
        self.out_lin = nn.Linear(config.dim, config.dim)
        self.dropout = nn.Dropout(config.attention_dropout)
        self.attn_implementation = config._attn_implementation

    def forward(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor | None,
        output_attentions: bool = False,
        residual: torch.Tensor | None = None,
        first_token_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The attention output, plus ``residual`` when given (added as the output is written)."""
        attended, weights = self_attention(
            hidden_states, self.q_lin, self.k_lin, self.v_lin, self.n_heads, mask,
            implementation=self.attn_implementation,
            dropout=self.dropout.p if self.training else 0.0,
            output_attentions=output_attentions,
            first_token_only=first_token_only,
        )
        return fused_linear(attended, self.out_lin, residual=residual), weights


class DistilBertFFN(nn.Module):
    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__()
        self.lin1 = nn.Linear(config.dim, config.hidden_dim)
        self.lin2 = nn.Linear(config.hidden_dim, config.dim)
        self.activation_name = config.activation
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The feed-forward output, plus ``residual`` when given (after the dropout)."""
        hidden_states = fused_linear(hidden_states, self.lin1, activation=self.activation_name)
        if self.training or residual is None:
            output = self.dropout(fused_linear(hidden_states, self.lin2))
            return output if residual is None else output + residual
        return fused_linear(hidden_states, self.lin2, residual=residual)


class TransformerBlock(nn.Module):
    """Post-norm layer: attention, add and norm; feed-forward, add and norm."""

    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__()
        self.chunk_size_feed_forward = config.chunk_size_feed_forward
        self.attention = DistilBertSelfAttention(config)
        self.sa_layer_norm = nn.LayerNorm(config.dim, eps=_LAYER_NORM_EPS)
        self.ffn = DistilBertFFN(config)
        self.output_layer_norm = nn.LayerNorm(config.dim, eps=_LAYER_NORM_EPS)

    def feed_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.output_layer_norm(self.ffn(hidden_states, residual=hidden_states))

    def forward(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor | None,
        output_attentions: bool = False,
        first_token_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        residual = hidden_states[:, :1] if first_token_only else hidden_states
        attended, weights = self.attention(
            hidden_states, mask, output_attentions, residual=residual, first_token_only=first_token_only
        )
        attended = self.sa_layer_norm(attended)
        return feed_forward_in_chunks(self.feed_forward, attended, self.chunk_size_feed_forward), weights


class DistilBertPreTrainedModel(PreTrainedModel):
    config_class = DistilBertConfig
    base_model_prefix = "distilbert"
    _no_split_modules: ClassVar[list[str]] = ["TransformerBlock"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, DistilBertEmbeddings) and self.config.sinusoidal_pos_embds:
            weight = module.position_embeddings.weight
            if not weight.is_meta:
                with torch.no_grad():
                    weight.copy_(sinusoidal_positions(*weight.shape))

    def _add_base_model(self, config: DistilBertConfig) -> None:
        self.distilbert = DistilBertModel(config)


class DistilBertModel(DistilBertPreTrainedModel):
    """The encoder: embeddings and six (``n_layers``) post-norm layers; returns hidden states."""

    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__(config)
        self.embeddings = DistilBertEmbeddings(config)
        self.transformer = EncoderStack([TransformerBlock(config) for _ in range(config.n_layers)])
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def get_position_embeddings(self) -> nn.Embedding:
        return self.embeddings.position_embeddings

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        *,
        first_token_only: bool = False,
    ) -> BaseModelOutput | tuple:
        """``first_token_only`` (not in the reference): the last layer for the first position
        alone, all the classification heads read; ignored when hidden states or attentions are
        asked for."""
        if (input_ids is None) == (inputs_embeds is None):
            raise UnsupportedArgumentError("Pass exactly one of input_ids and inputs_embeds.")
        config = self.config
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        embeddings = self.embeddings(input_ids, inputs_embeds, position_ids)
        hidden_states, all_hidden_states, all_attentions = self.transformer(
            embeddings, padding_mask(attention_mask, embeddings), output_hidden_states, output_attentions,
            first_token_only,
        )
        output = BaseModelOutput(
            last_hidden_state=hidden_states, hidden_states=all_hidden_states, attentions=all_attentions
        )
        return returned(output, return_dict, config)


class DistilBertForMaskedLM(DistilBertPreTrainedModel):
    """The encoder with the masked-LM head; ``vocab_projector`` shares the word embeddings while
    ``tie_word_embeddings`` is true."""

    _tied_weights_keys: ClassVar[dict[str, str]] = {
        "vocab_projector.weight": "distilbert.embeddings.word_embeddings.weight"
    }
    _new_head_prefixes = ("vocab_transform", "vocab_layer_norm", "vocab_projector")

    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__(config)
        self._add_base_model(config)
        self.vocab_transform = nn.Linear(config.dim, config.dim)
        self.vocab_layer_norm = nn.LayerNorm(config.dim, eps=_LAYER_NORM_EPS)
        self.vocab_projector = nn.Linear(config.dim, config.vocab_size)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.vocab_projector

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.vocab_projector = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> MaskedLMOutput | tuple:
        """``labels``: the token to predict at each position, -100 where there is none."""
        outputs = self.distilbert(
            input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, position_ids=position_ids,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        transformed = fused_linear(outputs.last_hidden_state, self.vocab_transform, activation=self.config.activation)
        logits = fused_linear(self.vocab_layer_norm(transformed), self.vocab_projector)
        loss = token_loss(logits, labels) if labels is not None else None
        output = MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return returned(output, return_dict, self.config)


class DistilBertForSequenceClassification(DistilBertPreTrainedModel):
    """The encoder with ``pre_classifier`` -> ReLU -> ``classifier`` on the first token. ``labels``
    give the regression, single-label or multi-label loss by ``config.problem_type``."""

    _new_head_prefixes = ("pre_classifier", "classifier")

    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self._add_base_model(config)
        self.pre_classifier = nn.Linear(config.dim, config.dim)
        self.classifier = nn.Linear(config.dim, config.num_labels)
        self.dropout = nn.Dropout(config.seq_classif_dropout)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SequenceClassifierOutput | tuple:
        outputs = self.distilbert(
            input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, position_ids=position_ids,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
            first_token_only=True,
        )
        pooled = self.dropout(F.relu(self.pre_classifier(outputs.last_hidden_state[:, 0])))
        logits = self.classifier(pooled)
        loss = sequence_classification_loss(logits, labels, self.config) if labels is not None else None
        output = SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return returned(output, return_dict, self.config)


class DistilBertForTokenClassification(DistilBertPreTrainedModel):
    """The encoder with a linear classifier on every token (NER, tagging)."""

    _new_head_prefixes = ("classifier",)

    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self._add_base_model(config)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.dim, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> TokenClassifierOutput | tuple:
        """``labels``: a class per token, -100 for tokens to leave out of the loss."""
        outputs = self.distilbert(
            input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, position_ids=position_ids,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        loss = token_loss(logits, labels) if labels is not None else None
        output = TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return returned(output, return_dict, self.config)


class DistilBertForQuestionAnswering(DistilBertPreTrainedModel):
    """The encoder with a span head: start and end scores for every token."""

    _new_head_prefixes = ("qa_outputs",)

    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__(config)
        check_span_labels(config)
        self._add_base_model(config)
        self.qa_outputs = nn.Linear(config.dim, config.num_labels)
        self.dropout = nn.Dropout(config.qa_dropout)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> QuestionAnsweringModelOutput | tuple:
        """With ``start_positions`` and ``end_positions`` the loss is the mean of the two
        cross-entropies; positions past the sequence are ignored."""
        outputs = self.distilbert(
            input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, position_ids=position_ids,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        start_logits, end_logits = span_logits(self.qa_outputs(self.dropout(outputs.last_hidden_state)))
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = question_answering_loss(start_logits, end_logits, start_positions, end_positions)
        output = QuestionAnsweringModelOutput(
            loss=loss, start_logits=start_logits, end_logits=end_logits, hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return returned(output, return_dict, self.config)


class DistilBertForMultipleChoice(DistilBertPreTrainedModel):
    """Scores each of ``num_choices`` candidate sequences: inputs are (batch, num_choices, seq)
    and ``logits`` (batch, num_choices)."""

    _new_head_prefixes = ("pre_classifier", "classifier")

    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__(config)
        self._add_base_model(config)
        self.pre_classifier = nn.Linear(config.dim, config.dim)
        self.classifier = nn.Linear(config.dim, 1)
        self.dropout = nn.Dropout(config.seq_classif_dropout)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> MultipleChoiceModelOutput | tuple:
        """``labels``: the index of the right choice for each example."""
        num_choices = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        outputs = self.distilbert(
            flatten_choices(input_ids), attention_mask=flatten_choices(attention_mask),
            inputs_embeds=flatten_choices(inputs_embeds, trailing_dims=2), position_ids=flatten_choices(position_ids),
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
            first_token_only=True,
        )
        pooled = self.dropout(F.relu(self.pre_classifier(outputs.last_hidden_state[:, 0])))
        logits = self.classifier(pooled).view(-1, num_choices)
        loss = cross_entropy(logits, labels.to(logits.device)) if labels is not None else None
        output = MultipleChoiceModelOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return returned(output, return_dict, self.config)
