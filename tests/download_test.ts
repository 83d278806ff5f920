/**
 * The downloader against a fake hub on 127.0.0.1 that answers like
 * huggingface.co: config.json directly with a git ETag, model.safetensors
 * as a 302 to a CDN path with X-Linked-Etag / X-Linked-Size, and the CDN
 * with Range support. Nothing here touches the internet.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { downloadCheckpoint, findInHfCache, resolveRepo } from "../io/download.ts";
import { granted, needs } from "./helpers.ts";

const FIXTURE = new URL("../data/tiny-gpt2/", import.meta.url);
// Without read access (plain `deno test`) the fixture stays empty and the tests using it are ignored.
const CONFIG = granted("read")
  ? Deno.readFileSync(new URL("config.json", FIXTURE))
  : new Uint8Array();
const MODEL = granted("read")
  ? Deno.readFileSync(new URL("model.safetensors", FIXTURE))
  : new Uint8Array();
const MODEL_SHA256 = createHash("sha256").update(MODEL).digest("hex");
const CONFIG_GIT_ETAG = "12e0d766107f6dce43fcc8bbd3497e72c1295927";
const REPO = "openai-community/gpt2";

interface Seen {
  method: string;
  path: string;
  range: string | null;
  authorization: string | null;
}

interface HubOptions {
  /** Cut off this many CDN transfers halfway (closing the connection) before serving whole ones. */
  cutTransfers?: number;
  /** Serve model bytes with one byte flipped. */
  corrupt?: boolean;
  /** Answer every CDN request with 200 and the whole file, ignoring Range. */
  ignoreRange?: boolean;
  /** Redirect model.safetensors to the CDN of this origin instead of our own. */
  cdnOrigin?: string;
}

interface Hub {
  endpoint: string;
  seen: Seen[];
}

/** Runs `fn` against a fake hub, then shuts the hub down. */
async function withHub(opts: HubOptions, fn: (hub: Hub) => Promise<void>): Promise<void> {
  const seen: Seen[] = [];
  let cutsLeft = opts.cutTransfers ?? 0;
  const served = opts.corrupt ? MODEL.slice() : MODEL;
  if (opts.corrupt) served[served.length >> 1] ^= 0xff;

  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const url = new URL(req.url);
    const range = req.headers.get("range");
    seen.push({
      method: req.method,
      path: url.pathname,
      range,
      authorization: req.headers.get("authorization"),
    });
    if (url.pathname.startsWith("/old-owner/gpt2/")) {
      // A renamed repo: the hub answers with a relative, non-LFS redirect.
      const location = url.pathname.replace("/old-owner/gpt2/", `/${REPO}/`);
      return new Response(null, { status: 307, headers: { location } });
    }
    switch (url.pathname) {
      case `/${REPO}/resolve/main/config.json`:
        return new Response(CONFIG, {
          headers: { etag: `"${CONFIG_GIT_ETAG}"`, "content-type": "application/json" },
        });
      case `/${REPO}/resolve/main/model.safetensors`:
        return new Response(null, {
          status: 302,
          headers: {
            location: `${opts.cdnOrigin ?? url.origin}/cdn/${MODEL_SHA256}?signature=abc`,
            "x-linked-etag": `"${MODEL_SHA256}"`,
            "x-linked-size": String(MODEL.length),
            etag: `"${MODEL_SHA256}"`,
          },
        });
      case `/cdn/${MODEL_SHA256}`: {
        const cut = req.method === "GET" && cutsLeft > 0;
        if (cut) cutsLeft--;
        return serveBytes(served, opts.ignoreRange ? null : range, cut);
      }
      default:
        return new Response("Entry not found", {
          status: 404,
          headers: { "x-error-code": "EntryNotFound", "x-error-message": "Entry not found" },
        });
    }
  });
  try {
    await fn({ endpoint: `http://127.0.0.1:${server.addr.port}`, seen });
  } finally {
    await server.shutdown();
  }
}

