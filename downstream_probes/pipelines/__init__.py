"""End-to-end pipelines: the stage runner shared by the demo and the paper recipe."""
