"""s3prl/SUPERB glue, synthetic corpora, layer-wise analysis, leaderboards and plots for MR-HuBERT upstreams."""
