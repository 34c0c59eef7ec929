// One job on screen: its status (live through Server-Sent Events), its pictures, and
// the cancel / delete buttons.
import { api, eventsUrl } from "./api.js";
import { byId, clear, el, quiet, say } from "./dom.js";
import { jobSentence, sentence } from "./messages.js";

const FINISHED = new Set(["succeeded", "failed", "canceled"]);

/** True once a job can change no more. */
export function finished(job) {
  return FINISHED.has(job.status);
}

/** The job panel. `onFinished(job)` runs when a followed job ends; `onDeleted(job)` after a delete. */
export class JobView {
  constructor({ onFinished, onDeleted }) {
    this.onFinished = onFinished;
    this.onDeleted = onDeleted;
    this.job = null;
    this.events = null;
    this.beforeUrl = null;
    byId("cancel").addEventListener("click", () => this.cancel());
    byId("delete").addEventListener("click", () => this.remove());
  }

  /** Show a job; `beforeFile` is the photo just uploaded (the "before"), if any. */
  open(job, beforeFile = null) {
    this.stop();
    this.setBefore(beforeFile);
    byId("job").hidden = false;
    quiet(byId("job-error"));
    this.render(job);
    // On a phone the panel is below the form: bring it into view.
    byId("job").scrollIntoView({ block: "nearest" });
    if (!finished(job)) {
      this.follow(job.id);
    }
  }

  // EXTENSION POINT (job.inputs, not in the API yet): show the stored "before" of any
  // job instead of only the photo uploaded from this tab.
  setBefore(file) {
    if (this.beforeUrl) {
      URL.revokeObjectURL(this.beforeUrl);
      this.beforeUrl = null;
    }
    byId("before").hidden = !file;
    if (file) {
      this.beforeUrl = URL.createObjectURL(file);
      byId("before-img").src = this.beforeUrl;
    } else {
      byId("before-img").removeAttribute("src");
    }
  }

  render(job) {
    this.job = job;
    byId("job-status").textContent = jobSentence(job);
    // A canceled job's error (CANCELED) would only repeat its status line.
    if (job.error && job.status !== "canceled") {
      say(byId("job-error"), sentence(job.error.code, job.error.message));
    } else {
      quiet(byId("job-error"));
    }
    const after = byId("after");
    clear(after);
    // EXTENSION POINT (variant.width/height/thumbnailUrl, not in the API yet): set the
    // image's size to avoid layout shift, and use the thumbnail in srcset.
    for (const variant of job.variants) {
      const image = el("img", { src: variant.url, alt: `Design result ${variant.idx + 1}` });
      after.append(el("figure", {}, image, el("figcaption", {}, `After (${variant.idx + 1})`)));
    }
    byId("cancel").hidden = finished(job);
    // DELETE removes a finished job's pictures (the job stays in the history).
    byId("delete").hidden = !(finished(job) && job.variants.length > 0);
  }

  follow(jobId) {
    const source = new EventSource(eventsUrl(jobId));
    this.events = source;
    source.addEventListener("job", (event) => {
      const job = JSON.parse(event.data);
      this.render(job);
      if (finished(job)) {
        this.stop();
        this.onFinished(job);
      }
    });
    // EventSource reconnects by itself; once the browser gives up, say so.
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED && this.events === source) {
        say(byId("job-error"), sentence("NETWORK", ""));
      }
    });
  }

  stop() {
    if (this.events) {
      this.events.close();
      this.events = null;
    }
  }

  async cancel() {
    const job = this.job;
    byId("cancel").disabled = true;
    try {
      this.render(await api(`/generations/${encodeURIComponent(job.id)}`, {
        method: "PATCH",
        body: JSON.stringify({ action: "cancel" }),
        headers: { "Content-Type": "application/json" },
      }));
      if (finished(this.job)) {
        this.stop();
        this.onFinished(this.job);
      }
    } catch (error) {
      say(byId("job-error"), error.message);
    } finally {
      byId("cancel").disabled = false;
    }
  }

  async remove() {
    const job = this.job;
    byId("delete").disabled = true;
    try {
      const kept = await api(`/generations/${encodeURIComponent(job.id)}`, { method: "DELETE" });
      this.setBefore(null);
      this.render(kept);
      this.onDeleted(kept);
    } catch (error) {
      say(byId("job-error"), error.message);
    } finally {
      byId("delete").disabled = false;
    }
  }
}
