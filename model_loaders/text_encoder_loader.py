"""Load Step-Video's text encoders and their tokenizers from the official files or single files.

Accepted layouts (the official download, or what ``scripts/convert_single_files.py`` writes):

* Step-LLM: the ``step_llm/`` folder (shards + ``model.safetensors.index.json`` + ``config.json`` +
  ``step1_chat_tokenizer.model``), its index file, or one ``.safetensors``.
* HunyuanCLIP: the ``hunyuan_clip/`` folder, its ``clip_text_encoder/`` folder (``config.json`` +
  ``pytorch_model.bin``), the ``.bin`` itself, or one ``.safetensors``.
* A single ``.safetensors`` may carry its tokenizer and config.json as uint8 tensors
  (:data:`EMBEDDED_FILES`); otherwise they are looked up next to it (see :func:`locate_step_tokenizer`
  and :func:`locate_clip_tokenizer`).

Sizes come from tensor shapes; config.json (or the caller's ``config``) only supplies what shapes
cannot tell (head counts, epsilons, activation) and is cross-checked against the shapes.
"""

import json
import os
import re

import torch

from ..networks.hunyuan_clip import HunyuanClip, HunyuanClipConfig
from ..networks.ops import CastOps, DEFAULT_OPERATIONS
from ..networks.step_llm import StepLLM, StepLLMConfig, ffn_width
from .errors import CheckpointError
from .identify import describe, find_prefix, identify
from .materialize import build_on_meta, load_into
from .official_layout import CLIP_ENCODER_DIR, CLIP_TOKENIZER_DIR, STEP_TOKENIZER_FILE
from .quantized_files import is_gguf, is_quantized, mapped_view
from .text_tokenizers import BertTokenizer, StepTokenizer
from .weight_files import open_weights

STEP_LLM = "Step-LLM text encoder"
HUNYUAN_CLIP = "HunyuanCLIP text encoder"
STEP_LLM_SIGNATURE = "tok_embeddings.word_embeddings.weight"
CLIP_SIGNATURE = "embeddings.word_embeddings.weight"
CLIP_TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json")  # the first is required
DEFAULT_STEP_HEAD_DIM = 128  # Step-LLM head width when no config names the head count
BERT_HEAD_DIM = 64  # BERT convention, used when no config.json names the head count
UNUSED_CLIP_KEYS = re.compile(r"^(cls\.|pooler\.|embeddings\.position_ids$)")  # MLM head, pooler, buffer

# file name -> uint8 tensor name, for tokenizer/config files carried inside a single .safetensors
EMBEDDED_FILES = {
    STEP_TOKENIZER_FILE: "tokenizer.sentencepiece_model",
    "vocab.txt": "tokenizer.vocab_txt",
    "tokenizer_config.json": "tokenizer.config_json",
    "special_tokens_map.json": "tokenizer.special_tokens_map_json",
    "config.json": "text_encoder.config_json",
}


# --- small file helpers --------------------------------------------------------------------------------

def _read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def _json_object(data, source):
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{source} is not valid JSON ({e}).") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{source} does not hold a JSON object.")
    return value


def embedded_file(weights, name):
    """Bytes of file ``name`` embedded in a single-file checkpoint (None if absent)."""
    key = EMBEDDED_FILES[name]
    return weights.load(key).numpy().tobytes() if key in weights else None


def embed_file(data):
    """File bytes -> the uint8 tensor that carries them inside a single-file checkpoint."""
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _is_single_file(path):
    """A one-file checkpoint that may embed its tokenizer and config: .safetensors or GGUF."""
    return os.path.isfile(path) and (path.endswith(".safetensors") or is_gguf(path))


def _config_near(path, weights):
    """(config.json dict or None, its source): embedded in a single file, else beside the weight files."""
    if _is_single_file(path):
        data = embedded_file(weights, "config.json")
        source = f"{path} (embedded config.json)"
    else:
        folder = path if os.path.isdir(path) else os.path.dirname(path)
        source = os.path.join(folder, "config.json")
        data = _read_bytes(source) if os.path.isfile(source) else None
    return (None, None) if data is None else (_json_object(data, source), source)


