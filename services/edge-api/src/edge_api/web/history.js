// The history: GET /generations, newest first, one page at a time ("Load more").
import { api } from "./api.js";
import { byId, el, quiet, say } from "./dom.js";
import { jobSentence, modeLabel } from "./messages.js";

const PAGE_SIZE = 10;

function when(iso, seconds = false) {
  const date = new Date(iso);
  const timeStyle = seconds ? "medium" : "short";
  return Number.isNaN(date.getTime())
    ? iso
    : date.toLocaleString(undefined, { dateStyle: "medium", timeStyle });
}

/** The history list; `onOpen(job)` shows a job in the panel. */
export class HistoryView {
  constructor(onOpen) {
    this.onOpen = onOpen;
    this.cursor = null;
    // Bumped by reload(): an answer for an older list is dropped, not appended twice.
    this.run = 0;
    this.list = byId("history");
    // The listed jobs by id, as last shown (running() looks among them).
    this.jobs = new Map();
    byId("more").addEventListener("click", () => this.loadMore());
  }

  /** Reload from the newest. */
  async reload() {
    this.run += 1;
    this.cursor = null;
    this.list.replaceChildren();
    this.jobs.clear();
    await this.loadMore();
  }

  /** The listed job still starting or processing (a person has one at most), or null. */
  running() {
    for (const job of this.jobs.values()) {
      if (job.status === "starting" || job.status === "processing") {
        return job;
      }
    }
    return null;
  }

  async loadMore() {
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (this.cursor) {
      query.set("cursor", this.cursor);
    }
    const button = byId("more");
    const run = this.run;
    const hadFocus = document.activeElement === button; // disabling it drops the focus
    button.disabled = true;
    try {
      const page = await api(`/generations?${query}`);
      if (run !== this.run) {
        return;
      }
      quiet(byId("history-error"));
      byId("history-signin").hidden = true;
      const rows = page.items.map((job) => this.row(job));
      this.list.append(...rows);
      this.cursor = page.nextCursor;
      button.textContent = "Load more";
      button.hidden = !this.cursor;
      if (hadFocus && button.hidden && rows.length > 0) {
        rows[0].querySelector("button").focus(); // keyboard users keep their place
      }
      byId("history-empty").hidden = this.list.children.length > 0;
    } catch (error) {
      if (error.status === 401) {
        // Signed out: the sign-in notice says what to do; the list says why it is empty.
        byId("history-empty").hidden = true;
        byId("history-signin").hidden = this.list.children.length > 0;
      } else {
        say(byId("history-error"), error.message);
        // The same page can be asked for again (the first one too).
        button.textContent = "Try again";
        button.hidden = false;
      }
    } finally {
      button.disabled = false;
      if (hadFocus && !button.hidden) {
        button.focus();
      }
    }
  }

  row(job) {
    this.jobs.set(job.id, job);
    // The small JPEG when there is one; renders older than thumbnails have only the full one.
    const first = job.variants[0];
    const picture = first
      ? el("img", { src: first.thumbnailUrl || first.url, alt: "", loading: "lazy" })
      : el("span", { className: "thumb-none" });
    const title = el("strong", {}, modeLabel(job.settings.mode, { short: true }));
    const meta = el(
      "span",
      { className: "meta" },
      title,
      ` · ${when(job.createdAt)}`,
      el("br"),
      jobSentence(job),
    );
    const open = el("button", { type: "button", className: "secondary" }, "Open");
    // Named by what its row shows, to the second: designs of one minute stay apart.
    const label = `Open the ${modeLabel(job.settings.mode, { short: true })} design of`;
    open.setAttribute("aria-label", `${label} ${when(job.createdAt, true)}: ${jobSentence(job)}`);
    open.addEventListener("click", () => this.onOpen(job));
    const row = el("li", {}, picture, meta, open);
    row.dataset.jobId = job.id;
    return row;
  }

  /**
   * Show a job's new state: in its row when listed (the focus stays on its button), else
   * first, as the newest. The pages already loaded stay as they are.
   */
  show(job) {
    const fresh = this.row(job);
    const listed = [...this.list.children].find((row) => row.dataset.jobId === job.id);
    if (!listed) {
      this.list.prepend(fresh);
      byId("history-empty").hidden = true;
      return;
    }
    const focused = listed.contains(document.activeElement);
    listed.replaceWith(fresh);
    if (focused) {
      fresh.querySelector("button").focus();
    }
  }
}
