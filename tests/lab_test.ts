import assert from "node:assert/strict";
import { join } from "node:path";
import {
  hostAllowed,
  labHandler,
  matchPath,
  type OfferedFolder,
  offeredFolders,
  realFileInside,
} from "../cli/lab_server.ts";
import { Browser, findChromium } from "../scripts/chromium.ts";
import { granted, needs, slow } from "./helpers.ts";

const FOLDERS: OfferedFolder[] = [
  { name: "data/tiny-gpt2", dir: "data/tiny-gpt2" },
  { name: "data/shakespeare-char", dir: "data/shakespeare-char" },
];

/** Request paths that leave the offered folders or name what is not offered. */
const TRAVERSALS = [
  "/data/tiny-gpt2/../../deno.json",
  "/data/tiny-gpt2/%2e%2e/%2e%2e/deno.json",
  "/data/tiny-gpt2/%2E%2E/config.json",
  "/data/tiny-gpt2/..%2f..%2fdeno.json",
  "/data/tiny-gpt2%2fconfig.json",
  "//etc/passwd",
  "/%2fetc%2fpasswd",
  "/etc/passwd",
  "/data/tiny-gpt2/README.md",
  "/data/tiny-gpt2/train_reference.json",
  "/data/tinyshakespeare/input.txt",
  "/data/",
  "/data/tiny-gpt2//config.json",
  "/cli/lab.ts",
];

Deno.test("hostAllowed: only 127.0.0.1 and localhost on the lab's own port", () => {
  assert.equal(hostAllowed("127.0.0.1:8000", 8000), true);
  assert.equal(hostAllowed("localhost:8000", 8000), true);
  for (const host of [null, "", "127.0.0.1", "localhost", "127.0.0.1:8001", "evil.example:8000"]) {
    assert.equal(hostAllowed(host, 8000), false, String(host));
  }
  assert.equal(hostAllowed("attacker.example", 80), false);
});

Deno.test("matchPath: offered folders and files only, no traversal in any spelling", () => {
  assert.deepEqual(matchPath("/data/tiny-gpt2/config.json", FOLDERS), {
    folder: FOLDERS[0],
    file: "config.json",
  });
  assert.equal(matchPath("/data/tiny-gpt2/", FOLDERS)?.file, "");
  assert.equal(matchPath("/data/shakespeare-char/vocab.json", FOLDERS)?.folder, FOLDERS[1]);
  for (const path of TRAVERSALS) assert.equal(matchPath(path, FOLDERS), null, path);
  // The URL parser resolves "." before a request gets here; matchPath refuses it anyway.
  assert.equal(matchPath("/data/tiny-gpt2/./config.json", FOLDERS), null);
  assert.equal(matchPath("/data/tiny-gpt2/%E0%A4%A", FOLDERS), null); // malformed encoding
});

