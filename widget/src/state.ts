// The widget's conversation state: pure functions of the state and an event, no DOM and no
// network, so every transition is tested on its own (test/state.test.ts).
//
// Messages typed by the visitor go into an ordered outbox and are sent one at a time, each
// with a client_message_id chosen when it was typed: a send whose answer is lost (the
// gateway went away mid-request) is sent again with the same id, and the gateway stores it
// once. While the gateway cannot be reached the widget is "offline": typing still queues,
// and the queue is sent, in order, once a request gets through again.

export type Connection = "connecting" | "online" | "offline";

export interface Item {
  /** Stable key: "c:<clientId>" for a message typed here, "m:<id>" for one from history. */
  key: string;
  clientId?: string;
  /** The gateway's message id, once it has accepted the message. */
  id?: number;
  text: string;
  /** The answer, once there is one. */
  answer?: string;
  /** The gateway gave up answering it, or refused it (`refusal`). */
  failed?: boolean;
  refusal?: string;
  status: "queued" | "sending" | "sent";
}

export interface State {
  connection: Connection;
  items: Item[];
  /** Client ids waiting to be sent, oldest first. */
  outbox: string[];
  /** The client id being sent, if any. */
  sending: string | null;
  /** Poll cursor: every message with an id up to this one has its outcome. */
  after: number;
  /** Consecutive requests that did not reach the gateway (the backoff exponent). */
  attempt: number;
  /** Sends repeated after a failure, since the page loaded. */
  retries: number;
  /** Why the gateway refuses this widget altogether (an error code), if it does. */
  refused: string | null;
}

/** One message as the gateway's poll returns it. */
export interface Polled {
  id: number;
  text: string;
  answer: string | null;
  failed?: boolean;
}

export type Event =
  | { type: "typed"; text: string; clientId: string }
  | { type: "sendStarted"; clientId: string }
  | { type: "sendAccepted"; clientId: string; id: number }
  | { type: "sendRejected"; clientId: string; code: string }
  | { type: "sendInterrupted"; clientId: string }
  | { type: "unreachable" }
  | { type: "reached" }
  | { type: "refused"; code: string }
  | { type: "polled"; messages: Polled[] };

export function initial(): State {
  return {
    connection: "connecting",
    items: [],
    outbox: [],
    sending: null,
    after: 0,
    attempt: 0,
    retries: 0,
    refused: null,
  };
}

/** The longest wait between two attempts to reach the gateway. */
export const MAX_BACKOFF_MS = 30_000;
const BASE_BACKOFF_MS = 1_000;

/**
 * How long to wait before attempt number `attempt` (1 = the first retry): doubling from 1 s,
 * at most MAX_BACKOFF_MS, with "equal jitter" (between half and all of it) so that many
 * pages do not come back at the same instant.
 */
export function backoffMs(attempt: number, random: () => number = Math.random): number {
  const n = Math.max(0, Math.min(attempt - 1, 16));
  const cap = Math.min(MAX_BACKOFF_MS, BASE_BACKOFF_MS * 2 ** n);
  return Math.round(cap / 2 + (random() * cap) / 2);
}

function update(s: State, clientId: string, f: (i: Item) => Item): Item[] {
  return s.items.map((i) => (i.clientId === clientId ? f(i) : i));
}

/** The poll cursor for `items`: the highest id such that it and every lower id have an outcome. */
export function cursor(items: Item[], after: number): number {
  const open = items
    .filter((i) => i.id !== undefined && i.answer === undefined && !i.failed)
    .map((i) => i.id as number);
  const known = items.filter((i) => i.id !== undefined).map((i) => i.id as number);
  if (known.length === 0) return after;
  const lowestOpen = open.length ? Math.min(...open) : Infinity;
  const done = known.filter((id) => id < lowestOpen);
  return done.length ? Math.max(after, ...done) : after;
}

export function reduce(s: State, e: Event): State {
  switch (e.type) {
    case "typed": {
      if (s.items.some((i) => i.clientId === e.clientId)) return s;
      const item: Item = { key: `c:${e.clientId}`, clientId: e.clientId, text: e.text, status: "queued" };
      return { ...s, items: [...s.items, item], outbox: [...s.outbox, e.clientId] };
    }
    case "sendStarted":
      if (s.sending !== null || s.outbox[0] !== e.clientId) return s;
      return { ...s, sending: e.clientId, items: update(s, e.clientId, (i) => ({ ...i, status: "sending" })) };
    case "sendAccepted": {
      // The same id may already be shown from a poll (another tab, or a resend): keep one.
      const dup = s.items.find((i) => i.id === e.id && i.clientId !== e.clientId);
      let items = update(s, e.clientId, (i) => ({
        ...i,
        id: e.id,
        status: "sent",
        answer: dup?.answer ?? i.answer,
        failed: dup?.failed ?? i.failed,
      }));
      if (dup) items = items.filter((i) => i !== dup);
      return {
        ...s,
        items,
        outbox: s.outbox.filter((c) => c !== e.clientId),
        sending: s.sending === e.clientId ? null : s.sending,
        connection: "online",
        attempt: 0,
      };
    }
    case "sendRejected":
      // Refused for what it is (too long, say): shown as failed, and the queue moves on.
      return {
        ...s,
        items: update(s, e.clientId, (i) => ({ ...i, status: "sent", failed: true, refusal: e.code })),
        outbox: s.outbox.filter((c) => c !== e.clientId),
        sending: s.sending === e.clientId ? null : s.sending,
      };
    case "sendInterrupted":
      // Back to the head of the queue with its client id: the resend is stored once.
      return {
        ...s,
        items: update(s, e.clientId, (i) => ({ ...i, status: "queued" })),
        sending: s.sending === e.clientId ? null : s.sending,
        retries: s.retries + 1,
      };
    case "unreachable":
      return { ...s, connection: "offline", attempt: s.attempt + 1 };
    case "reached":
      return { ...s, connection: "online", attempt: 0 };
    case "refused":
      return { ...s, refused: e.code, connection: "online", attempt: 0 };
    case "polled": {
      let items = s.items.slice();
      for (const m of e.messages) {
        const outcome = { answer: m.answer ?? undefined, failed: m.failed || undefined };
        const at = items.findIndex((i) => i.id === m.id);
        if (at >= 0) {
          items[at] = { ...items[at], ...outcome, answer: outcome.answer ?? items[at].answer };
          continue;
        }
        // Not sent from here (history, another tab): placed among the others by id.
        const item: Item = { key: `m:${m.id}`, id: m.id, text: m.text, status: "sent", ...outcome };
        const before = items.findIndex((i) => i.id !== undefined && i.id > m.id);
        const firstUnsent = items.findIndex((i) => i.id === undefined);
        const pos = before >= 0 ? before : firstUnsent >= 0 ? firstUnsent : items.length;
        items = [...items.slice(0, pos), item, ...items.slice(pos)];
      }
      return { ...s, items, after: cursor(items, s.after), connection: "online", attempt: 0 };
    }
  }
}

/** The message to send now, if any: the head of the queue, one at a time, never while offline. */
export function nextToSend(s: State): Item | null {
  if (s.sending !== null || s.refused !== null || s.connection === "offline") return null;
  const head = s.outbox[0];
  return head === undefined ? null : (s.items.find((i) => i.clientId === head) ?? null);
}

/** Messages typed but not yet accepted by the gateway. */
export function waiting(s: State): number {
  return s.outbox.length;
}
