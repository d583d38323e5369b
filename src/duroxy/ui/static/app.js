// duroxy ui: the only script. Refreshes a page that shows a running instance, unless
// a form field is being used; asks before a delete.
(function () {
  "use strict";
  var body = document.body;
  var seconds = parseFloat(body.getAttribute("data-refresh") || "0");
  if (seconds > 0) {
    setInterval(function () {
      var el = document.activeElement;
      var typing = el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT");
      var filled = Array.prototype.some.call(
        document.querySelectorAll("form input[type=text]"), function (i) { return i.value; });
      if (!typing && !filled) { window.location.reload(); }
    }, seconds * 1000);
  }
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { ev.preventDefault(); }
    });
  });
})();
