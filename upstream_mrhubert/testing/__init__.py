"""Writers of tiny, random checkpoints in the real fairseq on-disk format, for tests, demos and benchmarks."""
