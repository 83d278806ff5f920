/**
 * The house as drawn: imports run one way, no file grows past 700 lines, and the README's map
 * names every file it should.
 *
 * Levels, lowest first (a file may import its own folder and any lower level, nothing else):
 *
 * | level | folders                    |                                                       |
 * | ----- | -------------------------- | ----------------------------------------------------- |
 * | 0     | `base/`                    | Rng, error text, maxAbsDiff, files (the one source of bytes) |
 * | 1     | `kernels/`, `io/`, `tokenizers/` | each imports only base/ (io/ never kernels/) |
 * | 2     | `model/`                   |                                                       |
 * | 3     | `run/`, `train/`           | neither imports the other                             |
 * | 4     | `cli/`, `scripts/`, `mod.ts` |                                                     |
 * | 5     | `experiments/`, `lab/`     | programs built on mod.ts (and cli/'s usage);          |
 * |       |                            | lab/ is the browser page that cli/lab.ts bundles      |
 *
 * Folders of one level never import each other, so no circle spans two folders; a circle
 * inside one folder is looked for file by file. tests/ may import anything; data/ holds no
 * code (an experiment may import its text).
 *
 * @module
 */
import assert from "node:assert/strict";
import { dirname, join, normalize, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { needs } from "./helpers.ts";

const ROOT = normalize(join(dirname(fileURLToPath(import.meta.url)), ".."));

/** Each code folder's level; a file at the top (mod.ts) counts as level 4. */
export const LEVELS: Readonly<Record<string, number>> = {
  base: 0,
  kernels: 1,
  io: 1,
  tokenizers: 1,
  model: 2,
  run: 3,
  train: 3,
  cli: 4,
  scripts: 4,
  ".": 4,
  experiments: 5,
  lab: 5,
};

/** Folders the checks below leave alone. */
const SKIP = new Set([".git", ".ci", "node_modules", "results", "out", "data", "tests", "docs"]);

/** Every file under the repository's code folders (and at its top), relative to it. */
function codeFiles(dir = ROOT): string[] {
  const out: string[] = [];
  for (const entry of Deno.readDirSync(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) {
      if (!SKIP.has(entry.name)) out.push(...codeFiles(path));
    } else if (entry.isFile) {
      out.push(relative(ROOT, path));
    }
  }
  return out.sort();
}

/** The relative imports of a TypeScript file (static, re-exports and dynamic), resolved. */
function importsOf(file: string): string[] {
  const text = Deno.readTextFileSync(join(ROOT, file));
  const specifiers = [
    ...text.matchAll(/^\s*(?:import|export)\b[^;]*?\bfrom\s+"(\.[^"]+)"/gm),
    ...text.matchAll(/\bimport\(\s*"(\.[^"]+)"\s*\)/g),
    ...text.matchAll(/^\s*import\s+"(\.[^"]+)"/gm),
  ].map((m) => m[1]);
  return specifiers.map((s) => normalize(join(dirname(file), s)));
}

/** The folder a file's level comes from: its first path part, or "." at the top. */
function folderOf(file: string): string {
  const parts = file.split("/");
  return parts.length === 1 ? "." : parts[0];
}

/** Every import that runs against the levels, as "from -> to (why)". */
export function wrongWays(graph: ReadonlyMap<string, readonly string[]>): string[] {
  const wrong: string[] = [];
  for (const [from, targets] of graph) {
    const a = folderOf(from);
    for (const to of targets) {
      const b = folderOf(to);
      if (b === "data" || (a === b && a !== ".")) continue;
      const la = LEVELS[a];
      const lb = LEVELS[b];
      if (la === undefined) wrong.push(`${from} -> ${to} (${a}/ has no level)`);
      else if (lb === undefined) wrong.push(`${from} -> ${to} (${b}/ has no level)`);
      else if (lb >= la) wrong.push(`${from} -> ${to} (level ${la} imports level ${lb})`);
    }
  }
  return wrong;
}

/** Every circle of imports, each as "a -> b -> … -> a" (one per circle found). */
export function circles(graph: ReadonlyMap<string, readonly string[]>): string[] {
  const found: string[] = [];
  const state = new Map<string, "open" | "done">();
  const path: string[] = [];
  const visit = (file: string) => {
    state.set(file, "open");
    path.push(file);
    for (const next of graph.get(file) ?? []) {
      if (state.get(next) === "open") {
        found.push([...path.slice(path.indexOf(next)), next].join(" -> "));
      } else if (!state.has(next)) {
        visit(next);
      }
    }
    path.pop();
    state.set(file, "done");
  };
  for (const file of graph.keys()) if (!state.has(file)) visit(file);
  return found;
}

