"""The two tokenizers of Step-Video's text encoders, built from the official files (or their bytes).

* :class:`StepTokenizer` — Step-LLM's SentencePiece model ``step1_chat_tokenizer.model``. Each prompt
  becomes ``[BOS=1] + ids[:max_length - 2] + [EOS=2]`` padded with 2; BOS/EOS/PAD are fixed by the
  official wrapper, not read from the model.
* :class:`BertTokenizer` — HunyuanCLIP's WordPiece tokenizer from ``vocab.txt`` +
  ``tokenizer_config.json`` (+ ``special_tokens_map.json``): ``[CLS] + tokens[:max_length - 2] + [SEP]``
  padded with ``[PAD]``. It is assembled from the same ``tokenizers`` components (BertNormalizer,
  BertPreTokenizer, WordPiece, special tokens matched before normalisation) and reads ``vocab.txt``
  the same way as transformers' ``BertTokenizer``, so it gives the official ids under transformers 4
  and 5 alike and works on files embedded in a single safetensors.

Both return ``(input_ids, attention_mask)``: two int64 tensors (len(prompts), max_length), mask 1 on
the BOS/CLS..EOS/SEP part. These live in model_loaders because they turn official files into objects;
they hold no weights.
"""

import torch

from .errors import CheckpointError

STEP_BOS, STEP_EOS, STEP_PAD = 1, 2, 2
# the official wrapper asserts these pieces exist (the first six as control pieces)
STEP_CONTROL_PIECES = ("<|BOT|>", "<|EOT|>", "<|CALL_START|>", "<|CALL_END|>", "<|THINK_START|>", "<|THINK_END|>")
STEP_OTHER_PIECES = ("<|MASK_1e69f|>", "<|UNMASK_1e69f|>")

BERT_SPECIAL_TOKENS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                       "mask_token": "[MASK]"}
# Rust's char::is_whitespace set, which the tokenizers library strips from the end of each vocab.txt line
_RUST_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009" \
                   "\u200a\u2028\u2029\u202f\u205f\u3000"


def _as_list(prompts):
    return [prompts] if isinstance(prompts, str) else list(prompts)


def _check_max_length(max_length):
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 (room for the start and end tokens), got {max_length}")


def pad_rows(rows, max_length, pad_id):
    """Token rows (already truncated to max_length) -> (ids, mask) int64 tensors (len(rows), max_length)."""
    ids = torch.full((len(rows), max_length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), max_length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, :len(row)] = 1
    return ids, mask


class StepTokenizer:
    """Step-LLM tokenizer. ``source`` names the file in error messages; ``model_bytes`` is its content."""

    def __init__(self, model_bytes, source):
        import sentencepiece

        self.source = source
        self.processor = sentencepiece.SentencePieceProcessor()
        try:
            self.processor.LoadFromSerializedProto(model_bytes)
        except Exception as e:  # sentencepiece raises RuntimeError/OSError with terse messages
            raise CheckpointError(f"{source} is not a SentencePiece model ({e}). Step-LLM needs the official "
                                  "step_llm/step1_chat_tokenizer.model.") from None
        self._check_pieces()

    def _check_pieces(self):
        unknown = self.processor.unk_id()
        missing = [p for p in STEP_CONTROL_PIECES + STEP_OTHER_PIECES if self.processor.piece_to_id(p) == unknown]
        not_control = [p for p in STEP_CONTROL_PIECES if p not in missing
                       and not self.processor.is_control(self.processor.piece_to_id(p))]
        if missing or not_control:
            problems = []
            if missing:
                problems.append(f"it lacks the pieces {', '.join(missing)}")
            if not_control:
                problems.append(f"{', '.join(not_control)} are not control pieces")
            raise CheckpointError(f"{self.source} is not the Step-LLM tokenizer: {'; '.join(problems)}. "
                                  "Use the official step_llm/step1_chat_tokenizer.model.")

    def __call__(self, prompts, max_length=320):
        """prompts (str or list of str) -> (input_ids, attention_mask), each (len(prompts), max_length) int64."""
        _check_max_length(max_length)
        rows = [[STEP_BOS] + self.processor.EncodeAsIds(p)[:max_length - 2] + [STEP_EOS] for p in _as_list(prompts)]
        return pad_rows(rows, max_length, STEP_PAD)


def parse_vocab(vocab_bytes):
    """vocab.txt bytes -> {token: id} exactly as the tokenizers library reads the file (id = line index,
    trailing whitespace stripped, a later duplicate wins)."""
    lines = vocab_bytes.decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return {line.rstrip(_RUST_WHITESPACE): index for index, line in enumerate(lines)}


def _token_text(value):
    """A special token as written in tokenizer_config.json / special_tokens_map.json (str or AddedToken dict)."""
    return value.get("content") if isinstance(value, dict) else value


class BertTokenizer:
    """HunyuanCLIP tokenizer from the bytes of ``vocab.txt`` and the parsed JSON option files.

    Options honoured (tokenizer_config.json, defaults as in transformers): ``do_lower_case`` (True),
    ``strip_accents`` (None = follow do_lower_case), ``tokenize_chinese_chars`` (True), and the special
    token strings (``special_tokens_map.json`` wins over tokenizer_config.json).
    """

    def __init__(self, vocab_bytes, tokenizer_config, special_tokens_map, source):
        from tokenizers import AddedToken, Tokenizer, normalizers, pre_tokenizers
        from tokenizers.models import WordPiece

        self.source = source
        vocab = parse_vocab(vocab_bytes)
        specials = dict(BERT_SPECIAL_TOKENS)
        for options in (tokenizer_config, special_tokens_map):
            specials.update({k: _token_text(options[k]) for k in BERT_SPECIAL_TOKENS if options.get(k)})
        required = ("cls_token", "sep_token", "pad_token", "unk_token")
        missing = [specials[k] for k in required if specials[k] not in vocab]
        if missing:
            raise CheckpointError(f"{source}: the vocabulary ({len(vocab)} tokens) lacks the special tokens "
                                  f"{', '.join(missing)}. It is not a BERT vocab.txt.")
        self.cls_id, self.sep_id, self.pad_id = (vocab[specials[k]] for k in ("cls_token", "sep_token", "pad_token"))
        self.backend = Tokenizer(WordPiece(vocab, unk_token=specials["unk_token"]))
        self.backend.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=tokenizer_config.get("tokenize_chinese_chars", True),
            strip_accents=tokenizer_config.get("strip_accents"), lowercase=tokenizer_config.get("do_lower_case", True))
        self.backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        self.backend.add_special_tokens([AddedToken(specials[k], special=True, normalized=False)
                                         for k in BERT_SPECIAL_TOKENS])

    def __call__(self, prompts, max_length=77):
        """prompts (str or list of str) -> (input_ids, attention_mask), each (len(prompts), max_length) int64."""
        _check_max_length(max_length)
        encoded = self.backend.encode_batch(_as_list(prompts), add_special_tokens=False)
        rows = [[self.cls_id] + e.ids[:max_length - 2] + [self.sep_id] for e in encoded]
        return pad_rows(rows, max_length, self.pad_id)