/** The bytes from an optional `bytes=N-` range; `cut` sends half of them and hangs up. */
function serveBytes(bytes: Uint8Array<ArrayBuffer>, range: string | null, cut: boolean): Response {
  const start = Number(/^bytes=(\d+)-$/.exec(range ?? "")?.[1] ?? 0);
  if (start >= bytes.length) {
    return new Response(null, {
      status: 416,
      headers: { "content-range": `bytes */${bytes.length}` },
    });
  }
  const body = bytes.subarray(start);
  const headers: Record<string, string> = {
    "content-length": String(body.length),
    "accept-ranges": "bytes",
  };
  if (range) headers["content-range"] = `bytes ${start}-${bytes.length - 1}/${bytes.length}`;
  const status = range ? 206 : 200;
  if (!cut) return new Response(body, { status, headers });
  // Declared length, half the bytes, then the end of the stream: the client sees a cut connection.
  const half = body.subarray(0, body.length >> 1);
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      for (let i = 0; i < half.length; i += 65536) controller.enqueue(half.slice(i, i + 65536));
      controller.close();
    },
  });
  return new Response(stream, { status, headers });
}

/** Runs `fn` with a fresh temporary folder, removed afterwards. */
async function withTempDir(fn: (dir: string) => void | Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "kvgpt_download_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** An abort signal that fires after `ms`, so a stuck test fails instead of hanging. */
function deadline(ms: number): AbortSignal & Disposable {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new Error(`test took over ${ms} ms`)), ms);
  return Object.assign(controller.signal, { [Symbol.dispose]: () => clearTimeout(timer) });
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Environment without HF_* variables from the machine running the tests. */
const EMPTY_ENV = { HOME: "/nonexistent-home-for-tests" };

Deno.test("resolveRepo: short names, full ids, and bad names", () => {
  assert.equal(resolveRepo("gpt2"), "openai-community/gpt2");
  assert.equal(resolveRepo("gpt2-medium"), "openai-community/gpt2-medium");
  assert.equal(resolveRepo("gpt2-large"), "openai-community/gpt2-large");
  assert.equal(resolveRepo("gpt2-xl"), "openai-community/gpt2-xl");
  assert.equal(resolveRepo("distilgpt2"), "distilbert/distilgpt2");
  assert.equal(resolveRepo("sshleifer/tiny-gpt2"), "sshleifer/tiny-gpt2");
  for (const bad of ["gpt3", "", "a/b/c", "../etc", "owner/..", "/gpt2", "toString"]) {
    assert.throws(
      () => resolveRepo(bad),
      new RegExp(`unknown checkpoint name ${JSON.stringify(bad)}`),
    );
  }
  // Error messages never echo unbounded input: a long name is cut.
  assert.throws(() => resolveRepo("x".repeat(1e5)), (err: Error) => err.message.length <= 300);
  assert.throws(() => resolveRepo(42 as unknown as string), /unknown checkpoint name 42/);
});

