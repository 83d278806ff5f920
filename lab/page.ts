/**
 * The lab page's script (bundled by cli/lab.ts for the browser): the same GPT2, kernels,
 * tokenizers, sampling and cache as the command line, run on the browser's WebGPU, with the
 * cache shown as it fills. Every file comes from the lab server through base/files.ts.
 *
 * `/?selftest` runs parity on data/tiny-gpt2 and 20 greedy tokens of data/shakespeare-char,
 * then sets `document.title` to `selftest: PASS …` or `selftest: FAIL …` and writes one JSON
 * object into `#selftest`.
 *
 * @module
 */
import {
  CharTokenizer,
  defaultWindow,
  generate,
  type GenerateOptions,
  GPT2,
  type GPT2Config,
  gpt2Tokenizer,
  Gpu,
  type KernelTime,
  type KVCache,
  lineChart,
  loadCheckpoint,
  type ParityReport,
  parseCachePolicy,
  renderSvg,
  Rng,
  Runner,
  runParity,
  sampleToken,
  TextStream,
  type Tokenizer,
  TOLERANCE,
} from "../mod.ts";
import { fetchSource, setFileSource } from "../base/files.ts";
import { byId, doc, type El, pageLocation } from "./dom.ts";

/** The model parity runs on, with HF's reference outputs beside it. */
const PARITY_MODEL = "data/tiny-gpt2";
/** The model the selftest decodes, and its prompt: `deno task generate`'s default for it. */
const GREEDY_MODEL = "data/shakespeare-char";
const GREEDY_PROMPT = "ROMEO:\n";
/** Query rows of attention kept per layer and head. */
const ATTENTION_ROWS = 256;

const $ = byId;
const input = byId;

setFileSource(fetchSource(new URL("/", pageLocation.href)));

/** A model open in the page. */
interface Loaded {
  name: string;
  model: Runner;
  config: GPT2Config;
  tokenizer: Tokenizer;
}

/** What one generation recorded, for the charts. */
interface Run {
  cached: boolean;
  promptTokens: number;
  prefillMs: number;
  tokenMs: number[];
  /** With the cache: per layer, per head, one row of weights per query token. */
  attention: Float32Array[][][];
  tokens: string[];
}

let gpu: Gpu | null = null;
let loaded: Loaded | null = null;
let stopRequested = false;
/** The latest run with the cache and without, drawn side by side. */
const lastRuns: { cached?: Run; uncached?: Run } = {};
let current: Run | null = null;

/** Opens the GPU, or says in one line that this browser has no WebGPU. */
async function openGpu(): Promise<Gpu | null> {
  if (!("gpu" in navigator) || !navigator.gpu) {
    $("nogpu").textContent = "This browser has no WebGPU (navigator.gpu): use Chrome or Edge " +
      "113+ (on Linux with --enable-unsafe-webgpu), Safari 26+, or Firefox 141+ on Windows.";
    $("nogpu").hidden = false;
    $("lab").hidden = true;
    return null;
  }
  try {
    const opened = await Gpu.open();
    $("adapter").textContent = `Adapter: ${opened.description}.`;
    return opened;
  } catch (e) {
    $("nogpu").textContent = "This browser has WebGPU but gave no adapter or device (" +
      `${(e as Error).message.split("\n")[0]}): on Linux, Chrome needs --enable-unsafe-webgpu; ` +
      "elsewhere, check that hardware acceleration is on.";
    $("nogpu").hidden = false;
    return null;
  }
}

/** Loads a checkpoint folder from the server, with a progress bar for its weights. */
async function loadModel(name: string): Promise<Loaded> {
  if (loaded?.name === name) return loaded;
  loaded?.model.destroy();
  loaded = null;
  const bar = $("progress");
  $("loading").hidden = false;
  const mb = (n: number) => (n / 2 ** 20).toFixed(1);
  const { config, weights } = await loadCheckpoint(name, {
    onProgress: (got, total) => {
      bar.value = String(total ? got / total : 0);
      $("progressText").textContent = `${name}/model.safetensors: ${mb(got)} of ${mb(total)} MiB`;
    },
  });
  const tokenizer = (await CharTokenizer.load(name)) ?? gpt2Tokenizer();
  const model = new Runner(new GPT2(gpu!, config, weights));
  $("progressText").textContent = "compiling kernels…";
  await model.warmup();
  $("loading").hidden = true;
  $("modelInfo").textContent = `${name}: ${config.nLayer} layers, ${config.nHead} heads, ` +
    `n_embd ${config.nEmbd}, context ${config.nPositions}, ${tokenizer.name} tokenizer`;
  fillSelect($("layer"), config.nLayer);
  fillSelect($("head"), config.nHead);
  loaded = { name, model, config, tokenizer };
  return loaded;
}

