#!/usr/bin/env python3
"""Renders the family templates of this folder with llama.cpp's Jinja engine.

    OMP_WAIT_POLICY=passive LD_LIBRARY_PATH=BIN python3 llamacpp_render.py GRETA BIN/llama-server

For each case: `greta synth` makes a small file of the family (its
vocabulary gives bos_token and eos_token), llama-server (loopback only)
loads it with --jinja --chat-template-file, and POST /apply-template renders
the conversation with the generation prompt. llamacpp-render.json gets the
template file, bos and eos, the messages and llama.cpp's prompt text.
"""
import json, os, shutil, socket, subprocess, sys, tempfile, time, urllib.request

MULTI = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello. How can I help?"},
    {"role": "user", "content": "  What is 2+2?  "},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3+3?\nThanks."},
]
WITH_SYSTEM = [{"role": "system", "content": "You are terse."}] + MULTI
CASES = [
    ("Qwen-Qwen2.5-7B-Instruct.jinja", "qwen2", WITH_SYSTEM),
    ("Qwen-Qwen2.5-7B-Instruct.jinja", "qwen2", MULTI),  # its default system prompt
    ("Qwen-Qwen3-0.6B.jinja", "qwen3", WITH_SYSTEM),
    ("google-gemma-2-2b-it.jinja", "gemma2", MULTI),
    ("microsoft-Phi-3.5-mini-instruct.jinja", "phi3", WITH_SYSTEM),
]

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def main():
    greta, server = sys.argv[1:3]
    here = os.path.dirname(os.path.abspath(__file__))
    out = []
    for tmpl, arch, msgs in CASES:
        d = tempfile.mkdtemp()
        path = os.path.join(d, arch + ".gguf")
        subprocess.run([greta, "synth", "-o", path, "--arch", arch, "--dim", "64", "--layers", "1", "--heads", "4",
                        "--ffn", "64", "--vocab", "600"], check=True, capture_output=True)
        port = free_port()
        srv = subprocess.Popen([server, "-m", path, "--host", "127.0.0.1", "--port", str(port), "-t", "1", "-c", "256",
                                "--jinja", "--chat-template-file", os.path.join(here, tmpl)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(300):
                try:
                    if urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=2).status == 200:
                        break
                except Exception:
                    time.sleep(0.2)
            req = urllib.request.Request("http://127.0.0.1:%d/apply-template" % port,
                                         json.dumps({"messages": msgs}).encode(), {"Content-Type": "application/json"})
            prompt = json.load(urllib.request.urlopen(req, timeout=60))["prompt"]
            props = json.load(urllib.request.urlopen("http://127.0.0.1:%d/props" % port, timeout=10))
        finally:
            srv.terminate(); srv.wait()
            shutil.rmtree(d)
        out.append({"template": tmpl, "arch": arch, "bos": props.get("bos_token", ""), "eos": props.get("eos_token", ""),
                    "messages": msgs, "prompt": prompt})
        print(tmpl, repr(prompt[:80]))
    with open(os.path.join(here, "llamacpp-render.json"), "w") as f:
        json.dump({"generator": "llamacpp_render.py: llama.cpp de3ff81 llama-server --jinja, POST /apply-template", "cases": out}, f, indent=1, ensure_ascii=False)

main()
