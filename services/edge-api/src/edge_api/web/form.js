// The submission form, built from GET /catalog: the same limits the server enforces
// are checked here, before anything is uploaded.
import { byId, el, quiet, say } from "./dom.js";
import { modeLabel } from "./messages.js";

const TYPE_NAMES = { "image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WebP" };

// Sizes as people's tools show them (1 MB = 1024 * 1024 bytes), with enough digits that
// a file just over the limit does not read as equal to it.
function megabytes(bytes, digits = 1) {
  const scale = 10 ** digits;
  return `${Math.round((bytes / 1_048_576) * scale) / scale} MB`;
}

function fillSelect(select, choices, { optional }) {
  if (optional) {
    select.append(el("option", { value: "" }, "No preference"));
  }
  for (const choice of choices) {
    select.append(el("option", { value: choice.key }, choice.label));
  }
}

// A key the catalog no longer offers falls back to "No preference".
function choose(select, key) {
  select.value = key || "";
  if (select.value !== (key || "")) {
    select.value = "";
  }
}

/**
 * The form of one catalog; `onSubmit(body, files, contentType)` gets a checked submission
 * (a FormData with the files, or JSON text when a refine uploads nothing).
 */
export class SubmissionForm {
  constructor(catalog, onSubmit) {
    this.catalog = catalog;
    this.onSubmit = onSubmit;
    this.form = byId("form");
    this.error = byId("form-error");
    this.modes = new Map(catalog.modes.map((mode) => [mode.key, mode]));
    // The earlier result being refined ({generationId, variantIdx}), or null.
    this.source = null;
    fillSelect(
      byId("mode"),
      catalog.modes.map((m) => ({ key: m.key, label: modeLabel(m.key) })),
      { optional: false },
    );
    fillSelect(byId("roomType"), catalog.roomTypes, { optional: true });
    fillSelect(byId("style"), catalog.styles, { optional: true });
    this.describeLimits();
    byId("mode").addEventListener("change", () => this.showModeFields());
    byId("prompt").addEventListener("input", () => this.countPrompt());
    byId("refine-stop").addEventListener("click", () => {
      this.stopRefining();
      byId("input1").focus();
    });
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.showModeFields();
    this.busy(false); // index.html disables it until the catalog has built the form
  }

  describeLimits() {
    const { upload, prompt } = this.catalog;
    const types = upload.types.map((t) => TYPE_NAMES[t] || t).join(", ");
    this.typeNames = types;
    byId("upload-hint").textContent = `Photos: ${types}, up to ${megabytes(upload.maxBytes)} each.`;
    for (const id of ["input1", "input2"]) {
      byId(id).accept = upload.types.join(",");
    }
    byId("prompt").maxLength = prompt.maxLength;
  }

  mode() {
    return this.modes.get(byId("mode").value);
  }

  /**
   * Refine a result: redesign it (its style and room type kept) with a new prompt; the
   * result stands in for the first photo.
   */
  refine(job, variant, label) {
    this.source = { generationId: job.id, variantIdx: variant.idx };
    byId("mode").value = this.modes.has("redesign") ? "redesign" : byId("mode").value;
    choose(byId("roomType"), job.settings.roomType);
    choose(byId("style"), job.settings.style);
    byId("refine-img").src = variant.thumbnailUrl || variant.url;
    byId("refine-text").textContent = `Refining ${label}. Say what to change.`;
    byId("new-heading").textContent = "Refine a design";
    byId("refine").hidden = false;
    byId("prompt").value = "";
    this.showModeFields();
    byId("form").scrollIntoView({ block: "nearest" });
    byId("prompt").focus();
  }

  /** Back to uploading a photo. */
  stopRefining() {
    this.source = null;
    byId("refine").hidden = true;
    byId("refine-img").removeAttribute("src");
    byId("new-heading").textContent = "New design";
    this.showModeFields();
  }

  /** The submission went through: the next one starts afresh. */
  submitted() {
    if (this.source) {
      this.stopRefining();
      // The refine's prompt said what to change in that result, not in a next photo.
      byId("prompt").value = "";
      this.countPrompt();
    }
  }

  showModeFields() {
    const mode = this.mode();
    if (this.source && mode.images < 1) {
      this.stopRefining(); // a mode without photos has nothing to refine
      return;
    }
    const first = this.source ? 2 : 1; // a refine's result stands in for input1
    byId("input1-field").hidden = mode.images < 1 || Boolean(this.source);
    byId("input2-field").hidden = mode.images < 2;
    byId("upload-hint").hidden = mode.images < first;
    byId("input1-label").textContent =
      mode.images > 1 ? "Photo of the room (base)" : "Photo of the room";
    // A refine is its new prompt: without one it would only draw the same room again.
    const required = mode.promptRequired || Boolean(this.source);
    byId("prompt-label").textContent = required ? "Prompt (required)" : "Prompt (optional)";
    byId("prompt").required = required;
    this.countPrompt();
    quiet(this.error);
  }

