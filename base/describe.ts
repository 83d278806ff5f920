/**
 * Short, safe descriptions of untrusted values for error messages: a value read from a file
 * (or passed through the API) is echoed as JSON-like text cut to about 80 characters, so a
 * malformed input never makes a huge message, and describing a BigInt, a circular object or
 * an array nested a million deep never throws.
 *
 * @module
 */

/** Characters an echoed value keeps before it is cut with "…". */
export const ECHO_LIMIT = 80;

/** `text`, cut to `max` characters (the last one "…") when longer. */
export function clip(text: string, max: number = ECHO_LIMIT): string {
  if (text.length <= max) return text;
  let end = max - 1;
  // Do not leave half of a surrogate pair before the ellipsis.
  const last = text.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return `${text.slice(0, end)}…`;
}

/**
 * `value` as JSON-like text of at most `max` characters: strings quoted, BigInts as `12n`,
 * non-finite numbers by name, functions and symbols by kind, a repeated object as
 * `[circular]`. Only as much of the value is visited as fits, so the cost is bounded too.
 */
export function describe(value: unknown, max: number = ECHO_LIMIT): string {
  const out: string[] = [];
  let length = 0;
  const seen = new Set<object>();
  // Appends text; false once the budget is spent (the caller then stops visiting).
  const put = (text: string): boolean => {
    out.push(text);
    length += text.length;
    return length <= max;
  };
  const visit = (v: unknown): boolean => {
    switch (typeof v) {
      case "string":
        return put(JSON.stringify(clip(v, max)));
      case "number":
        return put(String(v)); // NaN, Infinity and -Infinity by name
      case "bigint":
        return put(`${clip(String(v), max)}n`);
      case "boolean":
        return put(String(v));
      case "undefined":
        return put("undefined");
      case "symbol":
        return put(clip(String(v), max));
      case "function":
        return put("[function]");
    }
    if (v === null) return put("null");
    const obj = v as object;
    if (seen.has(obj)) return put("[circular]");
    seen.add(obj);
    if (Array.isArray(obj)) {
      if (!put("[")) return false;
      for (let i = 0; i < obj.length; i++) {
        if ((i > 0 && !put(",")) || !visit(obj[i])) return false;
      }
      return put("]");
    }
    if (ArrayBuffer.isView(obj)) return put(`[${obj.constructor.name}]`);
    if (!put("{")) return false;
    let first = true;
    for (const key of Object.keys(obj)) {
      if (!first && !put(",")) return false;
      first = false;
      if (!put(`${JSON.stringify(clip(key, max))}:`)) return false;
      let item: unknown;
      try {
        item = (obj as Record<string, unknown>)[key];
      } catch {
        item = "[getter threw]";
      }
      if (!visit(item)) return false;
    }
    return put("}");
  };
  try {
    visit(value);
  } catch {
    put("[unprintable]"); // e.g. a Proxy whose traps throw
  }
  return clip(out.join(""), max);
}
