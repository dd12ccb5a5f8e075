// ipywidgets' HTML manager (which shows the widgets in their saved state) typesets widget labels
// with the MathJax 2 call MathJax.Hub.Queue; the site uses MathJax 3, so this provides
// MathJax.Hub.Queue, before MathJax has loaded and after (startup.ready). tools/book.py adds this
// file after the manager's scripts.
(function () {
  var hub = {Queue: function (job) {
    var el = job && job[2];
    if (el && window.MathJax && window.MathJax.typesetPromise) window.MathJax.typesetPromise([el]);
  }};
  if (window.MathJax && window.MathJax.version) { window.MathJax.Hub = window.MathJax.Hub || hub; return; }
  window.MathJax = window.MathJax || {};
  window.MathJax.Hub = hub;
  var startup = window.MathJax.startup = window.MathJax.startup || {};
  var ready = startup.ready;
  startup.ready = function () {
    if (ready) ready(); else window.MathJax.startup.defaultReady();
    window.MathJax.Hub = window.MathJax.Hub || hub;
  };
})();