  /** The prompt's hint: its limit, then how much of it is used (a paste past the limit
   * is cut by the browser: the hint says so rather than leave it unnoticed). */
  countPrompt() {
    const limit = this.catalog.prompt.maxLength;
    const used = byId("prompt").value.length;
    let hint = `Up to ${limit} characters.`;
    if (used >= limit) {
      hint = `${used} of ${limit} characters: the limit (anything longer was cut).`;
    } else if (used > 0) {
      hint = `${used} of ${limit} characters.`;
    }
    byId("prompt-hint").textContent = hint;
  }

  /** The chosen files of the mode, or a sentence saying what is wrong with them. */
  files() {
    const mode = this.mode();
    const files = [];
    for (let index = this.source ? 2 : 1; index <= mode.images; index += 1) {
      const input = byId(`input${index}`);
      const file = input.files[0];
      const name = input.labels[0].textContent;
      if (!file) {
        return { problem: `Please choose a file for “${name}”.`, input };
      }
      const { maxBytes, types } = this.catalog.upload;
      if (!types.includes(file.type)) {
        return { problem: `“${name}” must be one of: ${this.typeNames}.`, input };
      }
      if (file.size > maxBytes) {
        return {
          problem: `“${name}” is ${megabytes(file.size, 2)}; the limit is ${megabytes(maxBytes)}.`,
          input,
        };
      }
      files.push(file);
    }
    return { files };
  }

  problem(text, control) {
    say(this.error, text);
    control.focus();
  }

  submit() {
    quiet(this.error);
    const mode = this.mode();
    const prompt = byId("prompt").value.trim();
    if (this.source && !prompt) {
      this.problem("Please say in the prompt what to change.", byId("prompt"));
      return;
    }
    if (mode.promptRequired && !prompt) {
      this.problem("Please describe the room you want in the prompt.", byId("prompt"));
      return;
    }
    const checked = this.files();
    if (checked.problem) {
      this.problem(checked.problem, checked.input);
      return;
    }
    const fields = { mode: mode.key };
    for (const field of ["roomType", "style"]) {
      if (byId(field).value) {
        fields[field] = byId(field).value;
      }
    }
    if (prompt) {
      fields.prompt = prompt;
    }
    if (this.source && checked.files.length === 0) {
      // Nothing to upload: the API's JSON form, with the source as one object.
      this.onSubmit(JSON.stringify({ ...fields, source: this.source }), [], "application/json");
      return;
    }
    this.onSubmit(this.multipart(fields, checked.files), checked.files, null);
  }

  multipart(fields, files) {
    const data = new FormData();
    for (const [name, value] of Object.entries(fields)) {
      data.append(name, value);
    }
    if (this.source) {
      data.append("sourceGenerationId", this.source.generationId);
      data.append("sourceVariantIdx", String(this.source.variantIdx));
    }
    const first = this.source ? 2 : 1;
    files.forEach((file, index) => data.append(`input${index + first}`, file));
    return data;
  }

  /** Disable the button while a submission is on its way. */
  busy(isBusy) {
    byId("submit").disabled = isBusy;
  }

  /** A shown file field of the mode (a refine's result stands in for input1). */
  shownField(id) {
    const input = byId(id);
    return input.closest(".field").hidden ? null : input;
  }

  /**
   * Show why the server refused a submission (`wait`: the seconds it asked for) and put
   * the focus there, since the Generate button that had it is disabled while sending: on
   * the field the answer names (its wire name, input1 or input2, is said with the form's
   * own label), else the file field of a 413 or 415, else the message itself.
   */
  refused(error, wait = 0) {
    let text = error.message;
    let field = null;
    const validation = error.code === "VALIDATION_ERROR";
    for (const id of ["input1", "input2"]) {
      const label = `“${byId(id).labels[0].textContent}”`;
      const named = text.replace(new RegExp(`\\b${id}\\b`, "g"), label);
      if (validation && named !== text) {
        text = named;
        field = field || this.shownField(id);
      }
    }
    if (!field && validation && /\bprompt\b/i.test(error.serverMessage || "")) {
      field = byId("prompt");
    }
    if (!field && (error.status === 413 || error.status === 415)) {
      field = this.shownField("input1") || this.shownField("input2");
    }
    this.error.replaceChildren(text);
    if (wait) {
      // Taken away when the wait is over (see waitOver).
      this.error.append(el("span", { className: "wait" }, ` (try again in ${wait} s)`));
    }
    this.error.hidden = false;
    (field || this.error).focus();
  }

  /** The wait the server asked for is over: the message no longer says to wait. */
  waitOver() {
    for (const span of this.error.querySelectorAll(".wait")) {
      span.remove();
    }
  }

  /** Show an error about the submission. */
  fail(text) {
    say(this.error, text);
  }
}