function fillSelect(select: El, n: number): void {
  select.innerHTML = Array.from({ length: n }, (_, i) => `<option>${i}</option>`).join("");
}

/** Names a token for hover text and tables: its text, with whitespace made visible. */
function tokenName(tok: Tokenizer, id: number): string {
  return JSON.stringify(tok.decode([id])).slice(1, -1);
}

/** Generates from the prompt box, one forward per token, drawing as it goes. */
async function runGeneration(): Promise<void> {
  const { model, config, tokenizer } = await loadModel($("model").value);
  const cached = input("useCache").checked;
  const opts = {
    temperature: Number(input("temperature").value),
    topK: Number(input("topK").value),
    topP: Number(input("topP").value),
  };
  const rng = new Rng(Number(input("seed").value));
  const prompt = input("prompt").value;
  const promptIds = tokenizer.encode(prompt);
  if (promptIds.length === 0) throw new Error("the prompt has no tokens");
  if (promptIds.length >= config.nPositions) {
    throw new Error(
      `the prompt has ${promptIds.length} tokens; the context holds ${config.nPositions}`,
    );
  }
  const maxTokens = Math.min(
    Number(input("maxTokens").value),
    config.nPositions - promptIds.length,
  );
  const cache = model.newCache(parseCachePolicy($("policy").value).cache);
  const run: Run = {
    cached,
    promptTokens: promptIds.length,
    prefillMs: 0,
    tokenMs: [],
    attention: Array.from(
      { length: config.nLayer },
      () => Array.from({ length: config.nHead }, () => []),
    ),
    tokens: promptIds.map((id) => tokenName(tokenizer, id)),
  };
  current = run;
  const seq = [...promptIds];
  const stream = new TextStream(tokenizer);
  const text = $("text");
  text.innerHTML = "";
  const shown = doc.createElement("span");
  shown.className = "prompt";
  shown.textContent = prompt;
  const out = doc.createTextNode("");
  text.append(shown, out);
  try {
    let t0 = performance.now();
    let result = await model.forward(promptIds, cache, { attention: cached });
    run.prefillMs = performance.now() - t0;
    keepAttention(run, result.attention, config, 0);
    let lastDraw = 0;
    for (let i = 0; i < maxTokens && !stopRequested; i++) {
      const id = sampleToken(result.logits, opts, rng);
      seq.push(id);
      run.tokens.push(tokenName(tokenizer, id));
      out.data += stream.push(id);
      if (i === maxTokens - 1) break;
      t0 = performance.now();
      if (cached) {
        result = await model.forward([id], cache, { attention: true });
        keepAttention(run, result.attention, config, seq.length - 1);
      } else {
        cache.reset(); // without the cache every step recomputes the whole sequence
        result = await model.forward(seq, cache);
      }
      run.tokenMs.push(performance.now() - t0);
      const delay = Number(input("delay").value);
      if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay));
      showCache(cache, config, cached);
      showStrip(run);
      $("phases").innerHTML = phaseTable(run);
      if (performance.now() - lastDraw > 400) {
        lastDraw = performance.now();
        drawAttention();
        await drawTimes();
      }
    }
    out.data += stream.flush();
    if (seq.length >= config.nPositions) {
      $("status").textContent = `${seq.length - promptIds.length} tokens: the context ` +
        `(${config.nPositions} positions) is full`;
    }
    showCache(cache, config, cached);
    showStrip(run);
    lastRuns[cached ? "cached" : "uncached"] = run;
    drawAttention();
    await drawTimes();
    await showPhases(run, promptIds, model);
  } finally {
    cache.destroy();
  }
}

/** Keeps the attention rows of a pass whose first query sits at position `pos0`. */
function keepAttention(
  run: Run,
  attention: Float32Array[] | undefined,
  config: GPT2Config,
  pos0: number,
): void {
  if (!attention) return;
  const P = config.nPositions;
  attention.forEach((layer, l) => {
    const T = layer.length / (config.nHead * P);
    for (let h = 0; h < config.nHead; h++) {
      for (let t = 0; t < T && pos0 + t < ATTENTION_ROWS; t++) {
        const at = (h * T + t) * P;
        run.attention[l][h].push(layer.slice(at, at + pos0 + t + 1));
      }
    }
  });
}

