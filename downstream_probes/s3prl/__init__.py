"""Glue to s3prl 0.4.18: its own runner (``run_downstream``, ``runner``), upstream plugins, probe sweeps and the compatibility fixes (``compat``)."""
