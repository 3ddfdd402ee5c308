"""Pre-quantized single files: block layouts, the storage rule, round trips through the loaders, errors,
memory-mapped loading and the converter's RAM bound.

Tolerances come from the formats' precision. A b-bit grid over a block whose largest magnitude A is
at most sqrt(12) times its RMS (true for Gaussian-like blocks of up to 256 values) has a step of
2A / 2^b, so a rounding error of RMS step / sqrt(12) <= 2^(1-b) x RMS: the relative RMS error of a
quantized weight is bounded by 2^(1-b) (fp8 e4m3: b = 4, its 3 mantissa bits plus the implicit one).
A forward through n quantized matmuls (all on one path in these sequential networks) gets from each a
relative error of at most that bound; independent errors add in quadrature, so the output's relative
L2 error is bounded by sqrt(n) x the bound of the coarsest format used.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from stepvideo_pack.model_loaders.dit_loader import dit_weights, load_dit
from stepvideo_pack.model_loaders.errors import CheckpointError
from stepvideo_pack.model_loaders.quantize import quantize_fp8, fp8_scale, quantize_rows, storage_for
from stepvideo_pack.model_loaders.quantized_files import MappedWeightFiles, PackedWeight, is_gguf
from stepvideo_pack.model_loaders.quantized_writer import convert
from stepvideo_pack.model_loaders.text_encoder_loader import load_step_llm, load_step_tokenizer
from stepvideo_pack.model_loaders.weight_files import open_weights
from stepvideo_pack.networks.quant_formats import FORMATS, dequantize, is_packed
from test_text_encoders import TINY_LLM, official_step_llm_folder

PARITY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "parity")
TINY_DIT = os.path.join(PARITY, "dit_t2v_tiny")
SUFFIX = {name: ".safetensors" if name == "fp8_scaled" else ".gguf" for name in FORMATS}


def weight_tolerance(name):
    """Bound on the relative RMS error of a weight stored in format ``name`` (module docstring)."""
    return 2.0 ** (1 - FORMATS[name].bits)


def forward_tolerance(model):
    """sqrt(quantized matmuls) x the weight bound of the coarsest format in ``model`` (module docstring)."""
    formats = [m.weight_format for m in model.modules() if is_packed(m)]
    return len(formats) ** 0.5 * max(weight_tolerance(f) for f in formats)


def relative_error(got, expected):
    return float((got.double() - expected.double()).norm() / expected.double().norm())


@pytest.fixture(scope="module")
def dit_case():
    with open(os.path.join(TINY_DIT, "manifest.json"), encoding="utf-8") as f:
        case = next(c for c in json.load(f)["cases"] if c["dtype"] == "float32")
    data = load_file(os.path.join(TINY_DIT, "data.safetensors"))
    inputs = {k: data[v] if isinstance(v, str) else v for k, v in case["inputs"].items()}
    with torch.no_grad():
        expected = load_dit(os.path.join(TINY_DIT, "model.safetensors"), weight_dtype=torch.float32)(**inputs)
    return inputs, expected


# --- formats -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [n for n in FORMATS if FORMATS[n].ggml])
def test_ggml_blocks_are_read_identically_by_the_gguf_package_and_within_the_format_precision(name):
    import gguf

    rows = torch.randn(48, 1024, generator=torch.Generator().manual_seed(1)) * 0.02
    rows[5, :256] = 0  # an all-zero block
    packed = quantize_rows(rows, name)
    assert packed.dtype == torch.uint8 and tuple(packed.shape) == FORMATS[name].packed_shape(rows.shape)
    ours = dequantize(packed, name, rows.shape, torch.float32)
    reference = gguf.quants.dequantize(packed.numpy(), gguf.GGMLQuantizationType[name])
    assert np.array_equal(ours.numpy(), reference)  # our layout is llama.cpp's, bit for bit
    assert relative_error(ours, rows) <= weight_tolerance(name)
    assert torch.all(ours[5, :256] == 0)


def test_fp8_scaled_keeps_every_value_within_half_a_mantissa_step():
    rows = torch.randn(64, 512, generator=torch.Generator().manual_seed(2))
    scale = fp8_scale(float(rows.abs().max()))
    restored = dequantize(quantize_fp8(rows, scale), "fp8_scaled", rows.shape, torch.float32, torch.tensor(scale))
    normal = rows.abs() / scale >= 2.0 ** -6  # e4m3fn normal range; below it the spacing is 2^-9 absolute
    assert torch.all((restored - rows).abs()[normal] <= 2.0 ** -4 * rows.abs()[normal] * (1 + 1e-6))
    assert torch.all((restored - rows).abs()[~normal] <= 2.0 ** -10 * scale)
    assert relative_error(restored, rows) <= weight_tolerance("fp8_scaled")


def test_storage_rule_quantizes_only_linear_weights_and_keeps_non_block_layers_at_q8_0_under_k_quants():
    block = "transformer_blocks.3.attn1.wqkv.weight"
    assert storage_for(block, (18432, 6144), True, "Q4_K") == "Q4_K"
    assert storage_for("transformer.layers.7.feed_forward.w2.weight", (6144, 16896), True, "Q5_K") == "Q5_K"
    assert storage_for("adaln_single.linear.weight", (36864, 6144), True, "Q4_K") == "Q8_0"
    assert storage_for("adaln_single.linear.weight", (36864, 6144), True, "fp8_scaled") == "fp8_scaled"
    assert storage_for("transformer_blocks.3.scale_shift_table", (6, 6144), False, "Q4_K") is None
    assert storage_for("tok_embeddings.word_embeddings.weight", (65536, 6144), False, "Q8_0") is None
    assert storage_for("transformer_blocks.0.norm1.bias", (6144,), False, "Q8_0") is None
    assert storage_for("clip_projection.weight", (6144, 64), True, "Q4_K") == "Q8_0"  # 64 is no whole K block
    assert storage_for("x.weight", (8, 48), True, "Q8_0") is None  # 48 is no whole Q8_0 block


# --- round trips -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(FORMATS))
def test_dit_round_trip_quantize_load_forward(name, dit_case, tmp_path):
    inputs, expected = dit_case
    out = str(tmp_path / ("dit" + SUFFIX[name]))
    summary = convert(os.path.join(TINY_DIT, "model.safetensors"), out, name)
    assert summary["kind"] == "dit" and summary["counts"][name] > 0
    assert not os.path.exists(out + ".partial")
    weights = dit_weights(out)
    assert isinstance(weights, MappedWeightFiles) and name in weights.quantization
    model = load_dit(out)
    assert model.transformer_blocks[0].attn1.wqkv.weight_format == name
    with torch.no_grad():
        got = model(**inputs)
    assert relative_error(got, expected) <= forward_tolerance(model)


def tiny_llm_case():
    with open(os.path.join(TINY_LLM, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    case = next(c for c in manifest["cases"] if c["dtype"] == "float32")
    data = load_file(os.path.join(TINY_LLM, "data.safetensors"))
    return manifest["official_config"], data[case["inputs"]["input_ids"]], data[case["outputs"]["last_hidden_state"]]


@pytest.mark.parametrize("name", list(FORMATS))
def test_step_llm_round_trip_quantize_load_forward_with_the_tokenizer_inside(name, tmp_path):
    _, ids, expected = tiny_llm_case()
    out = str(tmp_path / ("step_llm" + SUFFIX[name]))
    convert(official_step_llm_folder(str(tmp_path)), out, name)
    model = load_step_llm(out, dtype=torch.float32, mapped=True)
    assert model.transformer.layers[0].feed_forward.w1.weight_format == name
    assert model.tok_embeddings.word_embeddings.weight.dtype == torch.bfloat16  # the table stays exact
    with torch.no_grad():
        got = model(ids)
    assert got.dtype == torch.float32
    assert relative_error(got, expected) <= forward_tolerance(model)
    assert load_step_tokenizer(out).source == f"{out} (embedded tokenizer)"


def test_mapped_loading_copies_nothing_and_release_keeps_the_weights_valid(tmp_path):
    out = str(tmp_path / "step_llm.gguf")
    convert(official_step_llm_folder(str(tmp_path)), out, "Q8_0")
    model = load_step_llm(out, dtype=torch.float32, mapped=True)
    _, ids, _ = tiny_llm_case()
    with torch.no_grad():
        before = model(ids)
        model.mapped_weights.release()  # pages dropped: they come back from the file
        assert torch.equal(model(ids), before)
    packed = model.transformer.layers[1].attention.wqkv.weight
    assert packed.dtype == torch.uint8 and not packed.untyped_storage().resizable()  # a view of the file map


def test_bf16_step_llm_shards_load_memory_mapped_when_no_conversion_is_needed(tmp_path):
    folder = official_step_llm_folder(str(tmp_path))
    _, ids, _ = tiny_llm_case()
    mapped = load_step_llm(folder, dtype=torch.bfloat16, mapped=True)
    copied = load_step_llm(folder, dtype=torch.bfloat16)
    assert mapped.mapped_weights is not None and copied.mapped_weights is None
    with torch.no_grad():
        assert torch.equal(mapped(ids), copied(ids))


# --- errors ------------------------------------------------------------------------------------------------

def quantized_dit(tmp_path, name):
    out = str(tmp_path / ("dit" + SUFFIX[name]))
    convert(os.path.join(TINY_DIT, "model.safetensors"), out, name)
    return out


@pytest.mark.parametrize("name", ["Q4_K", "fp8_scaled"])
def test_a_truncated_quantized_file_names_the_file_and_the_missing_bytes(name, tmp_path):
    path = quantized_dit(tmp_path, name)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 1000)
    with pytest.raises(CheckpointError) as error:
        load_dit(path)
    message = str(error.value)
    assert path in message and "truncated" in message and f"{size - 1000:,}" in message and "1,000 bytes missing" in message


def test_an_unfinished_conversion_leaves_no_file_under_the_final_name(tmp_path, monkeypatch):
    import stepvideo_pack.model_loaders.quantized_writer as writer

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "quantize_rows", fail)
    out = str(tmp_path / "dit.gguf")
    with pytest.raises(KeyboardInterrupt):
        convert(os.path.join(TINY_DIT, "model.safetensors"), out, "Q4_K")
    assert os.listdir(tmp_path) == []


def rewrite_safetensors(path, edit):
    from safetensors import safe_open

    with safe_open(path, "pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata=metadata)


def test_mislabelled_scaled_fp8_files_name_the_key_and_what_was_expected(tmp_path):
    path = quantized_dit(tmp_path, "fp8_scaled")
    key = "transformer_blocks.0.attn1.wo.weight"
    shutil.copy(path, tmp_path / "copy.safetensors")
    rewrite_safetensors(path, lambda t: t.__setitem__(key, t[key].to(torch.bfloat16)))
    with pytest.raises(CheckpointError, match=rf"{key!r} has a scale .* must be stored as float8_e4m3fn, but it is "
                                              r"torch.bfloat16"):
        load_dit(path)
    other = str(tmp_path / "copy.safetensors")
    rewrite_safetensors(other, lambda t: t.pop(key.replace(".weight", ".scale_weight")))
    with pytest.raises(CheckpointError, match=rf"{other}.* float8 tensors have no '.scale_weight'.*{key}"):
        load_dit(other)


def test_a_quantized_text_encoder_in_the_dit_slot_says_what_it_is(tmp_path):
    out = str(tmp_path / "step_llm.gguf")
    convert(official_step_llm_folder(str(tmp_path)), out, "Q4_K")
    assert is_gguf(out)
    with pytest.raises(CheckpointError, match=rf"{out} is not a Step-Video DiT checkpoint: it looks like a Step-LLM"):
        load_dit(out)


def test_a_gguf_tensor_in_an_unsupported_type_is_named(tmp_path):
    import gguf

    path = str(tmp_path / "odd.gguf")
    writer = gguf.GGUFWriter(path, "stepvideo_dit")
    values = np.zeros((4, 32), np.float32)
    writer.add_tensor("proj_out.weight", gguf.quants.quantize(values, gguf.GGMLQuantizationType.Q4_0),
                      raw_dtype=gguf.GGMLQuantizationType.Q4_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(CheckpointError, match=r"'proj_out.weight' is stored as GGML type Q4_0, which this loader"):
        open_weights(path)


def test_a_quantized_weight_on_a_layer_that_cannot_dequantize_is_refused(tmp_path):
    from stepvideo_pack.model_loaders.materialize import attach_packed

    packed = PackedWeight(torch.zeros(2, 34, dtype=torch.uint8), "Q8_0", (2, 32))
    with pytest.raises(CheckpointError, match=r"x.gguf: tensor 'w' is quantized \(Q8_0\) but belongs to a Linear"):
        attach_packed(torch.nn.Linear(32, 2), "weight", packed, "cpu", "x.gguf: tensor 'w'")


# --- the converter's RAM bound -----------------------------------------------------------------------------

RAM_PROBE = r"""
import os, sys, json
from harness.peak_rss import PeakGrowth
from stepvideo_pack.model_loaders.quantized_writer import convert

