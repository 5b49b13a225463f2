"""Parameter-efficient variants, injected into the stock model by module surgery."""


def apply(model, model_args, training_args) -> None:
    if model_args.apply_lora:
        from .lora import inject_lora
        inject_lora(model, r=model_args.lora_r, alpha=model_args.lora_alpha)
    if training_args.prefix_tuning:
        from .prefix import inject_prefix
        inject_prefix(model, num_prefix=training_args.num_prefix, reparam=not training_args.no_reparam,
                      init_by_real_act=training_args.prefix_init_by_real_act)
