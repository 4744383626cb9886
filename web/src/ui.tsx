// Shared pieces of the pages: forms whose fields show the server's field violations, actions
// with one idempotency key per attempt, dialogs, notices and copy buttons.
import type { ComponentChildren, InputHTMLAttributes } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";

import { code, message, newKey, violations, Code, type FieldViolation } from "./api";

export interface Action<A extends unknown[], R> {
  run: (...args: A) => Promise<R | undefined>;
  busy: boolean;
  error: string;
  fields: FieldViolation[];
  code: Code | null;
  reset: () => void;
}

/**
 * An action the user starts: one call at a time (a double click starts it once), an
 * idempotency key that stays the same while the outcome of an attempt is unknown (no answer
 * came back) and is new once the server answered, and the server's refusal kept for display.
 */
export function useAction<A extends unknown[], R>(
  f: (key: string, ...args: A) => Promise<R>,
): Action<A, R> {
  const key = useRef(newKey());
  const running = useRef(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const [fields, setFields] = useState<FieldViolation[]>([]);
  const [failed, setFailed] = useState<Code | null>(null);
  const reset = () => {
    setError("");
    setFields([]);
    setFailed(null);
  };
  const run = async (...args: A) => {
    if (running.current) return undefined;
    running.current = true;
    setBusy(true);
    reset();
    try {
      const r = await f(key.current, ...args);
      key.current = newKey();
      return r;
    } catch (e) {
      // The server answered: the next attempt (corrected, say) is a new call with a new key.
      // Without an answer the outcome is unknown, and a retry must reuse the key.
      const c = code(e);
      if (c !== Code.Unavailable && c !== Code.DeadlineExceeded && c !== Code.Unknown && c !== Code.Canceled) {
        key.current = newKey();
      }
      setError(message(e));
      setFields(violations(e));
      setFailed(c);
      return undefined;
    } finally {
      running.current = false;
      setBusy(false);
    }
  };
  return { run, busy, error, fields, code: failed, reset };
}

export function Alert(props: { kind?: "error" | "info" | "success"; children: ComponentChildren }) {
  const kind = props.kind ?? "error";
  return (
    <div class={`alert alert-${kind}`} role={kind === "error" ? "alert" : "status"}>
      {props.children}
    </div>
  );
}

export function ErrorAlert(props: { action: { error: string } }) {
  return props.action.error ? <Alert>{props.action.error}</Alert> : null;
}

let fieldSeq = 0;

interface FieldProps {
  type?: "text" | "email" | "password" | "search" | "url" | "number" | "datetime-local";
  autocomplete?: InputHTMLAttributes["autocomplete"];
  required?: boolean;
  autofocus?: boolean;
  placeholder?: string;
  /** The id of a `<datalist>` of suggestions. */
  list?: string;
  label: string;
  name: string;
  value: string;
  onValue: (v: string) => void;
  /** The server's field path this input answers to (e.g. `user.email`). */
  path?: string;
  fields?: FieldViolation[];
  hint?: ComponentChildren;
}

/** A labelled input; a field violation from the server shows under it and marks it invalid. */
export function Field({ label, name, value, onValue, path, fields, hint, type, ...rest }: FieldProps) {
  const id = useRef(`f${++fieldSeq}`).current;
  const problem = fields?.find((f) => f.field === (path ?? name));
  const describedBy = [hint ? `${id}-hint` : "", problem ? `${id}-err` : ""].filter(Boolean).join(" ");
  return (
    <div class="field">
      <label for={id}>{label}</label>
      <input
        id={id}
        name={name}
        type={(type ?? "text") as "text"}
        value={value}
        onInput={(e) => onValue((e.target as HTMLInputElement).value)}
        aria-invalid={problem ? "true" : undefined}
        aria-describedby={describedBy || undefined}
        {...rest}
      />
      {hint && (
        <div class="hint" id={`${id}-hint`}>
          {hint}
        </div>
      )}
      {problem && (
        <div class="field-error" id={`${id}-err`}>
          {problem.description}
        </div>
      )}
    </div>
  );
}

interface SelectProps {
  label: string;
  name: string;
  value: string;
  onValue: (v: string) => void;
  options: [string, string][];
}

export function Select({ label, name, value, onValue, options }: SelectProps) {
  const id = useRef(`f${++fieldSeq}`).current;
  return (
    <div class="field">
      <label for={id}>{label}</label>
      <select id={id} name={name} value={value} onChange={(e) => onValue((e.target as HTMLSelectElement).value)}>
        {options.map(([v, l]) => (
          <option value={v} key={v}>
            {l}
          </option>
        ))}
      </select>
    </div>
  );
}

/** A modal dialog (the browser's own, which traps focus and closes on Escape). */
export function Dialog(props: { title: string; onClose: () => void; children: ComponentChildren }) {
  const ref = useRef<HTMLDialogElement>(null);
  const id = useRef(`d${++fieldSeq}`).current;
  useEffect(() => {
    const d = ref.current;
    if (d && !d.open) d.showModal();
  }, []);
  return (
    <dialog
      ref={ref}
      aria-labelledby={id}
      onClose={props.onClose}
      onCancel={(e) => {
        e.preventDefault();
        props.onClose();
      }}
    >
      <h2 id={id}>{props.title}</h2>
      {props.children}
    </dialog>
  );
}

/** A secret or link shown once, with a button that copies it. */
export function Secret(props: { label: string; value: string }) {
  const [copied, setCopied] = useState(false);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(props.value);
      setCopied(true);
    } catch {
      setCopied(false);
    }
  };
  return (
    <div class="secret">
      <span class="secret-label">{props.label}</span>
      <code data-testid="secret">{props.value}</code>
      <button type="button" class="secondary" onClick={copy}>
        {copied ? "Copied" : "Copy"}
      </button>
    </div>
  );
}

