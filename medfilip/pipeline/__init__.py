"""The application: the ``medfilip`` CLI and its one command registry (``cli``, ``commands/``), the config
assembled from every stage's settings (``config``, ``config_checks``, ``schema``), the ``results/`` layout
(``paths``), the Snakemake rules' helpers (``workflows/``, ``workflow_resources``) and DuckDB queries
(``query``). The stage packages beside it never import it: they take settings and paths as arguments."""