function importGraph(): Map<string, string[]> {
  return new Map(codeFiles().filter((f) => f.endsWith(".ts")).map((f) => [f, importsOf(f)]));
}

Deno.test("the import checks catch an upward import, a same-level import and a circle", () => {
  const graph = new Map([
    ["model/a.ts", ["run/b.ts"]],
    ["run/b.ts", ["train/c.ts", "model/a.ts"]],
    ["train/c.ts", ["base/d.ts"]],
    ["io/e.ts", ["kernels/f.ts"]],
    ["kernels/f.ts", ["kernels/g.ts"]],
    ["kernels/g.ts", ["kernels/f.ts"]],
  ]);
  assert.deepEqual(wrongWays(graph), [
    "model/a.ts -> run/b.ts (level 2 imports level 3)",
    "run/b.ts -> train/c.ts (level 3 imports level 3)",
    "io/e.ts -> kernels/f.ts (level 1 imports level 1)",
  ]);
  assert.deepEqual(circles(graph), [
    "model/a.ts -> run/b.ts -> model/a.ts",
    "kernels/f.ts -> kernels/g.ts -> kernels/f.ts",
  ]);
});

Deno.test("imports run one way: no import runs up or across a level", needs("read"), () => {
  assert.deepEqual(wrongWays(importGraph()), []);
});

Deno.test("no import circle", needs("read"), () => {
  assert.deepEqual(circles(importGraph()), []);
});

Deno.test("no file outside tests/ and data/ is over 700 lines", needs("read"), () => {
  const long = codeFiles()
    .filter((f) => !f.endsWith(".lock") && !f.endsWith(".svg"))
    .map((f) => [f, Deno.readTextFileSync(join(ROOT, f)).split("\n").length - 1] as const)
    .filter(([, lines]) => lines > 700)
    .map(([f, lines]) => `${f}: ${lines} lines`);
  assert.deepEqual(long, []);
});

Deno.test(
  "the README's map names every code file, and every file it names exists",
  needs("read"),
  () => {
    const readme = Deno.readTextFileSync(join(ROOT, "README.md"));
    const start = readme.indexOf("## What is where");
    const table = readme.slice(start, readme.indexOf("\n## ", start + 1));
    const rows = new Map<string, string>();
    for (const [, path, what] of table.matchAll(/^\| `([^`]+)`\s*\|(.*)\|$/gm)) {
      rows.set(path.replace(/\/$/, ""), what);
    }
    const problems: string[] = [];
    const files = codeFiles();
    for (const folder of new Set(files.map(folderOf))) {
      if (folder !== "." && !rows.has(folder)) problems.push(`${folder}/ has no row`);
    }
    for (const file of files) {
      const folder = folderOf(file);
      if (folder === ".") continue;
      const row = rows.get(folder) ?? "";
      const inFolder = file.slice(folder.length + 1);
      const stem = inFolder.replace(/\.[^./]+$/, "");
      // A file is named by its path in the folder, or (kernels) by its family's name.
      if (!row.includes(`\`${inFolder}\``) && !row.includes(`\`${stem}\``)) {
        problems.push(`${file} is not in the ${folder}/ row`);
      }
    }
    const isFile = (path: string) => {
      try {
        return Deno.statSync(join(ROOT, path)).isFile;
      } catch {
        return false;
      }
    };
    for (const [folder, row] of rows) {
      if (isFile(folder)) continue; // mod.ts, BENCHMARKS.md
      for (const [, name] of row.matchAll(/`([\w./-]+\.(?:ts|wgsl|py|md))`/g)) {
        // A name is the folder's own file, a path from the top, or (the tests/ row, which says
        // which tests cover which modules) a file of another folder; NAME is a placeholder.
        const found = isFile(join(folder, name)) || isFile(name) || name.startsWith("NAME") ||
          (folder === "tests" && files.some((f) => f.endsWith(`/${name}`)));
        if (!found) problems.push(`the ${folder}/ row names ${name}, which is not there`);
      }
    }
    assert.deepEqual(problems, []);
  },
);
