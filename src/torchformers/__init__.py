"""torchformers: pretrained transformer models in plain PyTorch.

Public names are imported on first use, so ``import torchformers`` stays fast and does not
import torch until a model, config or tokenizer is touched.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module (relative to this package) that defines it
_LAZY_NAMES: dict[str, str] = {
    "PretrainedConfig": "config",
    "PreTrainedConfig": "config",
    "PreTrainedModel": "modeling",
    "GenerationConfig": "generation.config",
    "CompileConfig": "generation.config",
    "AutoConfig": "models.auto",
    "AutoModel": "models.auto",
    "AutoModelForCausalLM": "models.auto",
    "AutoModelForSequenceClassification": "models.auto",
    "AutoModelForMaskedLM": "models.auto",
    "AutoModelForTokenClassification": "models.auto",
    "AutoModelForQuestionAnswering": "models.auto",
    "AutoModelForMultipleChoice": "models.auto",
    "DynamicCache": "nn.cache",
    "WeightOnlyConfig": "quantization.config",
    "set_seed": "seeding",
    "errors": "errors",
}
_FAMILY_NAMES = {
    "models.llama": [
        f"{family}{suffix}"
        for family in ("Llama", "Mistral", "Qwen2", "Qwen3")
        for suffix in ("Config", "PreTrainedModel", "Model", "ForCausalLM", "ForSequenceClassification")
    ],
    "models.gpt2": [
        f"GPT2{suffix}"
        for suffix in ("Config", "PreTrainedModel", "Model", "LMHeadModel", "ForSequenceClassification",
                       "ForTokenClassification", "ForQuestionAnswering")
    ],
    **{
        module: [
            f"{family}{suffix}"
            for family in families
            for suffix in ("Config", "PreTrainedModel", "Model", "ForMaskedLM", "ForSequenceClassification",
                           "ForTokenClassification", "ForQuestionAnswering", "ForMultipleChoice")
        ]
        for module, families in (("models.bert", ["Bert"]), ("models.roberta", ["Roberta", "XLMRoberta"]),
                                 ("models.distilbert", ["DistilBert"]))
    },
}
for _module, _names in _FAMILY_NAMES.items():
    _LAZY_NAMES.update(dict.fromkeys(_names, _module))
_TOKENIZATION_NAMES = {
    "tokenization.auto": ["AutoTokenizer"],
    "tokenization.base": ["BatchEncoding", "PreTrainedTokenizerBase"],
    "tokenization.fast": ["PreTrainedTokenizerFast", "BertTokenizerFast", "GPT2TokenizerFast", "LlamaTokenizerFast",
                          "T5TokenizerFast"],
    "tokenization.slow": ["PreTrainedTokenizer", "BertTokenizer", "GPT2Tokenizer", "LlamaTokenizer", "T5Tokenizer"],
}
for _module, _names in _TOKENIZATION_NAMES.items():
    _LAZY_NAMES.update(dict.fromkeys(_names, _module))

_GENERATION_NAMES = {
    "generation.logits": [
        "LogitsProcessor", "LogitsProcessorList", "MinLengthLogitsProcessor", "MinNewTokensLengthLogitsProcessor",
        "TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper", "MinPLogitsWarper", "TypicalLogitsWarper",
        "EpsilonLogitsWarper", "EtaLogitsWarper", "RepetitionPenaltyLogitsProcessor", "NoRepeatNGramLogitsProcessor",
        "NoBadWordsLogitsProcessor", "SequenceBiasLogitsProcessor", "ForcedBOSTokenLogitsProcessor",
        "ForcedEOSTokenLogitsProcessor", "SuppressTokensLogitsProcessor", "SuppressTokensAtBeginLogitsProcessor",
        "PrefixConstrainedLogitsProcessor", "InfNanRemoveLogitsProcessor", "LogitNormalization",
        "ExponentialDecayLengthPenalty", "EncoderRepetitionPenaltyLogitsProcessor", "EncoderNoRepeatNGramLogitsProcessor",
        "TopHLogitsWarper", "UnbatchedClassifierFreeGuidanceLogitsProcessor",
    ],
    "generation.stopping": ["StoppingCriteria", "StoppingCriteriaList", "MaxLengthCriteria", "MaxTimeCriteria",
                            "EosTokenCriteria", "StopStringCriteria"],
    "generation.streamers": ["BaseStreamer", "TextStreamer", "TextIteratorStreamer"],
    "generation.watermarking": ["WatermarkingConfig", "WatermarkLogitsProcessor", "WatermarkDetector",
                                "SynthIDTextWatermarkingConfig", "SynthIDTextWatermarkLogitsProcessor",
                                "WatermarkDetectorOutput"],
    "generation.utils": ["GenerationMixin", "GenerateDecoderOnlyOutput", "GenerateBeamDecoderOnlyOutput"],
    "nn.cache": ["StaticCache"],
}
for _module, _names in _GENERATION_NAMES.items():
    _LAZY_NAMES.update(dict.fromkeys(_names, _module))

_TRAINING_NAMES = {
    "training.arguments": ["TrainingArguments", "IntervalStrategy", "SaveStrategy"],
    "training.trainer": ["Trainer", "EvalPrediction", "TrainOutput", "PredictionOutput"],
    "training.callbacks": ["TrainerCallback", "TrainerState", "TrainerControl", "EarlyStoppingCallback",
                           "DefaultFlowCallback", "ProgressCallback", "PrinterCallback"],
    "training.checkpoints": ["get_last_checkpoint"],
    "training.collators": ["default_data_collator", "DefaultDataCollator", "DataCollatorWithPadding",
                           "DataCollatorForLanguageModeling", "DataCollatorForTokenClassification",
                           "DataCollatorForSeq2Seq"],
    "training.schedulers": ["SchedulerType", "get_scheduler", "get_constant_schedule",
                            "get_constant_schedule_with_warmup", "get_linear_schedule_with_warmup",
                            "get_cosine_schedule_with_warmup", "get_cosine_with_hard_restarts_schedule_with_warmup",
                            "get_polynomial_decay_schedule_with_warmup"],
}
for _module, _names in _TRAINING_NAMES.items():
    _LAZY_NAMES.update(dict.fromkeys(_names, _module))

_PIPELINE_NAMES = {
    "pipelines": ["pipeline"],
    "pipelines.base": ["Pipeline"],
    "pipelines.text_generation": ["TextGenerationPipeline"],
    "pipelines.text_classification": ["TextClassificationPipeline"],
    "pipelines.token_classification": ["TokenClassificationPipeline", "NerPipeline"],
    "pipelines.question_answering": ["QuestionAnsweringPipeline"],
    "pipelines.fill_mask": ["FillMaskPipeline"],
    "pipelines.feature_extraction": ["FeatureExtractionPipeline", "SentenceEmbeddingPipeline"],
    "pipelines.zero_shot_classification": ["ZeroShotClassificationPipeline"],
}
for _module, _names in _PIPELINE_NAMES.items():
    _LAZY_NAMES.update(dict.fromkeys(_names, _module))

__all__ = sorted(_LAZY_NAMES) + ["__version__"]


def __getattr__(name: str) -> Any:
    module_name = _LAZY_NAMES.get(name)
    if module_name is None:
        raise AttributeError(f"module 'torchformers' has no attribute {name!r}")
    module = importlib.import_module(f".{module_name}", __name__)
    value = module if name == module_name else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