/** The cache per layer: rows used of capacity, bytes used of allocated. */
function showCache(cache: KVCache, config: GPT2Config, cached: boolean): void {
  const kib = (b: number) => `${(b / 1024).toFixed(1)} KiB`;
  const used = cache.bytesUsed / config.nLayer;
  const allocated = cache.bytesAllocated / config.nLayer;
  const full = cache.config.nPositions * cache.bytesPerElement * 2 * config.nEmbd;
  const rows = Array.from(
    { length: config.nLayer },
    (_, l) =>
      `<tr><td>${l}</td><td>${cache.length} / ${cache.capacity}</td>` +
      `<td><span class="bar"><div class="alloc" style="width:${100 * allocated / full}%"></div>` +
      `<div style="width:${100 * used / full}%"></div></span></td>` +
      `<td>${kib(used)} / ${kib(allocated)}</td></tr>`,
  ).join("");
  $("cache").innerHTML = (cached ? "" : "<p>Cache off: each step refills it from nothing.</p>") +
    `<table><tr><th>layer</th><th>rows used / capacity</th><th>K+V bytes</th>` +
    `<th>used / allocated</th></tr>${rows}</table>` +
    `<div>Bars: dark = bytes holding tokens, light = allocated, full width = the whole ` +
    `context (${config.nPositions} positions).</div>` +
    `<div>all layers: ${kib(cache.bytesUsed)} used of ${kib(cache.bytesAllocated)} allocated ` +
    `(${cache.dtype} values, ${
      cache.policy === "grow" ? `${cache.growths} growths` : "allocated once"
    })</div>`;
}

/** A strip of thin bars, one per token, as tall as its time (the chat's strip, drawn). */
function timeStrip(ms: readonly number[]): string {
  const max = Math.max(...ms, 1e-9);
  const width = Math.min(4, 320 / Math.max(ms.length, 1));
  const bars = ms.map((v, i) => {
    const h = Math.max(1, 24 * v / max);
    return `<rect x="${i * width}" y="${24 - h}" width="${Math.max(width - 0.5, 0.5)}" ` +
      `height="${h}" fill="#3060c0"/>`;
  }).join("");
  return `<svg width="${width * ms.length}" height="24">${bars}</svg>`;
}

/** The per-token time strip and its numbers, as the chat prints them. */
function showStrip(run: Run): void {
  $("strip").innerHTML = timeStrip(run.tokenMs);
  const ms = run.tokenMs;
  if (!ms.length) return;
  const mean = ms.reduce((a, b) => a + b, 0) / ms.length;
  $("stripNote").textContent = `${ms.length} steps, ${Math.min(...ms).toFixed(1)}–` +
    `${Math.max(...ms).toFixed(1)} ms, mean ${mean.toFixed(1)} ms ` +
    `(${(1000 / mean).toFixed(1)} tok/s), ${run.cached ? "cached" : "uncached"}`;
  $("status").textContent = `${ms.length + 1} tokens`;
}

/** Per-token time of the latest cached and uncached runs, with the experiments' line chart. */
async function drawTimes(): Promise<void> {
  const points: object[] = [];
  for (const run of [lastRuns.cached, lastRuns.uncached, current]) {
    if (!run) continue;
    const mode = run.cached ? "with the KV cache" : "without (recompute all)";
    if (points.some((p) => (p as { mode: string }).mode === mode)) continue;
    run.tokenMs.forEach((ms, i) => points.push({ mode, position: run.promptTokens + i + 1, ms }));
  }
  if (!points.length) return;
  const chart = lineChart(
    points,
    { field: "position", type: "quantitative", title: "sequence length at the step (tokens)" },
    { field: "ms", type: "quantitative", title: "ms per token" },
    "mode",
  );
  $("timeChart").innerHTML = await renderSvg({ ...chart, width: 480, height: 200 });
}

/** The chosen layer and head's attention rows, query down, key across, on a 2D canvas. */
function drawAttention(): void {
  const run = lastRuns.cached && current && !current.cached ? lastRuns.cached : current;
  if (!run?.cached) return;
  const rows = run.attention[Number($("layer").value)]?.[
    Number($("head").value)
  ];
  if (!rows?.length) return;
  const canvas = $("attention");
  const n = rows.length;
  const cell = Math.max(1, Math.floor(360 / n));
  canvas.width = canvas.height = cell * n;
  const g = canvas.getContext("2d")!;
  g.fillStyle = "#fff";
  g.fillRect(0, 0, canvas.width, canvas.height);
  rows.forEach((row, q) => {
    row.forEach((w, k) => {
      const shade = Math.round(255 * (1 - Math.sqrt(w))); // sqrt: small weights still show
      g.fillStyle = `rgb(${shade},${shade},255)`;
      g.fillRect(k * cell, q * cell, cell, cell);
    });
  });
  canvas.onmousemove = (e) => {
    const q = Math.floor(e.offsetY / cell);
    const k = Math.floor(e.offsetX / cell);
    const tip = $("tip");
    if (q >= n || k > q) {
      tip.style.display = "none";
      return;
    }
    tip.textContent = `query ${q} "${run.tokens[q]}" → key ${k} "${run.tokens[k]}": ` +
      rows[q][k].toFixed(3);
    tip.style.left = `${e.clientX + 12}px`;
    tip.style.top = `${e.clientY + 12}px`;
    tip.style.display = "block";
  };
  canvas.onmouseleave = () => $("tip").style.display = "none";
}

