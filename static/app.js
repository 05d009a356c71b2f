/* PartnerNet page behaviour. The Content-Security-Policy allows scripts from this origin only
   (no inline handlers), so the pages mark elements with data attributes and this file wires them:
   data-copy="<input id>"   copy that input's value and say "Copied";
   data-check-all="<name>"  a checkbox that checks every input named <name> on the page;
   data-confirm="<text>"    a form asks for confirmation before it submits;
   data-print               prints the page;
   data-back                goes back one page. */
(function () {
  "use strict";

  function onClick(selector, handler) {
    document.addEventListener("click", function (event) {
      var el = event.target.closest ? event.target.closest(selector) : null;
      if (el) { handler(el, event); }
    });
  }

  onClick("[data-copy]", function (button) {
    var input = document.getElementById(button.getAttribute("data-copy"));
    if (!input) { return; }
    input.select();
    if (navigator.clipboard) { navigator.clipboard.writeText(input.value).catch(function () {}); }
    button.textContent = "Copied";
  });

  onClick("[data-check-all]", function (box) {
    var name = box.getAttribute("data-check-all");
    document.querySelectorAll("input[name='" + name + "']").forEach(function (c) { c.checked = box.checked; });
  });

  onClick("[data-print]", function () { window.print(); });

  onClick("[data-back]", function (link, event) {
    event.preventDefault();
    window.history.back();
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var text = form.getAttribute && form.getAttribute("data-confirm");
    if (text && !window.confirm(text)) { event.preventDefault(); }
  });
})();
