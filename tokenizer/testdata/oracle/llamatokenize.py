#!/usr/bin/env python3
"""Tokenizes the texts of an oracle file with llama.cpp's llama-tokenize.

    LD_LIBRARY_PATH=BIN python3 llamatokenize.py BIN/llama-tokenize TEXTS.json OUT.json \
        [--bpe VOCAB.gguf --bpe-shared REL] [--spm VOCAB.gguf --spm-shared REL] [--bpe-pre PRE]

TEXTS.json is an oracle file (llamacpp-golden.json); OUT.json gets the same
texts with the ids llama-tokenize gives (--no-bos, that is add_special=false,
with and without --parse-special), in the format of oracle_test.go.
--bpe-shared/--spm-shared name the vocabulary under shared/ that the test
loads; --bpe-pre records that the BPE vocabulary was the shared Llama 3 one
rewritten to that tokenizer.ggml.pre. One process per text: llama-tokenize
reads the text verbatim from standard input (--no-escape).
"""
import json, subprocess, sys

def tokenize(exe, vocab, text, special):
    args = [exe, "-m", vocab, "--stdin", "--ids", "--no-bos", "--no-escape", "--log-disable"]
    if not special:  # llama-tokenize parses special tokens by default
        args.append("--no-parse-special")
    out = subprocess.run(args, input=text.encode("utf-8", "surrogatepass"), capture_output=True, check=True).stdout
    line = out.decode().strip().splitlines()[-1]
    return json.loads(line)

def main():
    exe, texts, out = sys.argv[1:4]
    opts = dict(zip(sys.argv[4::2], sys.argv[5::2]))
    src = json.load(open(texts))
    res = {"generator": "llamatokenize.py over the texts of %s; llama.cpp de3ff81 llama-tokenize" % texts.split("/")[-1], "cases": []}
    for k in ("--bpe-shared", "--spm-shared", "--bpe-pre"):
        if k in opts:
            res[k[2:].replace("-", "_")] = opts[k]
    for i, c in enumerate(src["cases"]):
        case = {"text": c["text"]}
        for kind in ("bpe", "spm"):
            if "--" + kind in opts:
                case[kind] = tokenize(exe, opts["--" + kind], c["text"], False)
                case[kind + "_special"] = tokenize(exe, opts["--" + kind], c["text"], True)
        res["cases"].append(case)
        if i % 50 == 0:
            print(i, file=sys.stderr)
    json.dump(res, open(out, "w"), ensure_ascii=False, separators=(",", ":"))

main()
