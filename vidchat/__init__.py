"""vidchat: ask questions about videos through a vLLM OpenAI-compatible server.

    vidchat.client   (folder client/)  frames from a video, sent as image parts through the
                                       OpenAI SDK: sample_frames, VideoChat, AsyncVideoChat
    vidchat.server   (folder server/)  profiles -> the vLLM command line -> a supervised
                                       process: `vidchat serve`
    vidchat.cli      the `vidchat` command; library errors become one line here
    vidchat.errors   every error raised on purpose (VidchatError and its tree)
    vidchat.limits   the numbers server and client agree on (384 px, 729 tokens a frame)
    vidchat.ui       `vidchat ui`: the playground page (the ui extra: Starlette + uvicorn)
    vidchat.loadgen  `vidchat bench`; vidchat.parity `vidchat parity`; vidchat.demo `vidchat
    demo`; vidchat.clips test clips made with ffmpeg; vidchat.serve_process `vidchat serve`
    as a child process (demo, tests, benchmarks)

The folders server/ and client/ sit at the top of the repository (the design card's layout)
and are installed under this package (pyproject's package-dir), so site-packages only ever
gets the distinctive name `vidchat`.
"""

__version__ = "0.1.0"
