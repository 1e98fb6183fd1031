"""
core/: what model.py and data.py stand on. Leaf modules: they import torch, numpy and PIL, never the
rest of the project, so anything may import them.

    decoding.py  KV cache, greedy/sampling/beam search, CTC best path (MusicTrOCR.generate calls it)
    flops.py     FLOPs per sample and MFU, the CPU's measured matmul peak
    images.py    image preprocessing (gray, resize to height) and augmentation: the model's view of a picture
    metrics.py   the ABC lexer, edit distance, SER/CER
    files.py     atomic writes of files and directories
"""
