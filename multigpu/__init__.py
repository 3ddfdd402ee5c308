"""Multi-GPU Step-Video: sequence- and CFG-parallel DiT on torch.distributed, and its ComfyUI worker pool.

``sequence_parallel`` is pure torch (usable from torchrun, see scripts/multigpu_sample.py);
``worker``/``pool`` run it in worker processes for ComfyUI (nodes/multigpu.py).
"""
