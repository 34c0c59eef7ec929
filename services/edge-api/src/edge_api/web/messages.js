// Every API error code as a sentence a person can act on. Codes this table does not
// know (a newer server) fall back to the server's message, which is written to be shown.

const SENTENCES = {
  VALIDATION_ERROR: "Please check the form.",
  UNAUTHORIZED:
    "You are not signed in, or your sign-in has expired. Open the link printed by make run again.",
  NOT_FOUND: "This design no longer exists.",
  METHOD_NOT_ALLOWED: "The server does not allow this action. Please reload the page.",
  TOO_MANY_INFLIGHT:
    "You already have a design in progress. Wait for it to finish, or cancel it first.",
  JOB_NOT_CANCELLABLE: "This design has already finished, so it can no longer be canceled.",
  JOB_NOT_FINISHED: "This design is still being made. Cancel it before deleting it.",
  IDEMPOTENCY_KEY_REUSED: "This submission clashed with an earlier one. Please submit again.",
  LIMIT_EXCEEDED: "You have used all your designs for this month.",
  TOO_MANY_REQUESTS: "Too many uploads at once. Wait a few seconds and try again.",
  REQUEST_TIMEOUT: "The upload was too slow and was stopped. Check your connection and try again.",
  UPSTREAM_ERROR: "The image service is unavailable right now. Please try again in a moment.",
  INTERNAL_ERROR: "Something went wrong on our side. Please try again.",
  // Codes of a job's own error (job.error.code).
  PROVIDER_FAILED: "The image service could not make this design. Please try again.",
  TIMED_OUT: "This design took too long and was stopped. Please try again.",
  CANCELED: "This design was canceled.",
  NO_OUTPUT: "The image service returned no picture. Please try again.",
  OUTPUT_REFUSED: "The image service's result could not be accepted. Please try again.",
  ABORTED: "The image service did not start in time. Please try again.",
  INTERRUPTED: "The submission was interrupted. Please try again.",
  // The page's own.
  NETWORK: "The server could not be reached. Check your connection and try again.",
};

// Codes whose server message says what to change (a field, the prompt policy):
// the sentence is followed by it.
const WITH_DETAIL = new Set(["VALIDATION_ERROR"]);
const FALLBACK = "Something went wrong. Please try again.";

/** When the allowance comes back (an error's `periodEnd`), as a sentence, or "". */
function resets(details) {
  const end = details && typeof details.periodEnd === "string" ? new Date(details.periodEnd) : null;
  if (!end || Number.isNaN(end.getTime())) {
    return "";
  }
  // periodEnd is the first instant of the next month in UTC: said as that UTC date.
  return ` More designs on ${end.toLocaleDateString(undefined, { dateStyle: "long", timeZone: "UTC" })}.`;
}

/**
 * The sentence shown for an error code and the server's (safe) message; `details` are
 * the error's extra keys (`periodEnd` of LIMIT_EXCEEDED).
 */
export function sentence(code, serverMessage, details = {}) {
  const known = Object.hasOwn(SENTENCES, code) ? SENTENCES[code] : undefined;
  if (known === undefined) {
    return serverMessage || FALLBACK;
  }
  if (WITH_DETAIL.has(code) && serverMessage) {
    return `${known} ${serverMessage}`;
  }
  if (code === "LIMIT_EXCEEDED") {
    return known + resets(details);
  }
  return known;
}

const STATUS = {
  starting: "Starting your design…",
  processing: "Working on your design…",
  succeeded: "Done: your design is ready.",
  failed: "This design failed.",
  canceled: "This design was canceled.",
};

/** A job status as a sentence. */
export function statusSentence(status) {
  return Object.hasOwn(STATUS, status) ? STATUS[status] : `Status: ${status}`;
}

// Short enough for a 375 px select; the form shows each mode's photo fields.
const MODES = {
  redesign: "Redesign a room",
  staging: "Furnish an empty room",
  compose: "Room + reference photo",
  imagine: "Imagine from a description",
};

const SHORT_MODES = { redesign: "Redesign", staging: "Staging", compose: "Compose", imagine: "Imagine" };

/** A mode's label in the form (`short`: in the history, where a row is narrow). */
export function modeLabel(key, { short = false } = {}) {
  const table = short ? SHORT_MODES : MODES;
  return Object.hasOwn(table, key) ? table[key] : key;
}

/** What a job's status line says (a succeeded job without pictures had them deleted). */
export function jobSentence(job) {
  if (job.status === "succeeded" && job.variants.length === 0) {
    return "The pictures of this design were deleted.";
  }
  return statusSentence(job.status);
}
