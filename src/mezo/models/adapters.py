"""Parameter-efficient variants, injected into the stock model by module surgery."""


def apply(model, adapter_args) -> None:
    """LoRA (mezo.models.lora) and/or prefixes (mezo.models.prefix), as --apply_lora / --prefix_tuning ask."""
    a = adapter_args
    if a.apply_lora:
        from mezo.models.lora import inject_lora
        inject_lora(model, r=a.lora_r, alpha=a.lora_alpha)
    if a.prefix_tuning:
        from mezo.models.prefix import inject_prefix
        inject_prefix(model, num_prefix=a.num_prefix, reparam=not a.no_reparam,
                      init_by_real_act=a.prefix_init_by_real_act)