def _model_view(weights, kind, what, signature, slot_hint):
    """``weights`` refused unless it looks like ``kind``; keys stripped of any prefix before ``signature``
    and of embedded tokenizer/config files."""
    if identify(weights.keys()) != kind:
        raise CheckpointError(f"{weights.source} is not a {what} checkpoint: it looks like "
                              f"{describe(weights.keys())}. {slot_hint}")
    prefix = find_prefix(weights.keys(), signature)
    embedded = set(EMBEDDED_FILES.values())

    def rename(key):
        if key in embedded:
            return None
        return key[len(prefix):] if prefix and key.startswith(prefix) else key

    return weights.renamed(rename)


def refuse_other_model(path, view):
    """Raise ``view``'s wrong-slot CheckpointError when ``path`` holds readable weights of another model
    (say what the file looks like, not only that no tokenizer sits beside it); return if it cannot be read."""
    try:
        weights = open_weights(clip_weights_path(os.fspath(path)))
    except CheckpointError:
        return
    view(weights)


def _layer_count(weights, pattern):
    indices = [int(m.group(1)) for k in weights.keys() if (m := re.match(pattern, k))]
    return 1 + max(indices) if indices else 0


def _require(weights, key, what):
    if key not in weights:
        raise CheckpointError(f"{weights.source} is not a complete {what}: tensor {key!r} is missing.")
    return weights.shape(key)


def _merged_config(sources):
    """Merge (dict or None, source name) pairs; a field two sources give different values is an error."""
    merged, origin = {}, {}
    for values, source in sources:
        for field, value in (values or {}).items():
            if field in merged and merged[field] != value:
                raise CheckpointError(f"{origin[field]} says {field} = {merged[field]!r} but {source} says "
                                      f"{value!r}; they describe different models.")
            merged.setdefault(field, value)
            origin.setdefault(field, source)
    return merged, origin


def _check_against_shapes(weights, what, merged, origin, detected):
    """CheckpointError listing every config field that contradicts the value detected from the shapes."""
    bad = [f"{field} = {merged[field]!r} in {origin[field]}, but the tensors say {value!r}"
           for field, value in detected.items() if field in merged and merged[field] != value]
    if bad:
        raise CheckpointError(f"{weights.source}: the configuration does not match this {what}: " + "; ".join(bad)
                              + ". Use the config.json that came with these weights.")


def _operations_for(weight_dtype, dtype, operations):
    if operations is not None:
        return operations
    return CastOps if weight_dtype != dtype else DEFAULT_OPERATIONS


# --- Step-LLM ----------------------------------------------------------------------------------------------

def step_llm_view(weights):
    """``weights`` (any WeightFiles) with official Step-LLM keys only; CheckpointError if it is another model."""
    return _model_view(weights, "step_llm", STEP_LLM, STEP_LLM_SIGNATURE,
                       "Put the official step_llm/ folder (or a single-file Step-LLM) in this slot.")


def step_llm_weights(path):
    """(WeightFiles with official Step-LLM keys, config.json dict or None, its source)."""
    path = os.fspath(path)
    raw = open_weights(path)
    return (step_llm_view(raw), *_config_near(path, raw))


