"""A SentencePiece vocabulary of the kind Llama 2 and Mistral ship (BPE with byte
fallback), trained offline by the `sentencepiece` package on the GPL-3 text, and its
encodings of a few texts: tests/data/sentencepiece/{tokenizer.model,encodings.json}.

The engine's tokenizer built from a GGUF's `tokenizer.ggml.*` metadata (written from this
tokenizer.model) must give the same ids. The vocabulary has 512 pieces, the tiny test
models' vocabulary size.
"""

import json
import pathlib

import sentencepiece as spm

out = pathlib.Path("tests/data/sentencepiece")
out.mkdir(parents=True, exist_ok=True)
spm.SentencePieceTrainer.train(
    input="/usr/share/common-licenses/GPL-3",
    model_prefix=str(out / "tokenizer"),
    model_type="bpe",
    vocab_size=512,
    byte_fallback=True,
    character_coverage=1.0,
    split_digits=True,
    allow_whitespace_only_pieces=True,
    remove_extra_whitespaces=False,
    normalization_rule_name="identity",
    unk_id=0,
    bos_id=1,
    eos_id=2,
    pad_id=-1,
    num_threads=1,
    minloglevel=2,
)
(out / "tokenizer.vocab").unlink()
sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
texts = [
    "Hello world! What is a large language model?",
    "The GNU General Public License is a free, copyleft license for software.",
    "  two leading spaces, and  double  spaces inside",
    "line one\nline two\n\n\ttabbed",
    "Numbers: 1234567 and 3.14159; café, naïve, 日本語, emoji 🙂",
    "copyright",
    "",
]
encodings = [{"text": t, "ids": sp.encode(t)} for t in texts]
lines = ",\n".join(" " + json.dumps(e, ensure_ascii=False) for e in encodings)
(out / "encodings.json").write_text("[\n" + lines + "\n]\n")
print(f"wrote {out}/tokenizer.model and encodings.json")
