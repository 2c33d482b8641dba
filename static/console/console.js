// Small progressive enhancements for the console. Every page works without this file.
(function () {
  "use strict";

  // Copy buttons: <button data-copy-target="ELEMENT_ID">. The secret is read from the page,
  // never sent anywhere.
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    // Plain-HTTP deployments have no Clipboard API: fall back to a selection copy.
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    var copied = document.execCommand("copy");
    document.body.removeChild(area);
    return copied ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy-target]");
    if (!button) return;
    var source = document.getElementById(button.getAttribute("data-copy-target"));
    if (!source) return;
    var label = button.querySelector("[data-copy-label]") || button;
    var original = label.textContent;
    copyText(source.textContent.trim()).then(
      function () { label.textContent = "Copied"; },
      function () { label.textContent = "Select and copy"; }
    ).finally(function () {
      window.setTimeout(function () { label.textContent = original; }, 2000);
    });
  });

  // Destructive buttons ask first: <button data-confirm="Revoke this key?">.
  document.addEventListener("submit", function (event) {
    var submitter = event.submitter;
    var message = (submitter && submitter.getAttribute("data-confirm")) || event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) {
      event.preventDefault();
    }
  });

  // Role selects submit their form when changed, so "Save" is only needed without JS.
  document.addEventListener("change", function (event) {
    var select = event.target.closest("select[data-autosubmit]");
    if (select && select.form) {
      select.form.requestSubmit();
    }
  });

  // One of several inputs, chosen by radio buttons: <fieldset data-switch="NAME"> holds the
  // radios (name=NAME) and panels <div data-switch-panel="NAME:VALUE">; only the chosen panel
  // shows. Without this file every panel shows and the radio still decides.
  function syncSwitch(group) {
    var name = group.getAttribute("data-switch");
    var checked = group.querySelector('input[type="radio"][name="' + name + '"]:checked');
    group.querySelectorAll("[data-switch-panel]").forEach(function (panel) {
      panel.hidden = !!checked && panel.getAttribute("data-switch-panel") !== name + ":" + checked.value;
    });
  }
  document.querySelectorAll("[data-switch]").forEach(syncSwitch);
  document.addEventListener("change", function (event) {
    var group = event.target.closest("[data-switch]");
    if (group && event.target.type === "radio") syncSwitch(group);
  });

  // Close an open dropdown menu on a click outside it or on Escape.
  function closeMenus(except) {
    document.querySelectorAll("details.menu[open]").forEach(function (menu) {
      if (menu !== except) menu.removeAttribute("open");
    });
  }
  document.addEventListener("click", function (event) {
    closeMenus(event.target.closest("details.menu"));
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") closeMenus(null);
  });

  // A part of the page that changes on its own (a deployment's status and replicas):
  // <div data-live-url="URL"> is replaced by URL's HTML every few seconds, for as long as the
  // fresh copy still carries data-live-url. Open <details id=…> stay open across refreshes.
  var LIVE_INTERVAL_MS = 4000;
  function pollLive(box) {
    var url = box.getAttribute("data-live-url");
    if (!url) return;
    window.setTimeout(function () {
      fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.text();
        })
        .then(function (html) {
          var template = document.createElement("template");
          template.innerHTML = html.trim();
          var fresh = template.content.firstElementChild;
          if (!fresh) throw new Error("empty answer");
          box.querySelectorAll("details[open][id]").forEach(function (open) {
            var twin = fresh.querySelector("#" + CSS.escape(open.id));
            if (twin) twin.open = true;
          });
          box.replaceWith(fresh);
          pollLive(fresh);
        })
        .catch(function (error) {
          // Say so rather than show a stale page as if it were current.
          var note = box.querySelector(".live-note");
          if (note) note.textContent = "· live updates stopped (" + error.message + "); reload the page";
        });
    }, LIVE_INTERVAL_MS);
  }
  document.querySelectorAll("[data-live-url]").forEach(pollLive);
})();
