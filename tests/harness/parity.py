"""Check our networks against fixtures produced by the OFFICIAL Step-Video code (format:
../shared/parity/README.md). ``run_fixture(folder)`` yields one result per case; scripts/parity.py
prints them, tests/unit/test_parity.py asserts them.

Every fixture's checkpoint goes through the same loaders a user's files go through (config detected
from the file).

DiT forward cases run twice: the network in the official convention, and the MODEL the DiT loader
node gives ComfyUI, called the way the host calls it (sigma, noise - data, ComfyUI's latent layout).
Sampling cases run through the nodes' own sampling path (``nodes.sampling.run_official_sampler``:
the MODEL, the host's CFG guider, our Euler sampler) on the real ComfyUI host imported in this
process (tests/harness/host_runtime.py; ``COMFYUI_PATH`` picks the host).
"""

import json
import os
import traceback

import torch
from safetensors.torch import load_file

from .host_runtime import import_host

import_host()

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def case_inputs(case, data, dtype=None):
    """Manifest inputs -> values: strings name tensors in data.safetensors; floats cast to ``dtype``."""
    out = {}
    for name, value in case["inputs"].items():
        if isinstance(value, str):
            value = data[value]
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
        out[name] = value
    return out


def config_mismatches(detected, official):
    """Names of official config fields whose value differs from the detected one."""
    bad = []
    for field, value in official.items():
        if field in detected and detected[field] != value:
            bad.append(f"{field}: detected {detected[field]!r}, official {value!r}")
    return bad


# --- one runner per fixture kind: (folder, manifest) -> (config check errors, case runner) -----------

def dit_runner(folder, manifest):
    from stepvideo_pack.model_loaders.dit_loader import detect_dit_config, dit_weights, load_dit

    path = os.path.join(folder, manifest["checkpoint"])
    cfg = detect_dit_config(dit_weights(path))
    detected = {"num_attention_heads": cfg.num_heads, "attention_head_dim": cfg.head_dim,
                "in_channels": cfg.in_channels, "out_channels": cfg.out_channels, "num_layers": cfg.num_layers,
                "caption_channels": list(cfg.caption_channels), "patch_size": cfg.patch_size,
                "use_additional_conditions": cfg.image_condition}
    models, host_models = {}, {}

    def run(case, data):
        dtype = DTYPES[case["dtype"]]
        inputs = case_inputs(case, data, dtype)
        if dtype not in host_models and dtype == torch.float32:
            host_models[dtype] = host_model(path)
        if manifest["kind"] == "pipeline":
            return {"latents": sample_through_nodes(host_models[dtype], inputs)}
        if dtype not in models:
            models[dtype] = load_dit(path, weight_dtype=dtype)
        with torch.no_grad():
            outputs = {"out": models[dtype](**inputs)}
            if dtype in host_models:  # bf16 cases: the host computes bf16 weights in its own precision
                outputs["out (MODEL wrapper)"] = call_like_the_host(host_models[dtype], inputs)
        return outputs

    return config_mismatches(detected, manifest.get("official_config", {})), run


def host_model(path):
    """The ModelPatcher the DiT loader node makes of ``path``, float32, official attention (SDPA)."""
    from stepvideo_pack.model_loaders.comfy_model import load_stepvideo_model
    return load_stepvideo_model(path, weight_dtype="fp32", attention="sdpa")


def fixture_conditioning(inputs, row):
    """CONDITIONING (model_loaders.conditioning layout) of text row ``row`` of a fixture's DiT inputs."""
    clip_tokens = inputs["encoder_hidden_states_2"].shape[1]
    return [[inputs["encoder_hidden_states"][row:row + 1],
             {"pooled_output": inputs["encoder_hidden_states_2"][row:row + 1],
              "llm_mask": inputs["encoder_attention_mask"][row:row + 1, clip_tokens:]}]]


def call_like_the_host(model, inputs):
    """The MODEL's diffusion model called as the host calls it; its (noise - data) turned back to official."""
    from stepvideo_pack.samplers.flow_schedule import comfy_velocity, timestep_from_sigma
    from stepvideo_pack.samplers.video_geometry import to_comfy, to_official

    x = inputs["hidden_states"]
    if inputs.get("condition_hidden_states") is not None:
        x = torch.cat([x, inputs["condition_hidden_states"]], dim=2)
    sigma = timestep_from_sigma(inputs["timestep"].float())  # the map is its own inverse
    clip_tokens = inputs["encoder_hidden_states_2"].shape[1]
    out = model.model.diffusion_model(
        to_comfy(x), sigma * 1000, context=inputs["encoder_hidden_states"],
        pooled_output=inputs["encoder_hidden_states_2"], llm_mask=inputs["encoder_attention_mask"][:, clip_tokens:],
        motion_score=inputs.get("motion_score"))
    return to_official(comfy_velocity(out))


def sample_through_nodes(model, inputs):
    """The fixture's 'sample' op (Euler + CFG, text rows [cond, uncond]) through the nodes' sampling path."""
    from stepvideo_pack.nodes.sampling import run_official_sampler
    from stepvideo_pack.samplers.video_geometry import to_comfy, to_official

    noise = to_comfy(inputs["noise"])
    latent = {"samples": torch.zeros_like(noise)}
    out = run_official_sampler(model, fixture_conditioning(inputs, 0), fixture_conditioning(inputs, 1), latent,
                               seed=0, steps=inputs["steps"], cfg=inputs["guidance"], shift=inputs["shift"],
                               denoise=1.0, callback=lambda *args: None, noise=noise)
    return to_official(out["samples"])


