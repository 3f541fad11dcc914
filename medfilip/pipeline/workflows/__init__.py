"""The Snakemake rules' helpers, one module per stage (targets, inputs, params)."""
