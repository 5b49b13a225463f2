"""Tasks, k-shot splits, prompt templates and the few-shot datasets built from them."""
