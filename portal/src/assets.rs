//! The stylesheet and the little JavaScript, embedded in the binary (no build chain).
//! Pages work without the script; it adds copy buttons.

pub const CSS: &str = r#"
:root{--fg:#1b1f24;--muted:#5b6470;--line:#d9dee5;--bg:#f6f8fa;--card:#fff;--accent:#0b5fff;--ok:#137333;--warn:#9a6700;--bad:#b3261e}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
a{color:var(--accent)}
header{display:flex;flex-wrap:wrap;gap:.5rem 1.25rem;align-items:center;padding:.6rem 1rem;background:#111827;color:#fff}
header a{color:#fff;text-decoration:none}
header .brand{font-weight:700;margin-right:auto}
header nav{display:flex;flex-wrap:wrap;gap:.25rem 1rem}
header form{margin:0}
main{max-width:72rem;margin:0 auto;padding:1rem}
h1{font-size:1.4rem;margin:.5rem 0 1rem}
h2{font-size:1.1rem;margin:1.25rem 0 .5rem}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:1rem;margin-bottom:1rem}
.card.scroll{overflow-x:auto}
h1,p,dd{overflow-wrap:anywhere}
table{width:100%;border-collapse:collapse}
th,td{text-align:left;padding:.45rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
th{white-space:nowrap}
td .value,td code,dd code{overflow-wrap:anywhere}
td code.key{overflow-wrap:normal}
td .title{overflow-wrap:anywhere}
th{color:var(--muted);font-weight:600;font-size:.85rem}
.state{display:inline-block;padding:.05rem .5rem;border-radius:999px;font-size:.8rem;font-weight:600;border:1px solid currentColor}
.state-running{color:var(--ok)}.state-stopped,.state-starting,.state-stopping{color:var(--warn)}.state-error,.state-destroyed{color:var(--bad)}
label{display:block;font-weight:600;margin:.6rem 0 .2rem}
.hint{color:var(--muted);font-size:.85rem;margin:.1rem 0 .3rem}
input[type=text],input[type=password],input[type=number],select,textarea{width:100%;max-width:40rem;padding:.45rem .55rem;border:1px solid var(--line);border-radius:6px;font:inherit;background:#fff}
textarea{min-height:7rem;font-family:ui-monospace,monospace}
button,.button{display:inline-block;white-space:nowrap;padding:.45rem .9rem;border-radius:6px;border:1px solid var(--accent);background:var(--accent);color:#fff;font:inherit;cursor:pointer;text-decoration:none}
button.secondary{background:#fff;color:var(--accent)}
button.danger{background:var(--bad);border-color:var(--bad)}
.button.danger-outline{background:#fff;color:var(--bad);border-color:var(--bad)}
button.small{padding:.1rem .5rem;font-size:.8rem}
.actions{display:flex;flex-wrap:wrap;gap:.5rem;margin-top:.75rem}
.actions form{margin:0}
.error{border-left:4px solid var(--bad);background:#fdecea;padding:.6rem .8rem;border-radius:4px;margin-bottom:1rem}
.notice{border-left:4px solid var(--ok);background:#e6f4ea;padding:.6rem .8rem;border-radius:4px;margin-bottom:1rem}
code,.value{font-family:ui-monospace,monospace;font-size:.9rem;overflow-wrap:anywhere}
dl{display:grid;grid-template-columns:minmax(7rem,max-content) 1fr;gap:.3rem 1rem;margin:0}
dt{color:var(--muted)}dd{margin:0;overflow-wrap:anywhere}
form.filter{display:flex;flex-wrap:wrap;align-items:center;gap:.5rem;margin:0 0 .75rem}
form.filter label{margin:0}form.filter select{width:auto}
nav.pages{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center;justify-content:center;margin:.5rem 0 1rem}
:focus-visible{outline:3px solid #f59e0b;outline-offset:2px}
@media (max-width:640px){dl{grid-template-columns:1fr}dt{margin-top:.4rem}.hide-narrow{display:none}th,td{padding:.4rem .25rem}main{padding:.75rem}}
"#;

pub const JS: &str = r#"
document.addEventListener('click', function (e) {
  var b = e.target.closest('button[data-copy]');
  if (!b) return;
  var v = document.getElementById(b.getAttribute('data-copy'));
  if (!v) return;
  navigator.clipboard.writeText(v.textContent).then(function () {
    b.textContent = 'Copied';
    setTimeout(function () { b.textContent = 'Copy'; }, 1500);
  });
});
function showCopy() {
  document.querySelectorAll('button[data-copy]').forEach(function (b) { b.hidden = false; });
}
showCopy();
// A service's page stays current: the server sends its live part again when it changes.
(function () {
  var live = document.getElementById('live');
  if (!live || !live.dataset.events || !window.EventSource) return;
  var es = new EventSource(live.dataset.events);
  es.addEventListener('live', function (e) {
    var now = document.getElementById('live');
    if (!now) return;
    var t = document.createElement('template');
    t.innerHTML = e.data;
    var next = t.content.getElementById('live');
    if (next) { now.replaceWith(next); showCopy(); }
  });
})();
"#;
