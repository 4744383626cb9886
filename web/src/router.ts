// A small history router: the path picks the page; links and redirects push or replace state.
import { useEffect, useState } from "preact/hooks";

const listeners = new Set<() => void>();

export function navigate(to: string, replace = false): void {
  if (replace) history.replaceState(null, "", to);
  else history.pushState(null, "", to);
  for (const f of listeners) f();
}

window.addEventListener("popstate", () => {
  for (const f of listeners) f();
});

/** The current path, re-rendering the caller when it (or its query) changes. */
export function usePath(): string {
  const [, setHref] = useState(location.pathname + location.search);
  useEffect(() => {
    const f = () => setHref(location.pathname + location.search);
    listeners.add(f);
    return () => listeners.delete(f);
  }, []);
  return location.pathname;
}

/** One parameter of the current query string. */
export function param(name: string): string {
  return new URLSearchParams(location.search).get(name) ?? "";
}

/** A path with query parameters, leaving out the empty ones. */
export function withQuery(path: string, q: Record<string, string>): string {
  const s = new URLSearchParams(Object.entries(q).filter(([, v]) => v)).toString();
  return s ? `${path}?${s}` : path;
}

/** Follows same-origin links without reloading the page. */
export function onLinkClick(e: MouseEvent): void {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = (e.target as Element | null)?.closest("a");
  if (!a || a.target || a.origin !== location.origin || a.hasAttribute("download")) return;
  e.preventDefault();
  navigate(a.pathname + a.search);
}

/**
 * Reads a secret from the address bar once and takes it out of the address bar and the
 * history, so that it is not left where a screen share, a shoulder or the history shows it.
 */
export function takeSecretParam(name: string): string {
  const url = new URL(location.href);
  const value = url.searchParams.get(name) ?? "";
  if (url.searchParams.has(name)) {
    url.searchParams.delete(name);
    history.replaceState(null, "", url.pathname + url.search);
  }
  return value;
}