Deno.test(
  "downloadCheckpoint: fetches both files, byte for byte",
  needs("read", "write", "net"),
  async () => {
    using signal = deadline(20_000);
    await withTempDir(async (dir) => {
      await withHub({}, async ({ endpoint, seen }) => {
        const calls: [string, number, number][] = [];
        const dest = join(dir, "gpt2");
        const result = await downloadCheckpoint("gpt2", {
          dest,
          endpoint,
          env: EMPTY_ENV,
          signal,
          progress: (file, done, total) => calls.push([file, done, total]),
        });
        assert.deepEqual(result, {
          dir: dest,
          fromCache: false,
          downloaded: ["config.json", "model.safetensors"],
        });
        assert.deepEqual(Deno.readFileSync(join(dest, "config.json")), CONFIG);
        assert.deepEqual(Deno.readFileSync(join(dest, "model.safetensors")), MODEL);
        assert.deepEqual(Deno.readDirSync(dest).map((e) => e.name).toArray().sort(), [
          "config.json",
          "model.safetensors",
        ]);
        assert.deepEqual(seen.map((s) => `${s.method} ${s.path.split("/").pop()}`), [
          "HEAD config.json",
          "GET config.json",
          "HEAD model.safetensors",
          `GET ${MODEL_SHA256}`,
        ]);
        assert.ok(seen.every((s) => s.range === null && s.authorization === null));
        assert.deepEqual(calls.at(-1), ["model.safetensors", MODEL.length, MODEL.length]);
        assert.ok(calls.some(([file]) => file === "config.json"));

        const again = await downloadCheckpoint("gpt2", { dest, endpoint, env: EMPTY_ENV, signal });
        assert.deepEqual(again, { dir: dest, fromCache: false, downloaded: [] });
        assert.equal(seen.length, 4, "files already in dest are not fetched again");
      });
    });
  },
);

Deno.test(
  "downloadCheckpoint: resumes a cut-off transfer with a Range request",
  needs("read", "write", "net"),
  async () => {
    using signal = deadline(20_000);
    await withTempDir(async (dest) => {
      await withHub({ cutTransfers: 1 }, async ({ endpoint, seen }) => {
        const opts = { dest, endpoint, env: EMPTY_ENV, signal };
        await assert.rejects(downloadCheckpoint("gpt2", opts), (e: Error) => {
          assert.match(e.message, /interrupted at \d+ of \d+ bytes/);
          assert.match(e.message, /run again to resume/);
          assert.ok(e.message.includes(`${endpoint}/cdn/${MODEL_SHA256}`), e.message);
          return true;
        });
        const part = join(dest, "model.safetensors.incomplete");
        assert.ok(!exists(join(dest, "model.safetensors")), "no final file after a cut");
        assert.ok(exists(join(dest, "config.json")), "config.json finished before the cut");
        const partSize = Deno.statSync(part).size;
        assert.ok(partSize > 0 && partSize <= MODEL.length / 2, `part has ${partSize} bytes`);

        const result = await downloadCheckpoint("gpt2", opts);
        assert.deepEqual(result.downloaded, ["model.safetensors"]);
        const gets = seen.filter((s) => s.method === "GET" && s.path.startsWith("/cdn/"));
        assert.deepEqual(gets.map((s) => s.range), [null, `bytes=${partSize}-`]);
        assert.deepEqual(Deno.readFileSync(join(dest, "model.safetensors")), MODEL);
        assert.ok(!exists(part));
      });
    });
  },
);

Deno.test(
  "downloadCheckpoint: restarts when the server ignores Range",
  needs("read", "write", "net"),
  async () => {
    using signal = deadline(20_000);
    await withTempDir(async (dest) => {
      await withHub({ ignoreRange: true }, async ({ endpoint, seen }) => {
        const part = join(dest, "model.safetensors.incomplete");
        Deno.writeFileSync(part, new Uint8Array(1000).fill(0xaa)); // wrong bytes, must be replaced
        await downloadCheckpoint("gpt2", { dest, endpoint, env: EMPTY_ENV, signal });
        assert.deepEqual(Deno.readFileSync(join(dest, "model.safetensors")), MODEL);
        assert.ok(!exists(part));
        assert.ok(seen.some((s) => s.range === "bytes=1000-"), "a Range was asked for");
      });
    });
  },
);

Deno.test(
  "downloadCheckpoint: drops a part file larger than the file",
  needs("read", "write", "net"),
  async () => {
    using signal = deadline(20_000);
    await withTempDir(async (dest) => {
      await withHub({}, async ({ endpoint }) => {
        const part = join(dest, "model.safetensors.incomplete");
        Deno.writeFileSync(part, new Uint8Array(MODEL.length + 10));
        await downloadCheckpoint("gpt2", { dest, endpoint, env: EMPTY_ENV, signal });
        assert.deepEqual(Deno.readFileSync(join(dest, "model.safetensors")), MODEL);
      });
    });
  },
);

