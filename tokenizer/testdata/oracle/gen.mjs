// Generates tokenizer test cases and tokenizes them with llama.cpp through
// node-llama-cpp (npm package with a prebuilt llama.cpp; vocab-only load).
//
//   npm install node-llama-cpp@3.22.1
//   node gen.mjs SEED COUNT MAXLEN OUT.json [sweep]
//
// OUT.json: {"generator":..., "cases":[{"text", "spm", "spm_special",
// "bpe", "bpe_special"}]} with ids from llama_tokenize(add_special=false,
// parse_special=false|true). With "sweep", the cases instead cover every
// Unicode scalar value in small contexts, 64 code points per case.
import {getLlama} from "node-llama-cpp";
import fs from "node:fs";

const [seedArg, countArg, maxLenArg, outPath, mode] = process.argv.slice(2);
let state = Number(seedArg) >>> 0;
function rnd() { // mulberry32
  state = (state + 0x6D2B79F5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (a) => a[Math.floor(rnd() * a.length)];
const range = (lo, hi) => String.fromCodePoint(lo + Math.floor(rnd() * (hi - lo + 1)));

const words = ["the", "The", "THE", "hello", "Hello", "world", "don't", "DON'T", "I'm", "we'll", "they're",
  "you've", "she'd", "it's", "IT'S", "y'all", "o'clock", "'s", "'S", "'ll", "'LL", "'Re", "'ve", "'d", "'m", "'t",
  "func", "main()", "return", "x+=1;", "i++", "//", "/*", "*/", "{", "}", "=>", "->", "::", "...", "!=", "==",
  "<s>", "</s>", "<unk>", "<0x0A>", "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>",
  "<|end_header_id|>", "<|eot", "<|", "|>", "<<SYS>>", "[INST]", "[/INST]", "▁", "▁▁", "Ġ", "Ċ",
  "3", "33", "333", "3333", "12345678", "3.14", "1,000", "٣٤٥", "Ⅻ", "²³", "½", "𝟙𝟚",
  "Äpfel", "naïve", "café", "Straße", "ÆØÅ", "İstanbul", "ǅ", "ﬁ", "нещо", "Български", "Ελληνικά",
  "שלום", "مرحبا", "नमस्ते", "ภาษาไทย", "한국어", "日本語", "中文字符", "カタカナ", "ｆｕｌｌｗｉｄｔｈ",
  "🦙", "🚀", "😶‍🌫️", "👨‍👩‍👧", "🇫🇷", "✅", "⚡️", "🎉🎉", "a\u0301", "e\u0308\u0301", "\u200b", "\u200d", "\ufeff",
  "\u00a0", "\u2009", "\u3000", "\u0085", "\u2028", "\u1680", "\u000b", "\u000c", "\u001c", "\u001f", "\u0000", "\u007f",
  "\uE000", "\u0378", "\uFFFD", "\uFFFF", "\u{10FFFF}", "\u{1F600}"];
const spaces = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\r", " \n", "\n ", "\t\n", " \t ", "    ", "\n\n\n"];

function randomText(maxLen) {
  const n = 1 + Math.floor(rnd() * 12);
  let s = "";
  for (let i = 0; i < n && s.length < maxLen; i++) {
    const r = rnd();
    if (r < 0.35) s += pick(words);
    else if (r < 0.55) s += pick(spaces);
    else if (r < 0.65) s += pick("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~");
    else if (r < 0.72) s += range(0x20, 0x7e);
    else if (r < 0.76) s += range(0x00, 0x1f);
    else if (r < 0.80) s += range(0x80, 0x2ff);
    else if (r < 0.84) s += range(0x300, 0x36f);
    else if (r < 0.88) s += range(0x370, 0x1fff);
    else if (r < 0.91) s += range(0x2000, 0x2bff);
    else if (r < 0.94) s += range(0x3000, 0x9fff);
    else if (r < 0.96) s += range(0xac00, 0xd7a3);
    else if (r < 0.98) s += range(0xe000, 0xfffd);
    else s += range(0x10000, 0x10ffff);
  }
  return s.slice(0, maxLen).replace(/[\ud800-\udbff]$/, "");
}

function sweepCases() {
  const out = [];
  const ctx = ["x", "1", " ", "'", "\n", "!"];
  let cur = "";
  let k = 0;
  for (let cp = 0; cp <= 0x10ffff; cp++) {
    if (cp >= 0xd800 && cp <= 0xdfff) continue;
    const c = String.fromCodePoint(cp);
    cur += ctx[k % ctx.length] + c + c + "a" + c + " " + c + "2";
    k++;
    if (k % 64 === 0) { out.push(cur); cur = ""; }
  }
  if (cur) out.push(cur);
  return out;
}

const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
// SPM_VOCAB / BPE_VOCAB replace the vocabularies. For the Llama 3
// vocabulary with tokenizer.ggml.pre rewritten (the Go test rebuilds it in
// memory), set BPE_PRE to that pre and BPE_VOCAB to the rewritten file.
// SPM_SHARED names another SPM file under shared/ (e.g.
// models/stories260K.gguf); the Go test loads the same one.
const spmPath = process.env.SPM_SHARED ? "../../../../shared/" + process.env.SPM_SHARED : process.env.SPM_VOCAB;
const spm = await llama.loadModel({modelPath: spmPath ?? "../../../../shared/vocab/ggml-vocab-llama-spm.gguf", vocabOnly: true});
const bpe = await llama.loadModel({modelPath: process.env.BPE_VOCAB ?? "../../../../shared/vocab/ggml-vocab-llama-bpe.gguf", vocabOnly: true});
const texts = mode === "sweep" ? sweepCases() : Array.from({length: Number(countArg)}, () => randomText(Number(maxLenArg)));
const tok = (m, s, sp) => Array.from(m.tokenize(s, sp));
const cases = texts.map((text) => ({
  text,
  spm: tok(spm, text, false), spm_special: tok(spm, text, true),
  bpe: tok(bpe, text, false), bpe_special: tok(bpe, text, true),
}));
fs.writeFileSync(outPath, JSON.stringify({
  bpe_pre: process.env.BPE_PRE ?? "",
  spm_shared: process.env.SPM_SHARED ?? "",
  generator: `gen.mjs ${process.argv.slice(2, 6).join(" ")} ${mode ?? ""}`.trim() +
    (process.env.BPE_PRE ? ` BPE_PRE=${process.env.BPE_PRE}` : "") +
    (process.env.SPM_SHARED ? ` SPM_SHARED=${process.env.SPM_SHARED}` : "") +
    "; llama.cpp via node-llama-cpp 3.22.1 (vocab-only load)",
  cases,
}));
console.log(`wrote ${cases.length} cases to ${outPath}`);
