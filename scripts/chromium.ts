/**
 * Headless Chromium driven over the DevTools protocol with Deno's own WebSocket (no npm
 * driver): used by the lab's browser test and to take the lab's screenshot. Chromium runs
 * WebGPU compute on SwiftShader with the flags below.
 *
 * @module
 */

/** The browser binary: $CHROMIUM, else the first of chromium, chromium-browser on PATH. */
export function findChromium(): string | null {
  const named = Deno.env.get("CHROMIUM");
  if (named) return named;
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    for (const name of ["chromium", "chromium-browser"]) {
      try {
        if (Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
      } catch {
        // not here
      }
    }
  }
  return null;
}

/** A page of a running headless Chromium. */
export class Browser {
  #process: Deno.ChildProcess;
  #profile: string;
  #socket: WebSocket;
  #nextId = 1;
  #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  private constructor(process: Deno.ChildProcess, profile: string, socket: WebSocket) {
    this.#process = process;
    this.#profile = profile;
    this.#socket = socket;
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      const waiting = this.#pending.get(message.id);
      if (!waiting) return;
      this.#pending.delete(message.id);
      if (message.error) waiting.reject(new Error(`DevTools: ${message.error.message}`));
      else waiting.resolve(message.result);
    };
    socket.onclose = () => {
      for (const waiting of this.#pending.values()) {
        waiting.reject(new Error("Chromium closed the DevTools connection"));
      }
      this.#pending.clear();
    };
  }

  /**
   * Starts headless Chromium with WebGPU on SwiftShader and attaches to its first page.
   * `width`×`height` is the window (the screenshot's size); `webgpu: false` leaves WebGPU
   * off (a browser without it).
   */
  static async launch(
    binary: string,
    width = 1280,
    height = 1000,
    webgpu = true,
  ): Promise<Browser> {
    const profile = await Deno.makeTempDir({ prefix: "kvgpt-chromium-" });
    const process = new Deno.Command(binary, {
      args: [
        "--headless=new",
        "--no-sandbox",
        ...(webgpu
          ? [
            "--enable-unsafe-webgpu",
            "--enable-features=Vulkan",
            "--use-vulkan=swiftshader",
            "--use-webgpu-adapter=swiftshader",
          ]
          : ["--disable-features=WebGPU,Vulkan", "--disable-gpu"]),
        "--remote-debugging-port=0",
        `--user-data-dir=${profile}`,
        `--window-size=${width},${height}`,
        "about:blank",
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      const port = await devToolsPort(profile);
      const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
      const page = targets.find((t: { type: string }) => t.type === "page");
      if (!page) throw new Error("Chromium opened no page");
      const socket = new WebSocket(page.webSocketDebuggerUrl);
      await new Promise((resolve, reject) => {
        socket.onopen = resolve;
        socket.onerror = () => reject(new Error("cannot connect to Chromium's DevTools"));
      });
      return new Browser(process, profile, socket);
    } catch (e) {
      process.kill("SIGKILL");
      await process.status;
      await Deno.remove(profile, { recursive: true }).catch(() => {});
      throw e;
    }
  }

  /** Sends one DevTools command and waits for its result. */
  send(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    if (this.#socket.readyState !== WebSocket.OPEN) {
      return Promise.reject(new Error("Chromium's DevTools connection is closed"));
    }
    const id = this.#nextId++;
    this.#socket.send(JSON.stringify({ id, method, params }));
    return new Promise((resolve, reject) => this.#pending.set(id, { resolve, reject }));
  }

  /** Opens `url` in the page. */
  async open(url: string): Promise<void> {
    await this.send("Page.navigate", { url });
  }

  /** The value of a JavaScript expression in the page (JSON-serializable values). */
  async evaluate(expression: string): Promise<unknown> {
    const result = await this.send("Runtime.evaluate", { expression, returnByValue: true }) as {
      result: { value?: unknown };
      exceptionDetails?: { text: string };
    };
    if (result.exceptionDetails) throw new Error(`page: ${result.exceptionDetails.text}`);
    return result.result.value;
  }

  /**
   * Polls `expression` every 250 ms until it is truthy, and returns it; throws after
   * `timeoutMs` with `what` in the message.
   */
  async waitFor(expression: string, timeoutMs: number, what: string): Promise<unknown> {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      const value = await this.evaluate(expression).catch((e: Error) => {
        if (/DevTools connection/.test(e.message)) throw e;
        return undefined; // the page is between documents
      });
      if (value) return value;
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
  }

  /** A PNG of the page as it is now. */
  async screenshot(): Promise<Uint8Array> {
    const { data } = await this.send("Page.captureScreenshot", { format: "png" }) as {
      data: string;
    };
    return Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  }

  /**
   * Closes the browser (SIGTERM lets Chromium end its helper processes; SIGKILL after 5 s)
   * and removes its profile.
   */
  async close(): Promise<void> {
    try {
      this.#socket.close();
    } catch {
      // already closed
    }
    const stop = (signal: Deno.Signal) => {
      try {
        this.#process.kill(signal);
      } catch {
        // already gone
      }
    };
    stop("SIGTERM");
    const timer = setTimeout(() => stop("SIGKILL"), 5000);
    await this.#process.status;
    clearTimeout(timer);
    // Helper processes may still be writing into the profile for a moment.
    for (let i = 0; i < 20; i++) {
      try {
        await Deno.remove(this.#profile, { recursive: true });
        return;
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }
}

/** Waits for Chromium to write the DevTools port into its profile folder. */
async function devToolsPort(profile: string): Promise<number> {
  for (let i = 0; i < 200; i++) {
    try {
      const text = await Deno.readTextFile(`${profile}/DevToolsActivePort`);
      const port = Number(text.split("\n")[0]);
      if (port > 0) return port;
    } catch {
      // not yet written
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("Chromium wrote no DevToolsActivePort within 20 s");
}
