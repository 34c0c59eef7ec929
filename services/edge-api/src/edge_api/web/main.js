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
  const historyView = new HistoryView((job) => jobs.open(job));
  const jobs = new JobView({
    onFinished: (job) => {
      refreshUsageAfter(job);
      historyView.reload();
    },
    onDeleted: (job) => historyView.update(job),
  });

  async function submit(data, files) {
    form.busy(true);
    try {
      const job = await api("/generations", {
        method: "POST",
        body: data,
        headers: { "Idempotency-Key": idempotencyKey() },
      });
      jobs.open(job, files[0] || null);
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
