"""The model families the project knows, by `config.model_type`: one place for every check."""

# RoBERTa-style: no token types (segments never reach the model); positions start after the pad index.
ROBERTA_TYPES = ("roberta", "xlm-roberta", "camembert")
# Self-attention modules that LoRA (mezo.models.lora) and prefix tuning (mezo.models.prefix) know.
PEFT_MODEL_TYPES = ROBERTA_TYPES + ("bert",)
