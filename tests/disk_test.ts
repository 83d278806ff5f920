import assert from "node:assert/strict";
import { join } from "node:path";
import {
  fileChunks,
  fileSizeSync,
  makeDirs,
  openForWriting,
  readTextSync,
  removeFile,
  renameFile,
} from "../base/disk.ts";
import { needs } from "./helpers.ts";

Deno.test(
  "disk: write, append, size, chunks, rename and remove",
  needs("read", "write"),
  async () => {
    const dir = await Deno.makeTempDir();
    try {
      const sub = join(dir, "a", "b");
      await makeDirs(sub);
      const path = join(sub, "f.bin");
      assert.equal(fileSizeSync(path), null);
      assert.equal(readTextSync(path), undefined);
      let file = await openForWriting(path, false);
      await file.write(new TextEncoder().encode("hello "));
      file.close();
      file = await openForWriting(path, true);
      await file.write(new TextEncoder().encode("world"));
      file.close();
      assert.equal(fileSizeSync(path), 11);
      assert.equal(readTextSync(path), "hello world");
      const chunks: Uint8Array[] = [];
      for await (const chunk of fileChunks(path)) chunks.push(chunk);
      assert.equal(new TextDecoder().decode(chunks[0]), "hello world");
      file = await openForWriting(path, false); // replaces
      await file.write(new TextEncoder().encode("x"));
      file.close();
      assert.equal(readTextSync(path), "x");
      await renameFile(path, join(sub, "g.bin"));
      assert.equal(fileSizeSync(path), null);
      assert.equal(fileSizeSync(sub), null, "a folder is no file");
      await removeFile(join(sub, "g.bin"));
      assert.equal(fileSizeSync(join(sub, "g.bin")), null);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
