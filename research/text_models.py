"""The small model's text side: tokenizers built from the caption vocabulary, tiny Step-LLM- and
BERT-shaped encoders, their brief attribute pre-training, and writing them in the official layout.

* Step-LLM tokenizer: a SentencePiece BPE model trained on every caption of the generator (both
  languages) plus the official magic suffixes, with the pieces the official wrapper requires
  (control <|BOT|> ... <|THINK_END|>, user-defined <|MASK_1e69f|> <|UNMASK_1e69f|>; unk 0, bos 1, eos 2).
* HunyuanCLIP tokenizer: a BERT WordPiece vocab.txt of [PAD] [UNK] [CLS] [SEP] [MASK] + every
  pre-token (lower-cased English word, single Chinese character, punctuation) of the same corpus.
* Encoders: :data:`STEP_LLM_CONFIG` (256 wide, 2 layers, 2 heads x 128, one KV group) and
  :data:`CLIP_CONFIG` (BERT 128 wide, 2 layers). They are trained for a few hundred steps to predict
  the caption's attributes (colour, shape, action, target colour, background) from their mean-pooled
  states, English and Chinese captions sharing the labels. Random encoders would also work (their
  states are deterministic functions of the tokens), but then "红色" and "red" are unrelated vectors
  and the order of two colour words ("red ... turns blue") is barely visible in Step-LLM's states; the
  pre-training hands the DiT language-independent, role-aware features, so its short training goes to
  video. The classification heads are thrown away.
"""

import io
import json
import os

import numpy as np
import torch
import torch.nn.functional as F

from stepvideo_pack.model_loaders import official_layout
from stepvideo_pack.model_loaders.text_encoding import MAGIC_PROMPTS
from stepvideo_pack.model_loaders.text_tokenizers import (BERT_SPECIAL_TOKENS, BertTokenizer,
                                                          STEP_CONTROL_PIECES, STEP_OTHER_PIECES, StepTokenizer)
from stepvideo_pack.networks.hunyuan_clip import HunyuanClip, HunyuanClipConfig
from stepvideo_pack.networks.step_llm import StepLLM, StepLLMConfig

from research import synthetic_data

STEP_VOCAB_SIZE = 512
STEP_LLM_CONFIG = StepLLMConfig(hidden_size=256, num_layers=2, num_heads=2, num_groups=1, ffn_width=512,
                                vocab_size=STEP_VOCAB_SIZE)
CLIP_WIDTH = 128
CLIP_MAX_POSITIONS = 128
LLM_MAX_LENGTH, CLIP_MAX_LENGTH = 320, 77
ATTRIBUTE_CLASSES = (len(synthetic_data.COLOURS), len(synthetic_data.SHAPES), len(synthetic_data.ACTIONS),
                     len(synthetic_data.COLOURS), 1 + len(synthetic_data.BACKGROUNDS))
MAGIC_PROBABILITY = 0.75  # captions seen with the official T2V/TI2V suffixes (the nodes' default) vs bare


def magic_strings():
    return [s for pair in MAGIC_PROMPTS.values() for s in pair]


def tokenizer_corpus():
    """Every caption (both languages) and the magic suffixes, in a fixed order."""
    return synthetic_data.all_captions() + magic_strings()


# --- tokenizers ------------------------------------------------------------------------------------------

def build_step_tokenizer(corpus, vocab_size=STEP_VOCAB_SIZE):
    """SentencePiece BPE model bytes with the official special pieces (deterministic: one thread, no shuffle).

    The captions' Chinese words are user-defined pieces: Chinese has no spaces, so plain BPE on this small
    corpus would merge whole phrases ("色圆形向左移动") into single pieces across word boundaries.
    """
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, model_type="bpe", vocab_size=vocab_size,
        character_coverage=1.0, hard_vocab_limit=False, num_threads=1, shuffle_input_sentence=False,
        input_sentence_size=0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        control_symbols=list(STEP_CONTROL_PIECES),
        user_defined_symbols=list(STEP_OTHER_PIECES) + synthetic_data.chinese_words(),
        minloglevel=2)
    data = model.getvalue()
    StepTokenizer(data, "generated Step-LLM tokenizer")  # checks the special pieces
    return data