Deno.test(
  "downloadCheckpoint: a corrupted download fails on sha256 and leaves nothing",
  needs("read", "write", "net"),
  async () => {
    using signal = deadline(20_000);
    await withTempDir(async (dest) => {
      await withHub({ corrupt: true }, async ({ endpoint }) => {
        await assert.rejects(
          downloadCheckpoint("gpt2", { dest, endpoint, env: EMPTY_ENV, signal }),
          (e: Error) => {
            assert.match(e.message, /sha256 mismatch for model\.safetensors/);
            assert.ok(e.message.includes(`expected ${MODEL_SHA256}`), e.message);
            assert.match(e.message, /got [0-9a-f]{64}/);
            return true;
          },
        );
        assert.ok(!exists(join(dest, "model.safetensors")));
        assert.ok(!exists(join(dest, "model.safetensors.incomplete")));
      });
    });
  },
);

Deno.test(
  "downloadCheckpoint: a complete but corrupt part file is caught too",
  needs("read", "write", "net"),
  async () => {
    using signal = deadline(20_000);
    await withTempDir(async (dest) => {
      await withHub({}, async ({ endpoint, seen }) => {
        const bad = MODEL.slice();
        bad[0] ^= 1;
        Deno.writeFileSync(join(dest, "model.safetensors.incomplete"), bad);
        await assert.rejects(
          downloadCheckpoint("gpt2", { dest, endpoint, env: EMPTY_ENV, signal }),
          /sha256 mismatch/,
        );
        assert.ok(!seen.some((s) => s.path.startsWith("/cdn/")), "nothing left to fetch");
        assert.ok(!exists(join(dest, "model.safetensors.incomplete")));
        await downloadCheckpoint("gpt2", { dest, endpoint, env: EMPTY_ENV, signal });
        assert.deepEqual(Deno.readFileSync(join(dest, "model.safetensors")), MODEL);
      });
    });
  },
);

/** Builds a Hugging Face cache entry like huggingface_hub's, with snapshot symlinks into blobs/. */
function fakeHfCache(hub: string, repo: string, commit: string, files: string[]): string {
  const repoDir = join(hub, `models--${repo.replace("/", "--")}`);
  const snapshot = join(repoDir, "snapshots", commit);
  Deno.mkdirSync(join(repoDir, "refs"), { recursive: true });
  Deno.mkdirSync(join(repoDir, "blobs"), { recursive: true });
  Deno.mkdirSync(snapshot, { recursive: true });
  Deno.writeTextFileSync(join(repoDir, "refs", "main"), commit);
  for (const file of files) {
    const bytes = file === "config.json" ? CONFIG : MODEL;
    const blob = createHash("sha256").update(bytes).digest("hex");
    Deno.writeFileSync(join(repoDir, "blobs", blob), bytes);
    Deno.symlinkSync(join("..", "..", "blobs", blob), join(snapshot, file));
  }
  return snapshot;
}

Deno.test(
  "downloadCheckpoint: reuses the Hugging Face cache without a request",
  needs("read", "write", "net"),
  async () => {
    using signal = deadline(20_000);
    await withTempDir(async (dir) => {
      const hfHome = join(dir, "hf");
      const snapshot = fakeHfCache(join(hfHome, "hub"), REPO, "abc", [
        "config.json",
        "model.safetensors",
      ]);
      await withHub({}, async ({ endpoint, seen }) => {
        const dest = join(dir, "data", "gpt2");
        const result = await downloadCheckpoint("gpt2", {
          dest,
          endpoint,
          env: { HF_HOME: hfHome },
          signal,
        });
        assert.deepEqual(result, { dir: snapshot, fromCache: true, downloaded: [] });
        assert.equal(seen.length, 0);
        assert.ok(!exists(dest), "nothing is copied");
      });
    });
  },
);

