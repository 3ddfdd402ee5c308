"""The MODEL the DiT loader gives the host, against the host's own mechanisms, in this process on the real
default host (tests/harness/host_runtime.py; no server): wrapper executors, per-block patches, attention
overrides, torch.compile, the LoRA key map, the latent format, and the text conditioning layout
under the host's conditioning nodes. The same features through a running server, on both hosts, are
in tests/integration/test_core_nodes.py."""

import pytest
import torch

from harness.host_runtime import import_host

import_host()

import comfy.lora  # noqa: E402
import comfy.patcher_extension  # noqa: E402
import comfy_api.torch_helpers  # noqa: E402
import nodes as host_nodes  # noqa: E402  (the host's core nodes module)
from stepvideo_pack.model_loaders.comfy_model import load_stepvideo_model  # noqa: E402
from stepvideo_pack.model_loaders.conditioning import check_text_conditioning, dit_text_inputs  # noqa: E402
from stepvideo_pack.model_loaders.official_layout import save_transformer  # noqa: E402
from harness.tiny_checkpoints import TINY_DIT, tiny_dit  # noqa: E402

pytestmark = pytest.mark.host

LLM_TOKENS = 12


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = save_transformer(tiny_dit(seed=11).state_dict(), str(tmp_path_factory.mktemp("dit")), TINY_DIT)
    return load_stepvideo_model(folder, weight_dtype="fp32", attention="sdpa")


def conditioning(seed, valid=8):
    """One CONDITIONING entry of the pack's layout: LLM states with padding rows zero, CLIP states, mask."""
    gen = torch.Generator().manual_seed(seed)
    llm_width, clip_width = TINY_DIT.caption_channels
    mask = torch.zeros(1, LLM_TOKENS)
    mask[:, :valid] = 1
    states = torch.randn(1, LLM_TOKENS, llm_width, generator=gen) * mask[..., None]
    return [[states, {"pooled_output": torch.randn(1, 77, clip_width, generator=gen), "llm_mask": mask}]]


def call(model, cond, x=None, sigma=0.6, options=None):
    """The diffusion model called as the host calls it -> (noise - data) (1, C, T, h, w)."""
    if x is None:
        x = torch.randn(1, TINY_DIT.in_channels, 3, 2, 3, generator=torch.Generator().manual_seed(0))
    states, extra = cond[0]
    with torch.no_grad():
        return model.model.diffusion_model(x, torch.tensor([sigma * 1000]), context=states,
                                           transformer_options={} if options is None else options, **extra)


def test_diffusion_model_wrappers_run_around_the_forward(model):
    """What EasyCache/LazyCache and TorchCompileModel hook into: a DIFFUSION_MODEL wrapper gets the host's
    call (x first, transformer_options last) and decides what comes out."""
    cond = conditioning(1)
    seen = []

    def wrapper(executor, *args, **kwargs):
        seen.append((tuple(args[0].shape), args[-1].get("marker")))
        return executor(*args, **kwargs) * 0 + 7.0

    options = {"marker": "mine"}
    comfy.patcher_extension.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test",
                                                 wrapper, options)
    out = call(model, cond, options=options)
    assert seen == [((1, TINY_DIT.in_channels, 3, 2, 3), "mine")]
    assert torch.all(out == 7.0)


def test_block_patches_replace_exactly_the_named_block(model):
    """patches_replace["dit"][("double_block", i)] (SkipLayerGuidanceDiT's mechanism): a patch returning its
    input skips block i, which equals the same network with block i removed; a patch calling
    original_block changes nothing."""
    cond = conditioning(2)
    baseline = call(model, cond)

    def skip(args, extra):
        return {"img": args["img"]}

    def passthrough(args, extra):
        assert args["transformer_options"]["block_index"] == 1 and args["transformer_options"]["total_blocks"] == 2
        return extra["original_block"](args)

    skipped = call(model, cond, options={"patches_replace": {"dit": {("double_block", 1): skip}}})
    same = call(model, cond, options={"patches_replace": {"dit": {("double_block", 1): passthrough}}})
    blocks = model.model.diffusion_model.transformer_blocks
    removed = blocks[1]
    try:
        del blocks[1]
        expected = call(model, cond)
    finally:
        blocks.insert(1, removed)
    torch.testing.assert_close(same, baseline, rtol=0, atol=0)
    torch.testing.assert_close(skipped, expected, rtol=0, atol=0)
    assert float((skipped - baseline).abs().max()) > 1e-3