def detect_step_llm_config(weights, config_sources=()) -> StepLLMConfig:
    """The StepLLMConfig of ``weights`` (official keys).

    Shapes fix the width, vocabulary, layers, FFN width and groups x head width. The head count comes
    from ``num_attention_heads`` (else ``kv_channels`` as the head width, else 128) in
    ``config_sources`` — (dict in hub config.json names or None, source name) pairs, which must agree
    with each other and with the shapes.
    """
    merged, origin = _merged_config(config_sources)
    vocab, hidden = _require(weights, STEP_LLM_SIGNATURE, STEP_LLM)
    layers = _layer_count(weights, r"transformer\.layers\.(\d+)\.")
    if layers == 0:
        raise CheckpointError(f"{weights.source} is not a complete {STEP_LLM}: it has no transformer layers.")
    wqkv_rows = _require(weights, "transformer.layers.0.attention.wqkv.weight", STEP_LLM)[0]
    width = _require(weights, "transformer.layers.0.feed_forward.w2.weight", STEP_LLM)[1]
    if "num_attention_heads" in merged:
        heads = int(merged["num_attention_heads"])
    else:
        heads = hidden // int(merged.get("kv_channels", DEFAULT_STEP_HEAD_DIM))
    head_dim = hidden // heads if heads and hidden % heads == 0 else 0
    kv_rows = wqkv_rows - hidden  # per KV group: k and v, head_dim rows each
    groups = kv_rows // (2 * head_dim) if head_dim else 0
    if not groups or kv_rows != 2 * groups * head_dim or heads % groups:
        raise CheckpointError(
            f"{weights.source}: width {hidden} with a fused QKV of {wqkv_rows} rows cannot be split into {heads} "
            f"query heads sharing key/value groups. Give the config.json of these weights (num_attention_heads).")
    config = StepLLMConfig(hidden_size=hidden, num_layers=layers, num_heads=heads, num_groups=groups,
                           ffn_width=width, vocab_size=vocab, eps=float(merged.get("layernorm_epsilon", 1e-5)))
    detected = {"hidden_size": hidden, "num_layers": layers, "num_attention_groups": config.num_groups,
                "padded_vocab_size": vocab}
    if "ffn_hidden_size" in merged:
        merged["ffn_hidden_size"] = ffn_width(int(merged["ffn_hidden_size"]))  # compare after official rounding
        detected["ffn_hidden_size"] = width
    _check_against_shapes(weights, STEP_LLM, merged, origin, detected)
    return config


def load_step_llm(path, dtype=torch.bfloat16, device="cpu", config=None, operations=None, weight_dtype=None,
                  mapped=False):
    """A ready StepLLM from the official ``step_llm/`` folder, its index file or a single safetensors.

    dtype: compute dtype (bf16 as officially run; float32 for exact checks). weight_dtype: storage of
    the matmul weights (default ``dtype``; fp8 e4m3fn/e5m2 halves memory and makes the layers cast at
    call time). config: optional dict in hub config.json names, used for what shapes cannot tell;
    a config.json beside the weights is read too. With ``operations=CastOps`` (the default whenever
    weight_dtype != dtype) the model may stay on ``device="cpu"`` and be called with inputs on a GPU:
    each layer's weights are then copied over as it runs.

    A pre-quantized file (GGUF, scaled fp8) keeps what it stores and dequantizes per call (weight_dtype
    is ignored). mapped (with device "cpu"): weights stay views of the memory-mapped files whenever no
    conversion is needed (quantized files always, safetensors when weight_dtype equals the stored
    dtype), so loading copies nothing; ``model.mapped_weights.release()`` then drops the pages read so
    far (text encoding calls it after every layer, which keeps RAM at about one layer).
    """
    weights, file_config, source = step_llm_weights(path)
    cfg = detect_step_llm_config(weights, [(file_config, source), (config, "the given config")])
    weight_dtype = weight_dtype or dtype
    quantized = is_quantized(weights)
    stored = {info.dtype for info in weights.info.values()}
    mapped = mapped and torch.device(device).type == "cpu" and (quantized or stored == {weight_dtype})
    if quantized:
        operations = operations or CastOps
    else:
        operations = _operations_for(weight_dtype, dtype, operations)
    if mapped:
        weights = mapped_view(weights)
    model = build_on_meta(lambda: StepLLM(cfg, operations=operations))
    model = load_into(model, weights, STEP_LLM, None if quantized or mapped else weight_dtype,
                      None if quantized or mapped else dtype, device)
    model.mapped_weights = weights if mapped else None
    if quantized or mapped:
        model.activation_dtype = dtype
    return model


