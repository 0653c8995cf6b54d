"""HuBERT-style masked-prediction pretraining of our MR-HuBERT (``mrsuperb pretrain``), with the paper's ablations.

Modules, one concern each: :mod:`.config` (the YAML recipe and its ablation switches), :mod:`.data` (corpus
manifests and reproducible batches), :mod:`.masking` (fairseq's span masks), :mod:`.targets` (k-means labels),
:mod:`.heads` (mask/label embeddings, projections, the criterion), :mod:`.network` (the model in training mode),
:mod:`.schedule` (AdamW and the learning-rate schedule), :mod:`.records` (metrics and ``results.json``),
:mod:`.checkpointing` (fairseq checkpoints and the resume file), :mod:`.trainer` (the loop).
"""
