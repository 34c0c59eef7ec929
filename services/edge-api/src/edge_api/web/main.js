// The page's start: sign in from the fragment, build the form from the catalog, and
// wire the form, the job panel, the history and the usage line together.
import { api, catalog, idempotencyKey, signIn } from "./api.js";
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
  }
  let form = null;
  const historyView = new HistoryView((job) => jobs.reopen(job));
  const jobs = new JobView({
    onFinished: (job) => {
      refreshUsageAfter(job);
      historyView.reload();
    },
    onDeleted: (job) => {
      historyView.update(job);
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

  async function submit(body, files, contentType) {
    form.busy(true);
    const headers = { "Idempotency-Key": idempotencyKey() };
    if (contentType) {
      headers["Content-Type"] = contentType;
    }
    const refining = form.source !== null;
    try {
      const job = await api("/generations", { method: "POST", body, headers });
      // A refine's first picture is the earlier result: the job's own input shows it.
      jobs.open(job, refining ? null : files[0] || null);
      form.submitted();
      historyView.reload();
    } catch (error) {
      form.fail(error.message);
    } finally {
      form.busy(false);
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
