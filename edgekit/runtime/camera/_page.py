"""The page --serve shows at /: the MJPEG stream, the top prediction and the stats, polled from the JSON."""

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
