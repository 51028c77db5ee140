#!/usr/bin/env python3
"""Golden cases for the Swift SentencePiece tokenizer (Tests/AdapterTests/SentencePieceTests.swift).

Loads Tests/Fixtures/tokenizer/tokenizer.model (made by make_tokenizer.py) and writes
Tests/Fixtures/tokenizer/cases.json:

  cases         text -> ids = sp.encode(text), pieces = sp.encode(text, out_type=str), decoded = sp.decode(ids)
  decode_cases  id lists (lone byte pieces, truncated UTF-8, control ids mixed in) -> sp.decode(ids)
  variants      small models trained or rewritten here with other flags (remove_extra_whitespaces,
                user-defined symbols, no byte fallback with a custom unk_surface, UNUSED pieces,
                no dummy prefix, whitespace as suffix, escape_whitespaces off), embedded as base64
                with their own cases, so every code path is checked against the real library
  invalid       models the Swift loader must refuse (unigram, a non-empty precompiled_charsmap)

Run with Debian's python3 (python3-sentencepiece 0.1.97). Deterministic: fixed corpus, fixed seed.
"""
import base64
import io
import json
import os
import random
import tempfile

import sentencepiece as spm

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "Tests", "Fixtures", "tokenizer")

# ---------------------------------------------------------------------------------------------
# Minimal protobuf wire-format reader/writer, enough to rewrite a ModelProto (python3-protobuf
# is not installed here). Fields are kept as (number, wire_type, raw value) in file order.


def read_varint(buf, pos):
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return result, pos


def write_varint(value):
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def parse_fields(buf):
    fields, pos = [], 0
    while pos < len(buf):
        tag, pos = read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = read_varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError("unsupported wire type %d" % wire)
        fields.append((number, wire, value))
    return fields


def serialize_fields(fields):
    out = bytearray()
    for number, wire, value in fields:
        out += write_varint((number << 3) | wire)
        if wire == 0:
            out += write_varint(value)
        elif wire == 2:
            out += write_varint(len(value)) + value
        else:
            out += value
    return bytes(out)


def set_scalar(fields, number, value):
    """Sets varint field `number` (replacing any occurrence) in a message's field list."""
    kept = [f for f in fields if f[0] != number]
    return kept + [(number, 0, value)]


def rewrite_piece_types(model, new_types):
    """Returns `model` with pieces whose text is in `new_types` given that type (e.g. 5 = UNUSED)."""
    top = parse_fields(model)
    out = []
    for number, wire, value in top:
        if number == 1 and wire == 2:
            piece = parse_fields(value)
            text = next(v for n, w, v in piece if n == 1).decode("utf-8")
            if text in new_types:
                value = serialize_fields(set_scalar(piece, 3, new_types[text]))
        out.append((number, wire, value))
    return serialize_fields(out)


def rewrite_normalizer(model, flags):
    """Returns `model` with NormalizerSpec varint fields set, e.g. {5: 0} turns escape_whitespaces off."""
    top = parse_fields(model)
    out = []
    for number, wire, value in top:
        if number == 3 and wire == 2:
            spec = parse_fields(value)
            for field, flag in flags.items():
                spec = set_scalar(spec, field, flag)
            value = serialize_fields(spec)
        out.append((number, wire, value))
    return serialize_fields(out)


# ---------------------------------------------------------------------------------------------
# Texts.