convert(sys.argv[1], sys.argv[2] + ".warm.gguf", "Q8_0", chunk_values=1 << 16)  # imports and lazy inits done
os.remove(sys.argv[2] + ".warm.gguf")
with PeakGrowth() as peak:
    convert(sys.argv[1], sys.argv[2], sys.argv[3], chunk_values=int(sys.argv[4]))
print(json.dumps({"base": peak.start, "peak": peak.peak}))
"""


def write_wide_dit(path, layers=8, heads=8):
    """A random bf16 DiT checkpoint (official keys) written tensor by tensor: 1024 wide, ~0.26 GB."""
    from stepvideo_pack.model_loaders import single_files
    from stepvideo_pack.model_loaders.materialize import build_on_meta
    from stepvideo_pack.networks.dit import DiTConfig, StepVideoDiT

    config = DiTConfig(num_heads=heads, num_layers=layers, caption_channels=(1024, 256), ff_inner_dim=4096)
    state = build_on_meta(lambda: StepVideoDiT(config)).state_dict()
    entries = [(k, tuple(v.shape), torch.bfloat16,
                lambda v=v, i=i: torch.randn(v.shape, generator=torch.Generator().manual_seed(i)) * 0.02)
               for i, (k, v) in enumerate(sorted(state.items()))]
    single_files.write_safetensors(path, entries)
    return max(v.numel() for v in state.values()) * 2


@pytest.mark.parametrize("name", ["Q8_0", "fp8_scaled"])
def test_converter_peak_ram_stays_within_a_bound_far_below_the_model_size(name, tmp_path):
    source = str(tmp_path / "dit.safetensors")
    largest = write_wide_dit(source)
    model_bytes = os.path.getsize(source)
    chunk = 1 << 18
    out = str(tmp_path / ("out" + SUFFIX[name]))
    result = subprocess.run([sys.executable, "-c", RAM_PROBE, source, out, name, str(chunk)],
                            capture_output=True, text=True, check=True)
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    grown = measured["peak"] - measured["base"]
    bound = 48 * 2 ** 20  # chunk buffers: 2^18 values x (2 B read + 4 B float32 + temporaries) << 48 MiB
    assert model_bytes > 5 * bound and largest > chunk * 2
    assert grown < bound, f"peak RSS grew by {grown / 2**20:.1f} MiB converting a {model_bytes / 2**20:.0f} MiB model"
    assert open_weights(out).quantization == name