def locate_step_tokenizer(path):
    """The file holding the Step-LLM tokenizer for ``path``: the .model file itself; in a folder its
    step1_chat_tokenizer.model; for a single .safetensors the file itself if it embeds one, else
    ``<stem>.model`` or step1_chat_tokenizer.model beside it. CheckpointError lists what was tried."""
    path = os.fspath(path)
    if os.path.isdir(path):
        candidates = [os.path.join(path, STEP_TOKENIZER_FILE)]
    elif _is_single_file(path):
        if EMBEDDED_FILES[STEP_TOKENIZER_FILE] in open_weights(path):
            return path
        folder, stem = os.path.dirname(path), os.path.basename(path).split(".")[0]
        candidates = [os.path.join(folder, stem + ".model"), os.path.join(folder, STEP_TOKENIZER_FILE)]
    elif path.endswith(".json"):  # the shard index
        candidates = [os.path.join(os.path.dirname(path), STEP_TOKENIZER_FILE)]
    else:
        candidates = [path]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    refuse_other_model(path, step_llm_view)
    embedded = f"a '{EMBEDDED_FILES[STEP_TOKENIZER_FILE]}' tensor in {path}, " if _is_single_file(path) else ""
    raise CheckpointError(f"no Step-LLM tokenizer found for {path}: looked for {embedded}"
                          + ", ".join(candidates) + ". It is the official step_llm/step1_chat_tokenizer.model.")


def load_step_tokenizer(path) -> StepTokenizer:
    """The Step-LLM tokenizer from a .model file, the step_llm/ folder, or a weight file (see
    :func:`locate_step_tokenizer`)."""
    found = locate_step_tokenizer(path)
    if _is_single_file(found) and not found.endswith(".model"):
        return StepTokenizer(embedded_file(open_weights(found), STEP_TOKENIZER_FILE), f"{found} (embedded tokenizer)")
    return StepTokenizer(_read_bytes(found), found)


# --- HunyuanCLIP ------------------------------------------------------------------------------------------

def clip_weights_path(path):
    """The hunyuan_clip/ root folder stands for its clip_text_encoder/ folder."""
    inner = os.path.join(path, CLIP_ENCODER_DIR)
    return inner if os.path.isdir(path) and os.path.isdir(inner) else path


def hunyuan_clip_view(weights):
    """``weights`` (any WeightFiles) with Hugging Face BertModel keys only.

    ``bert.`` (or any prefix before it) is stripped; the pooler, the MLM head (``cls.*``) and the
    ``embeddings.position_ids`` buffer are dropped; any other extra key stays and fails the strict check.
    """
    view = _model_view(weights, "hunyuan_clip", HUNYUAN_CLIP, CLIP_SIGNATURE,
                       "Put the official hunyuan_clip/ folder (or a single-file HunyuanCLIP) in this slot.")
    return view.renamed(lambda k: None if UNUSED_CLIP_KEYS.match(k) else k)


def hunyuan_clip_weights(path):
    """(WeightFiles with BertModel keys, config.json dict or None, its source) for any accepted layout."""
    path = clip_weights_path(os.fspath(path))
    raw = open_weights(path)
    return (hunyuan_clip_view(raw), *_config_near(path, raw))


