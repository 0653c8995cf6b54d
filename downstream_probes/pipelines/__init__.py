"""End-to-end pipelines: the stage runner shared by the scripts in ``recipes/``: the demo (``demo/run.py``), the paper
recipe (``paper_2410.23955/reproduce.py``) and the toy pre-training (``pretrain_toy/run.py``)."""