def main_texts():
    texts = [
        "",
        " ",
        "  ",
        "   ",
        "\t",
        "\n",
        "\n\n",
        "\r\n",
        "a",
        "aa",
        "aaaa",
        "aaaaaaaaaaaaaaaaaaaaa",
        "eeeeeeee",
        "hehehehe",
        "the the the",
        "Hello",
        "Hello, world!",
        "Hello world",
        " Hello world",
        "Hello world ",
        "  Hello  world  ",
        "Hello\tworld",
        "Hello\nworld",
        "Hello\n\nworld\n",
        " leading space",
        "trailing space ",
        "   three leading",
        "three trailing   ",
        "multiple     inner     spaces",
        "The quick brown fox jumps over the lazy dog.",
        "the capital of France is Paris",
        "### Instruction:\nWhat is the capital of France?\n\n### Response:\n",
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nGenerate caption of this image\n\n### Response:",
        "def forward(self, x):\n    return self.w2(F.silu(self.w1(x)) * self.w3(x))",
        "0",
        "123",
        "3.14159",
        "In 1969, 3 astronauts flew 384400 km.",
        "1,000,000",
        "2024-01-31T12:34:56Z",
        "-42",
        "0x1F",
        "!@#$%^&*()_+-=[]{}|;':\",./<>?`~",
        "...",
        "?!",
        "\"quoted\"",
        "'single'",
        "a-b_c.d",
        "Café",
        "café",
        "naïve résumé",
        "über señor São Paulo",
        "Ångström",
        "e\u0301",  # e + combining acute: NFD, not normalised by the identity rule
        "caf\u00e9 vs cafe\u0301",
        "Straße",
        "ﬁ ligature",
        "ｆｕｌｌｗｉｄｔｈ",
        "Ελληνικά",
        "Русский текст",
        "日本語",
        "中文字符",
        "한국어",
        "こんにちは世界",
        "你好，世界！",
        "ไทย",
        "हिन्दी",
        "עברית",
        "שלום עולם",
        "العربية",
        "مرحبا بالعالم",
        "mixed English עברית and العربية",
        "\u200f\u200e",
        "🦙",
        "🦙🦙",
        "llama 🦙 alpaca",
        "👍",
        "👍🏽",
        "👨‍👩‍👧‍👦",
        "🏳️‍🌈",
        "❤️",
        "🇫🇷",
        "a🦙b",
        "😀😃😄😁",
        "\x00",
        "\x01\x02\x03",
        "\x7f",
        "a\x00b",
        "\u0085",
        "\u00a0",
        "no\u00a0break",
        "\u2028",
        "\u3000",
        "\u200b",
        "\ufeffBOM",
        "\ufffd",
        "\uffff",
        "\U0010FFFF",
        "\U0001F9D1\u200D\U0001F4BB",
        "▁",
        "▁▁",
        "a▁b",
        "▁leading block",
        "</s>",
        "<s>",
        "<unk>",
        "<s>Hello</s>",
        "Hello </s> world <s>",
        "<0x41>",
        "<pad>",
        "~",
        "`",
        "|",
        "^",
        "ÿ",
        "Æ",
        "Ω",
        "ℝ",
        "∑∫√",
        "€100",
        "£5 ¥3 ₹7",
        "°C",
        "½ ¼",
        "x² + y³",
        "→ ← ↑ ↓",
        "“smart quotes” ‘and’ — dashes – …",
        "Tell me about alpacas.  They are smaller than llamas   and have softer wool.",
        "Llamas are domesticated South American camelids, used as meat and pack animals.",
        "A photo of a cat sitting on a mat.",
        "Generate caption of this image. A man is riding a horse on the beach at sunset.",
        "UPPERCASE TEXT",
        "MiXeD CaSe",
        "snake_case_identifier",
        "camelCaseIdentifier",
        "https://example.com/path?query=1&x=y",
        "user@example.com",
        "C:\\Windows\\System32",
        "<html><body>hi</body></html>",
        "{\"key\": [1, 2, 3]}",
        "if (a < b) { return a; }",
        "    indented code",
        "\ttabbed\tcode",
        " \n \t ",
        "a\u2581\u2581b",
        "The dog sleeps; the fox runs away.",
    ]
    rng = random.Random(20240607)
    alphabet = list("abcdefghijklmnopqrstuvwxyz ABCDEFT.,;:!?\n\t0123456789éñü#()") + ["🦙", "日", "ß", "€", "\u0301", "  "]
    for n in (5, 17, 40, 120):
        for _ in range(3):
            texts.append("".join(rng.choice(alphabet) for _ in range(n)))
    # Random code points from many planes, including ones the vocabulary cannot cover.
    for _ in range(8):
        chars = []
        for _ in range(rng.randint(1, 12)):
            while True:
                cp = rng.choice([rng.randint(0x20, 0x7E), rng.randint(0xA0, 0x2FFF), rng.randint(0x3000, 0xD7FF),
                                 rng.randint(0xE000, 0xFFFF), rng.randint(0x10000, 0x10FFFF)])
                if not (0xD800 <= cp <= 0xDFFF):
                    break
            chars.append(chr(cp))
        texts.append("".join(chars))
    long_text = ("The quick brown fox jumps over the lazy dog. Café 🦙 日本語 1234567890\n" * 20)
    texts.append(long_text)
    texts.append("a" * 1000)
    texts.append(" " * 50)
    texts.append("ab " * 200)
    return texts


