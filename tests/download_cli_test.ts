import assert from "node:assert/strict";
import { join } from "node:path";
import { main } from "../cli/download.ts";
import { runScript } from "./helpers.ts";

const ROOT = new URL("..", import.meta.url);
const CONFIG = Deno.readFileSync(new URL("data/tiny-gpt2/config.json", ROOT));

/** Runs main with captured output. */
async function run(args: string[], env: Record<string, string> = { HOME: "/nonexistent" }) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(args, { env, log: (l) => out.push(l), error: (l) => err.push(l) });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

Deno.test("cli/download: usage errors exit with 2 and say why", async () => {
  const cases: [string[], RegExp][] = [
    [["--bogus"], /--bogus/],
    [["gpt3"], /unknown checkpoint name "gpt3"/],
    [["gpt2", "gpt2-xl"], /one checkpoint name/],
    [["--dest"], /--dest/],
    [["--revision", ""], /--revision/],
  ];
  for (const [args, pattern] of cases) {
    const { code, err } = await run(args);
    assert.equal(code, 2, args.join(" "));
    assert.match(err, pattern);
    assert.match(err, /Usage: deno task download/);
  }
});

Deno.test("cli/download: --help prints the usage", async () => {
  const { code, out } = await run(["--help"]);
  assert.equal(code, 0);
  assert.match(out, /--revision REV/);
  assert.match(out, /distilgpt2/);
});

Deno.test("cli/download: downloads through HF_ENDPOINT, then reports it is there", async () => {
  const dest = await Deno.makeTempDir({ prefix: "kvgpt_cli_test_" });
  const model = new Uint8Array(3000).map((_, i) => i);
  const sha = Array.from(
    new Uint8Array(await crypto.subtle.digest("SHA-256", model)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const path = new URL(req.url).pathname.replace("/distilbert/distilgpt2/resolve/main/", "/");
    if (path === "/config.json") return new Response(CONFIG, { headers: { etag: '"1"' } });
    if (path === "/model.safetensors") {
      const headers = { location: "/cdn/m", "x-linked-etag": `"${sha}"`, "x-linked-size": "3000" };
      return new Response(null, { status: 302, headers });
    }
    return path === "/cdn/m" ? new Response(model) : new Response("no", { status: 404 });
  });
  try {
    const env = { HF_ENDPOINT: `http://127.0.0.1:${server.addr.port}`, HOME: "/nonexistent" };
    const first = await run(["distilgpt2", "--dest", dest], env);
    assert.equal(first.code, 0, first.err);
    assert.match(
      first.out,
      /Downloaded config\.json and model\.safetensors of distilbert\/distilgpt2/,
    );
    assert.deepEqual(Deno.readFileSync(join(dest, "model.safetensors")), model);
    const second = await run(["distilgpt2", "--dest", dest], env);
    assert.equal(second.code, 0);
    assert.match(second.out, /already in/);
    const missing = await run(["someone/nothing", "--dest", join(dest, "x")], env);
    assert.equal(missing.code, 1);
    assert.match(
      missing.err,
      /^error: http:\/\/127\.0\.0\.1:\d+\/someone\/nothing\/resolve\/main\/config\.json: HTTP 404/,
    );
  } finally {
    await server.shutdown();
    await Deno.remove(dest, { recursive: true });
  }
});

Deno.test("cli/download: a bad flag exits 2 without a stack trace", async () => {
  const { code, stderr: text } = await runScript("cli/download.ts", "--nope");
  assert.equal(code, 2, text);
  assert.match(text, /error: .*--nope/);
  assert.doesNotMatch(text, /^\s+at /m);
});
