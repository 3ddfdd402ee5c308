#!/usr/bin/env python3
"""Pre-quantized formats at the REAL widths: file size, RAM while loading, resident bytes, per-layer
dequantized working set, CPU time per layer, checked against the memory model and extrapolated to the
full model; then the run table (system RAM and VRAM at 544x992x204 and 768x768x204).

    python benchmarks/quantized_memory.py [--tokens 256] [--repeats 3] [--json out.json]

Measured on a 1-block DiT and a 1-layer Step-LLM of the released widths (DiT 6144 wide, FF 24576, with
every non-block layer; Step-LLM 6144 wide, FFN 16896, the 65536-row embedding), random N(0, 0.02) bf16
weights written tensor by tensor, converted with the pack's converter. Each (model, format) is measured
in a fresh subprocess: RSS (anonymous and file-backed, /proc/self/status) before and after loading, the
peak during one forward of the block/layer at ``--tokens`` tokens in float32 (the CPU compute dtype),
and the median forward time. "bf16" is the unquantized source loaded the ordinary way (matmul weights
kept bf16 and cast to float32 per call), the baseline for the time of the per-call dequantization.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch


from harness import FIXTURES
from stepvideo_pack.model_loaders import single_files
from stepvideo_pack.model_loaders.materialize import build_on_meta
from stepvideo_pack.model_loaders.memory import (GIB, dequantized_working_bytes, dit_activation_bytes,
                                                  stored_bytes)
from stepvideo_pack.model_loaders.quantized_writer import convert
from stepvideo_pack.networks.dit import DiTConfig, StepVideoDiT
from stepvideo_pack.networks.quant_formats import FORMATS
from stepvideo_pack.networks.step_llm import StepLLM, StepLLMConfig

MIB = 2 ** 20
FULL_DIT, FULL_LLM = DiTConfig(), StepLLMConfig()
ONE_BLOCK_DIT = DiTConfig(num_layers=1)
ONE_LAYER_LLM = StepLLMConfig(num_layers=1)
STEP_TOKENIZER = os.path.join(FIXTURES, "parity", "step_tokenizer", "step1_chat_tokenizer.model")


def write_source(kind, folder):
    """A random bf16 source of the real width: DiT single file, or a step_llm/ folder."""
    os.makedirs(folder, exist_ok=True)
    model = build_on_meta(lambda: StepVideoDiT(ONE_BLOCK_DIT) if kind == "dit" else StepLLM(ONE_LAYER_LLM))
    entries = [(k, tuple(v.shape), torch.bfloat16,
                lambda v=v, i=i: torch.randn(v.shape, generator=torch.Generator().manual_seed(i)) * 0.02)
               for i, (k, v) in enumerate(sorted(model.state_dict().items()))]
    if kind == "dit":
        return single_files.write_safetensors(os.path.join(folder, "dit.safetensors"), entries)
    single_files.write_safetensors(os.path.join(folder, "model.safetensors"), entries)
    cfg = ONE_LAYER_LLM
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump({"hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
                   "num_attention_groups": cfg.num_groups, "ffn_hidden_size": cfg.ffn_width,
                   "padded_vocab_size": cfg.vocab_size, "layernorm_epsilon": cfg.eps}, f)
    with open(STEP_TOKENIZER, "rb") as src, open(os.path.join(folder, "step1_chat_tokenizer.model"), "wb") as dst:
        dst.write(src.read())
    return folder


PROBE = r"""
import json, os, statistics, sys, time
import torch
torch.set_num_threads(int(sys.argv[5]))
from stepvideo_pack.model_loaders.dit_loader import load_dit
from stepvideo_pack.model_loaders.text_encoder_loader import load_step_llm
from stepvideo_pack.networks.rope3d import rope_grid, rope_tables
from harness.peak_rss import reset_peak, status_bytes

def status():
    return {k: status_bytes(k) for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}

kind, path, fmt, tokens, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[6])
reset_peak()
before = status()
start = time.perf_counter()
if kind == "dit":
    model = load_dit(path, weight_dtype=torch.bfloat16, compute_dtype=torch.float32) if fmt == "bf16" else load_dit(path)
    layer = model.transformer_blocks[0]
    dim = model.config.hidden_size
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, tokens, dim, generator=gen)
    modulation = torch.randn(1, 6 * dim, generator=gen) * 0.1
    context = torch.randn(1, 397, dim, generator=gen)
    mask = torch.ones(1, 1, 1, 397, dtype=torch.bool)
    cos, sin = rope_tables(rope_grid(1, 1, tokens), torch.float32)
    run = lambda: layer(x.clone(), modulation, context, mask, cos, sin)
