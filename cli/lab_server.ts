/**
 * What the lab server (cli/lab.ts) answers, and nothing more: the page, its bundle, the list
 * of checkpoint folders it offers, and read-only a few named files of those folders. The rules
 * that keep it local are here, so that tests can check them without a browser:
 *
 * - a request whose `Host` is not `127.0.0.1:PORT` or `localhost:PORT` is refused (403), so a
 *   web page elsewhere cannot reach the lab through DNS rebinding;
 * - a path that is not exactly `/<folder>/<file>` of an offered folder and an offered file
 *   name gets 404 without anything being read: `..`, `.`, encoded slashes, absolute paths and
 *   empty segments never match, and a file whose real path (links followed) leaves its folder
 *   is refused too;
 * - only GET and HEAD are answered.
 *
 * @module
 */

/** The files of a checkpoint folder the lab serves; nothing else in a folder is served. */
export const SERVED_FILES: readonly string[] = [
  "config.json",
  "model.safetensors",
  "vocab.json",
  "reference.json",
  "reference.safetensors",
];

/** A checkpoint folder the lab offers: its name in URLs and where it is on disk. */
export interface OfferedFolder {
  /** The URL path, "/"-separated segments such as "data/shakespeare-char". */
  name: string;
  /** The folder on disk. */
  dir: string;
}

/** What the server serves besides the folders. */
export interface LabContent {
  /** The page (lab/index.html). */
  html: string;
  /** The page's script, bundled. */
  bundle: string;
  /** The offered checkpoint folders. */
  folders: readonly OfferedFolder[];
  /** The folder the page opens first. */
  defaultModel: string;
}

/** True when `host` (a request's `Host` header) is the lab's own address on `port`. */
export function hostAllowed(host: string | null, port: number): boolean {
  return host === `127.0.0.1:${port}` || host === `localhost:${port}`;
}

/**
 * The offered folder and file a URL path names, or null. `pathname` is as the URL parser left
 * it (percent-encoded); each segment is decoded on its own and must be a plain name. A path
 * ending in "/" names the folder itself (its listing): `file` is "".
 */
export function matchPath(
  pathname: string,
  folders: readonly OfferedFolder[],
): { folder: OfferedFolder; file: string } | null {
  if (!pathname.startsWith("/")) return null;
  const raw = pathname.slice(1).split("/");
  const segments: string[] = [];
  for (let i = 0; i < raw.length; i++) {
    let part: string;
    try {
      part = decodeURIComponent(raw[i]);
    } catch {
      return null;
    }
    const last = i === raw.length - 1;
    if (part === "" && last) {
      segments.push("");
      continue;
    }
    if (!/^[\w][\w.-]*$/.test(part) || part.includes("..")) return null;
    segments.push(part);
  }
  const file = segments.pop()!;
  const folder = folders.find((f) => f.name === segments.join("/"));
  if (!folder) return null;
  if (file !== "" && !SERVED_FILES.includes(file)) return null;
  return { folder, file };
}

/**
 * The real path of `dir/file` when it is a regular file inside the real path of `dir` (links
 * followed), else null. A HuggingFace cache snapshot links its files to `../../blobs/…`: for
 * a folder `…/snapshots/<rev>`, the repository folder two levels up counts as inside.
 */
export async function realFileInside(dir: string, file: string): Promise<string | null> {
  try {
    let root = await Deno.realPath(dir);
    if (/\/snapshots\/[^/]+$/.test(root)) root = root.replace(/\/snapshots\/[^/]+$/, "");
    const real = await Deno.realPath(`${dir}/${file}`);
    if (!real.startsWith(root + "/")) return null;
    const info = await Deno.stat(real);
    return info.isFile ? real : null;
  } catch {
    return null;
  }
}

/** The served files present in `dir`, in {@link SERVED_FILES} order. */
async function listing(dir: string): Promise<string[]> {
  const names: string[] = [];
  for (const name of SERVED_FILES) {
    if (await realFileInside(dir, name)) names.push(name);
  }
  return names;
}

const TYPES: Record<string, string> = {
  json: "application/json",
  safetensors: "application/octet-stream",
};

/**
 * The request handler of a lab listening on `port`: the page at `/`, its bundle at
 * `/lab.js`, the offered folders at `/models.json`, and the files of {@link matchPath}.
 */
