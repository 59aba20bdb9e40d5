"""`spritediff serve`: a local web playground on the sampling and latent APIs.

One concept per module:

- config.py      ServeConfig: caps on every request field and the batching knobs (no web imports)
- cli.py         the `serve` subcommand: parser, model loading, the listening socket, uvicorn
- batcher.py     ModelBatcher: concurrent net calls of many requests merged row-wise into one call
- jobs.py        Job and Scheduler: admission with a bounded queue ("busy" beyond it), one thread per running
                 request, cancellation when the client goes away, events to the HTTP stream
- validation.py  JSON request bodies -> checked request objects; every bad field is a one-line 4xx
- images.py      PNG data URLs in (uploads, checked before decoding) and out (grids, frames)
- runs.py        what a sample or race lane does: the engine (spritediff.engine) on the batched net, streamed frames
- edits.py       the edit panel's operations on spritediff.latent's API
- results.py     finished results kept in memory; PNG, GIF and .npy downloads made in memory
- app.py         the Starlette routes, NDJSON streaming and error responses
- server.py      run_in_thread(app): the server on a background thread (notebooks, tests)
- client.py      PlaygroundClient: the HTTP API from Python, on the standard library (tests, the benchmark)
- static/        the page: index.html, app.js, style.css (no CDN: everything is served from here)

Only app.py, server.py and cli.py's run_serve import Starlette or uvicorn, so `spritediff --help` does not.
"""
