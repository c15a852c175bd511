"""Domain logic that is not a toolset: the redrive mover, DLQ failure signatures, metric
series summaries and log message patterns. Toolsets call it; it calls only backends and the
ground modules."""
