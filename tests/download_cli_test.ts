/** `deno task download`: its usage errors (spawned, as typed) and a download from a local hub. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { download } from "../cli/download.ts";
import { assertUsageError, needs, runScript } from "./helpers.ts";

function downloadCli(...args: string[]) {
  return runScript("cli/download.ts", ...args);
}

Deno.test(
  "cli/download: bad arguments exit 2 with one line naming them",
  needs("run", "read"),
  async () => {
    const cases: [string[], RegExp][] = [
      [["--bogus"], /^download: --bogus: unknown option/],
      [["gpt3"], /unknown checkpoint name "gpt3"/],
      [["gpt2", "gpt2-xl"], /expected one checkpoint name, got "gpt2 gpt2-xl"/],
      [["--dest"], /--dest: needs a value/],
      [["--revision", ""], /--revision: must not be empty/],
    ];
    for (const [args, pattern] of cases) {
      assertUsageError(await downloadCli(...args), "download", pattern);
    }
  },
);

Deno.test("cli/download: --help prints the usage", needs("run", "read"), async () => {
  const r = await downloadCli("--help");
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^usage: deno task download/);
  assert.match(r.stdout, /--revision REV/);
  assert.match(r.stdout, /distilgpt2/);
});

Deno.test(
  "cli/download: downloads through HF_ENDPOINT, then reports it is there",
  needs("read", "write", "net"),
  async () => {
    const config = Deno.readFileSync("data/tiny-gpt2/config.json");
    const dest = await Deno.makeTempDir({ prefix: "kvgpt_cli_test_" });
    const model = new Uint8Array(3000).map((_, i) => i);
    const sha = Array.from(
      new Uint8Array(await crypto.subtle.digest("SHA-256", model)),
      (b) => b.toString(16).padStart(2, "0"),
    ).join("");
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
      const path = new URL(req.url).pathname.replace("/distilbert/distilgpt2/resolve/main/", "/");
      if (path === "/config.json") return new Response(config, { headers: { etag: '"1"' } });
      if (path === "/model.safetensors") {
        const headers = {
          location: "/cdn/m",
          "x-linked-etag": `"${sha}"`,
          "x-linked-size": "3000",
        };
        return new Response(null, { status: 302, headers });
      }
      return path === "/cdn/m" ? new Response(model) : new Response("no", { status: 404 });
    });
    const env = { HF_ENDPOINT: `http://127.0.0.1:${server.addr.port}`, HOME: "/nonexistent" };
    const run = async (args: string[]) => {
      const out: string[] = [];
      await download(args, { env, log: (l) => out.push(l), error: () => {} });
      return out.join("\n");
    };
    try {
      const first = await run(["distilgpt2", "--dest", dest]);
      assert.match(
        first,
        /Downloaded config\.json and model\.safetensors of distilbert\/distilgpt2/,
      );
      assert.deepEqual(Deno.readFileSync(join(dest, "model.safetensors")), model);
      assert.match(await run(["distilgpt2", "--dest", dest]), /already in/);
      await assert.rejects(
        run(["someone/nothing", "--dest", join(dest, "x")]),
        /^Error: http:\/\/127\.0\.0\.1:\d+\/someone\/nothing\/resolve\/main\/config\.json: HTTP 404/,
      );
    } finally {
      await server.shutdown();
      await Deno.remove(dest, { recursive: true });
    }
  },
);
