// The gateway's widget endpoints (docs/gateway.md, "Web widget"). Every call says whether it
// reached the gateway: a request that fails in the network, times out, or gets a 502/503/504
// from a proxy in front of a gateway that is down counts as "unreachable" (offline).

export type Outcome<T> =
  | { kind: "ok"; value: T }
  | { kind: "unreachable" }
  | { kind: "refused"; status: number; code: string; retryAfter: number };

export interface Config {
  title?: string;
  welcome_message?: string;
  primary_color?: string;
  locale?: string;
  anonymous_visitors?: boolean;
}

export interface Session {
  token: string;
  expiresAt: number;
}

async function call<T>(url: string, init: RequestInit, timeoutMs: number): Promise<Outcome<T>> {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  try {
    const r = await fetch(url, { ...init, signal: abort.signal, credentials: "omit", mode: "cors" });
    if (r.status === 502 || r.status === 503 || r.status === 504) {
      // A proxy without its gateway, or a gateway without its database: try again later.
      const body = await r.json().catch(() => null);
      if (!body || typeof body.error !== "string" || body.error === "inbox_unavailable") {
        return { kind: "unreachable" };
      }
      return { kind: "refused", status: r.status, code: body.error, retryAfter: retryAfter(r) };
    }
    const body = await r.json().catch(() => null);
    if (!r.ok) {
      const code = body && typeof body.error === "string" ? body.error : `http_${r.status}`;
      return { kind: "refused", status: r.status, code, retryAfter: retryAfter(r) };
    }
    return { kind: "ok", value: body as T };
  } catch {
    return { kind: "unreachable" };
  } finally {
    clearTimeout(timer);
  }
}

function retryAfter(r: Response): number {
  const v = Number(r.headers.get("retry-after"));
  return Number.isFinite(v) && v > 0 ? Math.min(v, 3600) : 1;
}

const JSON_HEADERS = { "content-type": "application/json" };

export class Client {
  constructor(private readonly base: string) {}

  config(): Promise<Outcome<Config>> {
    return call(`${this.base}/config`, { method: "GET" }, 10_000);
  }

  async session(body: { visitor_id: string } | { user_id: string; identity_token: string }): Promise<Outcome<Session>> {
    const r = await call<{ session_token: string; expires_in: number }>(
      `${this.base}/session`,
      { method: "POST", headers: JSON_HEADERS, body: JSON.stringify(body) },
      10_000,
    );
    if (r.kind !== "ok") return r;
    return { kind: "ok", value: { token: r.value.session_token, expiresAt: Date.now() + r.value.expires_in * 1000 } };
  }

  send(session: string, text: string, clientId: string): Promise<Outcome<{ message_id: number }>> {
    return call(
      `${this.base}/messages`,
      {
        method: "POST",
        headers: { ...JSON_HEADERS, authorization: `Bearer ${session}` },
        body: JSON.stringify({ text, client_message_id: clientId }),
      },
      15_000,
    );
  }

  poll(session: string, after: number, wait: number): Promise<Outcome<{ messages: import("./state").Polled[] }>> {
    return call(
      `${this.base}/messages?after=${after}&wait=${wait}`,
      { method: "GET", headers: { authorization: `Bearer ${session}` } },
      (wait + 10) * 1000,
    );
  }
}
