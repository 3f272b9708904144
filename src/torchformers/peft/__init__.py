"""LoRA adapters with the ``peft`` library's API and files: ``LoraConfig``, ``get_peft_model``, ``PeftModel``."""

from .config import LoraConfig, TaskType
from .lora import (
    LoraEmbedding,
    LoraLayer,
    LoraLinear,
    LoraModel,
    ModulesToSaveWrapper,
    PeftModel,
    PeftModelForCausalLM,
    PeftModelForFeatureExtraction,
    PeftModelForQuestionAnswering,
    PeftModelForSequenceClassification,
    PeftModelForTokenClassification,
    get_peft_model,
)

__all__ = [
    "LoraConfig", "LoraEmbedding", "LoraLayer", "LoraLinear", "LoraModel", "ModulesToSaveWrapper", "PeftModel", "PeftModelForCausalLM",
    "PeftModelForFeatureExtraction", "PeftModelForQuestionAnswering", "PeftModelForSequenceClassification",
    "PeftModelForTokenClassification", "TaskType", "get_peft_model",
]
