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

/** True when the server knows refine (its job settings carry `sourceGenerationId`). */
export function canRefine(job) {
  return job.status === "succeeded" && Object.hasOwn(job.settings, "sourceGenerationId");
}

// A thumbnail is at most this wide or tall (the API's contract).
const THUMBNAIL_MAX = 512;

/** The `srcset` of a variant: its thumbnail for small screens, or "" when unknown. */
export function variantSrcset(variant) {
  const { thumbnailUrl, url, width, height } = variant;
  if (!thumbnailUrl || !width || !height) {
    return "";
  }
  const thumbWidth = Math.round(width * Math.min(1, THUMBNAIL_MAX / Math.max(width, height)));
  // A render no larger than a thumbnail has nothing to save.
  return thumbWidth < width ? `${thumbnailUrl} ${thumbWidth}w, ${url} ${width}w` : "";
}

// The picture column: the whole card on a phone (page and card padding taken off).
const PICTURE_SIZES = "(max-width: 40rem) calc(100vw - 3.5rem), 28rem";

const RECONNECTING = "Connection lost, reconnecting…";

/**
 * The job panel. `onUpdate(job)` runs when a followed job changes but has not ended;
 * `onFinished(job)` when it ends; `onDeleted(job)` after a delete; `onRefine(job,
 * variant)` when the person asks to refine a result.
 */
export class JobView {
  constructor({ onUpdate, onFinished, onDeleted, onRefine }) {
    this.onUpdate = onUpdate;
    this.onFinished = onFinished;
    this.onDeleted = onDeleted;
    this.onRefine = onRefine;
    this.job = null;
    this.events = null;
    // A running job that left the panel, followed for the lists (followInBackground).
    this.background = null;
    // A stream the browser gave up on is followed again after a pause (see recover).
    this.resume = null;
    this.failures = 0;
    this.beforeUrl = null;
    // Bumped by each open: whatever was under way for the job shown before stops.
    this.opening = 0;
    // Bumped by each open and each choice from the history: a slow read of an older
    // choice does not replace a newer one.
    this.choosing = 0;
    byId("cancel").addEventListener("click", () => this.cancel());
    byId("delete").addEventListener("click", () => this.remove());
  }

  /**
   * Show a job; `beforeFile` is the photo just uploaded (shown at once, without a
   * download), else the job's own first input is the "before".
   */
  open(job, beforeFile = null) {
    this.opening += 1;
    this.choosing += 1;
    const shown = this.job;
    if (shown && !finished(shown) && shown.id !== job.id) {
      this.followInBackground(shown.id); // still running: its row and the usage keep up
    }
    if (this.background && this.background.jobId === job.id) {
      this.stopBackground(); // on screen again: the panel's own stream follows it
    }
    this.stop();
    this.setBefore(beforeFile, job);
    byId("job").hidden = false;
    quiet(byId("job-error"));
    this.render(job);
    // On a phone the panel is below the form: bring it into view.
    byId("job").scrollIntoView({ block: "nearest" });
    if (!finished(job)) {
      this.follow(job.id);
    }
  }

  /**
   * Show a job from the history. Its input links are signed for a few minutes only, so
   * the job is read again first (the list may be older than that).
   */
  async reopen(listed) {
    this.choosing += 1;
    const choice = this.choosing;
    let job = listed;
    let problem = null;
    try {
      job = await api(`/generations/${encodeURIComponent(listed.id)}`);
    } catch (error) {
      problem = error;
      job = { ...listed, inputs: [] }; // its links may have expired: no broken "before"
    }
    if (choice !== this.choosing) {
      return;
    }
    if (problem && this.job && this.job.id === listed.id && !byId("job").hidden) {
      // The panel already shows this job, as fresh as the list or fresher (it may be
      // followed live): the list's copy must not replace it, nor stop its stream.
      say(byId("job-error"), problem.message);
      byId("job").scrollIntoView({ block: "nearest" });
      return;
    }
    this.open(job);
    if (problem) {
      say(byId("job-error"), problem.message);
    }
  }