export function labHandler(
  content: LabContent,
  port: () => number,
): (request: Request) => Promise<Response> {
  return async (request) => {
    const headers = { "cache-control": "no-store", "x-content-type-options": "nosniff" };
    if (!hostAllowed(request.headers.get("host"), port())) {
      return new Response("refused: the lab answers only 127.0.0.1 and localhost\n", {
        status: 403,
        headers,
      });
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response("method not allowed\n", { status: 405, headers });
    }
    const { pathname } = new URL(request.url);
    const body = (text: string, type: string) =>
      new Response(request.method === "HEAD" ? null : text, {
        headers: { ...headers, "content-type": type },
      });
    if (pathname === "/") return body(content.html, "text/html; charset=utf-8");
    if (pathname === "/lab.js") return body(content.bundle, "text/javascript; charset=utf-8");
    if (pathname === "/models.json") {
      const folders = content.folders.map((f) => f.name);
      return body(JSON.stringify({ folders, default: content.defaultModel }), TYPES.json);
    }
    const match = matchPath(pathname, content.folders);
    if (!match) return new Response("not found\n", { status: 404, headers });
    if (match.file === "") {
      const response = body(JSON.stringify(await listing(match.folder.dir)), TYPES.json);
      response.headers.set("x-kvgpt-folder", "1");
      return response;
    }
    const real = await realFileInside(match.folder.dir, match.file);
    if (!real) return new Response("not found\n", { status: 404, headers });
    return await fileResponse(request, real, {
      ...headers,
      "content-type": TYPES[match.file.split(".").pop()!],
    });
  };
}

/** The file at `path`, whole or the one byte range the request asks for. */
async function fileResponse(
  request: Request,
  path: string,
  headers: Record<string, string>,
): Promise<Response> {
  const size = (await Deno.stat(path)).size;
  const range = request.headers.get("range");
  let start = 0;
  let end = size; // exclusive
  let status = 200;
  if (range !== null) {
    const m = range.match(/^bytes=(\d+)-(\d*)$/);
    if (!m || Number(m[1]) >= Math.max(size, 1) || (m[2] && Number(m[2]) < Number(m[1]))) {
      return new Response("bad range\n", {
        status: 416,
        headers: { ...headers, "content-range": `bytes */${size}` },
      });
    }
    start = Number(m[1]);
    end = m[2] ? Math.min(size, Number(m[2]) + 1) : size;
    status = 206;
    headers = { ...headers, "content-range": `bytes ${start}-${end - 1}/${size}` };
  }
  headers = { ...headers, "content-length": String(end - start), "accept-ranges": "bytes" };
  if (request.method === "HEAD") return new Response(null, { status, headers });
  const file = await Deno.open(path, { read: true });
  await file.seek(start, Deno.SeekMode.Start);
  let left = end - start;
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (left <= 0) {
        file.close();
        controller.close();
        return;
      }
      const chunk = new Uint8Array(Math.min(left, 1 << 20));
      const n = await file.read(chunk);
      if (n === null) {
        file.close();
        controller.close();
        return;
      }
      left -= n;
      controller.enqueue(chunk.subarray(0, n));
    },
    cancel() {
      file.close();
    },
  });
  return new Response(stream, { status, headers });
}

/**
 * The checkpoint folders under `data/` (config.json and a model.safetensors), sorted, plus
 * `extra` (a `--model DIR`) when given: one outside `data/` is offered as `model/<name>`.
 */
export async function offeredFolders(extra?: string): Promise<OfferedFolder[]> {
  const folders: OfferedFolder[] = [];
  const isCheckpoint = async (dir: string) =>
    (await realFileInside(dir, "config.json")) !== null &&
    (await realFileInside(dir, "model.safetensors")) !== null;
  try {
    for await (const entry of Deno.readDir("data")) {
      const dir = `data/${entry.name}`;
      if (/^[\w][\w.-]*$/.test(entry.name) && await isCheckpoint(dir)) {
        folders.push({ name: dir, dir });
      }
    }
  } catch {
    // no data/ folder: only --model
  }
  folders.sort((a, b) => a.name.localeCompare(b.name));
  if (extra !== undefined) {
    const clean = extra.replace(/\/+$/, "");
    if (!(await isCheckpoint(clean))) {
      throw new Error(
        `${extra}: not a checkpoint folder (needs config.json and model.safetensors)`,
      );
    }
    if (!folders.some((f) => f.name === clean)) {
      const base = clean.split("/").pop()!.replace(/[^\w.-]/g, "_").replace(/^[^\w]/, "_");
      folders.push({ name: `model/${base}`, dir: clean });
    }
  }
  return folders;
}
