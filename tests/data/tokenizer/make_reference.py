#!/usr/bin/env python3
"""Writes the tokenizer reference data that tests/tokenizer checks the C++ tokenizer against.

    pip install gguf==0.19.0 tokenizers==0.23.3 jinja2==3.1.6
    python3 tests/data/tokenizer/make_reference.py [--gguf models/SmolLM2-135M-Instruct.Q4_1.gguf]
                                                   [--corpus ../shared/corpus/dev]

Everything is produced by Hugging Face `tokenizers` (and `jinja2` for chat templates) from the
SmolLM2-135M-Instruct GGUF (scripts/fetch_model.sh puts it in models/):

  smollm2/tokenizer.json         the SmolLM2 tokenizer rebuilt from the GGUF's vocabulary, merges and
                                 control tokens, with SmolLM2's pipeline: pre_tokenizer
                                 Sequence[Digits(individual_digits), ByteLevel(add_prefix_space=false)],
                                 ByteLevel decoder, no normalizer
  smollm2/tokenizer_config.json  bos/eos/pad tokens and the GGUF's chat template
  pre_tokenizers.json            the HF serialization of each family's pre_tokenizer section
  reference.json                 per string: the ids of each pre-tokenizer family (SmolLM2's
                                 vocabulary under each family's pre-tokenizer, as HF builds them),
                                 SmolLM2 ids with special tokens parsed, and each family's pieces
                                 (byte lengths, vocabulary-independent); chat templates rendered
  books.json                     ids of the first 20,000 characters of every corpus book
"""
import argparse
import json
import random
from pathlib import Path

import gguf
import jinja2
import jinja2.ext
import jinja2.sandbox
import tokenizers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
BOOK_CHARS = 20000
CONTROL = 3  # GGUF token type of special tokens

LLAMA3_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def family_pre_tokenizers():
    """Each family's pre_tokenizer as its tokenizer.json has it. Qwen2's tokenizer.json also has an
    NFC normalizer, which the C++ tokenizer does not implement, so it is left out here."""
    def split_then_bytes(regex):
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    return {
        "smollm": pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)]),
        "gpt2": pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        "llama-bpe": split_then_bytes(LLAMA3_REGEX),
        "qwen2": split_then_bytes(QWEN2_REGEX),
    }


def read_gguf(path):
    reader = gguf.GGUFReader(path)

    def strings(key):
        field = reader.fields[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    def scalar(key):
        field = reader.fields[key]
        return field.parts[field.data[0]].tolist()[0]

    types_field = reader.fields["tokenizer.ggml.token_type"]
    template_field = reader.fields["tokenizer.chat_template"]
    return {
        "tokens": strings("tokenizer.ggml.tokens"),
        "merges": strings("tokenizer.ggml.merges"),
        "types": [int(types_field.parts[i][0]) for i in types_field.data],
        "bos": scalar("tokenizer.ggml.bos_token_id"),
        "eos": scalar("tokenizer.ggml.eos_token_id"),
        "pad": scalar("tokenizer.ggml.padding_token_id"),
        "chat_template": bytes(template_field.parts[template_field.data[0]]).decode("utf-8"),
    }


def build_tokenizer(vocab, pre_tokenizer, ignore_merges=False):
    model = models.BPE(vocab=vocab["ids"], merges=vocab["merge_pairs"], ignore_merges=ignore_merges)
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in vocab["control"]])
    return tokenizer