export function Busy(props: { busy: boolean; children: ComponentChildren }) {
  return <>{props.busy ? "Working…" : props.children}</>;
}

/** Every page of a small list (the catalog, a portfolio's groups): at most `max` items. */
export async function allPages<T>(
  fetch: (pageToken: string) => Promise<{ items: T[]; next: string }>,
  max = 2000,
): Promise<T[]> {
  const out: T[] = [];
  let token = "";
  do {
    const r = await fetch(token);
    out.push(...r.items);
    token = r.next;
  } while (token && out.length < max);
  return out;
}

/** A confirmation dialog around one action whose refusal it shows. */
export function Confirm(props: {
  title: string;
  action: Action<[], unknown>;
  verb: string;
  danger?: boolean;
  onClose: () => void;
  children?: ComponentChildren;
}) {
  return (
    <Dialog title={props.title} onClose={props.onClose}>
      {props.children}
      <ErrorAlert action={props.action} />
      <div class="buttons">
        <button type="button" class="secondary" onClick={props.onClose}>
          Cancel
        </button>
        <button
          type="button"
          class={props.danger ? "danger" : ""}
          disabled={props.action.busy}
          onClick={() => void props.action.run()}
        >
          {props.verb}
        </button>
      </div>
    </Dialog>
  );
}

/** A checkbox with its label. */
export function Check(props: { label: string; checked: boolean; onValue: (v: boolean) => void; name?: string }) {
  return (
    <label class="choice">
      <input
        type="checkbox"
        name={props.name}
        checked={props.checked}
        onChange={(e) => props.onValue((e.target as HTMLInputElement).checked)}
      />{" "}
      {props.label}
    </label>
  );
}

/** A labelled multi-line input. */
export function TextArea(props: {
  label: string;
  name: string;
  value: string;
  onValue: (v: string) => void;
  path?: string;
  fields?: FieldViolation[];
  rows?: number;
  hint?: ComponentChildren;
}) {
  const id = useRef(`f${++fieldSeq}`).current;
  const problem = props.fields?.find((f) => f.field === (props.path ?? props.name));
  return (
    <div class="field">
      <label for={id}>{props.label}</label>
      <textarea
        id={id}
        name={props.name}
        rows={props.rows ?? 4}
        value={props.value}
        onInput={(e) => props.onValue((e.target as HTMLTextAreaElement).value)}
        aria-invalid={problem ? "true" : undefined}
        aria-describedby={problem ? `${id}-err` : props.hint ? `${id}-hint` : undefined}
      />
      {props.hint && (
        <div class="hint" id={`${id}-hint`}>
          {props.hint}
        </div>
      )}
      {problem && (
        <div class="field-error" id={`${id}-err`}>
          {problem.description}
        </div>
      )}
    </div>
  );
}

/** A form in a dialog: its fields, the server's refusal, Cancel and the submit button. */
export function FormDialog(props: {
  title: string;
  onClose: () => void;
  action: Action<[], unknown>;
  verb: string;
  /** Instead of running the action at once (a confirmation step, a local check). */
  onSubmit?: () => void;
  disabled?: boolean;
  children: ComponentChildren;
}) {
  return (
    <Dialog title={props.title} onClose={props.onClose}>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          if (props.onSubmit) props.onSubmit();
          else void props.action.run();
        }}
      >
        {props.children}
        <ErrorAlert action={props.action} />
        <div class="buttons">
          <button type="button" class="secondary" onClick={props.onClose}>
            Cancel
          </button>
          <button type="submit" disabled={props.action.busy || props.disabled}>
            {props.verb}
          </button>
        </div>
      </form>
    </Dialog>
  );
}

/** The next page of a list, when there is one. */
export function LoadMore(props: { next: string; busy: boolean; onMore: () => void }) {
  if (!props.next) return null;
  return (
    <div class="more">
      <button type="button" class="secondary" disabled={props.busy} onClick={props.onMore}>
        {props.busy ? "Loading…" : "Load more"}
      </button>
    </div>
  );
}