VARIANT_TEXTS = [
    "",
    " ",
    "   ",
    "Hello world",
    " Hello world",
    "  Hello  world  ",
    "Hello   world ",
    "\tindented\ttext\t",
    " \t mixed \t whitespace \t ",
    "line one\n line two \n",
    "the capital of France is Paris",
    "The quick brown fox jumps over the lazy dog.",
    "the the the the",
    "hehehe",
    "aaaa",
    "Café über señor",
    "日本語 🦙 text",
    "☃☃ snowmen ☃",
    "a☃b☃☃c",
    "<tool>",
    "call <tool> now",
    "<tool><tool>",
    " <tool> ",
    "[IMG]caption[IMG]",
    "<ctrl> is plain text",
    "</s> <s> <unk>",
    "▁",
    "▁▁ two blocks",
    "trailing block▁",
    "a▁▁b",
    "x" * 40,
    "In 1969, 3 astronauts flew 384400 km to the Moon and back.",
    "Tell me about alpacas.  They are smaller than llamas   and have softer wool.",
]


def cases_for(sp, texts):
    out = []
    for text in texts:
        ids = sp.encode(text)
        pieces = sp.encode(text, out_type=str)
        out.append({"text": text, "ids": ids, "pieces": pieces, "decoded": sp.decode(ids)})
    return out


def decode_cases_for(sp, rng, count):
    n = sp.get_piece_size()
    byte_ids = [i for i in range(n) if sp.is_byte(i)]
    control = [i for i in range(n) if sp.is_control(i) or sp.is_unknown(i)]
    normal = [i for i in range(n) if i not in byte_ids and i not in control]

    def byte_id(b):
        return sp.piece_to_id("<0x%02X>" % b)

    lists = [[], control[:], control[::-1]]
    if byte_ids:
        fixed = [
            [0xE2, 0x96, 0x81],               # ▁ as bytes: not turned into a space
            [0xE2, 0x96],                     # truncated 3-byte sequence
            [0xE2],
            [0xF0, 0x9F, 0xA6, 0x99],         # 🦙
            [0xF0, 0x9F, 0xA6],               # truncated 4-byte sequence
            [0x80],                           # lone continuation byte
            [0x80, 0x80, 0x80],
            [0xC0, 0xAF],                     # overlong
            [0xED, 0xA0, 0x80],               # surrogate
            [0xF4, 0x90, 0x80, 0x80],         # beyond U+10FFFF
            [0xFF, 0xFE],
            [0xC3, 0xA9, 0xC3],               # é then truncated
            [0x41, 0xE2, 0x28, 0xA1],         # invalid continuation
            [0x20, 0x20, 0x41],               # spaces as bytes are not stripped
            [0xEF, 0xBF, 0xBD],               # a real U+FFFD
            [0xF0, 0x80, 0x80, 0x80],
            [0xE0, 0x80, 0x80],
            [0xF8, 0x88, 0x80, 0x80, 0x80],
        ]
        for bs in fixed:
            lists.append([byte_id(b) for b in bs])
        lists.append([1] + [byte_id(b) for b in [0xE2, 0x96]] + [2])
        lists.append([byte_id(0xE2), 1, byte_id(0x96), byte_id(0x81)])  # a control id splits the byte run
        lists.append([byte_id(0xC3), sp.piece_to_id("▁the"), byte_id(0xA9)])
        lists.append([sp.piece_to_id("▁the"), byte_id(0xF0), byte_id(0x9F), byte_id(0xA6), byte_id(0x99)])
    for name in ["▁", "▁▁", "▁the", "▁a", "a"]:
        pid = sp.piece_to_id(name)
        if pid != sp.unk_id():
            lists.append([pid, pid, sp.piece_to_id("a")])
            lists.append([1, pid, 2, pid])
    lists.append([sp.unk_id()])
    lists.append([sp.unk_id(), sp.unk_id(), 1, sp.unk_id()])
    while len(lists) < count:
        k = rng.randint(1, 12)
        ids = []
        for _ in range(k):
            pool = rng.choice([normal, normal, byte_ids or normal, control])
            ids.append(rng.choice(pool))
        lists.append(ids)
    return [{"ids": ids, "decoded": sp.decode(ids)} for ids in lists]


