"""The Hugging Face integration: the Trainer subclass, its callbacks, checkpoints and preemption."""
