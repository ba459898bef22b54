#!/usr/bin/env python3
"""Makes the llama.cpp reference runs of the family tests (family_test.go).

    OMP_WAIT_POLICY=passive LD_LIBRARY_PATH=BIN python3 gen.py GRETA BIN/llama-server [TAG...]

For each case below: `greta synth` writes the random-weight file (the test
makes the same file again from the same options), llama-server (loopback
only) runs a greedy completion of the case's prompt token ids with
ignore_eos and n_probs 5 (one request a step, each a prefill of the prompt
and the ids so far), and TAG.json gets the options, the prompt, the
generated ids and each step's top-5 [id, logprob] (logprob = logit −
logsumexp over the whole vocabulary, before sampling).
"""
import json, os, random, shutil, socket, subprocess, sys, tempfile, time, urllib.request

BASE = dict(Dim=64, Layers=2, Heads=4, KVHeads=2, FFN=128, Context=2048, RopeBase=10000.0,
            Vocab=600, WeightStd=0.3, Type="f32", Seed=1)
CASES = {
    # qwen2: q/k/v biases, NEOX rope; untied and tied.
    "qwen2-f32": dict(Arch="qwen2"),
    "qwen2-tied-f32": dict(Arch="qwen2", Tied=True, Seed=2),
    # qwen3: per-head q/k norms, q_dim (4·32) wider than dim.
    "qwen3-f32": dict(Arch="qwen3", HeadDim=32, Seed=3),
    "qwen3-q8_0": dict(Arch="qwen3", HeadDim=32, Type="q8_0", Seed=4),
    # gemma2: a 16-position window on even layers, a prompt of 48, softcaps that bite.
    "gemma2-swa-f32": dict(Arch="gemma2", HeadDim=32, WeightStd=0.1, SlidingWindow=16, AttnSoftcap=1.5, FinalSoftcap=4.0, Seed=5, prompt=48),
    # gemma2 with the converter's real caps (50, 30) and window (4096).
    "gemma2-f32": dict(Arch="gemma2", HeadDim=32, WeightStd=0.1, SlidingWindow=4096, AttnSoftcap=50.0, FinalSoftcap=30.0, Seed=6),
    # gemma3: 5 windowed layers (rope base 10000) to one global (1e6), tied.
    "gemma3-swa-f32": dict(Arch="gemma3", Layers=6, HeadDim=32, WeightStd=0.1, SlidingWindow=16, RopeBase=1000000.0, Tied=True, Seed=7, prompt=48),
    "gemma3-q4_k_m": dict(Arch="gemma3", Dim=256, Layers=6, HeadDim=64, FFN=512, SlidingWindow=16, RopeBase=1000000.0, Type="q4_k_m", Seed=8, prompt=40, WeightStd=0.05),
    # phi3: fused qkv and gate_up, partial rotary (8 of 16), a sliding_window key llama.cpp ignores.
    "phi3-f32": dict(Arch="phi3", RopeDim=8, SlidingWindow=2047, Seed=9),
}
FLAGS = dict(Arch="--arch", Dim="--dim", Layers="--layers", Heads="--heads", KVHeads="--kv-heads", FFN="--ffn",
             Context="--ctx", HeadDim="--head-dim", RopeDim="--rope-dim", RopeBase="--rope-base",
             RopeBaseSWA="--rope-base-swa", SlidingWindow="--sliding-window", SWAPattern="--swa-pattern",
             AttnSoftcap="--attn-softcap", FinalSoftcap="--final-softcap", WeightStd="--weight-std",
             Type="--type", Seed="--seed", Vocab="--vocab")
SPECIALS = {"qwen2": 3, "qwen3": 3, "gemma2": 2, "gemma3": 2, "phi3": 5}

def banned(arch):
    """The ids of the byte tokens of bytes 0x80..0xFF in greta synth's vocabularies."""
    if arch in ("qwen2", "qwen3"):
        return range(128, 256)   # byte-level BPE: byte b is token b
    return range(3 + 128, 3 + 256)  # SPM: <unk> <s> </s>, then <0x00>..<0xFF>

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def post(port, body):
    req = urllib.request.Request("http://127.0.0.1:%d/completion" % port, json.dumps(body).encode(), {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=300))

def run(greta, server, tag, case):
    o = dict(BASE); o.update(case)
    n_prompt, n_gen = o.pop("prompt", 24), o.pop("generate", 16)
    rng = random.Random(o["Seed"])
    prompt = [rng.randrange(3, o["Vocab"] - SPECIALS[o["Arch"]]) for _ in range(n_prompt)]
    d = tempfile.mkdtemp()  # removed below
    path = os.path.join(d, tag + ".gguf")
    args = [greta, "synth", "-o", path] + [a for k, f in FLAGS.items() if k in o for a in (f, str(o[k]))]
    if o.get("Tied"):
        args.append("--tied")
    subprocess.run(args, check=True)
    port = free_port()
    # An f32 KV cache (llama.cpp's default is f16), so that F32 files
    # compare at float32 rounding.
    srv = subprocess.Popen([server, "-m", path, "--host", "127.0.0.1", "--port", str(port), "-t", "1", "-c", "1024", "-np", "1",
                            "-ctk", "f32", "-ctv", "f32"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                if urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=2).status == 200:
                    break
            except Exception:
                time.sleep(0.2)
        # One request a step. llama-server drops the probabilities of a
        # token that ends inside a UTF-8 character, so the byte tokens of
        # bytes ≥ 0x80 are banned from sampling (logit_bias); the reported
        # top 5 are of the raw logits, before the bias, so they may still
        # hold them. "generated" is then llama.cpp's greedy choice among the
        # other tokens: the sequence the test feeds back.
        gen, top = [], []
        bias = [[i, False] for i in banned(o["Arch"])]
        for _ in range(n_gen):
            r = post(port, dict(prompt=prompt + gen, n_predict=1, temperature=0, n_probs=5, cache_prompt=False,
                                ignore_eos=True, return_tokens=True, logit_bias=bias))
            assert len(r["tokens"]) == 1 and len(r["completion_probabilities"]) == 1, r
            gen.append(r["tokens"][0])
            top.append([[t["id"], t["logprob"]] for t in r["completion_probabilities"][0]["top_logprobs"]])
    finally:
        srv.terminate(); srv.wait()
        shutil.rmtree(d)
    out = dict(tag=tag, generator="gen.py: llama.cpp de3ff81 llama-server, greedy, n_probs 5, one request a step", synth=o,
               prompt=prompt, generated=gen, top=top)
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), tag + ".json"), "w") as f:
        json.dump(out, f, indent=1)
    print(tag, gen)

def main():
    greta, server = sys.argv[1:3]
    for tag in sys.argv[3:] or CASES:
        run(greta, server, tag, CASES[tag])

main()
