"""Inference MR-HuBERT (and the HuBERT-base baseline) loading fairseq checkpoints without fairseq,
exposing every layer by name as s3prl upstreams."""
