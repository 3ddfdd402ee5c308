"""Prompts -> the DiT's text conditioning, as the official caption server computes it.

For each prompt: Step-LLM (bf16) states (320, D_llm) with its token mask, and HunyuanCLIP (fp32, then
cast to the Step-LLM dtype) states (77, D_clip). A batch becomes :class:`TextEmbeddings` with the DiT
mask ``[77 ones ; Step-LLM mask]`` (B, 397). Prompt composition follows the official pipeline:
positive = prompt + positive magic (plain concatenation), negative = the user's negative prompt (empty
by default) + negative magic (:func:`compose_prompts`).

:class:`StepVideoTextEncoder` loads each encoder only when a prompt is not in its disk cache, and by
default frees both right after encoding, so the 20B Step-LLM never sits in memory during sampling.
"""

import contextlib
import gc
import logging
import re
from dataclasses import dataclass

import torch

from ..networks.ops import CastOps
from .errors import CheckpointError
from .embedding_cache import DEFAULT_LIMIT_MB, EmbeddingCache, files_identity
from .text_encoder_loader import (CLIP_SIGNATURE, STEP_LLM_SIGNATURE, hunyuan_clip_weights, load_clip_tokenizer,
                                  load_hunyuan_clip, load_step_llm, load_step_tokenizer, locate_clip_tokenizer,
                                  locate_step_tokenizer, step_llm_weights)

log = logging.getLogger(__name__)

# Official magic prompts (Step-Video-T2V and Step-Video-TI2V config.py defaults)
T2V_POSITIVE_MAGIC = ("超高清、HDR 视频、环境光、杜比全景声、画面稳定、流畅动作、逼真的细节、专业级构图、超现实主义、自然、生动、"
                      "超细节、清晰。")
T2V_NEGATIVE_MAGIC = "画面暗、低分辨率、不良手、文本、缺少手指、多余的手指、裁剪、低质量、颗粒状、签名、水印、用户名、模糊。"
TI2V_POSITIVE_MAGIC = ("画面中的主体动作表现生动自然、画面流畅、生动细节、光线统一柔和、超真实动态捕捉、大师级运镜、整体不变形、超高清、"
                       "画面稳定、逼真的细节、专业级构图、超细节、清晰。")
TI2V_NEGATIVE_MAGIC = ("动画、模糊、变形、毁容、低质量、拼贴、粒状、标志、抽象、插图、计算机生成、扭曲、动作不流畅、面部有褶皱、"
                       "表情僵硬、畸形手指")
MAGIC_PROMPTS = {"t2v": (T2V_POSITIVE_MAGIC, T2V_NEGATIVE_MAGIC), "ti2v": (TI2V_POSITIVE_MAGIC, TI2V_NEGATIVE_MAGIC)}

STEP_LLM_MAX_LENGTH = 320
CLIP_MAX_LENGTH = 77
CACHE_FORMAT = 1
MASK_DTYPE = torch.int64  # the tokenizers' token masks
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(prompt):
    """``prompt`` with lone UTF-16 surrogates (from JSON such as "\\ud800"; not text, and not encodable
    as UTF-8) replaced by U+FFFD, the Unicode replacement character."""
    cleaned, count = LONE_SURROGATE.subn("\ufffd", prompt)
    if count:
        log.warning("Step-Video: the prompt holds %d lone surrogate code point(s); replaced by U+FFFD", count)
    return cleaned


def compose_prompts(prompt, negative_prompt="", variant="t2v", use_magic=True):
    """[positive, negative] texts with the official magic suffixes of ``variant`` ('t2v' or 'ti2v') appended.

    positive = prompt + positive magic; negative = negative_prompt + negative magic, so an empty
    negative prompt gives exactly the official negative (the negative magic alone). With
    ``use_magic=False`` both texts are used as they are.
    """
    if variant not in MAGIC_PROMPTS:
        raise ValueError(f"unknown Step-Video variant {variant!r}; choose one of {', '.join(MAGIC_PROMPTS)}")
    positive_magic, negative_magic = MAGIC_PROMPTS[variant] if use_magic else ("", "")
    return [prompt + positive_magic, (negative_prompt or "") + negative_magic]


