import assert from "node:assert/strict";
import {
  baseName,
  dirName,
  exists,
  fetchSource,
  FileNotFound,
  isNotFound,
  joinPath,
  readBytes,
  readDir,
  readText,
  stat,
} from "../base/files.ts";
import { needs } from "./helpers.ts";

Deno.test("joinPath, baseName and dirName work on '/'-separated strings", () => {
  assert.equal(joinPath("data", "tiny-gpt2", "config.json"), "data/tiny-gpt2/config.json");
  assert.equal(joinPath("data/", "/x"), "data/x");
  assert.equal(joinPath("", "a"), "a");
  assert.equal(baseName("data/tiny-gpt2/config.json"), "config.json");
  assert.equal(baseName("data/"), "data");
  assert.equal(dirName("data/tiny-gpt2/config.json"), "data/tiny-gpt2");
  assert.equal(dirName("file"), ".");
  assert.equal(dirName("/file"), "/");
});

Deno.test(
  "disk source: bytes, ranges, progress, limits, folders, missing files",
  needs("read"),
  async () => {
    const whole = await Deno.readFile("data/tiny-gpt2/config.json");
    assert.deepEqual(await readBytes("data/tiny-gpt2/config.json"), whole);
    assert.deepEqual(
      await readBytes("data/tiny-gpt2/config.json", { offset: 3, length: 5 }),
      whole.subarray(3, 8),
    );
    const seen: number[] = [];
    await readBytes("data/tiny-gpt2/config.json", {
      onProgress: (n, total) => seen.push(n, total),
    });
    assert.deepEqual(seen.slice(-2), [whole.length, whole.length]);
    await assert.rejects(
      readBytes("data/tiny-gpt2/config.json", { maxBytes: 10 }),
      /more than the 10/,
    );
    await assert.rejects(readBytes("data/tiny-gpt2"), /not a regular file/);
    await assert.rejects(readBytes("data/nope.json"), FileNotFound);
    assert.ok(isNotFound(await readText("data/nope.json").catch((e) => e)));
    assert.equal(await exists("data/tiny-gpt2"), true);
    assert.equal(await exists("data/nope"), false);
    assert.equal((await stat("data/tiny-gpt2")).isDirectory, true);
    const names = await readDir("data/tiny-gpt2");
    assert.ok(names.includes("config.json") && names.includes("model.safetensors"));
    assert.deepEqual(names, [...names].sort());
  },
);

Deno.test(
  "fetch source: reads files, ranges and folder listings over HTTP",
  needs("net"),
  async () => {
    const files: Record<string, string> = { "m/config.json": '{"a":1}' };
    const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (req) => {
      const path = decodeURIComponent(new URL(req.url).pathname.slice(1));
      if (path === "m/") return Response.json(["config.json"]);
      const text = files[path];
      if (text === undefined) return new Response("no", { status: 404 });
      const range = req.headers.get("range")?.match(/^bytes=(\d+)-(\d*)$/);
      if (range) {
        const end = range[2] ? Number(range[2]) + 1 : text.length;
        return new Response(text.slice(Number(range[1]), end), { status: 206 });
      }
      return new Response(text);
    });
    try {
      const source = fetchSource(`http://127.0.0.1:${server.addr.port}/`);
      const decode = (b: Uint8Array) => new TextDecoder().decode(b);
      assert.equal(decode(await source.readBytes("m/config.json")), '{"a":1}');
      assert.equal(
        decode(await source.readBytes("m/config.json", { offset: 1, length: 3 })),
        '"a"',
      );
      assert.deepEqual(await source.readDir("m"), ["config.json"]);
      await assert.rejects(source.readBytes("m/missing"), FileNotFound);
      await assert.rejects(source.readBytes("m/config.json", { maxBytes: 2 }), /more than the 2/);
      assert.equal((await source.stat("m/config.json")).size, 7);
    } finally {
      await server.shutdown();
    }
  },
);