/** Prefill against decode in wall time: the run's prefill and its mean decode step. */
function phaseTable(run: Run): string {
  const ms = run.tokenMs;
  const mean = ms.length ? ms.reduce((a, b) => a + b, 0) / ms.length : NaN;
  const row = (phase: string, tokens: number, total: number) =>
    `<tr><td>${phase}</td><td>${tokens}</td><td>${total.toFixed(1)}</td>` +
    `<td>${(total / tokens).toFixed(2)}</td></tr>`;
  return `<table><tr><th>phase</th><th>tokens</th><th>ms</th><th>ms per token</th></tr>` +
    row("prefill (one pass)", run.promptTokens, run.prefillMs) +
    (ms.length ? row(`decode (mean of ${ms.length} steps)`, 1, mean) : "") +
    `</table><p>Wall time in the page, ${
      run.cached ? "with the cache" : "without the cache"
    }, logits read back every step; a pass of a new shape also records its plan.</p>`;
}

/**
 * Prefill against decode: wall time of the run, and where the adapter has `timestamp-query`,
 * each kernel's GPU time in one profiled prefill and one profiled decode step.
 */
async function showPhases(run: Run, promptIds: number[], model: Runner): Promise<void> {
  let html = phaseTable(run);
  if (!run.cached) return;
  if (!gpu!.hasTimestamps) {
    $("phases").innerHTML = html + "<p>This adapter has no <code>timestamp-query</code>: " +
      "no per-kernel GPU times.</p>";
    return;
  }
  const cache = model.newCache();
  try {
    const prefill = (await model.forward(promptIds, cache, { profile: true })).profile ?? [];
    const decode = (await model.forward([promptIds[0]], cache, { profile: true })).profile ?? [];
    const values = [
      ...byKernel(prefill, `prefill (${promptIds.length} tokens)`),
      ...byKernel(decode, "decode (1 token)"),
    ];
    const svg = await renderSvg({
      width: 420,
      height: 80,
      data: { values },
      mark: "bar",
      encoding: {
        y: { field: "phase", type: "nominal", title: null },
        x: { field: "ms", type: "quantitative", title: "GPU time (ms), summed by kernel" },
        color: { field: "kernel", type: "nominal", legend: { orient: "bottom", columns: 4 } },
      },
    });
    html += svg + `<p>Per-kernel GPU timestamps of one profiled prefill and one decode step. ` +
      `Chrome rounds them to 100 µs unless its WebGPU developer features are on ` +
      `(chrome://flags/#enable-webgpu-developer-features).</p>`;
  } finally {
    cache.destroy();
  }
  $("phases").innerHTML = html;
}

/** Kernel times summed by kernel name (the label's first word), in ms. */
function byKernel(times: readonly KernelTime[], phase: string): object[] {
  const sums = new Map<string, number>();
  for (const t of times) {
    const kernel = t.label.split(/[\s.]/)[0];
    sums.set(kernel, (sums.get(kernel) ?? 0) + t.ns / 1e6);
  }
  return [...sums].map(([kernel, ms]) => ({ phase, kernel, ms }));
}

/** Runs parity on data/tiny-gpt2 in the page and shows the table of max abs diffs. */
async function showParity(): Promise<ParityReport> {
  $("parityStatus").textContent = "running…";
  const report = await runParity(gpu!, PARITY_MODEL);
  const rows = report.rows.map((r) =>
    `<tr><td>${r.tensor}</td><td>${r.shape.join("×")}</td><td>${
      r.kind === "ids" ? `${r.maxAbsDiff} differ` : r.maxAbsDiff.toExponential(2)
    }</td><td class="${r.pass ? "pass" : "fail"}">${r.pass ? "pass" : "FAIL"}</td></tr>`
  ).join("");
  $("parityTable").innerHTML = `<table><tr><th>tensor</th><th>shape</th><th>max abs diff</th>` +
    `<th>result</th></tr>${rows}</table>`;
  $("parityStatus").innerHTML = `<span class="${report.pass ? "pass" : "fail"}">` +
    `${report.pass ? "PASS" : "FAIL"}</span>: max abs diff ${report.maxAbsDiff.toExponential(3)}` +
    ` (tolerance ${TOLERANCE}) over ${report.rows.length} tensors, ${report.decodePath} decode path`;
  return report;
}