@dataclass
class TextEmbeddings:
    """Text conditioning of a batch of prompts, on the CPU.

    llm_states (B, L_llm, D_llm) in the Step-LLM compute dtype (bf16 by default); clip_states
    (B, L_clip, D_clip) in the same dtype; mask (B, L_clip + L_llm) int64 = L_clip ones then the
    Step-LLM token mask (the DiT's ``encoder_attention_mask``).
    """

    llm_states: torch.Tensor
    clip_states: torch.Tensor
    mask: torch.Tensor

    def dit_inputs(self):
        """Keyword arguments of the DiT forward carrying this conditioning."""
        return {"encoder_hidden_states": self.llm_states, "encoder_hidden_states_2": self.clip_states,
                "encoder_attention_mask": self.mask}

    def split(self):
        """One TextEmbeddings (batch 1) per prompt, in order."""
        return [TextEmbeddings(*(t[i:i + 1] for t in (self.llm_states, self.clip_states, self.mask)))
                for i in range(self.mask.shape[0])]


class StepVideoTextEncoder:
    """Step-LLM + HunyuanCLIP with their tokenizers, loaded lazily, with an optional disk cache.

    Args:
        step_llm_path: official ``step_llm/`` folder, its index, or a single-file Step-LLM.
        clip_path: official ``hunyuan_clip/`` (or ``clip_text_encoder/``) folder or a single-file HunyuanCLIP.
        cache_dir: folder of the embedding cache (None: no cache). Entries are keyed by prompt text,
            max lengths, dtypes and the identity (paths, sizes, modification times) of the encoder and
            tokenizer files — not by the device, whose rounding differences are ignored. An entry whose
            tensors do not have the shapes and dtypes these encoders produce is recomputed.
        cache_limit_mb: size limit of the cache folder; least recently used entries are deleted beyond it.
        device: where the encoders run ("cpu", "cuda", torch.device).
        offload: keep the weights in CPU memory and copy each layer to ``device`` as it runs (low VRAM).
            Step-LLM weights that need no conversion (a pre-quantized file, or bf16 kept bf16) stay
            memory-mapped and each layer's pages are dropped after it runs, so RAM stays at about one
            layer too.
        llm_dtype / llm_weight_dtype: Step-LLM compute dtype (bf16, official) and matmul weight storage
            (default llm_dtype; torch.float8_e4m3fn halves its memory). clip_dtype: HunyuanCLIP compute
            dtype (fp32, official); its output is cast to llm_dtype.
        keep_loaded: keep the encoders in memory between encode calls (default: free them after each).
        step_tokenizer_path / clip_tokenizer_path: tokenizer locations when not next to / inside the weights.
        llm_config: optional Step-LLM config dict (hub config.json names) for single files without one.
        operations: layer classes for both encoders (default torch.nn, CastOps when offloading).
    """

    def __init__(self, step_llm_path, clip_path, cache_dir=None, device="cpu", offload=False,
                 llm_dtype=torch.bfloat16, llm_weight_dtype=None, clip_dtype=torch.float32,
                 llm_max_length=STEP_LLM_MAX_LENGTH, clip_max_length=CLIP_MAX_LENGTH, keep_loaded=False,
                 step_tokenizer_path=None, clip_tokenizer_path=None, llm_config=None, operations=None,
                 cache_limit_mb=DEFAULT_LIMIT_MB):
        self.step_llm_path, self.clip_path = step_llm_path, clip_path
        self.step_tokenizer_path = step_tokenizer_path or step_llm_path
        self.clip_tokenizer_path = clip_tokenizer_path or clip_path
        self.cache = EmbeddingCache(cache_dir, cache_limit_mb * 1024 ** 2) if cache_dir is not None else None
        self._layout = None
        self.device = torch.device(device)
        self.weights_device = torch.device("cpu") if offload else self.device
        self.operations = operations if operations is not None else (CastOps if offload else None)
        self.llm_dtype, self.llm_weight_dtype, self.clip_dtype = llm_dtype, llm_weight_dtype, clip_dtype
        self.llm_max_length, self.clip_max_length = llm_max_length, clip_max_length
        self.keep_loaded = keep_loaded
        self.llm_config = llm_config
        self.step_llm = self.clip = self.step_tokenizer = self.clip_tokenizer = None

    # --- public -------------------------------------------------------------------------------------

    def encode(self, prompts, on_progress=None):
        """prompts (str or list of str) -> TextEmbeddings (B = len(prompts)), from the cache when possible.

        on_progress(done, total) is called after every encoder layer that runs (never on a cache hit);
        it may raise to interrupt.
        """
        prompts = [clean_text(p) for p in ([prompts] if isinstance(prompts, str) else list(prompts))]
        if not prompts:
            raise ValueError("no prompts to encode (an empty prompt is the string '', not an empty list)")
        unique = list(dict.fromkeys(prompts))
        keys, entries = {}, {}
        if self.cache is not None:
            encoders = self._encoders_identity()
            keys = {p: self.cache_key(p, encoders) for p in unique}
            layout = self.cached_layout()
            entries = {p: self.cache.load(keys[p], layout) for p in unique}
        missing = [p for p in unique if entries.get(p) is None]
        if missing:
            fresh = self._run_encoders(missing, on_progress)
            entries.update(fresh)
            for prompt, entry in fresh.items():
                if self.cache is not None:
                    self.cache.store(keys[prompt], entry)
        llm_mask = torch.stack([entries[p]["llm_mask"] for p in prompts])
        clip_states = torch.stack([entries[p]["clip_states"] for p in prompts])
        clip_part = torch.ones(len(prompts), clip_states.shape[1], dtype=llm_mask.dtype)
        return TextEmbeddings(llm_states=torch.stack([entries[p]["llm_states"] for p in prompts]),
                              clip_states=clip_states, mask=torch.cat([clip_part, llm_mask], dim=1))

    def unload(self):
        """Free both encoders (tokenizers are kept; they are small)."""
        if self.step_llm is None and self.clip is None:
            return
        self.step_llm = self.clip = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # --- internals ----------------------------------------------------------------------------------

    def cache_key(self, prompt, encoders=None):
        """The embedding-cache key of ``prompt`` (``encoders``: this encoder's identity, when already known)."""
        return {"format": CACHE_FORMAT, "prompt": prompt, **(encoders or self._encoders_identity())}

    def cached_layout(self):
        """{name: (shape, dtype)} of one prompt's cached tensors, from the weights' headers (read once)."""
        if self._layout is None:
            llm_width = step_llm_weights(self.step_llm_path)[0].shape(STEP_LLM_SIGNATURE)[1]
            clip_width = hunyuan_clip_weights(self.clip_path)[0].shape(CLIP_SIGNATURE)[1]
            self._layout = {"llm_states": ((self.llm_max_length, llm_width), self.llm_dtype),
                            "llm_mask": ((self.llm_max_length,), MASK_DTYPE),
                            "clip_states": ((self.clip_max_length, clip_width), self.llm_dtype)}
        return self._layout

    def _encoders_identity(self):
        """Everything besides the prompt that the cached tensors depend on (JSON-able)."""
        return {
            "step_llm": {"files": files_identity([self.step_llm_path, locate_step_tokenizer(self.step_tokenizer_path)]),
                         "max_length": self.llm_max_length, "dtype": str(self.llm_dtype),
                         "weight_dtype": str(self.llm_weight_dtype or self.llm_dtype), "config": self.llm_config},
            "clip": {"files": files_identity([self.clip_path, locate_clip_tokenizer(self.clip_tokenizer_path)]),
                     "max_length": self.clip_max_length, "dtype": str(self.clip_dtype)},
        }

    def _run_encoders(self, prompts, on_progress=None):
        """{prompt: {llm_states (L, D), llm_mask (L,), clip_states (Lc, Dc)}} computed by the encoders (CPU)."""
        try:
            llm_states, llm_mask = self._run_step_llm(prompts, on_progress)
            done = len(self.step_llm.transformer.layers)
            if not self.keep_loaded:
                self.unload()  # before CLIP loads: the two never share memory
            clip_states = self._run_clip(prompts, on_progress, done).to(llm_states.dtype)
        finally:
            if not self.keep_loaded:
                self.unload()
        return {p: {"llm_states": llm_states[i], "llm_mask": llm_mask[i], "clip_states": clip_states[i]}
                for i, p in enumerate(prompts)}

    @torch.no_grad()
    def _run_step_llm(self, prompts, on_progress=None):
        if self.step_tokenizer is None:
            self.step_tokenizer = load_step_tokenizer(self.step_tokenizer_path)
        if self.step_llm is None:
            self.step_llm = load_step_llm(self.step_llm_path, dtype=self.llm_dtype, device=self.weights_device,
                                          config=self.llm_config, operations=self.operations,
                                          weight_dtype=self.llm_weight_dtype, mapped=True)
        ids, mask = self.step_tokenizer(prompts, max_length=self.llm_max_length)
        _check_vocabulary(ids, self.step_llm.config.vocab_size, self.step_tokenizer, self.step_llm_path)
        layers = self.step_llm.transformer.layers
        with layer_progress(layers, on_progress, 0, len(layers) + 1), release_after_layers(self.step_llm):
            return self.step_llm(ids.to(self.device)).cpu(), mask  # + 1 above: CLIP, counted once known

    @torch.no_grad()
    def _run_clip(self, prompts, on_progress=None, done=0):
        if self.clip_tokenizer is None:
            self.clip_tokenizer = load_clip_tokenizer(self.clip_tokenizer_path)
        if self.clip is None:
            self.clip = load_hunyuan_clip(self.clip_path, dtype=self.clip_dtype, device=self.weights_device,
                                          operations=self.operations)
        ids, mask = self.clip_tokenizer(prompts, max_length=self.clip_max_length)
        _check_vocabulary(ids, self.clip.config.vocab_size, self.clip_tokenizer, self.clip_path)
        layers = self.clip.encoder.layer
        with layer_progress(layers, on_progress, done, done + len(layers)):
            return self.clip(ids.to(self.device), mask.to(self.device)).cpu()


