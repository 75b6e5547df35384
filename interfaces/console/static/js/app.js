// The console's shell: sign-in, the three views, hash routing (#/messages, …).

import { $, h, replace } from "./dom.js";
import { current, describe, hasRole, signIn, signOut } from "./session.js";
import * as messaging from "./messaging.js";
import * as operators from "./operators.js";
import * as audit from "./audit.js";

const VIEWS = {
  messages: { module: messaging, role: "user", title: "Messaging" },
  operators: { module: operators, role: "admin", title: "Operators" },
  audit: { module: audit, role: "auditor", title: "Auditors" },
};

let active = null;

function viewName() {
  const name = location.hash.replace(/^#\/?/, "");
  return VIEWS[name] ? name : "messages";
}

function showWho(who) {
  const box = $("#who");
  if (!who) {
    replace(box);
    return;
  }
  replace(
    box,
    h("span", { class: "who-name" }, `${who.user} @ ${who.tenant}`),
    h("span", { class: "muted" }, ` (${who.roles.join(", ")})`),
    h("button", { type: "button", class: "secondary small", id: "signout", onclick: onSignOut }, "Sign out"),
  );
}

function onSignOut() {
  if (active) active.module.stop();
  active = null;
  signOut();
  route();
}

function route() {
  const who = current();
  showWho(who);
  const name = viewName();
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  for (const key of Object.keys(VIEWS)) $(`#view-${key}`).hidden = true;
  $("#signin").hidden = Boolean(who);
  if (!who) {
    document.title = "Sign in · Courier console";
    return;
  }
  const view = VIEWS[name];
  document.title = `${view.title} · Courier console`;
  if (active && active !== view) active.module.stop();
  const section = $(`#view-${name}`);
  section.hidden = false;
  const note = section.querySelector(".role-note");
  if (note) note.remove();
  const allowed = hasRole(who, view.role);
  section.classList.toggle("locked", !allowed);
  if (!allowed) {
    section.querySelector("h1").after(
      h("p", { class: "role-note error", role: "alert" },
        `This view needs a token with the role ${view.role}; yours has ${who.roles.join(", ")}. `,
        "Sign out and sign in with another token."),
    );
    if (active) active.module.stop();
    active = null;
    return;
  }
  if (active !== view) {
    active = view;
    view.module.start(who);
  }
}

function onSignIn(event) {
  event.preventDefault();
  const input = $("#token-input");
  try {
    signIn(input.value);
    input.value = "";
    $("#signin-error").textContent = "";
    route();
    $("#main").focus();
  } catch (error) {
    $("#signin-error").textContent = `Cannot sign in: ${describe(error)}`;
    input.focus();
  }
}

$("#signin-form").addEventListener("submit", onSignIn);
window.addEventListener("hashchange", () => {
  route();
  $("#main").focus();
});
route();