Deno.test(
  "findInHfCache: follows refs, needs both files, honours the env",
  needs("read", "write"),
  async () => {
    await withTempDir((dir) => {
      const hub = join(dir, "hub");
      const full = fakeHfCache(hub, REPO, "abc", ["config.json", "model.safetensors"]);
      const commit = "0123456789abcdef0123456789abcdef01234567";
      fakeHfCache(hub, "distilbert/distilgpt2", commit, ["config.json"]);
      assert.equal(findInHfCache(REPO, { HF_HUB_CACHE: hub }), full);
      assert.equal(findInHfCache(REPO, { HF_HOME: dir }), full);
      assert.equal(findInHfCache(REPO, { XDG_CACHE_HOME: dir, HOME: "/x" }), null);
      assert.equal(findInHfCache(REPO, { HOME: join(dir, "home") }), null);
      assert.equal(findInHfCache(REPO, { HF_HUB_CACHE: hub }, "v2"), null, "unknown ref");
      assert.equal(findInHfCache(REPO, { HF_HUB_CACHE: hub }, "abc"), null, "not a commit hash");
      assert.equal(
        findInHfCache("distilbert/distilgpt2", { HF_HUB_CACHE: hub }),
        null,
        "no weights",
      );
      Deno.writeFileSync(join(hub, "models--distilbert--distilgpt2", "blobs", "w"), MODEL);
      const snapshot = join(hub, "models--distilbert--distilgpt2", "snapshots", commit);
      Deno.symlinkSync(join("..", "..", "blobs", "w"), join(snapshot, "model.safetensors"));
      assert.equal(findInHfCache("distilbert/distilgpt2", { HF_HUB_CACHE: hub }, commit), snapshot);
      Deno.removeSync(join(hub, "models--distilbert--distilgpt2", "blobs", "w"));
      assert.equal(
        findInHfCache("distilbert/distilgpt2", { HF_HUB_CACHE: hub }),
        null,
        "a dangling symlink does not count",
      );
      assert.equal(findInHfCache(REPO, {}), null, "no HOME, no cache");
    });
  },
);

Deno.test(
  "downloadCheckpoint: sends HF_TOKEN, the token file, or the token option as Bearer",
  needs("read", "write", "net"),
  async () => {
    using signal = deadline(20_000);
    await withTempDir(async (dir) => {
      const hfHome = join(dir, "hf");
      Deno.mkdirSync(hfHome);
      Deno.writeTextFileSync(join(hfHome, "token"), "hf_from_file\n");
      const cases: [Record<string, string>, string | undefined, string][] = [
        [{ HF_TOKEN: "hf_from_env", HF_HOME: hfHome }, undefined, "Bearer hf_from_env"],
        [{ HF_HOME: hfHome }, undefined, "Bearer hf_from_file"],
        [{ HF_TOKEN: "hf_from_env" }, "hf_from_option", "Bearer hf_from_option"],
      ];
      for (const [i, [env, token, expected]] of cases.entries()) {
        await withHub({}, async ({ endpoint, seen }) => {
          const dest = join(dir, `out${i}`);
          await downloadCheckpoint("gpt2", { dest, endpoint, env, token, signal });
          assert.equal(seen.length, 4);
          for (const s of seen) assert.equal(s.authorization, expected, `${s.method} ${s.path}`);
        });
      }
    });
  },
);

Deno.test(
  "downloadCheckpoint: the token is not sent to a CDN on another origin",
  needs("read", "write", "net"),
  async () => {
    using signal = deadline(20_000);
    await withTempDir(async (dest) => {
      await withHub({}, async (cdn) => {
        await withHub({ cdnOrigin: cdn.endpoint }, async (hub) => {
          await downloadCheckpoint("gpt2", { dest, endpoint: hub.endpoint, token: "hf_x", signal });
          assert.ok(hub.seen.every((s) => s.authorization === "Bearer hf_x"));
          assert.deepEqual(cdn.seen.map((s) => [s.method, s.authorization]), [["GET", null]]);
          assert.deepEqual(Deno.readFileSync(join(dest, "model.safetensors")), MODEL);
        });
      });
    });
  },
);

