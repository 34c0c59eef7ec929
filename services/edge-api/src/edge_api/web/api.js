// The API client: the dev token, requests, and errors turned into sentences.
import { sentence } from "./messages.js";

const BASE = "/api/v1";
const TOKEN_KEY = "interior.token";

/** An API (or network) failure with the sentence to show. */
export class ApiError extends Error {
  constructor(status, code, serverMessage, retryAfter = null, details = {}) {
    super(sentence(code, serverMessage, details));
    this.status = status;
    this.code = code;
    // The server's own message (it may name a field: input1, input2, prompt).
    this.serverMessage = serverMessage;
    // Seconds the server asked to wait before trying again (429, 503), or null.
    this.retryAfter = retryAfter;
  }

  /**
   * Whether the same request may be sent again as it is: only when its outcome is
   * unknown (no answer, a timeout, a 5xx that may hide a job). An UPSTREAM_ERROR says
   * the job is known to have failed: sent again with its key, the server would only
   * replay that failure, so the next attempt is a new submission.
   */
  get retryable() {
    if (this.code === "UPSTREAM_ERROR") {
      return false;
    }
    return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

function retryAfterSeconds(response) {
  const value = response.headers.get("Retry-After");
  return value && /^\d{1,5}$/.test(value.trim()) ? Number(value.trim()) : null;
}

/**
 * Takes `#token=...` out of the address (so it is neither bookmarked nor shared) into
 * sessionStorage, and returns the token of this tab, or null.
 */
export function signIn() {
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  const given = fragment.get("token");
  if (given) {
    history.replaceState(null, "", window.location.pathname + window.location.search);
    const current = sessionStorage.getItem(TOKEN_KEY);
    // A link can carry anyone's token: never switch accounts without asking.
    const other = current && accountOf(current) !== accountOf(given);
    if (!other || window.confirm(`Sign in as ${accountOf(given)} instead of ${accountOf(current)}?`)) {
      sessionStorage.setItem(TOKEN_KEY, given);
    }
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Who a token signs in (its e-mail, else its user id), as the page shows it. */
export function accountOf(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "="));
    // The claims are UTF-8 (Supabase writes a name's letters as they are): atob gives bytes.
    const text = new TextDecoder().decode(Uint8Array.from(bytes, (c) => c.charCodeAt(0)));
    const claims = JSON.parse(text);
    const name = typeof claims.email === "string" && claims.email ? claims.email : claims.sub;
    return typeof name === "string" && name ? name : "an unknown account";
  } catch {
    return "an unknown account";
  }
}

/** The signed-in account of this tab, or null. */
export function signedInAs() {
  const current = sessionStorage.getItem(TOKEN_KEY);
  return current ? accountOf(current) : null;
}

/** The token of this tab, or "" when it is not signed in. */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

async function failure(response) {
  let code = "INTERNAL_ERROR";
  let message = "";
  let details = {};
  try {
    const body = await response.json();
    if (body && body.error && typeof body.error.code === "string") {
      code = body.error.code;
      message = typeof body.error.message === "string" ? body.error.message : "";
      details = body.error; // extra keys such as periodEnd
    }
  } catch {
    // Not our JSON (a proxy's page): the code's sentence is all we can say.
  }
  return new ApiError(response.status, code, message, retryAfterSeconds(response), details);
}

/** Calls the API; resolves to the parsed JSON (null when empty), rejects with ApiError. */
export async function api(path, { method = "GET", body, headers = {} } = {}) {
  let response;
  try {
    response = await fetch(BASE + path, {
      method,
      body,
      headers: { Authorization: `Bearer ${token()}`, ...headers },
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "NETWORK", "");
  }
  if (!response.ok) {
    if (response.status === 401) {
      // The page shows how to sign in again, whichever part asked.
      document.dispatchEvent(new CustomEvent("signed-out"));
    }
    throw await failure(response);
  }
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** The catalog (no sign-in needed). */
export function catalog() {
  return api("/catalog");
}

/** The Server-Sent Events address of a job (EventSource cannot send headers). */
export function eventsUrl(jobId) {
  const query = new URLSearchParams({ access_token: token() });
  return `${BASE}/generations/${encodeURIComponent(jobId)}/events?${query}`;
}

/** A fresh key for a new submission (a retry of the same one reuses its key). */
export function idempotencyKey() {
  if (crypto.randomUUID) {
    return crypto.randomUUID();
  }
  // randomUUID needs a secure context; 127.0.0.1 is one, a LAN address is not.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