def tricky_strings():
    return [
        "", " ", "  ", "   ", "\n", "\n\n", "\r\n", "\t", " \t\n", "a  b", "a\n\nb", "a \n b", " \n\n  x",
        "hello world", "Hello, World!", "word   ", "   word", "\t\tindented", "line1\r\nline2\r\n\r\n",
        "I'm you're we've they'll he'd it's can't", "I'M YOU'RE WE'VE THEY'LL HE'D IT'S", "'s'S'\u017f'T'Re'LL",
        "don't'll", "'", "''", "it''s", "rock 'n' roll",
        "1234567890", "3.14159", "1,000,000", " 12 345 6789", "abc123def", "\u0663\u0664\u0665", "x\u00b2+y\u00b3",
        "\u216b century", "\u09e7\u09e8\u09e9", "1\u00a02", "100%",
        "\u4f60\u597d\uff0c\u4e16\u754c\uff01", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8", "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
        "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466", "\U0001F44D\U0001F3FD", "\U0001F1FA\U0001F1F8",
        "a\U0001F600b", " \U0001F600 \U0001F600\U0001F600",
        "e\u0301", "A\u0308\u0301", "\u0915\u094d\u0937", "\ufb01", "Z\u0351\u036b\u0343\u036a\u0302\u036b",
        "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645", "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
        "abc \u05e9\u05dc\u05d5\u05dd 123", "\u202eevil\u202c",
        "\x00\x01\x07\x1b[31mred\x1b[0m", "\x7f", "\u200b\u200c\u200d", "\ufeffBOM", "\u00a0\u2003\u3000x",
        "a\u2028b\u2029c", "\x0b\x0c\x1c\x1d\x85", " \u00a0 ", "\u3000\u3000\u4e2d",
        # SmolLM2 has no token for these bytes: Hugging Face drops them (before merging).
        "i\x04n", "a\x04\x06b", "!\x04?", "\x1d", "x\x13\x14\x16y", "..\x13..",
        "<|im_start|>user\nhi<|im_end|>", "<|endoftext|>", "<|im_start|><|im_start|>", "<|im_start",
        "x<|im_end|>y", " <|im_end|> ", "<jupyter_code>print(1)<empty_output>", "<<|im_end|>>",
        "a" * 5000, "ab" * 2000, "supercalifragilisticexpialidocious" * 50, "9" * 300, " " * 1000, "\n" * 300,
        "def f(x):\n    return x**2  # comment\n", "  if (a && b) { c++; }\n\t\treturn;", "x = [1, 2, 3]\n\n\n",
        "https://example.com/path?q=1&r=2#frag", "email@example.com", "C:\\Windows\\System32",
        "$100.00 \u2014 50% off!!!", "...", "?!?!", "\u00abquoted\u00bb", "\u2014\u2013-", "(hello)", "\"quote\"",
    ]


def random_strings(rng):
    """Short strings over characters that stress the regexes, and longer ones over all of Unicode."""
    tricky = list("aZsStTlLeErRvVmMdD019 !.,-'\n\r\t") + [
        "\u00a0", "\u3000", "\u2028", "\u017f", "\u00e9", "\u0301", "\u4e2d", "\u0663", "\u00b2", "\U0001F600",
        "\u200d", "\x00", "\x0b", "\x1c", "\x85", "\u216b", "<|im_start|>", "  ", "\r\n"]
    short = ["".join(rng.choice(tricky) for _ in range(rng.randint(1, 16))) for _ in range(1200)]

    def any_char():
        while True:
            cp = rng.choice([rng.randint(0x20, 0x7E), rng.randint(0x80, 0x7FF), rng.randint(0x800, 0xFFFF),
                             rng.randint(0x10000, 0x10FFFF)])
            if not 0xD800 <= cp <= 0xDFFF:
                return chr(cp)
    wide = ["".join(any_char() for _ in range(rng.randint(1, 40))) for _ in range(150)]
    return short + wide


def piece_lengths(pre_tokenizer, text):
    # Every family ends in ByteLevel, whose pieces have one character per byte.
    return [len(piece) for piece, _ in pre_tokenizer.pre_tokenize_str(text)]