@contextlib.contextmanager
def layer_progress(layers, on_progress, done, total):
    """Report on_progress(done + i + 1, total) after layer i of ``layers`` runs (nothing if on_progress is None)."""
    handles = [] if on_progress is None else [
        layer.register_forward_hook(lambda module, args, output, i=i: on_progress(done + i + 1, total))
        for i, layer in enumerate(layers)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def release_after_layers(model):
    """With a memory-mapped model (``model.mapped_weights``), drop the file pages each layer read once it
    has run, so RAM holds about one layer of weights, whatever the model size."""
    mapped = getattr(model, "mapped_weights", None)
    handles = [] if mapped is None else [
        layer.register_forward_hook(lambda *_: mapped.release()) for layer in model.transformer.layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _check_vocabulary(ids, vocab_size, tokenizer, weights_path):
    """CheckpointError if ``tokenizer`` produced ids the encoder has no embedding for (a mismatched pair;
    on a GPU it would otherwise end in a device-side assert)."""
    largest = int(ids.max())
    if largest >= vocab_size:
        raise CheckpointError(f"the tokenizer {tokenizer.source} produced token id {largest}, but the text encoder "
                              f"{weights_path} has only {vocab_size} token embeddings: the tokenizer and the weights "
                              "do not belong together.")