  setBefore(file, job = null) {
    if (this.beforeUrl) {
      URL.revokeObjectURL(this.beforeUrl);
      this.beforeUrl = null;
    }
    const stored = job && Array.isArray(job.inputs) && job.inputs.length > 0 ? job.inputs[0] : null;
    const image = byId("before-img");
    if (file) {
      this.beforeUrl = URL.createObjectURL(file);
      image.src = this.beforeUrl;
    } else if (stored) {
      image.src = stored.url;
    } else {
      image.removeAttribute("src");
    }
    byId("before").hidden = !(file || stored);
  }

  picture(job, variant) {
    const image = el("img", { src: variant.url, alt: `Design result ${variant.idx + 1}` });
    if (variant.width && variant.height) {
      // The size before the bytes arrive: the page keeps its place while it loads.
      image.width = variant.width;
      image.height = variant.height;
    }
    const srcset = variantSrcset(variant);
    if (srcset) {
      image.sizes = PICTURE_SIZES;
      image.srcset = srcset;
    }
    const caption = el("figcaption", {}, `After (${variant.idx + 1})`);
    if (canRefine(job)) {
      const refine = el("button", { type: "button", className: "secondary refine" }, "Refine");
      refine.setAttribute("aria-label", `Refine result ${variant.idx + 1} with a new prompt`);
      refine.addEventListener("click", () => this.onRefine(job, variant));
      caption.append(" ", refine);
    }
    return el("figure", {}, image, caption);
  }

  render(job) {
    // A button under the focus that this render removes or hides (Cancel once the job
    // ended by itself, a Refine redrawn): the focus goes to the panel, not the page top.
    const panel = byId("job");
    const focused = panel.contains(document.activeElement) ? document.activeElement : null;
    this.show(job);
    if (focused && (!panel.contains(focused) || focused.closest("[hidden]"))) {
      this.focusPanel();
    }
  }