# ---------------------------------------------------------------------------------------------
# Variant models.

CORPUS = [
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    "### Instruction:\nWhat is the capital of France?\n\n### Response:\nThe capital of France is Paris.",
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away.",
    "In 1969, 3 astronauts flew 384400 km to the Moon and back.",
    "Café, naïve, résumé, über, señor, São Paulo.",
    "Tell me about alpacas.  They are smaller than llamas   and have softer wool.",
    "call <tool> with [IMG] tokens",
] * 20


def train(**flags):
    model = io.BytesIO()
    args = dict(
        sentence_iterator=iter(CORPUS),
        model_writer=model,
        model_type="bpe",
        vocab_size=300,
        character_coverage=1.0,
        normalization_rule_name="identity",
        num_threads=1,
        minloglevel=2,
        max_sentence_length=4096,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
    )
    args.update(flags)
    spm.SentencePieceTrainer.train(**args)
    return model.getvalue()


def train_with_rule_tsv(rules):
    """A model whose normalizer maps A->a, B->b: a small non-empty precompiled_charsmap (nmt_nfkc's is 240 KB)."""
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as f:
        f.write(rules)
    try:
        model = train(normalization_rule_name="", normalization_rule_tsv=f.name)
    finally:
        os.unlink(f.name)
    # The spec records the temporary file's path (normalization_rule_tsv = 6); drop it so the output is
    # the same on every run.
    top = []
    for number, wire, value in parse_fields(model):
        if number == 3 and wire == 2:
            value = serialize_fields([fld for fld in parse_fields(value) if fld[0] != 6])
        top.append((number, wire, value))
    return serialize_fields(top)


def variant(name, description, model, rng):
    sp = spm.SentencePieceProcessor(model_proto=model)
    return {
        "name": name,
        "description": description,
        "model_base64": base64.b64encode(model).decode("ascii"),
        "vocab_size": sp.get_piece_size(),
        "bos_id": sp.bos_id(),
        "eos_id": sp.eos_id(),
        "unk_id": sp.unk_id(),
        "pad_id": sp.pad_id(),
        "cases": cases_for(sp, VARIANT_TEXTS),
        "decode_cases": decode_cases_for(sp, rng, 24),
    }