Deno.test(
  "downloadCheckpoint: follows the redirect of a renamed repo",
  needs("read", "write", "net"),
  async () => {
    using signal = deadline(20_000);
    await withTempDir(async (dest) => {
      await withHub({}, async ({ endpoint, seen }) => {
        await downloadCheckpoint("old-owner/gpt2", { dest, endpoint, env: EMPTY_ENV, signal });
        assert.deepEqual(Deno.readFileSync(join(dest, "model.safetensors")), MODEL);
        assert.deepEqual(Deno.readFileSync(join(dest, "config.json")), CONFIG);
        assert.ok(seen.some((s) => s.path === "/old-owner/gpt2/resolve/main/model.safetensors"));
      });
    });
  },
);

Deno.test(
  "downloadCheckpoint: an abort keeps the part file for later",
  needs("read", "write", "net"),
  async () => {
    using signal = deadline(20_000);
    await withTempDir(async (dest) => {
      await withHub({}, async ({ endpoint }) => {
        const controller = new AbortController();
        const stop = AbortSignal.any([controller.signal, signal]);
        const progress = (file: string, done: number) => {
          if (file === "model.safetensors" && done > 0) {
            controller.abort(new Error("stopped by user"));
          }
        };
        await assert.rejects(
          downloadCheckpoint("gpt2", { dest, endpoint, env: EMPTY_ENV, signal: stop, progress }),
          /stopped by user/,
        );
        assert.ok(!exists(join(dest, "model.safetensors")));
        const partSize = Deno.statSync(join(dest, "model.safetensors.incomplete")).size;
        assert.ok(partSize > 0 && partSize < MODEL.length);
        await downloadCheckpoint("gpt2", { dest, endpoint, env: EMPTY_ENV, signal });
        assert.deepEqual(Deno.readFileSync(join(dest, "model.safetensors")), MODEL);
      });
    });
  },
);

Deno.test(
  "downloadCheckpoint: HF_ENDPOINT and revision shape the URL; 404 names it",
  needs("read", "write", "net"),
  async () => {
    using signal = deadline(20_000);
    await withTempDir(async (dest) => {
      await withHub({}, async ({ endpoint, seen }) => {
        await assert.rejects(
          downloadCheckpoint("gpt2", {
            dest,
            revision: "v1.0",
            env: { HF_ENDPOINT: endpoint },
            signal,
          }),
          (e: Error) => {
            assert.ok(
              e.message.includes(`${endpoint}/${REPO}/resolve/v1.0/config.json`),
              e.message,
            );
            assert.match(e.message, /HTTP 404/);
            return true;
          },
        );
        assert.equal(seen.length, 1);
        assert.deepEqual(Deno.readDirSync(dest).toArray(), [], "nothing is left behind");
      });
    });
  },
);

Deno.test(
  "downloadCheckpoint: a network failure names the URL",
  needs("read", "write", "net"),
  async () => {
    using signal = deadline(20_000);
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    listener.close(); // nothing listens there any more
    await withTempDir(async (dest) => {
      const endpoint = `http://127.0.0.1:${port}`;
      await assert.rejects(
        downloadCheckpoint("gpt2", { dest, endpoint, env: EMPTY_ENV, signal }),
        new RegExp(`could not fetch ${endpoint}/${REPO}/resolve/main/config\\.json`),
      );
    });
  },
);

Deno.test("downloadCheckpoint: an unknown name fails before any request", async () => {
  await assert.rejects(
    downloadCheckpoint("gpt5", { endpoint: "http://127.0.0.1:9", env: EMPTY_ENV }),
    /unknown checkpoint name "gpt5"/,
  );
});
