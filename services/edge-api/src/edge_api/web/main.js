// The page's start: sign in from the fragment, build the form from the catalog, and
// wire the form, the job panel, the history and the usage line together.
import { api, catalog, idempotencyKey, signedInAs, signIn, token } from "./api.js";
import { byId, quiet, say } from "./dom.js";
import { SubmissionForm } from "./form.js";
import { HistoryView } from "./history.js";
import { JobView } from "./job.js";
import { refreshUsage, refreshUsageAfter } from "./usage.js";

/** Say who is signed in, or how to sign in (`signedIn` false: the token was refused). */
function showAccount(signedIn) {
  const account = byId("account");
  const who = signedIn ? signedInAs() : null;
  account.textContent = who ? `Signed in as ${who}` : "";
  account.hidden = !who;
  byId("signin").hidden = Boolean(who);
}

async function start() {
  // An expired or refused token: the header no longer names an account.
  document.addEventListener("signed-out", () => showAccount(false));
  signIn();
  showAccount(true);
  let form = null;
  const historyView = new HistoryView((job) => jobs.reopen(job));
  const jobs = new JobView({
    onUpdate: (job) => historyView.show(job), // the row keeps up with the panel
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
  // that may hide a job (no answer, 408, 429, a 5xx but UPSTREAM_ERROR, which says the
  // job failed): the server then answers with the job it made instead of making a
  // second. Any change to the form starts a new one.
  let retryKey = null;
  const forget = () => {
    retryKey = null;
  };
  byId("form").addEventListener("input", forget);
  byId("form").addEventListener("change", forget);

  // A `#token=` link opened in this tab while the page is open only changes the
  // fragment: sign in from it as at the start (asking before switching accounts).
  window.addEventListener("hashchange", () => {
    const before = token();
    const account = signedInAs();
    signIn();
    if (token() === before) {
      return; // no token in the link, or the switch was refused
    }
    if (account && signedInAs() !== account) {
      // Another person's page: nothing of the one before may stay on screen.
      window.location.reload();
      return;
    }
    showAccount(true);
    refreshUsage();
    historyView.reload();
    if (jobs.job) {
      jobs.reopen(jobs.job); // read again, and followed again while it runs
    }
  });

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
      form.refused(error, wait);
      if (error.code === "LIMIT_EXCEEDED") {
        refreshUsage();
        historyView.reload();
      } else if (error.code === "TOO_MANY_INFLIGHT") {
        refreshUsage();
        // The running job comes on screen, with its Cancel button.
        historyView.reload().then(openRunning);
      }
    } finally {
      if (wait) {
        // Sending it sooner would only be refused again.
        setTimeout(() => {
          form.busy(false);
          form.waitOver();
        }, wait * 1000);
      } else {
        form.busy(false);
      }
    }
  }

  /** Show the person's running job, if the history lists one and the panel shows another. */
  function openRunning() {
    const running = historyView.running();
    if (running && !(jobs.job && jobs.job.id === running.id)) {
      jobs.reopen(running);
    }
  }

  // The form is built from the catalog: until it is, Generate stays disabled, and a
  // failed read is tried again (1, 2, 4... up to 30 s apart) instead of leaving a dead form.
  async function buildForm(attempt = 0) {
    try {
      form = new SubmissionForm(await catalog(), submit);
      quiet(byId("page-error"));
    } catch {
      say(byId("page-error"), "The design form could not be loaded. Trying again shortly…");
      setTimeout(() => buildForm(attempt + 1), Math.min(30_000, 1000 * 2 ** attempt));
    }
  }

  await buildForm();
  refreshUsage();
  // A reload while a design runs: it comes back on screen, followed live.
  historyView.reload().then(() => {
    if (!jobs.job) {
      openRunning();
    }
  });
  document.body.dataset.ready = "true";
}

start();
