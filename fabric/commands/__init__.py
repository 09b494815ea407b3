"""Click commands of the `fabric` CLI, one module per concern."""
