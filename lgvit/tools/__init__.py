"""Tools over the library: speed and memory benchmarks (`bench`), parameter and MAC counts (`flops`), and
models loaded from `lgvit train` checkpoints or pretrained weights for eval and predict (`inference`)."""
