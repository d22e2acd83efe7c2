"""In-process engine benchmarks of the served models (no server): ``benchmarks.raw`` (throughput per backend and
batch size, FLOPs, the naive Keras baseline) and ``benchmarks.precision`` (int8 quantisation against the parity
bar)."""
