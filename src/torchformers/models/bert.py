"""BERT: a bidirectional encoder with absolute position and token-type embeddings.

Its encoder layers, pooler and heads are shared with RoBERTa and XLM-RoBERTa
(``roberta.py``), which differ in how positions are numbered and in two heads. Module
names follow the reference checkpoints (``bert.encoder.layer.0.attention.self.query.weight``)
so weights load by name. Encoder-decoder use (``is_decoder``, cross-attention) is not
supported and raises.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..config import PretrainedConfig
from ..errors import ConfigError, UnsupportedArgumentError
from ..modeling import PreTrainedModel
from ..nn.encoder import EncoderStack, feed_forward_in_chunks, padding_mask, self_attention
from ..nn.fused import fused_linear
from ..nn.heads import check_span_labels, flatten_choices, span_logits
from ..nn.losses import cross_entropy, question_answering_loss, sequence_classification_loss, token_loss
from ..nn.mlp import get_activation
from ..outputs import (
    BaseModelOutputWithPoolingAndCrossAttentions,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
    returned,
)

_DEFAULTS: dict[str, Any] = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
    "use_cache": True,
    "classifier_dropout": None,
    "is_decoder": False,
    "add_cross_attention": False,
    "bos_token_id": None,
    "eos_token_id": None,
    "tie_word_embeddings": True,
}


class BertConfig(PretrainedConfig):
    """Configuration of BERT models, with the reference library's defaults (bert-base-uncased)."""

    model_type = "bert"
    defaults = _DEFAULTS

    def validate(self) -> None:
        super().validate()
        self.require_positive_ints(
            "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "max_position_embeddings", "type_vocab_size",
        )
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"{type(self).__name__}: hidden_size ({self.hidden_size}) is not a multiple of "
                f"num_attention_heads ({self.num_attention_heads})."
            )
        get_activation(self.hidden_act)


def check_encoder_only(config: PretrainedConfig) -> None:
    """Refuse the decoder and cross-attention settings this encoder does not implement."""
    name = type(config).__name__
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        raise ConfigError(
            f"{name}: is_decoder / add_cross_attention are not supported; torchformers runs this family as a "
            "bidirectional encoder only. Set both to false."
        )
    position_type = getattr(config, "position_embedding_type", "absolute")
    if position_type not in (None, "absolute"):
        raise ConfigError(
            f"{name}: position_embedding_type={position_type!r} is not supported; only 'absolute' is."
        )


def classifier_dropout(config: PretrainedConfig) -> float:
    """``classifier_dropout`` when set, else ``hidden_dropout_prob`` (the heads' dropout)."""
    return config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob


