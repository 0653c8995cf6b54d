"""Checkpoint files: safe fairseq I/O (``io``), fairseq key maps (``keys``), the registry of released checkpoints
(``registry``), downloads (``download``) and conversion to s3prl's format (``convert``)."""
