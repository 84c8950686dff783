"""mubench's trainer core: the loop (:mod:`.loop`), its settings (:mod:`.config`), the diffusion loss
(:mod:`.diffusion`) and the EMA (:mod:`.ema`). Import from those modules: this package imports nothing, so that
:class:`.config.TrainConfig` (part of every trainable method's parameters) loads without torch."""
