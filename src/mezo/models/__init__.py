"""A masked LM as a prompt-based classifier, its adapters (LoRA, prefixes) and the export."""
