"""RoBERTa and XLM-RoBERTa: BERT's encoder with positions counted from ``padding_idx``.

RoBERTa numbers the positions of real tokens ``padding_idx + 1, padding_idx + 2, ...``
and gives padding the position ``padding_idx`` (fairseq's convention), and has its own
masked-LM and classification heads; everything else is BERT's (``bert.py``). XLM-RoBERTa
is the same architecture under its own ``model_type`` and class names: a config class and
names, nothing more. Weights load by the reference names (``roberta.encoder.layer.0...``,
``lm_head.dense.weight``) for both.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ..modeling import PreTrainedModel, relative_class
from ..nn.fused import fused_linear
from ..outputs import BaseModelOutputWithPoolingAndCrossAttentions
from .bert import (
    BertConfig,
    BertEmbeddings,
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    BertPreTrainedModel,
    classifier_dropout,
)


class RobertaConfig(BertConfig):
    """Configuration of RoBERTa models, with the reference library's defaults (roberta-base)."""

    model_type = "roberta"
    defaults = {**BertConfig.defaults, "vocab_size": 50265, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}


class XLMRobertaConfig(RobertaConfig):
    """Configuration of XLM-RoBERTa models: RoBERTa's architecture and keys under its own model_type."""

    model_type = "xlm-roberta"
    defaults = {**RobertaConfig.defaults, "vocab_size": 30522}


class RobertaEmbeddings(BertEmbeddings):
    """BERT's embeddings with positions counted from ``padding_idx + 1``; padding sits at ``padding_idx``."""

    def __init__(self, config: RobertaConfig) -> None:
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.position_embeddings = nn.Embedding(
            config.max_position_embeddings, config.hidden_size, padding_idx=self.padding_idx
        )

    def default_position_ids(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor) -> torch.Tensor:
        if input_ids is None:
            # Padding cannot be told apart in embeddings: every position counts.
            start = self.padding_idx + 1
            return torch.arange(start, start + inputs_embeds.shape[1], device=inputs_embeds.device)[None]
        real = input_ids.ne(self.padding_idx).int()
        return (torch.cumsum(real, dim=1) * real).long() + self.padding_idx


class RobertaLMHead(nn.Module):
    """dense -> gelu -> layer_norm -> decoder to vocabulary scores; ``bias`` is the decoder's (tied)."""

    def __init__(self, config: RobertaConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # The exact (erf) GELU whatever hidden_act says, as in the reference.
        return fused_linear(self.layer_norm(fused_linear(features, self.dense, activation="gelu")), self.decoder)


class RobertaClassificationHead(nn.Module):
    """Sentence classification from the first token (<s>): dense -> tanh -> out_proj."""

    def __init__(self, config: RobertaConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(classifier_dropout(config))
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.dropout(features[:, 0])
        x = self.dropout(torch.tanh(self.dense(x)))
        return self.out_proj(x)


class RobertaPreTrainedModel(BertPreTrainedModel):
    config_class = RobertaConfig
    base_model_prefix = "roberta"
    _no_split_modules: ClassVar[list[str]] = ["RobertaEmbeddings", "BertLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, RobertaLMHead):
            nn.init.zeros_(module.bias)


class RobertaModel(RobertaPreTrainedModel, BertModel):
    """The RoBERTa encoder: BERT's, with RoBERTa's position numbering."""

    embeddings_class = RobertaEmbeddings


RobertaPreTrainedModel.base_model_class = RobertaModel


class RobertaForMaskedLM(RobertaPreTrainedModel, BertForMaskedLM):
    """The encoder with RoBERTa's masked-LM head (``lm_head``); the decoder shares the word
    embeddings (and its bias is ``lm_head.bias``) while ``tie_word_embeddings`` is true."""

    _tied_weights_keys: ClassVar[dict[str, str]] = {
        "lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight",
        "lm_head.decoder.bias": "lm_head.bias",
    }
    _new_head_prefixes = ("lm_head",)

    def __init__(self, config: RobertaConfig) -> None:
        PreTrainedModel.__init__(self, config)  # the heads are built here, not by the BERT class
        self._add_base_model(config, add_pooling_layer=False)
        self.lm_head = RobertaLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head.decoder = value

    def prediction_scores(self, sequence_output: torch.Tensor) -> torch.Tensor:
        return self.lm_head(sequence_output)


class RobertaForSequenceClassification(RobertaPreTrainedModel, BertForSequenceClassification):
    """The encoder (no pooler) with RoBERTa's classification head on the first token."""

    def __init__(self, config: RobertaConfig) -> None:
        PreTrainedModel.__init__(self, config)  # the heads are built here, not by the BERT class
        self.num_labels = config.num_labels
        self._add_base_model(config, add_pooling_layer=False)
        self.classifier = RobertaClassificationHead(config)
        self.post_init()

    def classify(self, outputs: BaseModelOutputWithPoolingAndCrossAttentions) -> torch.Tensor:
        return self.classifier(outputs.last_hidden_state)


class RobertaForMultipleChoice(RobertaPreTrainedModel, BertForMultipleChoice):
    def __init__(self, config: RobertaConfig) -> None:
        super().__init__(config)
        self.dropout.p = config.hidden_dropout_prob  # RoBERTa ignores classifier_dropout here

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ):
        """As BERT's, with the reference's order of positional arguments."""
        return super().forward(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, position_ids=position_ids,
            inputs_embeds=inputs_embeds, labels=labels, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=return_dict,
        )


RobertaForTokenClassification = relative_class(
    "RobertaForTokenClassification", (RobertaPreTrainedModel, BertForTokenClassification), __name__
)
RobertaForQuestionAnswering = relative_class(
    "RobertaForQuestionAnswering", (RobertaPreTrainedModel, BertForQuestionAnswering), __name__
)


# -- XLM-RoBERTa: RoBERTa under its own config class and names ------------------------------------
XLMRobertaPreTrainedModel = relative_class(
    "XLMRobertaPreTrainedModel", (RobertaPreTrainedModel,), __name__, config_class=XLMRobertaConfig
)
XLMRobertaModel = relative_class("XLMRobertaModel", (XLMRobertaPreTrainedModel, RobertaModel), __name__)
XLMRobertaPreTrainedModel.base_model_class = XLMRobertaModel
(
    XLMRobertaForMaskedLM,
    XLMRobertaForSequenceClassification,
    XLMRobertaForTokenClassification,
    XLMRobertaForQuestionAnswering,
    XLMRobertaForMultipleChoice,
) = (
    relative_class(base.__name__.replace("Roberta", "XLMRoberta"), (XLMRobertaPreTrainedModel, base), __name__)
    for base in (
        RobertaForMaskedLM,
        RobertaForSequenceClassification,
        RobertaForTokenClassification,
        RobertaForQuestionAnswering,
        RobertaForMultipleChoice,
    )
)
