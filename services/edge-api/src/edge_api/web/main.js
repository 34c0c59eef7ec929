// The page's start: sign in from the fragment, build the form from the catalog, and
// wire the form, the job panel, the history and the usage line together.
import { api, catalog, idempotencyKey, signedInAs, signIn } from "./api.js";
import { byId, say } from "./dom.js";
import { SubmissionForm } from "./form.js";
import { HistoryView } from "./history.js";
import { JobView } from "./job.js";
import { refreshUsage, refreshUsageAfter } from "./usage.js";

async function start() {
  document.addEventListener("signed-out", () => {
    byId("signin").hidden = false;
  });
  if (!signIn()) {
    byId("signin").hidden = false;
  } else {
    const account = byId("account");
    account.textContent = `Signed in as ${signedInAs()}`;
    account.hidden = false;
  }
  let form = null;
  const historyView = new HistoryView((job) => jobs.reopen(job));
  const jobs = new JobView({
    onFinished: (job) => {
      refreshUsageAfter(job);
      historyView.show(job);
    },
    onDeleted: (job) => {
      historyView.show(job);
      if (form && form.source && form.source.generationId === job.id) {
        form.stopRefining(); // its pictures are gone: the refine would only be refused
      }
    },
    onRefine: (job, variant) => {
      if (form) {
        form.refine(job, variant, `result ${variant.idx + 1} of this design`);
      }
    },
  });

  // One key per submission, kept while the same form is sent again after an answer
  // that may hide a job (no answer, 5xx, 408, 429): the server then answers with the
  // job it made instead of making a second. Any change to the form starts a new one.
  let retryKey = null;
  const forget = () => {
    retryKey = null;
  };
  byId("form").addEventListener("input", forget);
  byId("form").addEventListener("change", forget);

  async function submit(body, files, contentType) {
    form.busy(true);
    const key = retryKey || idempotencyKey();
    const headers = { "Idempotency-Key": key };
    if (contentType) {
      headers["Content-Type"] = contentType;
    }
    const refining = form.source !== null;
    let wait = 0;
    try {
      const job = await api("/generations", { method: "POST", body, headers });
      retryKey = null;
      // A refine's first picture is the earlier result: the job's own input shows it.
      jobs.open(job, refining ? null : files[0] || null);
      jobs.focusPanel();
      form.submitted();
      historyView.show(job);
      refreshUsage(); // debited now, not when it ends
    } catch (error) {
      retryKey = error.retryable ? key : null;
      wait = error.retryAfter || 0;
      form.fail(wait ? `${error.message} (try again in ${wait} s)` : error.message);
      if (error.code === "LIMIT_EXCEEDED" || error.code === "TOO_MANY_INFLIGHT") {
        refreshUsage();
        historyView.reload(); // the running job is there to open
      }
    } finally {
      if (wait) {
        // Sending it sooner would only be refused again.
        setTimeout(() => form.busy(false), wait * 1000);
      } else {
        form.busy(false);
      }
    }
  }

  try {
    form = new SubmissionForm(await catalog(), submit);
  } catch (error) {
    say(byId("page-error"), error.message);
  }
  refreshUsage();
  historyView.reload();
  document.body.dataset.ready = "true";
}

start();
