// "N of M designs left this month" from GET /usage.
import { api } from "./api.js";
import { byId } from "./dom.js";

/** Read the caller's usage and show it in the header. */
export async function refreshUsage() {
  const line = byId("usage");
  try {
    const usage = await api("/usage");
    // The period turns at midnight UTC: the same date the quota message names.
    const ends = new Date(usage.periodEnd).toLocaleDateString(undefined, { timeZone: "UTC" });
    line.textContent =
      `${usage.remaining} of ${usage.monthlyGenerations} designs left (resets ${ends})`;
  } catch (error) {
    // Signed out: the sign-in notice already says what to do.
    line.textContent =
      error.status === 401 ? "Sign in to see your designs left." : `Usage unavailable: ${error.message}`;
  }
}

// The ledger refunds a failed or canceled job shortly after the job ends: read again a
// little later so the line settles without a reload.
const SETTLE_DELAYS_MS = [1000, 3000];

/** Refresh the usage line after a job ended (again later when a refund may follow). */
export function refreshUsageAfter(job) {
  refreshUsage();
  if (job.status !== "succeeded") {
    for (const delay of SETTLE_DELAYS_MS) {
      setTimeout(refreshUsage, delay);
    }
  }
}