# -- the encoder ------------------------------------------------------------------------------
class BertEmbeddings(nn.Module):
    """Word + token-type + position embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, hidden, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, hidden)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def default_position_ids(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Positions 0, 1, ... for every row."""
        return torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device)[None]

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        if token_type_ids is None:
            # Every token of type 0: one row, broadcast, instead of a lookup per token.
            embeddings = inputs_embeds + self.token_type_embeddings.weight[0]
        else:
            embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids)
        if position_ids is None:
            position_ids = self.default_position_ids(input_ids, inputs_embeds)
        embeddings = embeddings + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.num_attention_heads = config.num_attention_heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        self.attn_implementation = config._attn_implementation

    def forward(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor | None,
        output_attentions: bool = False,
        first_token_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self_attention(
            hidden_states, self.query, self.key, self.value, self.num_attention_heads, mask,
            implementation=self.attn_implementation,
            dropout=self.dropout.p if self.training else 0.0,
            output_attentions=output_attentions,
            first_token_only=first_token_only,
        )


class BertSelfOutput(nn.Module):
    """Output projection, dropout, then the residual add and LayerNorm (post-norm)."""

    def __init__(self, config: BertConfig, input_size: int | None = None) -> None:
        super().__init__()
        self.dense = nn.Linear(input_size or config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        if self.training:  # dropout sits between the projection and the residual add
            return self.LayerNorm(self.dropout(fused_linear(hidden_states, self.dense)) + residual)
        return self.LayerNorm(fused_linear(hidden_states, self.dense, residual=residual))


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor | None,
        output_attentions: bool = False,
        first_token_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.self(hidden_states, mask, output_attentions, first_token_only)
        residual = hidden_states[:, :1] if first_token_only else hidden_states
        return self.output(attended, residual), weights


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.hidden_act = config.hidden_act

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return fused_linear(hidden_states, self.dense, activation=self.hidden_act)


class BertOutput(BertSelfOutput):
    """The feed-forward's down projection with its residual add and LayerNorm."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config, input_size=config.intermediate_size)


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.chunk_size_feed_forward = config.chunk_size_feed_forward
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def feed_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.output(self.intermediate(hidden_states), hidden_states)

    def forward(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor | None,
        output_attentions: bool = False,
        first_token_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.attention(hidden_states, mask, output_attentions, first_token_only)
        return feed_forward_in_chunks(self.feed_forward, attended, self.chunk_size_feed_forward), weights


class BertPooler(nn.Module):
    """tanh(dense(first token)): the [CLS] summary the classification heads read."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.hidden_act = config.hidden_act
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(fused_linear(hidden_states, self.dense, activation=self.hidden_act))


class BertLMPredictionHead(nn.Module):
    """Transform, then the decoder to vocabulary scores; ``bias`` is the decoder's bias (tied)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return fused_linear(self.transform(hidden_states), self.decoder)


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def forward(self, sequence_output: torch.Tensor) -> torch.Tensor:
        return self.predictions(sequence_output)


# -- models -------------------------------------------------------------------------------------
class BertPreTrainedModel(PreTrainedModel):
    config_class = BertConfig
    base_model_prefix = "bert"
    # The bare encoder each head builds under ``base_model_prefix`` (set below, once defined).
    base_model_class: ClassVar[type[PreTrainedModel]]
    _no_split_modules: ClassVar[list[str]] = ["BertEmbeddings", "BertLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, BertLMPredictionHead):
            nn.init.zeros_(module.bias)

    def _add_base_model(self, config: PretrainedConfig, add_pooling_layer: bool) -> None:
        self.add_module(self.base_model_prefix, self.base_model_class(config, add_pooling_layer=add_pooling_layer))


class BertModel(BertPreTrainedModel):
    """The encoder: embeddings, layers and (unless ``add_pooling_layer=False``) the pooler.

    Returns the last hidden states and ``pooler_output``. A checkpoint without pooler weights
    loads with a fresh pooler and a warning, as in the reference.
    """

    embeddings_class: ClassVar[type[BertEmbeddings]] = BertEmbeddings
    _new_head_prefixes = ("pooler",)

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        check_encoder_only(config)
        self.embeddings = self.embeddings_class(config)
        self.encoder = EncoderStack([BertLayer(config) for _ in range(config.num_hidden_layers)])
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        *,
        first_token_only: bool = False,
    ) -> BaseModelOutputWithPoolingAndCrossAttentions | tuple:
        """``attention_mask`` (1 for real tokens) hides padding; ``use_cache`` has no effect on an
        encoder (as in the reference). Cross-attention inputs and a cache raise.

        ``first_token_only`` (not in the reference) computes the last layer for the first
        position alone, so ``last_hidden_state`` has length 1: the pooler and the [CLS]
        classification heads need nothing else, and they set it. It is ignored when hidden
        states or attentions are asked for.
        """
        if encoder_hidden_states is not None or encoder_attention_mask is not None or past_key_values is not None:
            raise UnsupportedArgumentError(
                f"{type(self).__name__} is an encoder only: encoder_hidden_states, encoder_attention_mask and "
                "past_key_values are not supported."
            )
        if (input_ids is None) == (inputs_embeds is None):
            raise UnsupportedArgumentError("Pass exactly one of input_ids and inputs_embeds.")
        config = self.config
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        embeddings = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
        mask = padding_mask(attention_mask, embeddings)
        hidden_states, all_hidden_states, all_attentions = self.encoder(
            embeddings, mask, output_hidden_states, output_attentions, first_token_only
        )
        pooled = self.pooler(hidden_states) if self.pooler is not None else None
        output = BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=hidden_states, pooler_output=pooled, hidden_states=all_hidden_states,
            attentions=all_attentions,
        )
        return returned(output, return_dict, config)


BertPreTrainedModel.base_model_class = BertModel


class BertForMaskedLM(BertPreTrainedModel):
    """The encoder with the masked-LM head; the decoder shares the word embeddings (and its bias
    is ``cls.predictions.bias``) while ``tie_word_embeddings`` is true."""

    _tied_weights_keys: ClassVar[dict[str, str]] = {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }
    _new_head_prefixes = ("cls.",)

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self._add_base_model(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.cls.predictions.decoder

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.cls.predictions.decoder = value
        self.cls.predictions.bias = value.bias

    def prediction_scores(self, sequence_output: torch.Tensor) -> torch.Tensor:
        return self.cls(sequence_output)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> MaskedLMOutput | tuple:
        """``labels``: the token to predict at each position, -100 where there is none."""
        outputs = self.base_model(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, position_ids=position_ids,
            inputs_embeds=inputs_embeds, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True,
        )
        logits = self.prediction_scores(outputs.last_hidden_state)
        loss = token_loss(logits, labels) if labels is not None else None
        output = MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return returned(output, return_dict, self.config)


class BertForSequenceClassification(BertPreTrainedModel):
    """The encoder with a linear classifier over the pooled [CLS] output. ``labels`` give the
    regression, single-label or multi-label loss by ``config.problem_type``."""

    _new_head_prefixes = ("classifier",)

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self._add_base_model(config, add_pooling_layer=True)
        self.dropout = nn.Dropout(classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def classify(self, outputs: BaseModelOutputWithPoolingAndCrossAttentions) -> torch.Tensor:
        return self.classifier(self.dropout(outputs.pooler_output))

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SequenceClassifierOutput | tuple:
        outputs = self.base_model(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, position_ids=position_ids,
            inputs_embeds=inputs_embeds, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True, first_token_only=True,
        )
        logits = self.classify(outputs)
        loss = sequence_classification_loss(logits, labels, self.config) if labels is not None else None
        output = SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return returned(output, return_dict, self.config)


class BertForTokenClassification(BertPreTrainedModel):
    """The encoder with a linear classifier on every token (NER, tagging)."""

    _new_head_prefixes = ("classifier",)

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self._add_base_model(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> TokenClassifierOutput | tuple:
        """``labels``: a class per token, -100 for tokens to leave out of the loss."""
        outputs = self.base_model(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, position_ids=position_ids,
            inputs_embeds=inputs_embeds, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True,
        )
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        loss = token_loss(logits, labels) if labels is not None else None
        output = TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return returned(output, return_dict, self.config)


class BertForQuestionAnswering(BertPreTrainedModel):
    """The encoder with a span head: start and end scores for every token (SQuAD-style)."""

    _new_head_prefixes = ("qa_outputs",)

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        check_span_labels(config)
        self.num_labels = config.num_labels
        self._add_base_model(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> QuestionAnsweringModelOutput | tuple:
        """With ``start_positions`` and ``end_positions`` the loss is the mean of the two
        cross-entropies; positions past the sequence are ignored."""
        outputs = self.base_model(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, position_ids=position_ids,
            inputs_embeds=inputs_embeds, output_attentions=output_attentions,
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


class BertForMultipleChoice(BertPreTrainedModel):
    """Scores each of ``num_choices`` candidate sequences: inputs are (batch, num_choices, seq)
    and ``logits`` (batch, num_choices)."""

    _new_head_prefixes = ("classifier",)

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self._add_base_model(config, add_pooling_layer=True)
        self.dropout = nn.Dropout(classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> MultipleChoiceModelOutput | tuple:
        """``labels``: the index of the right choice for each example."""
        num_choices = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        outputs = self.base_model(
            flatten_choices(input_ids), attention_mask=flatten_choices(attention_mask),
            token_type_ids=flatten_choices(token_type_ids), position_ids=flatten_choices(position_ids),
            inputs_embeds=flatten_choices(inputs_embeds, trailing_dims=2), output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True, first_token_only=True,
        )
        logits = self.classifier(self.dropout(outputs.pooler_output)).view(-1, num_choices)
        loss = cross_entropy(logits, labels.to(logits.device)) if labels is not None else None
        output = MultipleChoiceModelOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return returned(output, return_dict, self.config)
