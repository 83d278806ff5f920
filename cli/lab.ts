/**
 * `deno task lab [--port N] [--model DIR]`: serves the KV-cache lab, a page that runs the same
 * GPT-2 modules on the browser's WebGPU, on 127.0.0.1 only, and prints
 * `lab: http://127.0.0.1:PORT/`. The page's script is bundled at start by `deno bundle
 * --platform browser` from lab/page.ts. What is served, and what is refused, is cli/lab_server.ts.
 *
 * @module
 */
import { labHandler, offeredFolders } from "./lab_server.ts";
import { integer, main, parseOptions, UsageError } from "./usage.ts";

const USAGE = [
  "usage: deno task lab [--port N] [--model DIR]",
  "  --port N     port on 127.0.0.1 (default 8000; 0 picks a free one)",
  "  --model DIR  a checkpoint folder to offer besides data/* (opened first)",
  "  -h, --help   this text",
  "Then open the printed address in a browser with WebGPU; /?selftest checks it.",
].join("\n");

/** The repository: the page and its modules are found from here; data/ from the working folder. */
const ROOT = new URL("..", import.meta.url);

/** The page's script: lab/page.ts bundled for the browser (it touches no `Deno.*`). */
async function bundlePage(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "kvgpt-lab-" });
  try {
    const out = `${dir}/lab.js`;
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["bundle", "--quiet", "--platform", "browser", "-o", out, "lab/page.ts"],
      cwd: ROOT,
      stdout: "null",
      stderr: "piped",
    }).output();
    if (code !== 0) {
      throw new Error(`bundling lab/page.ts failed: ${new TextDecoder().decode(stderr).trim()}`);
    }
    return await Deno.readTextFile(out);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

main("lab", async () => {
  const { values } = parseOptions(USAGE, Deno.args, {
    port: { type: "string", default: "8000" },
    model: { type: "string" },
  });
  const port = integer("--port", values.port, 0, 65535);
  if (values.model === "") throw new UsageError(`--model: must not be empty, got ""`);
  const folders = await offeredFolders(values.model);
  if (!folders.length) throw new Error("no checkpoint folder in data/ and no --model to offer");
  const named = values.model && folders.find((f) => f.dir === values.model!.replace(/\/+$/, ""));
  const defaultModel = named
    ? named.name
    : folders.find((f) => f.name === "data/shakespeare-char")?.name ?? folders[0].name;
  const html = await Deno.readTextFile(new URL("lab/index.html", ROOT));
  const bundle = await bundlePage();
  let listening = 0;
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port,
    onListen: ({ port }) => {
      listening = port;
      console.log(`lab: http://127.0.0.1:${port}/`);
    },
  }, labHandler({ html, bundle, folders, defaultModel }, () => listening));
  await server.finished;
});
