// Progressive enhancements of the reference host's pages. Every page works without this
// file (it is loaded with "defer", never inline, so a strict Content-Security-Policy holds).
"use strict";

// "Copier le code": a details element (the no-script fallback shows the code in a field to
// select) becomes a button that copies the code and says so in a live region.
function enhanceCopyButtons() {
  document.querySelectorAll("details[data-copy-code]").forEach(function (details) {
    if (!navigator.clipboard || !window.isSecureContext) {
      return; // no clipboard access (plain http): keep the select-and-copy fallback
    }
    var summary = details.querySelector("summary");
    var button = document.createElement("button");
    button.type = "button";
    button.className = "secondary copy-button no-print";
    button.textContent = summary ? summary.textContent : "Copier";
    var status = document.createElement("p");
    status.className = "copy-status";
    status.setAttribute("role", "status");
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(details.dataset.copyCode).then(
        function () { status.textContent = details.dataset.copied || ""; },
        function () {
          status.textContent = details.dataset.copyFailed || "";
          details.hidden = false;
          details.open = true;
        }
      );
    });
    details.hidden = true;
    details.parentNode.insertBefore(button, details);
    details.parentNode.insertBefore(status, details);
  });
}

document.addEventListener("DOMContentLoaded", enhanceCopyButtons);