def jinja_environment():
    """The Jinja setup of transformers' apply_chat_template."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                       extensions=[jinja2.ext.loopcontrols])

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)
    env.globals["raise_exception"] = raise_exception
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
    return env


QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

QWEN25_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

CONVERSATIONS = [
    ([{"role": "user", "content": "Hello!"}], True),
    ([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"},
      {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}], True),
    ([{"role": "user", "content": "  spaced out \n\t"}, {"role": "assistant", "content": "\u3000ok\u00a0\x1c"}], False),
    ([{"role": "user", "content": "\u041f\u0440\u0438\u0432\u0435\u0442 \U0001F44B <|im_end|>"}], True),
]


def render_chats(smollm2_template):
    env = jinja_environment()
    chats = []
    for name, template, bos in [("smollm2", smollm2_template, "<|im_start|>"), ("qwen2", QWEN2_TEMPLATE, None),
                                ("qwen2.5", QWEN25_TEMPLATE, None), ("llama3", LLAMA3_TEMPLATE, "<|begin_of_text|>")]:
        compiled = env.from_string(template)
        for messages, add_generation_prompt in CONVERSATIONS:
            chats.append({
                "template_name": name, "template": template, "bos_token": bos or "", "messages": messages,
                "add_generation_prompt": add_generation_prompt,
                "text": compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                        bos_token=bos, tools=None),
            })
    return chats


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", default=str(REPO / "models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    parser.add_argument("--corpus", default=str(REPO.parent / "shared/corpus/dev"))
    args = parser.parse_args()

    g = read_gguf(args.gguf)
    vocab = {
        "ids": {token: i for i, token in enumerate(g["tokens"])},
        "merge_pairs": [tuple(m.split(" ")) for m in g["merges"]],
        "control": [t for t, kind in zip(g["tokens"], g["types"]) if kind == CONTROL],
    }
    families = family_pre_tokenizers()
    tokenizers_by_family = {name: build_tokenizer(vocab, pre, ignore_merges=(name == "llama-bpe"))
                            for name, pre in families.items()}
    smollm2 = tokenizers_by_family["smollm"]

    out = HERE / "smollm2"
    out.mkdir(exist_ok=True)
    (out / "tokenizer.json").write_text(smollm2.to_str(pretty=False), encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": g["tokens"][g["bos"]], "eos_token": g["tokens"][g["eos"]], "pad_token": g["tokens"][g["pad"]],
        "chat_template": g["chat_template"]}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (HERE / "pre_tokenizers.json").write_text(json.dumps(
        {name: json.loads(t.to_str())["pre_tokenizer"] for name, t in tokenizers_by_family.items()},
        indent=1) + "\n", encoding="utf-8")

    rng = random.Random(20240607)
    strings = []
    for text in tricky_strings() + random_strings(rng):
        entry = {"text": text, "ids": {}, "pieces": {}}
        for name, tokenizer in tokenizers_by_family.items():
            tokenizer.encode_special_tokens = True  # special tokens as plain text: parse_special=false
            entry["ids"][name] = tokenizer.encode(text).ids
            entry["pieces"][name] = piece_lengths(families[name], text)
        smollm2.encode_special_tokens = False
        with_special = smollm2.encode(text).ids
        if with_special != entry["ids"]["smollm"]:
            entry["ids_parse_special"] = with_special
        strings.append(entry)
    (HERE / "reference.json").write_text(json.dumps({
        "tokenizers_version": tokenizers.__version__, "jinja2_version": jinja2.__version__,
        "strings": strings, "chats": render_chats(g["chat_template"])}, separators=(",", ":")) + "\n",
        encoding="utf-8")

    books = {}
    manifest = Path(args.corpus) / "MANIFEST.tsv"
    for line in manifest.read_text(encoding="utf-8").splitlines()[1:]:
        name = line.split("\t")[0]
        # Read bytes: text mode would turn the books' CRLF line ends into LF.
        prefix = (Path(args.corpus) / name).read_bytes().decode("utf-8")[:BOOK_CHARS]
        books[name] = {"bytes": len(prefix.encode("utf-8")),
                       "ids": {family: t.encode(prefix).ids for family, t in tokenizers_by_family.items()}}
    (HERE / "books.json").write_text(json.dumps({"chars": BOOK_CHARS, "books": books}, separators=(",", ":")) + "\n",
                                     encoding="utf-8")
    for path in sorted(HERE.rglob("*.json")):
        print(f"{path.relative_to(HERE)}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