Deno.test(
  "realFileInside: a link that leaves the folder is refused",
  needs("read", "write"),
  async () => {
    const dir = await Deno.makeTempDir();
    try {
      await Deno.mkdir(join(dir, "model"));
      await Deno.writeTextFile(join(dir, "secret.json"), "{}");
      await Deno.writeTextFile(join(dir, "model", "vocab.json"), "{}");
      await Deno.symlink(join(dir, "secret.json"), join(dir, "model", "config.json"));
      await Deno.symlink("vocab.json", join(dir, "model", "reference.json"));
      assert.equal(await realFileInside(join(dir, "model"), "config.json"), null);
      assert.ok(
        (await realFileInside(join(dir, "model"), "reference.json"))?.endsWith("vocab.json"),
      );
      assert.equal(await realFileInside(join(dir, "model"), "missing.json"), null);
      await Deno.mkdir(join(dir, "model", "model.safetensors"));
      assert.equal(await realFileInside(join(dir, "model"), "model.safetensors"), null);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test(
  "labHandler: refuses foreign hosts, serves offered files and ranges, 404s the rest",
  needs("read"),
  async () => {
    const folders = await offeredFolders();
    assert.deepEqual(folders.map((f) => f.name), ["data/shakespeare-char", "data/tiny-gpt2"]);
    const handle = labHandler(
      { html: "<p>page</p>", bundle: "js", folders, defaultModel: "data/shakespeare-char" },
      () => 8000,
    );
    const get = (path: string, host = "127.0.0.1:8000", headers: Record<string, string> = {}) =>
      handle(new Request(`http://127.0.0.1:8000${path}`, { headers: { host, ...headers } }));
    assert.equal((await get("/", "rebound.example:8000")).status, 403);
    assert.equal((await get("/data/tiny-gpt2/config.json", "localhost:9999")).status, 403);
    assert.equal(await (await get("/", "localhost:8000")).text(), "<p>page</p>");
    const config = await get("/data/tiny-gpt2/config.json");
    assert.equal(config.status, 200);
    assert.deepEqual(
      new Uint8Array(await config.arrayBuffer()),
      await Deno.readFile("data/tiny-gpt2/config.json"),
    );
    const range = await get("/data/tiny-gpt2/model.safetensors", undefined, { range: "bytes=0-7" });
    assert.equal(range.status, 206);
    assert.equal((await range.arrayBuffer()).byteLength, 8);
    assert.deepEqual(await (await get("/data/shakespeare-char/")).json(), [
      "config.json",
      "model.safetensors",
      "vocab.json",
      "reference.json",
      "reference.safetensors",
    ]);
    for (const path of TRAVERSALS) {
      const response = await get(path);
      assert.equal(response.status, 404, path);
      await response.body?.cancel();
    }
    const post = await handle(
      new Request("http://127.0.0.1:8000/", {
        method: "POST",
        headers: { host: "127.0.0.1:8000" },
      }),
    );
    assert.equal(post.status, 405);
  },
);

/** Sends `target` as the raw request line (no URL normalization), returns the status line. */
async function rawStatus(port: number, target: string, host = `127.0.0.1:${port}`) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const request = `GET ${target} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`;
    await conn.write(new TextEncoder().encode(request));
    const chunks: Uint8Array[] = [];
    const buf = new Uint8Array(65536);
    for (let n; (n = await conn.read(buf)) !== null;) chunks.push(buf.slice(0, n));
    const text = new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
    return { status: Number(text.split(" ")[1]), text };
  } finally {
    conn.close();
  }
}

const mayLook = granted("env", "read", "run");
const chromium = mayLook ? findChromium() : null;
if (mayLook && !chromium) {
  console.log("lab browser test ignored: no chromium on PATH (apt-get install chromium)");
}

/** Starts `deno task lab --port 0`; returns the process and the address it printed. */
async function startLab(): Promise<{ lab: Deno.ChildProcess; url: string; port: number }> {
  const lab = new Deno.Command(Deno.execPath(), {
    args: ["task", "lab", "--port", "0"],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = lab.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let first = "";
  while (!first.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    first += value;
  }
  const url = first.match(/^lab: (http:\/\/127\.0\.0\.1:(\d+)\/)$/m);
  if (!url) {
    lab.kill("SIGTERM");
    await lab.status;
    throw new Error(`no "lab: http://127.0.0.1:PORT/" line: ${first}`);
  }
  return { lab, url: url[1], port: Number(url[2]) };
}

Deno.test({
  name: "lab in headless Chromium without WebGPU: the page says so in one line",
  ...(chromium ? needs("read", "run", "net", "write", "env") : { ignore: true }),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const { lab, url } = await startLab();
    let browser: Browser | null = null;
    try {
      browser = await Browser.launch(chromium!, 1280, 600, false);
      await browser.open(`${url}?selftest`);
      const title = await browser.waitFor(
        `document.title.startsWith("selftest:") && document.title`,
        120_000,
        "the selftest's title",
      );
      assert.equal(title, "selftest: FAIL no WebGPU");
      const line = String(await browser.evaluate(`document.getElementById("nogpu").textContent`));
      assert.match(line, /WebGPU/);
      assert.match(line, /Chrome/);
      assert.ok(!line.includes("\n"), line);
    } finally {
      await browser?.close();
      lab.kill("SIGTERM");
      await lab.status;
    }
  },
});

Deno.test({
  name:
    "lab in headless Chromium: /?selftest passes, greedy ids equal the CLI's, traversal gets nothing",
  ...(chromium ? slow("read", "run", "net", "write", "env") : { ignore: true }),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const { lab, url, port } = await startLab();
    let browser: Browser | null = null;
    try {
      for (const target of [...TRAVERSALS, "/data/tiny-gpt2/../../../../../../etc/passwd"]) {
        const { status, text } = await rawStatus(port, target);
        assert.ok(status === 404 || status === 400, `${target}: ${status}`);
        assert.ok(!text.includes('"tasks"') && !text.includes("root:"), target);
      }
      assert.equal((await rawStatus(port, "/", "rebind.example:" + port)).status, 403);
      assert.equal((await rawStatus(port, "/data/tiny-gpt2/config.json")).status, 200);
      // Nothing the page runs touches Deno.* or imports a node: module up front.
      const bundle = await (await fetch(`${url}lab.js`)).text();
      assert.ok(bundle.length > 100_000);
      assert.doesNotMatch(bundle, /\bDeno\./);
      assert.doesNotMatch(bundle, /\bfrom\s*["']node:/);

      browser = await Browser.launch(chromium!);
      await browser.open(`${url}?selftest`);
      const title = String(
        await browser.waitFor(
          `document.title.startsWith("selftest:") && document.title`,
          540_000,
          "the selftest's title",
        ),
      );
      const json = JSON.parse(
        String(await browser.evaluate(`document.getElementById("selftest").textContent`)),
      );
      console.log(`  ${title}; ${json.adapter}; ${json.seconds?.toFixed(1)} s`);
      assert.match(title, /^selftest: PASS/, JSON.stringify(json));
      assert.ok(json.parity_max_abs_diff <= 1e-5, String(json.parity_max_abs_diff));
      assert.ok(json.tensors > 0);

      const cli = await new Deno.Command(Deno.execPath(), {
        args: [
          "task",
          "generate",
          "--model",
          "data/shakespeare-char",
          "--temperature",
          "0",
          "--max-tokens",
          "20",
          "--json",
        ],
        stdout: "piped",
        stderr: "null",
      }).output();
      assert.equal(cli.code, 0);
      const lines = new TextDecoder().decode(cli.stdout).trim().split("\n");
      const ids = JSON.parse(lines.at(-1)!).ids;
      assert.equal(ids.length, 20);
      assert.deepEqual(json.greedy_ids, ids);
    } finally {
      await browser?.close();
      lab.kill("SIGTERM");
      await lab.status;
    }
  },
});