def test_the_comfy_attention_backend_is_the_hosts_and_takes_its_overrides(model):
    """With attention "comfy" the blocks call the host's attention function (its flags pick the kernel), with
    transformer_options, so an attention override patch sees every self- and cross-attention call."""
    cond = conditioning(3)
    dit = model.model.diffusion_model
    reference = call(model, cond)
    calls = []

    def override(function, *args, **kwargs):
        calls.append(kwargs.get("mask") is not None)
        return function(*args, **kwargs)

    try:
        dit.attention_backend = "comfy"
        hosted = call(model, cond)
        overridden = call(model, cond, options={"optimized_attention_override": override})
    finally:
        dit.attention_backend = "sdpa"
    torch.testing.assert_close(hosted, reference, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(overridden, hosted, rtol=0, atol=0)
    assert calls == [False, True] * TINY_DIT.num_layers  # per block: self-attention, masked cross-attention


def test_torch_compile_wrapper_of_the_host_runs_the_model(model):
    """TorchCompileModel's mechanism (the host's compile wrapper on apply_model), with the 'eager' backend so the
    test does not spend a minute in the C++ compiler; inductor on CPU is measured in the README."""
    compiled = model.clone()
    comfy_api.torch_helpers.set_torch_compile_wrapper(compiled, backend="eager")
    cond = conditioning(4)
    x = torch.randn(1, TINY_DIT.in_channels, 3, 2, 3, generator=torch.Generator().manual_seed(5))
    states, extra = cond[0]

    def denoised(patcher):
        options = {"wrappers": patcher.wrappers}  # where the host's sampler puts the patcher's wrappers
        with torch.no_grad():
            return patcher.model.apply_model(x, torch.tensor([0.5]), c_crossattn=states, transformer_options=options,
                                             **extra)

    torch._dynamo.reset()
    frames = torch._dynamo.utils.counters["frames"]
    before = frames["ok"]
    torch.testing.assert_close(denoised(compiled), denoised(model), rtol=1e-5, atol=1e-5)
    assert frames["ok"] > before  # dynamo traced the model's forward


def test_lora_key_formats_map_to_the_dit_weights(model):
    keys = comfy.lora.model_lora_keys_unet(model.model, {})
    weight = "diffusion_model.transformer_blocks.0.attn1.wqkv.weight"
    for lora_key in ("diffusion_model.transformer_blocks.0.attn1.wqkv",   # ComfyUI's own
                     "lora_unet_transformer_blocks_0_attn1_wqkv",        # kohya
                     "transformer.transformer_blocks.0.attn1.wqkv",      # diffusers / PEFT
                     "transformer_blocks.0.attn1.wqkv"):                 # DiffSynth
        assert keys.get(lora_key) == weight, lora_key


def test_latent_format_carries_the_16x_and_17_to_3_geometry(model):
    fmt = model.model.latent_format
    assert fmt.latent_channels == TINY_DIT.out_channels and fmt.latent_dimensions == 3
    assert fmt.spacial_downscale_ratio == 16
    # the host's length formula for video latents, (frames - 1) // ratio + 1
    assert [int((f - 1) // fmt.temporal_downscale_ratio + 1) for f in (1, 17, 34, 102, 204)] == [1, 3, 6, 18, 36]


def test_conditioning_nodes_mean_what_the_pack_documents(model):
    a, b = conditioning(6), conditioning(7, valid=5)
    zero = host_nodes.ConditioningZeroOut().zero_out(a)[0]
    assert torch.count_nonzero(zero[0][0]) == 0 and torch.count_nonzero(zero[0][1]["pooled_output"]) == 0
    # Concat: b's tokens after a's; only their valid (non-zero) rows count; CLIP states stay a's
    both = host_nodes.ConditioningConcat().concat(a, b)[0]
    states, clip, mask = dit_text_inputs(both[0][0], both[0][1]["pooled_output"], both[0][1]["llm_mask"])
    assert mask.shape == (1, 77 + 2 * LLM_TOKENS)
    assert mask[0, 77:].tolist() == [1.0] * 8 + [0.0] * 4 + [1.0] * 5 + [0.0] * 7
    assert torch.equal(clip, a[0][1]["pooled_output"])
    # a zeroed-out appendix is all padding: the conditioning means exactly a
    torch.testing.assert_close(call(model, host_nodes.ConditioningConcat().concat(a, zero)[0]), call(model, a),
                               rtol=1e-5, atol=1e-6)
    assert float((call(model, both) - call(model, a)).abs().max()) > 1e-3


@pytest.mark.parametrize("states, pooled, message", [
    (torch.zeros(1, 77, 768), torch.zeros(1, 768), "another model's text encoder"),   # an SD 1.5 CLIP
    (torch.zeros(1, 12, 256), None, "lacks the HunyuanCLIP states"),                  # no CLIP part
    (torch.zeros(1, 12, 256), torch.zeros(1, 77, 1024), "lacks the HunyuanCLIP states"),
])
def test_foreign_conditioning_is_refused_with_the_expected_widths(states, pooled, message):
    with pytest.raises(ValueError, match=message) as caught:
        check_text_conditioning(states, pooled, torch.ones(1, states.shape[1]), 256, 64)
    assert "(1, L, 256)" in str(caught.value) and "(1, 77, 64)" in str(caught.value)