def bert_pre_tokens(corpus):
    """The BERT pre-tokens of ``corpus`` (BertNormalizer lower-casing + CJK splitting, BertPreTokenizer)."""
    from tokenizers import normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                            lowercase=True)
    splitter = pre_tokenizers.BertPreTokenizer()
    tokens = set()
    for text in corpus:
        tokens.update(piece for piece, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text)))
    return sorted(tokens)


def build_bert_vocab(corpus):
    """vocab.txt lines: the five special tokens, then every pre-token of the corpus (whole words)."""
    specials = [BERT_SPECIAL_TOKENS[k] for k in ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")]
    return specials + [t for t in bert_pre_tokens(corpus) if t not in specials]


def bert_tokenizer_files(vocab):
    """{file name: bytes} of the hunyuan_clip/tokenizer/ folder."""
    config = {"do_lower_case": True, "tokenize_chinese_chars": True, "strip_accents": None,
              "tokenizer_class": "BertTokenizer", "model_max_length": CLIP_MAX_LENGTH, **BERT_SPECIAL_TOKENS}
    return {"vocab.txt": ("\n".join(vocab) + "\n").encode("utf-8"),
            "tokenizer_config.json": json.dumps(config, indent=1).encode("utf-8"),
            "special_tokens_map.json": json.dumps(BERT_SPECIAL_TOKENS, indent=1).encode("utf-8")}


def clip_config(vocab_size):
    return HunyuanClipConfig(hidden_size=CLIP_WIDTH, num_layers=2, num_heads=2, intermediate_size=4 * CLIP_WIDTH,
                             vocab_size=vocab_size, max_positions=CLIP_MAX_POSITIONS, type_vocab_size=2,
                             layer_norm_eps=1e-12, hidden_act="gelu")


def clip_hub_config(config):
    """HunyuanCLIP clip_text_encoder/config.json (Hugging Face BertConfig names)."""
    return {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": config.hidden_size,
            "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
            "intermediate_size": config.intermediate_size, "vocab_size": config.vocab_size,
            "max_position_embeddings": config.max_positions, "type_vocab_size": config.type_vocab_size,
            "layer_norm_eps": config.layer_norm_eps, "hidden_act": config.hidden_act,
            "position_embedding_type": "absolute", "pad_token_id": 0, "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0, "initializer_range": 0.02}


def step_llm_hub_config(config):
    """step_llm/config.json in the official field names."""
    return {"architectures": ["Step1Model"], "hidden_size": config.hidden_size, "num_layers": config.num_layers,
            "num_attention_heads": config.num_heads, "num_attention_groups": config.num_groups,
            "kv_channels": config.head_dim, "ffn_hidden_size": config.ffn_width,
            "padded_vocab_size": config.vocab_size, "orig_vocab_size": config.vocab_size,
            "layernorm_epsilon": config.eps, "max_position_embeddings": LLM_MAX_LENGTH,
            "seq_length": LLM_MAX_LENGTH, "attention_impl": "GQA", "params_dtype": "bfloat16"}


# --- encoders ------------------------------------------------------------------------------------------

def init_weights_(module, generator, std=0.02):
    """N(0, std) for matrices and embeddings, ones for norm scales, zeros for biases (sorted names: stable)."""
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            if p.ndim == 1:
                p.copy_(torch.ones_like(p) if name.endswith("weight") else torch.zeros_like(p))
            else:
                p.copy_(torch.randn(p.shape, generator=generator) * std)
    return module


class AttributeHeads(torch.nn.Module):
    """Linear classifiers of the caption attributes from a pooled state (training only, not shipped)."""

    def __init__(self, width):
        super().__init__()
        self.heads = torch.nn.ModuleList([torch.nn.Linear(width, n) for n in ATTRIBUTE_CLASSES])

    def loss(self, pooled, labels):
        losses = [F.cross_entropy(head(pooled), labels[:, i]) for i, head in enumerate(self.heads)]
        accuracy = float(np.mean([(head(pooled).argmax(-1) == labels[:, i]).float().mean().item()
                                  for i, head in enumerate(self.heads)]))
        return sum(losses) / len(losses), accuracy


def masked_mean(states, mask):
    mask = mask.to(states.dtype)[..., None]
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1)


def pretrain_text_encoders(llm, clip, step_tok, bert_tok, steps, seed, log, batch=48, lr=2e-3):
    """Attribute pre-training of both encoders (in place, float32). ``log(row_dict)`` gets each step's numbers."""
    rows = synthetic_data.all_caption_attributes()
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng([seed, 77])
    llm_heads, clip_heads = AttributeHeads(llm.config.hidden_size), AttributeHeads(clip.config.hidden_size)
    init_weights_(llm_heads, generator)
    init_weights_(clip_heads, generator)
    params = [*llm.parameters(), *clip.parameters(), *llm_heads.parameters(), *clip_heads.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    magic = [MAGIC_PROMPTS["t2v"][0], MAGIC_PROMPTS["ti2v"][0]]
    for step in range(steps):
        picks = rng.integers(len(rows), size=batch)
        texts = []
        for i in picks:
            text = rows[i][0]
            if rng.uniform() < MAGIC_PROBABILITY:
                text += magic[int(rng.integers(len(magic)))]
            texts.append(text)
        labels = torch.tensor([rows[i][1] for i in picks], dtype=torch.long)
        ids, mask = step_tok(texts, max_length=LLM_MAX_LENGTH)
        length = int(mask.sum(1).max())  # causal: the valid positions do not depend on later padding
        llm_loss, llm_acc = llm_heads.loss(masked_mean(llm(ids[:, :length]), mask[:, :length]), labels)
        cids, cmask = bert_tok(texts, max_length=CLIP_MAX_LENGTH)
        clip_loss, clip_acc = clip_heads.loss(masked_mean(clip(cids, cmask), cmask), labels)
        loss = llm_loss + clip_loss
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 20) * 0.5 * (1 + np.cos(np.pi * step / steps))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        log({"step": step, "llm_loss": llm_loss.item(), "clip_loss": clip_loss.item(), "llm_accuracy": llm_acc,
             "clip_accuracy": clip_acc})
    return llm, clip


def build_text_side(root, seed, steps, log):
    """Tokenizers + pre-trained encoders written to ``root`` in the official layout (bf16 weights)."""
    corpus = tokenizer_corpus()
    step_model = build_step_tokenizer(corpus)
    step_tok = StepTokenizer(step_model, "generated")
    vocab = build_bert_vocab(corpus)
    files = bert_tokenizer_files(vocab)
    bert_tok = BertTokenizer(files["vocab.txt"], json.loads(files["tokenizer_config.json"]),
                             json.loads(files["special_tokens_map.json"]), "generated")
    generator = torch.Generator().manual_seed(seed)
    llm = init_weights_(StepLLM(STEP_LLM_CONFIG), generator)
    clip = init_weights_(HunyuanClip(clip_config(len(vocab))), generator)
    pretrain_text_encoders(llm, clip, step_tok, bert_tok, steps, seed, log)

    llm_dir = official_layout.save_sharded({k: v.to(torch.bfloat16) for k, v in llm.state_dict().items()},
                                           os.path.join(root, official_layout.STEP_LLM_DIR), "model", shards=1,
                                           config=step_llm_hub_config(STEP_LLM_CONFIG))
    with open(os.path.join(llm_dir, official_layout.STEP_TOKENIZER_FILE), "wb") as f:
        f.write(step_model)
    clip_root = os.path.join(root, official_layout.CLIP_DIR)
    official_layout.save_clip_bin({k: v.to(torch.bfloat16) for k, v in clip.state_dict().items()},
                                  os.path.join(clip_root, "clip_text_encoder"), clip_hub_config(clip.config))
    os.makedirs(os.path.join(clip_root, "tokenizer"), exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(clip_root, "tokenizer", name), "wb") as f:
            f.write(data)
    return llm_dir, clip_root
