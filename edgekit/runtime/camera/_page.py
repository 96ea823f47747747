"""The page --serve shows at /: the MJPEG stream, the top prediction and the stats, polled from the JSON; with
several sources, one such panel per source (``page``)."""

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>edge-camera</title>
<style>body{font-family:sans-serif;background:#111;color:#eee;margin:1em}img{max-width:100%;border:1px solid #444}
#label{font-size:2em;margin:.3em 0}#stats{color:#aaa}</style></head>
<body data-frame="0">
<div id="label">waiting for the first frame...</div>
<img id="video" src="/stream.mjpg" alt="live view" onload="document.body.dataset.frame='1'">
<pre id="stats"></pre>
<script>
async function poll() {
  try {
    const r = await fetch('/predictions.json', {cache: 'no-store'});
    const d = await r.json();
    if (d.predictions) {
      const top = d.predictions[0];
      document.getElementById('label').textContent = top ? `${top.label} ${(100 * top.score).toFixed(1)}%` : '-';
      document.body.dataset.label = top ? top.label : '';
      document.getElementById('stats').textContent =
        `frame ${d.frame}  ${d.fps} fps  inference ${d.inference_ms} ms  preprocess ${d.preprocess_ms} ms  ` +
        `dropped ${d.dropped}`;
    }
  } catch (e) {}
  setTimeout(poll, 300);
}
poll();
</script></body></html>
"""

MULTI_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>edge-camera</title>
<style>body{font-family:sans-serif;background:#111;color:#eee;margin:1em}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:1em}
img{width:100%;border:1px solid #444}
.label{font-size:1.6em;margin:.3em 0}.stats,.source{color:#aaa}</style></head>
<body data-frames="0"><div class="grid">PANELS</div>
<script>
async function poll() {
  try {
    const r = await fetch('/sources.json', {cache: 'no-store'});
    const all = await r.json();
    all.forEach((d, i) => {
      const panel = document.getElementById('s' + i);
      if (!d.predictions) return;
      const top = d.predictions[0];
      panel.querySelector('.label').textContent = top ? `${top.label} ${(100 * top.score).toFixed(1)}%` : '-';
      panel.dataset.label = top ? top.label : '';
      panel.querySelector('.source').textContent = d.source;
      panel.querySelector('.stats').textContent = `frame ${d.frame}  ${d.fps} fps  inference ${d.inference_ms} ms  ` +
        `dropped ${d.dropped}`;
    });
  } catch (e) {}
  setTimeout(poll, 300);
}
poll();
</script></body></html>
"""

PANEL = ('<div class="panel" id="s@N@"><div class="source">source @N@</div><div class="label">waiting...</div>'
         '<img src="/stream.mjpg?source=@N@" alt="source @N@" '
         'onload="this.parentNode.dataset.frame=\'1\';document.body.dataset.frames=document.querySelectorAll'
         '(\'[data-frame]\').length"><pre class="stats"></pre></div>')


def page(streams: int) -> str:
    """The page for ``streams`` sources."""
    if streams == 1:
        return PAGE
    return MULTI_PAGE.replace("PANELS", "".join(PANEL.replace("@N@", str(i)) for i in range(streams)))