def compact_json(value, indent=0):
    """JSON with one case per line: objects and lists of objects are broken over lines, the rest inline."""
    pad = " " * indent
    if isinstance(value, dict) and any(isinstance(v, (dict, list)) and v and isinstance(v, dict) or
                                       (isinstance(v, list) and v and isinstance(v[0], dict)) for v in value.values()):
        items = [pad + " " + json.dumps(k, ensure_ascii=False) + ": " + compact_json(v, indent + 1).lstrip()
                 for k, v in value.items()]
        return pad + "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return pad + "[\n" + ",\n".join(compact_json(v, indent + 1) for v in value) + "\n" + pad + "]"
    return pad + json.dumps(value, ensure_ascii=False)


def main():
    path = os.path.join(FIXTURES, "tokenizer.model")
    with open(path, "rb") as f:
        main_model = f.read()
    sp = spm.SentencePieceProcessor(model_proto=main_model)
    rng = random.Random(1234)

    variants = []
    variants.append(variant(
        "remove_extra_whitespaces",
        "remove_extra_whitespaces=true, user-defined <tool> and [IMG], control <ctrl>, byte fallback",
        train(vocab_size=420, byte_fallback=True, remove_extra_whitespaces=True,
              user_defined_symbols=["<tool>", "[IMG]"], control_symbols=["<ctrl>"], pad_id=3),
        rng))
    variants.append(variant(
        "no_byte_fallback",
        "byte_fallback=false (unknown runs merge into one <unk>), unk_surface '<?>', pad piece defined",
        train(byte_fallback=False, unk_surface="<?>", remove_extra_whitespaces=False, pad_id=3),
        rng))
    variants.append(variant(
        "unused_pieces",
        "the fixture model with some merged pieces retyped UNUSED (resegmented via rev_merge)",
        rewrite_piece_types(main_model, {"▁the": 5, "he": 5, "▁th": 5, "tion": 5, "at": 5, "###": 5, "▁▁": 5}),
        rng))
    variants.append(variant(
        "no_dummy_prefix",
        "add_dummy_prefix=false, byte fallback",
        train(vocab_size=400, byte_fallback=True, add_dummy_prefix=False, remove_extra_whitespaces=False),
        rng))
    variants.append(variant(
        "whitespace_suffix",
        "treat_whitespace_as_suffix=true (dummy whitespace appended), byte fallback",
        train(vocab_size=400, byte_fallback=True, treat_whitespace_as_suffix=True, remove_extra_whitespaces=False),
        rng))
    variants.append(variant(
        "no_escape_whitespaces",
        "the fixture model with escape_whitespaces=false (spaces stay U+0020, so no '▁' merges apply)",
        rewrite_normalizer(main_model, {5: 0}),
        rng))

    invalid = [
        {"name": "unigram", "error_contains": "UNIGRAM",
         "model_base64": base64.b64encode(train(model_type="unigram", vocab_size=120)).decode("ascii")},
        {"name": "custom_rule_tsv", "error_contains": "precompiled_charsmap",
         "model_base64": base64.b64encode(train_with_rule_tsv("41\t61\n42\t62\n")).decode("ascii")},
    ]

    out = {
        "generator": "tools/reference/make_tokenizer_cases.py",
        "sentencepiece_version": spm.__version__,
        "model": "tokenizer.model",
        "vocab_size": sp.get_piece_size(),
        "bos_id": sp.bos_id(),
        "eos_id": sp.eos_id(),
        "unk_id": sp.unk_id(),
        "pad_id": sp.pad_id(),
        "pieces": [sp.id_to_piece(i) for i in range(sp.get_piece_size())],
        "cases": cases_for(sp, main_texts()),
        "decode_cases": decode_cases_for(sp, rng, 60),
        "variants": variants,
        "invalid_models": invalid,
    }
    with open(os.path.join(FIXTURES, "cases.json"), "w", encoding="utf-8") as f:
        f.write(compact_json(out) + "\n")
    print("cases", len(out["cases"]), "decode_cases", len(out["decode_cases"]),
          "variants", [(v["name"], v["vocab_size"]) for v in variants])


if __name__ == "__main__":
    main()
