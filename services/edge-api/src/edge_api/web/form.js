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

/** The form of one catalog; `onSubmit(formData, files)` gets a checked submission. */
export class SubmissionForm {
  constructor(catalog, onSubmit) {
    this.catalog = catalog;
    this.onSubmit = onSubmit;
    this.form = byId("form");
    this.error = byId("form-error");
    this.modes = new Map(catalog.modes.map((mode) => [mode.key, mode]));
    fillSelect(
      byId("mode"),
      catalog.modes.map((m) => ({ key: m.key, label: modeLabel(m.key) })),
      { optional: false },
    );
    fillSelect(byId("roomType"), catalog.roomTypes, { optional: true });
    fillSelect(byId("style"), catalog.styles, { optional: true });
    this.describeLimits();
    byId("mode").addEventListener("change", () => this.showModeFields());
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.showModeFields();
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

  showModeFields() {
    const mode = this.mode();
    byId("input1-field").hidden = mode.images < 1;
    byId("input2-field").hidden = mode.images < 2;
    byId("upload-hint").hidden = mode.images < 1;
    byId("input1-label").textContent =
      mode.images > 1 ? "Photo of the room (base)" : "Photo of the room";
    byId("prompt-label").textContent = mode.promptRequired ? "Prompt (required)" : "Prompt (optional)";
    byId("prompt").required = mode.promptRequired;
    byId("prompt-hint").textContent = `Up to ${this.catalog.prompt.maxLength} characters.`;
    quiet(this.error);
  }

  /** The chosen files of the mode, or a sentence saying what is wrong with them. */
  files() {
    const mode = this.mode();
    const files = [];
    for (let index = 1; index <= mode.images; index += 1) {
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
    if (mode.promptRequired && !prompt) {
      this.problem("Please describe the room you want in the prompt.", byId("prompt"));
      return;
    }
    const checked = this.files();
    if (checked.problem) {
      this.problem(checked.problem, checked.input);
      return;
    }
    const data = new FormData();
    data.append("mode", mode.key);
    for (const field of ["roomType", "style"]) {
      if (byId(field).value) {
        data.append(field, byId(field).value);
      }
    }
    if (prompt) {
      data.append("prompt", prompt);
    }
    checked.files.forEach((file, index) => data.append(`input${index + 1}`, file));
    this.onSubmit(data, checked.files);
  }

  /** Disable the button while a submission is on its way. */
  busy(isBusy) {
    byId("submit").disabled = isBusy;
  }

  /** Show an error about the submission. */
  fail(text) {
    say(this.error, text);
  }
}