/**
 * Parity on data/tiny-gpt2, then 20 greedy tokens of data/shakespeare-char from "ROMEO:\n"
 * with the options of `deno task generate --temperature 0 --max-tokens 20`.
 */
async function selftest(): Promise<void> {
  $("selftestSection").hidden = false;
  const t0 = performance.now();
  const result: Record<string, unknown> = { adapter: gpu!.description };
  let pass = false;
  try {
    const report = await showParity();
    result.parity_max_abs_diff = report.maxAbsDiff;
    result.tensors = report.rows.length;
    result.parity_decode_path = report.decodePath;
    const { model, tokenizer } = await loadModel(GREEDY_MODEL);
    const options: GenerateOptions = {
      maxTokens: 20,
      temperature: 0,
      topK: 40,
      topP: 1,
      seed: 0,
      useCache: true,
      stopAtEos: false,
      // generate slides past the context by default; 20 tokens after "ROMEO:\n" stay inside
      window: defaultWindow(model.config.nPositions, 0) ?? undefined,
      windowMode: "recompute",
    };
    const cache = model.newCache({ policy: "preallocate" });
    const greedy = await generate(model, cache, tokenizer.encode(GREEDY_PROMPT), options);
    cache.destroy();
    result.greedy_ids = greedy.ids;
    result.greedy_text = tokenizer.decode(greedy.ids);
    result.decode_path = model.decodePath;
    result.decode_path_reason = model.decodeReason;
    result.decode_tok_s = greedy.decodeSteps / (greedy.decodeMs / 1000);
    pass = report.pass && report.maxAbsDiff <= TOLERANCE && greedy.ids.length === 20;
  } catch (e) {
    result.error = (e as Error).message;
  }
  result.pass = pass;
  result.seconds = (performance.now() - t0) / 1000;
  $("selftest").textContent = JSON.stringify(result);
  const diff = typeof result.parity_max_abs_diff === "number"
    ? result.parity_max_abs_diff.toExponential(2)
    : "-";
  doc.title = `selftest: ${pass ? "PASS" : "FAIL"} parity=${diff}` +
    (result.error ? ` error=${result.error}` : "");
}

/**
 * `/?demo`: generates without the cache, then with it in slow motion (100 ms per token), so
 * that both time curves, the filling cache and the attention rows show (the screenshot).
 */
async function demo(): Promise<void> {
  $("useCache").checked = false;
  await runGeneration();
  $("useCache").checked = true;
  $("delay").value = "100";
  await runGeneration();
}

/** Runs `task`, showing its failure in the status line instead of throwing. */
function guarded(task: () => Promise<unknown>, status: string): () => Promise<void> {
  return async () => {
    try {
      await task();
    } catch (e) {
      $(status).innerHTML = `<span class="fail">${(e as Error).message}</span>`;
    }
  };
}

async function start(): Promise<void> {
  gpu = await openGpu();
  if (!gpu) {
    if (pageLocation.search.includes("selftest")) doc.title = "selftest: FAIL no WebGPU";
    return;
  }
  const models = await (await fetch("/models.json")).json() as {
    folders: string[];
    default: string;
  };
  const select = $("model");
  select.innerHTML = models.folders.map((f) => `<option>${f}</option>`).join("");
  select.value = models.default;
  select.onchange = guarded(() => loadModel(select.value), "status");
  $("layer").onchange = $("head").onchange = () => drawAttention();
  $("parity").onclick = guarded(showParity, "parityStatus");
  $("stop").onclick = () => stopRequested = true;
  $("generate").onclick = guarded(async () => {
    $("generate").disabled = true;
    $("stop").disabled = false;
    stopRequested = false;
    try {
      await runGeneration();
    } finally {
      $("generate").disabled = false;
      $("stop").disabled = true;
    }
  }, "status");
  if (pageLocation.search.includes("selftest")) {
    await selftest();
    return;
  }
  await guarded(() => loadModel(select.value), "status")();
  if (pageLocation.search.includes("demo")) await demo();
}

start().catch((e) => {
  doc.title = `selftest: FAIL ${(e as Error).message}`;
  $("status").textContent = (e as Error).message;
});
