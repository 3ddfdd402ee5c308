"""The memory model: full-size weight bytes from the released shapes, activation scaling, the report line."""

import torch

from stepvideo_pack.model_loaders.materialize import build_on_meta
from stepvideo_pack.model_loaders.memory import (GIB, describe_estimate, dit_activation_bytes, dit_weight_bytes,
                                                 run_estimate)
from stepvideo_pack.networks.dit import DiTConfig, StepVideoDiT


def test_weight_bytes_equal_the_parameters_of_the_released_model():
    for config in (DiTConfig(), DiTConfig(image_condition=True)):
        model = build_on_meta(lambda: StepVideoDiT(config))
        params = sum(p.numel() for p in model.parameters())
        assert dit_weight_bytes(config, torch.float32) == params * 4
        assert dit_weight_bytes(config, torch.bfloat16) == params * 2
        # fp8 stores the matmul weights in one byte; norms, biases and tables stay bf16 (a few per mille)
        fp8 = dit_weight_bytes(config, torch.float8_e4m3fn)
        assert params < fp8 < 1.01 * params


def test_official_size_estimate_and_what_chunking_and_sequential_cfg_save():
    config = DiTConfig()
    full = run_estimate(config, 1, 36, 34, 62)  # 544 x 992 x 204 frames
    assert full["tokens"] == 75_888
    assert 54 * GIB < full["weights"] < 55 * GIB
    lean = run_estimate(config, 1, 36, 34, 62, weight_dtype=torch.float8_e4m3fn, cfg_batched=False,
                        chunk_tokens=16384)
    assert 27 * GIB < lean["weights"] < 28 * GIB
    assert lean["activations"] < 0.3 * full["activations"]
    assert dit_activation_bytes(config, 2, 36, 34, 62) == 2 * dit_activation_bytes(config, 1, 36, 34, 62)
    line = describe_estimate(full, 24 * GIB)
    assert "75,888 tokens" in line and "weights will be streamed" in line


def test_peak_agrees_with_the_official_measurements():
    """The official README's measured peak GPU memory (GB, bf16, batched CFG, flash attention) for three
    sizes; the model (weights + activations) lands within 5% of each (79.2, 81.2, 72.4 GB)."""
    config = DiTConfig()
    for (frames, height, width), measured in (((36, 34, 62), 77.64), ((36, 48, 48), 78.55), ((24, 34, 62), 72.48)):
        predicted = run_estimate(config, 1, frames, height, width)["peak"] / 1e9
        assert abs(predicted - measured) < 0.05 * measured, (frames, height, width, predicted, measured)
