"""Step-LLM (SentencePiece) and HunyuanCLIP (BERT WordPiece) tokenizers: edge cases, official equivalence."""

import io
import itertools
import json
import os
import shutil

import pytest
import torch

from stepvideo_pack.model_loaders.errors import CheckpointError
from stepvideo_pack.model_loaders.text_encoder_loader import load_clip_tokenizer, load_step_tokenizer
from stepvideo_pack.model_loaders.text_tokenizers import parse_vocab

PARITY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "parity")
STEP_TOKENIZER = os.path.join(PARITY, "step_tokenizer", "step1_chat_tokenizer.model")
CLIP_TOKENIZER = os.path.join(PARITY, "hunyuan_clip_tiny", "tokenizer")
MIXED = "超高清4K画质, a panda eating bamboo 在竹林里, cinematic lighting。"


@pytest.fixture(scope="module")
def step():
    return load_step_tokenizer(STEP_TOKENIZER)


@pytest.fixture(scope="module")
def bert():
    return load_clip_tokenizer(CLIP_TOKENIZER)


def test_step_empty_prompt_is_bos_eos_then_padding(step):
    ids, mask = step(["", "a"], max_length=6)
    assert ids[0].tolist() == [1, 2, 2, 2, 2, 2]
    assert mask[0].tolist() == [1, 1, 0, 0, 0, 0]
    assert ids.dtype == mask.dtype == torch.int64


def test_step_truncation_keeps_bos_and_eos(step):
    long_prompt = MIXED * 20
    pieces = step.processor.EncodeAsIds(long_prompt)
    ids, mask = step([long_prompt], max_length=16)
    assert ids[0].tolist() == [1] + pieces[:14] + [2]
    assert mask.sum() == 16


def test_step_mixed_chinese_english_matches_sentencepiece(step):
    ids, mask = step([MIXED, "A cat."], max_length=320)
    pieces = step.processor.EncodeAsIds(MIXED)
    assert ids[0, :len(pieces) + 2].tolist() == [1] + pieces + [2]
    assert int(mask[0].sum()) == len(pieces) + 2 and (ids[0, len(pieces) + 2:] == 2).all()
    assert step.processor.DecodeIds(pieces) == MIXED


def test_step_tokenizer_found_in_the_step_llm_folder(tmp_path):
    shutil.copy(STEP_TOKENIZER, tmp_path)
    assert load_step_tokenizer(str(tmp_path))(["x"], max_length=4)[0].shape == (1, 4)
    with pytest.raises(CheckpointError, match="looked for .*step1_chat_tokenizer.model"):
        load_step_tokenizer(str(tmp_path / "missing"))


def test_step_tokenizer_without_the_official_special_pieces_is_refused(tmp_path):
    sentencepiece = pytest.importorskip("sentencepiece")
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(["a cat sat on the mat"] * 50 + ["一只猫"] * 50),
                                             model_writer=model, vocab_size=30, model_type="bpe",
                                             control_symbols=["<|BOT|>"])
    path = tmp_path / "step1_chat_tokenizer.model"
    path.write_bytes(model.getvalue())
    with pytest.raises(CheckpointError, match=r"not the Step-LLM tokenizer: it lacks the pieces <\|EOT\|>"):
        load_step_tokenizer(str(path))
    path.write_bytes(b"not a sentencepiece model")
    with pytest.raises(CheckpointError, match="is not a SentencePiece model"):
        load_step_tokenizer(str(path))


def test_bert_empty_prompt_and_truncation(bert):
    ids, mask = bert(["", MIXED * 10], max_length=8)
    assert ids[0].tolist() == [2, 3, 0, 0, 0, 0, 0, 0] and mask[0].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    assert ids[1, 0] == 2 and ids[1, -1] == 3 and mask[1].sum() == 8


def test_bert_splits_chinese_characters_and_lower_cases(bert):
    with open(os.path.join(CLIP_TOKENIZER, "vocab.txt"), encoding="utf-8") as f:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
    ids, _ = bert(["竹林 PANDA"], max_length=12)
    expected_chinese = [vocab.get(c, vocab["[UNK]"]) for c in "竹林"]
    assert ids[0, 1:3].tolist() == expected_chinese
    assert ids[0].tolist() == bert(["竹林 panda"], max_length=12)[0][0].tolist()


def test_bert_missing_special_tokens_and_short_max_length_are_refused(tmp_path, bert):
    (tmp_path / "vocab.txt").write_text("a\nb\n[UNK]\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"lacks the special tokens \[CLS\], \[SEP\], \[PAD\]"):
        load_clip_tokenizer(str(tmp_path))
    with pytest.raises(ValueError, match="at least 2"):
        bert(["a"], max_length=1)


def test_vocab_lines_are_read_like_the_tokenizers_library(tmp_path):
    wordpiece = pytest.importorskip("tokenizers.models").WordPiece
    data = "[PAD]\n[UNK]\na \nb\r\nc\rd\n\n  \nx\x1cy\n中\u3000\n[PAD]\nlast".encode("utf-8")
    (tmp_path / "vocab.txt").write_bytes(data)
    assert parse_vocab(data) == wordpiece.read_file(str(tmp_path / "vocab.txt"))


TRICKY_PROMPTS = ["Hello WORLD café naïve ÉCOLE école", "中国日本 漢字 한국어 ひらがな", "[MASK] [mask] [CLS]x [SEP][PAD]",
                  "tab\tnew\nline\r\x00ctrl\u200bzero", "A" * 150, "Ｆｕｌｌwidth ｆ", "emoji 🐱😀 ok", "", "   ",
                  "don't stop-believing... (yes)!", "naïve café" * 30, "\u0301accent", "İstanbul ǅ ß ﬁ", MIXED]
EXTRA_VOCAB = ["café", "naïve", "Hello", "HELLO", "##é", "é", "ÉCOLE", "école", "##s", "e", "##cole", "Ｆｕｌｌ", "ｆ",
               "中", "国", "日本", "<b>", "dog ", "dup", "dup"]


@pytest.mark.parametrize("lower, strip_accents, chinese", list(itertools.product([True, False], [None, True, False],
                                                                                [True, False])))
def test_bert_matches_transformers_bert_tokenizer(tmp_path, lower, strip_accents, chinese):
    transformers = pytest.importorskip("transformers")
    with open(os.path.join(CLIP_TOKENIZER, "vocab.txt"), encoding="utf-8") as f:
        vocab = f.read().splitlines() + EXTRA_VOCAB
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    with open(os.path.join(CLIP_TOKENIZER, "tokenizer_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    config.update(do_lower_case=lower, strip_accents=strip_accents, tokenize_chinese_chars=chinese)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    shutil.copy(os.path.join(CLIP_TOKENIZER, "special_tokens_map.json"), tmp_path)
    ours = load_clip_tokenizer(str(tmp_path))
    official = transformers.BertTokenizer.from_pretrained(str(tmp_path))
    for max_length in (77, 9, 2):
        ids, mask = ours(TRICKY_PROMPTS, max_length=max_length)
        expected = official(TRICKY_PROMPTS, padding="max_length", max_length=max_length, truncation=True,
                            return_attention_mask=True, return_tensors="pt")
        assert torch.equal(ids, expected.input_ids) and torch.equal(mask, expected.attention_mask)
