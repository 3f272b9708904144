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
from .utils import (
    get_peft_model_state_dict,
    load_peft_weights,
    prepare_model_for_kbit_training,
    set_peft_model_state_dict,
)

__all__ = [
    "LoraConfig", "LoraEmbedding", "LoraLayer", "LoraLinear", "LoraModel", "ModulesToSaveWrapper", "PeftModel", "PeftModelForCausalLM",
    "PeftModelForFeatureExtraction", "PeftModelForQuestionAnswering", "PeftModelForSequenceClassification",
    "PeftModelForTokenClassification", "TaskType", "get_peft_model", "get_peft_model_state_dict", "load_peft_weights",
    "prepare_model_for_kbit_training", "set_peft_model_state_dict",
]