def scheduler_runner(folder, manifest):
    from stepvideo_pack.samplers.flow_schedule import official_timesteps

    def run(case, data):
        timesteps, sigmas = official_timesteps(case["inputs"]["steps"], case["inputs"]["shift"])
        return {"timesteps": timesteps, "sigmas": sigmas}

    return [], run


def vae_runner(folder, manifest):
    from stepvideo_pack.model_loaders.vae_loader import detect_vae_config, load_vae
    from stepvideo_pack.model_loaders.weight_files import open_weights

    path = os.path.join(folder, manifest["checkpoint"])
    cfg = detect_vae_config(open_weights(path))
    official = manifest.get("official_config", {})
    errors = []
    for part in ("encoder", "decoder"):
        detected = {k: (list(v) if isinstance(v, tuple) else v) for k, v in getattr(cfg, part).__dict__.items()}
        errors += [f"{part}.{e}" for e in config_mismatches(detected, official.get(part, {}))]
    vae = load_vae(path, dtype=torch.float32)

    def run(case, data):
        inputs = case_inputs(case, data, torch.float32)
        with torch.no_grad():
            if case["op"] == "encode_moments":
                mean, logvar = vae.encode_moments(inputs["video"])
                return {"mean": mean, "logvar": logvar}
            return {"video": vae.decode(inputs["latent"])}

    return errors, run


def step_llm_runner(folder, manifest):
    from stepvideo_pack.model_loaders.text_encoder_loader import load_step_llm

    path = os.path.join(folder, manifest["checkpoint"])
    models = {}

    def run(case, data):
        dtype = DTYPES[case["dtype"]]
        if dtype not in models:
            models[dtype] = load_step_llm(path, dtype=dtype, config=manifest.get("official_config"))
        with torch.no_grad():
            return {"last_hidden_state": models[dtype](data[case["inputs"]["input_ids"]])}

    return [], run


def step_tokenizer_runner(folder, manifest):
    from stepvideo_pack.model_loaders.text_encoder_loader import load_step_tokenizer

    tokenizer = load_step_tokenizer(os.path.join(folder, manifest["tokenizer"]))

    def run(case, data):
        ids, mask = tokenizer(case["inputs"]["prompts"], max_length=case["inputs"]["max_length"])
        return {"input_ids": ids, "attention_mask": mask}

    return [], run


def hunyuan_clip_runner(folder, manifest):
    from stepvideo_pack.model_loaders.text_encoder_loader import load_clip_tokenizer, load_hunyuan_clip

    encoder_dir = os.path.dirname(os.path.join(folder, manifest["checkpoint"]))
    tokenizer = load_clip_tokenizer(os.path.join(folder, manifest["tokenizer"]))
    model = load_hunyuan_clip(encoder_dir, dtype=torch.float32)

    def run(case, data):
        if case["op"] == "tokenize":
            ids, mask = tokenizer(case["inputs"]["prompts"], max_length=case["inputs"]["max_length"])
            return {"input_ids": ids, "attention_mask": mask}
        with torch.no_grad():
            return {"last_hidden_state": model(data[case["inputs"]["input_ids"]],
                                               data[case["inputs"]["attention_mask"]])}

    return [], run


RUNNERS = {"dit": dit_runner, "pipeline": dit_runner, "scheduler": scheduler_runner, "vae": vae_runner,
           "step_llm": step_llm_runner, "step_tokenizer": step_tokenizer_runner,
           "hunyuan_clip": hunyuan_clip_runner}


def find_fixtures(paths):
    """Every folder holding a manifest.json under the given paths (sorted)."""
    found = []
    for path in paths:
        if os.path.isfile(os.path.join(path, "manifest.json")):
            found.append(path)
        elif os.path.isdir(path):
            found += sorted(os.path.join(path, n) for n in os.listdir(path)
                            if os.path.isfile(os.path.join(path, n, "manifest.json")))
    return found


def compare(expected, got):
    """Max abs difference (exact comparison for integers); shape mismatch raises."""
    if tuple(got.shape) != tuple(expected.shape):
        raise AssertionError(f"shape {list(got.shape)} != expected {list(expected.shape)}")
    if not expected.is_floating_point():
        return float((got.long() != expected.long()).sum())
    return (got.double() - expected.double()).abs().max().item()


def run_fixture(folder):
    """Yield (case label, error or None, bound, message) for every case of one fixture."""
    name = os.path.basename(os.path.normpath(folder))
    with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    data = load_file(os.path.join(folder, "data.safetensors"))
    try:
        config_errors, run = RUNNERS[manifest["kind"]](folder, manifest)
    except Exception as e:
        for case in manifest["cases"]:
            yield f"{name}/{case['name']}", None, case["atol"], f"load failed: {type(e).__name__}: {e}"
        return
    if config_errors:
        yield f"{name}/config", None, 0, "detected config differs: " + "; ".join(config_errors)
    for case in manifest["cases"]:
        label = f"{name}/{case['name']}"
        try:
            outputs = run(case, data)
            missing = set(case["outputs"]) - set(outputs)
            if missing:
                raise AssertionError(f"no result for {sorted(missing)}")
            worst = 0.0
            for out_name, got in outputs.items():  # "out (MODEL wrapper)" is compared with "out"'s reference
                worst = max(worst, compare(data[case["outputs"][out_name.split(" (")[0]]], got))
            yield label, worst, case["atol"], None
        except Exception as e:
            yield label, None, case["atol"], f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"
