"""`vidchat ui`: a web page to try vidchat on a video against your own server.

Upload a video (or give an http(s) URL), choose how its frames are sampled, see them as a
strip with their times, ask one or several questions and read the answers as they stream,
with usage and timings. Optional: `pip install 'vidchat[ui]'` (Starlette + uvicorn).

    forms    what the page sends ──► the client's arguments (pure)
    store    uploads (temporary directory, size cap) and sampled frames, bounded in count
    answers  questions ──► server-sent events, streamed with AsyncVideoChat.open_stream
    app      the routes (Starlette): the page, /api/info, /api/upload, /api/sample, /api/ask
    serve    `vidchat ui`: uvicorn on a loopback socket
    static/  the page: index.html, playground.js (vanilla JS), playground.css

Built on vidchat.client's public API only.
"""

from vidchat.ui.serve import DEFAULT_HOST, DEFAULT_PORT, run_ui

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "run_ui"]
