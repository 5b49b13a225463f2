"""MeZO for prompt-based masked language models (RoBERTa, BERT, ...)."""
