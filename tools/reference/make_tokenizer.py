#!/usr/bin/env python3
"""Train a tiny SentencePiece BPE tokenizer with LLaMA's settings (byte fallback, identity normaliser,
digits split, whitespace kept) and write it to Tests/Fixtures/tokenizer/tokenizer.model.

Run with Debian's python3 (python3-sentencepiece). Deterministic: same corpus, same flags.
"""
import io
import os
import sentencepiece as spm

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "Tests", "Fixtures", "tokenizer")

CORPUS = [
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    "### Instruction:\nWhat is the capital of France?\n\n### Response:\nThe capital of France is Paris.",
    "### Input:\nA photo of a cat sitting on a mat.",
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away.",
    "Generate caption of this image. A man is riding a horse on the beach at sunset.",
    "In 1969, 3 astronauts flew 384400 km to the Moon and back.",
    "Llamas are domesticated South American camelids, used as meat and pack animals.",
    "def forward(self, x):\n    return self.w2(F.silu(self.w1(x)) * self.w3(x))",
    "Café, naïve, résumé, über, señor, São Paulo.",
    "Tell me about alpacas.  They are smaller than llamas   and have softer wool.",
] * 20


def main():
    os.makedirs(OUT, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_writer=model,
        model_type="bpe",
        vocab_size=400,
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        character_coverage=1.0,
        max_sentence_length=4096,
        num_threads=1,
        minloglevel=2,
    )
    with open(os.path.join(OUT, "tokenizer.model"), "wb") as f:
        f.write(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    print("vocab", sp.get_piece_size(), sp.encode("Hello, world! 123 café 🦙"))


if __name__ == "__main__":
    main()
