"""One module per group of sub-commands; each has ``register(sub)`` (medfilip.pipeline.cli.COMMAND_MODULES)."""