  show(job) {
    this.job = job;
    byId("job").dataset.jobId = job.id; // which job the panel shows (for tests and styles)
    byId("job-status").textContent = jobSentence(job);
    byId("job-source").hidden = !job.settings.sourceGenerationId;
    // A canceled job's error (CANCELED) would only repeat its status line.
    if (job.error && job.status !== "canceled") {
      say(byId("job-error"), sentence(job.error.code, job.error.message));
    } else {
      quiet(byId("job-error"));
    }
    const after = byId("after");
    clear(after);
    for (const variant of job.variants) {
      after.append(this.picture(job, variant));
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
      this.failures = 0;
      quiet(byId("job-error"));
      quiet(byId("job-notice")); // connected again
      this.render(job);
      if (finished(job)) {
        this.stop();
        this.onFinished(job);
      } else {
        this.onUpdate(job);
      }
    });
    // Connected (again): a resumed stream sends nothing until the job changes, so the
    // notice goes when the stream opens, not with the next message.
    source.addEventListener("open", () => {
      if (this.events === source) {
        quiet(byId("job-notice"));
      }
    });
    // EventSource reconnects by itself after a dropped connection (with Last-Event-ID),
    // for as long as the server cannot be reached: the page says so meanwhile. An answer
    // that is not a stream (a restart's 503, an expired sign-in's 401) makes the browser
    // give up for good: the page then takes over.
    source.addEventListener("error", () => {
      if (this.events !== source) {
        return;
      }
      if (source.readyState === EventSource.CLOSED) {
        this.events = null;
        this.recover(jobId);
      } else {
        say(byId("job-notice"), RECONNECTING);
      }
    });
  }

  /**
   * Read the job (a 401 shows the sign-in notice), show it, and while it runs follow it
   * again after a pause that doubles up to half a minute; a new stream starts with the
   * job's current state, so nothing is missed.
   */
  async recover(jobId) {
    const opening = this.opening;
    this.failures += 1;
    quiet(byId("job-notice")); // the browser stopped reconnecting: the page takes over
    let job = null;
    try {
      job = await api(`/generations/${encodeURIComponent(jobId)}`);
    } catch (error) {
      if (opening === this.opening) {
        say(byId("job-error"), error.message);
      }
      const lasting = error.status >= 400 && error.status < 500 && error.status !== 429;
      if (lasting) {
        return; // signed out, or the job is gone: retrying cannot help
      }
    }
    if (opening !== this.opening) {
      return;
    }
    if (job) {
      this.render(job);
      if (finished(job)) {
        quiet(byId("job-notice"));
        this.onFinished(job);
        return;
      }
      this.onUpdate(job);
    }
    const pause = Math.min(30_000, 1000 * 2 ** (this.failures - 1));
    this.resume = setTimeout(() => {
      this.resume = null;
      if (opening === this.opening) {
        this.follow(jobId);
      }
    }, pause);
  }

  /**
   * Follow a running job that left the panel (another was opened): its updates and its
   * end still reach `onUpdate` / `onFinished` (the history row, the usage line). One at
   * a time: a person has one job in flight.
   */
  followInBackground(jobId) {
    this.stopBackground();
    const source = new EventSource(eventsUrl(jobId));
    source.jobId = jobId;
    this.background = source;
    source.addEventListener("job", (event) => {
      const job = JSON.parse(event.data);
      if (finished(job)) {
        this.stopBackground();
        this.onFinished(job);
      } else {
        this.onUpdate(job);
      }
    });
    // The browser reconnects by itself; when it gives up (signed out, a restart's 503)
    // the row stays as it was until the job is opened again.
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED && this.background === source) {
        this.background = null;
      }
    });
  }

  stopBackground() {
    if (this.background) {
      this.background.close();
      this.background = null;
    }
  }

  stop() {
    quiet(byId("job-notice"));
    if (this.events) {
      this.events.close();
      this.events = null;
    }
    if (this.resume !== null) {
      clearTimeout(this.resume);
      this.resume = null;
    }
    this.failures = 0;
  }

  async cancel() {
    const job = this.job;
    const opening = this.opening;
    byId("cancel").disabled = true;
    try {
      const answer = await api(`/generations/${encodeURIComponent(job.id)}`, {
        method: "PATCH",
        body: JSON.stringify({ action: "cancel" }),
        headers: { "Content-Type": "application/json" },
      });
      if (opening !== this.opening) {
        this.onFinished(answer); // another job is on screen now: only the lists learn
        return;
      }
      this.render(answer);
      if (finished(answer)) {
        this.stop();
        this.onFinished(answer);
        this.focusPanel(); // the button that had the focus is gone
      }
    } catch (error) {
      if (opening === this.opening) {
        say(byId("job-error"), error.message);
      }
    } finally {
      byId("cancel").disabled = false;
    }
  }

  async remove() {
    const job = this.job;
    const opening = this.opening;
    // For good (the files leave storage within a minute), and the button sits right
    // under the pictures: asked first.
    if (!window.confirm("Delete the pictures of this design? This cannot be undone.")) {
      return;
    }
    byId("delete").disabled = true;
    try {
      const kept = await api(`/generations/${encodeURIComponent(job.id)}`, { method: "DELETE" });
      this.onDeleted(kept);
      if (opening === this.opening) {
        this.setBefore(null);
        this.render(kept);
        this.focusPanel();
      }
    } catch (error) {
      if (opening === this.opening) {
        say(byId("job-error"), error.message);
      }
    } finally {
      byId("delete").disabled = false;
    }
  }

  /** Move the keyboard focus to the panel's heading (its buttons may have gone). */
  focusPanel() {
    byId("job-heading").focus();
  }
}
