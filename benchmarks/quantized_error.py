#!/usr/bin/env python3
"""Error of every pre-quantized format against the official outputs, on the DiT and Step-LLM parity fixtures.

    python benchmarks/quantized_error.py [--fixtures tests/fixtures/parity] [--json out.json]

Each fixture's bf16 checkpoint is converted with the pack's converter to each format (in a temporary
folder), loaded through the same loaders as user files and run on the fixture's cases (float32 and
bfloat16 compute). Reported per case: max relative error = max|ours - official| / max|official| and
mean relative error = mean|ours - official| / mean|official|; the "bf16 (unquantized)" rows are the
floor (the unquantized checkpoint through the same code). Prints a markdown table.
"""

import argparse
import json
import os
import shutil
import tempfile

import torch
from safetensors.torch import load_file

from harness import FIXTURES as FIXTURE_ROOT
from harness.parity import case_inputs
from stepvideo_pack.model_loaders.dit_loader import load_dit
from stepvideo_pack.model_loaders.quantized_writer import convert
from stepvideo_pack.model_loaders.text_encoder_loader import load_step_llm
from stepvideo_pack.networks.quant_formats import FORMATS

FIXTURES = {"dit": ["dit_t2v_tiny", "dit_ti2v_tiny"], "step_llm": ["step_llm_tiny", "step_llm_mqa"]}
UNQUANTIZED = "bf16 (unquantized)"


def source_for(kind, folder, manifest, scratch):
    """What the converter reads: the DiT checkpoint, or a step_llm folder with config.json and a tokenizer."""
    checkpoint = os.path.join(folder, manifest["checkpoint"])
    if kind == "dit":
        return checkpoint
    target = os.path.join(scratch, "step_llm_src")
    os.makedirs(target, exist_ok=True)
    shutil.copy(checkpoint, os.path.join(target, "model.safetensors"))
    with open(os.path.join(target, "config.json"), "w", encoding="utf-8") as f:
        json.dump(manifest["official_config"], f)
    shutil.copy(os.path.join(os.path.dirname(folder), "step_tokenizer", "step1_chat_tokenizer.model"), target)
    return target


def run_case(kind, path, case, data, config):
    dtype = torch.float32 if case["dtype"] == "float32" else torch.bfloat16
    with torch.no_grad():
        if kind == "dit":
            model = load_dit(path, weight_dtype=dtype)
            return model(**case_inputs(case, data, dtype)), data[case["outputs"]["out"]]
        model = load_step_llm(path, dtype=dtype, config=config)
        return model(data[case["inputs"]["input_ids"]]), data[case["outputs"]["last_hidden_state"]]


def errors(got, expected):
    diff = (got.double() - expected.double()).abs()
    return float(diff.max() / expected.double().abs().max()), float(diff.mean() / expected.double().abs().mean())


def measure(fixtures_root):
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for kind, names in FIXTURES.items():
            for name in names:
                folder = os.path.join(fixtures_root, name)
                with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
                    manifest = json.load(f)
                data = load_file(os.path.join(folder, "data.safetensors"))
                source = source_for(kind, folder, manifest, scratch)
                files = {UNQUANTIZED: source}
                for fmt in FORMATS:
                    files[fmt] = os.path.join(scratch, f"{name}.{fmt}" + (".safetensors" if fmt == "fp8_scaled"
                                                                          else ".gguf"))
                    convert(source, files[fmt], fmt)
                for fmt, path in files.items():
                    for case in manifest["cases"]:
                        got, expected = run_case(kind, path, case, data, manifest.get("official_config"))
                        rows.append({"fixture": name, "format": fmt, "dtype": case["dtype"],
                                     "max_rel": errors(got, expected)[0], "mean_rel": errors(got, expected)[1]})
    return rows


def table(rows):
    lines = ["| fixture | format | compute | max rel. error | mean rel. error |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['fixture']} | {r['format']} | {r['dtype']} | {r['max_rel']:.2e} | {r['mean_rel']:.2e} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", default=os.path.join(FIXTURE_ROOT, "parity"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows = measure(args.fixtures)
    print(table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