else:
    model = load_step_llm(path, dtype=torch.float32, mapped=True) if fmt != "bf16" else \
        load_step_llm(path, dtype=torch.float32, weight_dtype=torch.bfloat16)
    layer = model.transformer.layers[0]
    from stepvideo_pack.networks.step_llm import sqrt_alibi_bias
    x = torch.randn(1, tokens, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    bias = sqrt_alibi_bias(model.config.num_heads, tokens)
    run = lambda: layer(x, bias)
load_seconds = time.perf_counter() - start
loaded = status()
resident = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
layer_bytes = sum(t.numel() * t.element_size() for t in list(layer.parameters()) + list(layer.buffers()))
with torch.no_grad():
    run()  # first touch of the file pages
    reset_peak()
    base = status()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
peak = status()
print(json.dumps({"load_seconds": load_seconds, "load_anon": loaded["RssAnon"] - before["RssAnon"],
                  "load_file": loaded["RssFile"] - before["RssFile"], "load_peak": loaded["VmHWM"] - before["VmRSS"],
                  "resident": resident, "layer_bytes": layer_bytes, "forward_peak": peak["VmHWM"] - base["VmRSS"],
                  "seconds": statistics.median(times)}))
"""


def probe(kind, path, fmt, tokens, threads, repeats):
    result = subprocess.run([sys.executable, "-c", PROBE, kind, path, fmt,
                             str(tokens), str(threads), str(repeats)], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def layer_of(model):
    """The block (DiT) or layer (Step-LLM) the probe runs."""
    return model.transformer_blocks[0] if hasattr(model, "transformer_blocks") else model.transformer.layers[0]


def measure(tokens, threads, repeats, scratch):
    rows = []
    for kind in ("dit", "step_llm"):
        source = write_source(kind, os.path.join(scratch, kind))
        meta = build_on_meta(lambda: StepVideoDiT(ONE_BLOCK_DIT) if kind == "dit" else StepLLM(ONE_LAYER_LLM))
        full = build_on_meta(lambda: StepVideoDiT(FULL_DIT) if kind == "dit" else StepLLM(FULL_LLM))
        for fmt in ("bf16",) + tuple(FORMATS):
            if fmt == "bf16":
                path, seconds = source, 0.0
                size = sum(os.path.getsize(os.path.join(source, f)) for f in os.listdir(source)) \
                    if os.path.isdir(source) else os.path.getsize(source)
                predicted = sum(p.numel() * 2 for p in meta.parameters())
                full_bytes = sum(p.numel() * 2 for p in full.parameters())
            else:
                path = os.path.join(scratch, f"{kind}.{fmt}" + (".safetensors" if fmt == "fp8_scaled" else ".gguf"))
                start = time.perf_counter()
                convert(source, path, fmt)
                seconds = time.perf_counter() - start
                size = os.path.getsize(path)
                predicted, full_bytes = stored_bytes(meta, fmt), stored_bytes(full, fmt)
            measured = probe(kind, path, fmt, tokens, threads, repeats)
            rows.append({"model": kind, "format": fmt, "convert_seconds": seconds, "file_bytes": size,
                         "predicted_bytes": predicted, "full_model_bytes": full_bytes,
                         "working_predicted": dequantized_working_bytes(layer_of(meta), torch.float32), **measured})
            if fmt != "bf16":
                os.remove(path)
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


# --- the run table (memory model + the measurements above) ---------------------------------------------------

OVERHEAD = 1.0 * GIB   # CUDA context, allocator reserve, cuBLAS workspaces (assumed)
RAM_BASE = 3.0 * GIB   # ComfyUI + torch + the pack in RAM (assumed; CPU-only ComfyUI here idles at ~1.2 GiB)
VAE_BYTES = 498_818_819 * 4  # the v2 VAE, fp32, loaded once (host moves it to the GPU for the decode)
SIZES = {"544x992x204": (36, 34, 62), "768x768x204": (36, 48, 48)}
CHUNK = 8192


def run_table(rows, llm_format_for):
    """Per DiT format and size: DiT file, RAM peak, VRAM plan, fits 24 / 16 GB (assumptions in the README)."""
    dit = build_on_meta(lambda: StepVideoDiT(FULL_DIT))
    working = dequantized_working_bytes(dit, torch.bfloat16)
    llm_layer = {r["format"]: r for r in rows if r["model"] == "step_llm"}
    table = []
    for fmt in ("bf16",) + tuple(FORMATS):
        weights = sum(p.numel() * 2 for p in dit.parameters()) if fmt == "bf16" else stored_bytes(dit, fmt)
        encode_ram = llm_layer[llm_format_for(fmt)]["layer_bytes"] + llm_layer[llm_format_for(fmt)]["load_anon"]
        for size, (frames, height, width) in SIZES.items():
            activations = dit_activation_bytes(FULL_DIT, 1, frames, height, width, torch.bfloat16, CHUNK)
            frames_rgb = 204 * height * 16 * width * 16 * 3 * 4  # decoded IMAGE batch, float32, in RAM
            row = {"format": fmt, "size": size, "weights": weights, "activations": activations}
            for budget in (24, 16):
                vram = budget * GIB  # a "24 GB" card has 24 GiB
                fixed = activations + working + OVERHEAD
                streamed = max(0.0, weights + fixed - vram + (2 * working if weights + fixed > vram else 0))
                row[f"streamed_{budget}"] = streamed if fixed < vram else None
                row[f"ram_{budget}"] = RAM_BASE + max(streamed, encode_ram, VAE_BYTES + frames_rgb)
            table.append(row)
    return table


def fits(row, budget):
    streamed = row[f"streamed_{budget}"]
    ram = row[f"ram_{budget}"]
    if streamed is None:
        return "no"
    words = "yes, resident" if streamed == 0 else f"yes, {streamed / GIB:.1f} GiB streamed per step"
    return words + ("" if ram <= 32 * GIB else f" (RAM {ram / GIB:.0f} GiB > 32 GB)")


def report(rows, table, threads, tokens):
    out = [f"Measured (CPU, {threads} threads, {tokens} tokens, float32 compute):", "",
           "| model | format | file MiB (1 block/layer) | memory model MiB | full model GiB | RAM while loading: anon / "
           "file-backed MiB | resident MiB | forward peak MiB (working set model) | s per block/layer | vs bf16 |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    base = {r["model"]: r["seconds"] for r in rows if r["format"] == "bf16"}
    for r in rows:
        out.append(f"| {r['model']} | {r['format']} | {r['file_bytes'] / MIB:.1f} | {r['predicted_bytes'] / MIB:.1f} | "
                   f"{r['full_model_bytes'] / GIB:.2f} | {r['load_anon'] / MIB:.0f} / {r['load_file'] / MIB:.0f} | "
                   f"{r['resident'] / MIB:.0f} | {r['forward_peak'] / MIB:.0f} ({r['working_predicted'] / MIB:.0f}) | "
                   f"{r['seconds']:.2f} | {r['seconds'] / base[r['model']]:.2f}x |")
    out += ["", "| DiT format | size | DiT weights GiB | activations GiB (sequential CFG, chunk 8192) | 24 GB GPU | "
            "16 GB GPU | system RAM peak GiB (24 / 16 GB GPU) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in table:
        out.append(f"| {row['format']} | {row['size']} | {row['weights'] / GIB:.1f} | {row['activations'] / GIB:.1f} | "
                   f"{fits(row, 24)} | {fits(row, 16)} | {row['ram_24'] / GIB:.1f} / {row['ram_16'] / GIB:.1f} |")
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    parser.add_argument("--from-json", default=None, help="re-render the tables from an earlier --json")
    args = parser.parse_args(argv)
    if args.from_json:
        with open(args.from_json, encoding="utf-8") as f:
            rows = json.load(f)["rows"]
    else:
        with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as scratch:
            rows = measure(args.tokens, args.threads, args.repeats, scratch)
    table = run_table(rows, lambda fmt: "Q8_0" if fmt in ("bf16", "fp8_scaled", "Q8_0") else fmt)
    print(report(rows, table, args.threads, args.tokens))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "table": table}, f, indent=1)


if __name__ == "__main__":
    main()