def detect_hunyuan_clip_config(weights, config=None, source=None) -> HunyuanClipConfig:
    """The HunyuanClipConfig of ``weights`` (BertModel keys): sizes from shapes; head count, LayerNorm eps
    and activation from ``config`` (a BERT config.json dict; defaults: width / 64 heads, 1e-12, gelu)."""
    config = config or {}
    vocab, hidden = _require(weights, "embeddings.word_embeddings.weight", HUNYUAN_CLIP)
    positions = _require(weights, "embeddings.position_embeddings.weight", HUNYUAN_CLIP)[0]
    types = _require(weights, "embeddings.token_type_embeddings.weight", HUNYUAN_CLIP)[0]
    layers = _layer_count(weights, r"encoder\.layer\.(\d+)\.")
    intermediate = _require(weights, "encoder.layer.0.intermediate.dense.weight", HUNYUAN_CLIP)[0]
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(f"{source}: position_embedding_type {config['position_embedding_type']!r} is not "
                              "supported (HunyuanCLIP uses absolute positions).")
    detected = {"hidden_size": hidden, "num_hidden_layers": layers, "intermediate_size": intermediate,
                "vocab_size": vocab, "max_position_embeddings": positions, "type_vocab_size": types}
    _check_against_shapes(weights, HUNYUAN_CLIP, config, dict.fromkeys(config, source), detected)
    heads = int(config.get("num_attention_heads", max(1, hidden // BERT_HEAD_DIM)))
    if hidden % heads:
        raise CheckpointError(f"{source or weights.source}: width {hidden} is not a multiple of {heads} heads.")
    return HunyuanClipConfig(hidden_size=hidden, num_layers=layers, num_heads=heads, intermediate_size=intermediate,
                             vocab_size=vocab, max_positions=positions, type_vocab_size=types,
                             layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
                             hidden_act=config.get("hidden_act", "gelu"))


def load_hunyuan_clip(path, dtype=torch.float32, device="cpu", operations=None, weight_dtype=None):
    """A ready HunyuanClip from ``hunyuan_clip/``, ``clip_text_encoder/``, its .bin or a single safetensors.

    dtype: compute dtype (float32 as officially run); weight_dtype: storage of matmul weights (default dtype).
    """
    weights, config, source = hunyuan_clip_weights(path)
    cfg = detect_hunyuan_clip_config(weights, config, source)
    weight_dtype = weight_dtype or dtype
    operations = _operations_for(weight_dtype, dtype, operations)
    model = build_on_meta(lambda: HunyuanClip(cfg, operations=operations))
    return load_into(model, weights, HUNYUAN_CLIP, weight_dtype, dtype, device)


def locate_clip_tokenizer(path):
    """Where the HunyuanCLIP tokenizer for ``path`` is: a folder holding vocab.txt (``path`` itself, its
    ``tokenizer/``, or the ``tokenizer/`` beside a ``clip_text_encoder/`` folder or file), or a single
    .safetensors embedding it (else ``<stem>_tokenizer/`` or ``tokenizer/`` beside it)."""
    path = os.fspath(path)
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    candidates = [folder, os.path.join(folder, CLIP_TOKENIZER_DIR),
                  os.path.join(os.path.dirname(folder), CLIP_TOKENIZER_DIR)]
    if _is_single_file(path):
        if EMBEDDED_FILES["vocab.txt"] in open_weights(path):
            return path
        stem = os.path.basename(path).split(".")[0]
        candidates = [os.path.join(folder, stem + "_tokenizer"), os.path.join(folder, CLIP_TOKENIZER_DIR)]
    for candidate in candidates:
        if os.path.isfile(os.path.join(candidate, "vocab.txt")):
            return candidate
    refuse_other_model(path, hunyuan_clip_view)
    embedded = f"a '{EMBEDDED_FILES['vocab.txt']}' tensor in {path}, " if _is_single_file(path) else ""
    raise CheckpointError(f"no HunyuanCLIP tokenizer found for {path}: looked for {embedded}vocab.txt in "
                          + ", ".join(dict.fromkeys(candidates))
                          + ". It is the official hunyuan_clip/tokenizer/ folder.")


def load_clip_tokenizer(path) -> BertTokenizer:
    """The HunyuanCLIP tokenizer from ``tokenizer/``, ``hunyuan_clip/`` or a weight file (see
    :func:`locate_clip_tokenizer`)."""
    found = locate_clip_tokenizer(path)
    if os.path.isfile(found):
        weights = open_weights(found)
        files = {name: embedded_file(weights, name) for name in CLIP_TOKENIZER_FILES}
        source = f"{found} (embedded tokenizer)"
    else:
        files = {name: _read_bytes(os.path.join(found, name)) if os.path.isfile(os.path.join(found, name)) else None
                 for name in CLIP_TOKENIZER_FILES}
        source = found
    options = {name: _json_object(files[name], f"{source}: {name}") if files[name] else {}
               for name in CLIP_TOKENIZER_FILES[1:]}
    return BertTokenizer(files["vocab.txt"], options["tokenizer_config.json"], options["special_tokens_map.json"],
                         source)
